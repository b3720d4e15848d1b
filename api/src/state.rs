//! The application state every handler reads through `State`.

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use governor::DefaultKeyedRateLimiter;
use oo_commands::aggregate::Repository;
use oo_commands::store::EventStore;
use oo_commands::vault::Vault;
use oo_domain::signals::Signals;
use oo_domain::tip::Tip;
use oo_domain::user::User;
use oo_projections::status::Status;
use secrecy::SecretString;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: EventStore,
    pub vault: Vault,
    pub users: Repository<User>,
    pub signals: Repository<Signals>,
    pub tips: Repository<Tip>,
    pub status: Status,
    pub config: Arc<ServeConfig>,
    pub admin_token: Option<Arc<SecretString>>,
    pub limiter: Arc<DefaultKeyedRateLimiter<Uuid>>,
    pub metrics: Arc<Metrics>,
    pub recommender: Arc<crate::recommender::Recommender>,
    pub rebuilding: Arc<Mutex<HashSet<String>>>,
    /// What the reward join last did (`GET /admin/projections`).
    pub reward_join: Arc<Mutex<crate::JoinStatus>>,
    pub cookie_secure: bool,
    pub oidc: Arc<crate::oidc::Oidc>,
    /// The base of every URL oO hands out (OO_PUBLIC_URL, or the address it listens on).
    pub public_url: String,
}
