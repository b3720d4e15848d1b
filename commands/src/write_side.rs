//! The write side as one value: the group-committing store writer, the key vault and a
//! repository per aggregate, started together in one place for the server, the simulator, the
//! benchmarks and the tests.

use crate::aggregate::Repository;
use crate::store::{EventStore, WriterConfig};
use crate::vault::{MasterKey, Vault, VaultError};
use oo_domain::connection::Connection;
use oo_domain::promotion::Policy;
use oo_domain::signals::Signals;
use oo_domain::tip::Tip;
use oo_domain::user::User;
use sqlx::PgPool;

/// Everything that appends. Cheap to clone: every part is a handle on shared state (one
/// writer, one key cache, one state cache per aggregate type).
#[derive(Clone)]
pub struct WriteSide {
    pub store: EventStore,
    pub vault: Vault,
    pub users: Repository<User>,
    pub signals: Repository<Signals>,
    pub tips: Repository<Tip>,
    /// The serving line-up's one stream (promotions).
    pub policies: Repository<Policy>,
    /// People's connections to providers (Todoist).
    pub connections: Repository<Connection>,
}

impl WriteSide {
    /// Opens the vault under `master` and starts the store's writer tasks on `pool` (a migrated
    /// database).
    pub async fn start(pool: PgPool, master: MasterKey, writer: WriterConfig) -> Result<Self, VaultError> {
        let vault = Vault::open(pool.clone(), master).await?;
        let store = EventStore::start(pool, writer);
        Ok(Self {
            users: Repository::new(store.clone(), vault.clone()),
            signals: Repository::new(store.clone(), vault.clone()),
            tips: Repository::new(store.clone(), vault.clone()),
            policies: Repository::new(store.clone(), vault.clone()),
            connections: Repository::new(store.clone(), vault.clone()),
            store,
            vault,
        })
    }
}
