//! The key vault: each user's data key, stored wrapped with age to the master key, and the
//! service's own secrets (the blind-index key) wrapped the same way. Unwrapped keys are kept in
//! a bounded in-memory cache.
//!
//! The master key is an age x25519 identity kept outside the database (`OO_MASTER_KEY`: a file
//! holding it, or the identity itself). Without one, a key is generated into the data directory
//! with a loud warning: fine for development, not for production.

use crate::sealing::DataKey;
use age::secrecy::ExposeSecret;
use hmac::{Hmac, Mac};
use oo_domain::ids::UserId;
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// How many unwrapped keys the cache holds at most.
const CACHE_CAPACITY: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key is not a valid age identity")]
    BadMasterKey,
    #[error("cannot read or write the master key file: {0}")]
    Io(#[from] std::io::Error),
    #[error("a wrapped key does not unwrap under the master key")]
    Unwrap,
    #[error("wrapping failed")]
    Wrap,
    #[error("this process's master key is not the vault's current one (rotated?): restart with the current key")]
    StaleMaster,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Configured,
    /// Generated (or reused) in the data directory: development only.
    DataDir(std::path::PathBuf),
}

/// The master key (an age identity). Never printed.
#[derive(Clone)]
pub struct MasterKey(Arc<age::x25519::Identity>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        age::x25519::Identity::from_str(s.trim())
            .map(|i| Self(Arc::new(i)))
            .map_err(|_| VaultError::BadMasterKey)
    }

    /// `configured` is `OO_MASTER_KEY`: an identity (`AGE-SECRET-KEY-1…`) or a file holding one.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<(Self, MasterKeySource), VaultError> {
        if let Some(c) = configured {
            let text = if c.trim_start().starts_with("AGE-SECRET-KEY-") {
                c.to_owned()
            } else {
                std::fs::read_to_string(c)?
            };
            let line = text
                .lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .ok_or(VaultError::BadMasterKey)?;
            return Ok((Self::parse(line)?, MasterKeySource::Configured));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let line = text
                .lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .ok_or(VaultError::BadMasterKey)?;
            return Ok((Self::parse(line)?, MasterKeySource::DataDir(path)));
        }
        std::fs::create_dir_all(data_dir)?;
        let key = Self::generate();
        write_private(
            &path,
            &format!(
                "# oO development master key. Do not use in production.\n{}\n",
                key.secret_string()
            ),
        )?;
        Ok((key, MasterKeySource::DataDir(path)))
    }

    pub fn generate() -> Self {
        Self(Arc::new(age::x25519::Identity::generate()))
    }

    /// The identity in age's text form, for writing a key file. Handle with care.
    pub fn secret_string(&self) -> String {
        self.0.to_string().expose_secret().to_owned()
    }

    /// Wraps a data key as the vault stores it.
    pub fn wrap_key(&self, key: &DataKey) -> Result<Vec<u8>, VaultError> {
        self.wrap(&key_plaintext(key))
    }

    /// Unwraps a data key wrapped by [`MasterKey::wrap_key`].
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        key_from_plaintext(&self.unwrap_secret(wrapped)?)
    }

    /// The public half, recorded in `vault_master`.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>, VaultError> {
        age::encrypt(&self.0.to_public(), secret).map_err(|_| VaultError::Wrap)
    }

    fn unwrap_secret(&self, wrapped: &[u8]) -> Result<Vec<u8>, VaultError> {
        age::decrypt(self.0.as_ref(), wrapped).map_err(|_| VaultError::Unwrap)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}

/// The vault: wraps, stores, unwraps and caches data keys.
#[derive(Clone)]
pub struct Vault {
    pool: PgPool,
    master: MasterKey,
    cache: Arc<RwLock<HashMap<UserId, DataKey>>>,
    index_key: Arc<[u8; 32]>,
    /// Seals short-lived values the service hands to browsers (the sign-in state cookie).
    transit_key: Arc<DataKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

/// What a blind-index entry is a hash of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Email,
    OidcSubject,
}

impl LookupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::OidcSubject => "oidc",
        }
    }
}

impl Vault {
    /// Opens the vault, creating the blind-index key on first use.
    pub async fn open(pool: PgPool, master: MasterKey) -> Result<Self, VaultError> {
        sqlx::query("INSERT INTO vault_master (id, recipient) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(master.recipient())
            .execute(&pool)
            .await?;
        let current: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        if current != master.recipient() {
            return Err(VaultError::StaleMaster);
        }
        let index_key = load_or_create_secret(&pool, &master, "blind_index").await?;
        let transit = load_or_create_secret(&pool, &master, "transit").await?;
        Ok(Self {
            pool,
            master,
            cache: Arc::default(),
            index_key: Arc::new(index_key),
            transit_key: Arc::new(DataKey::from_parts(Uuid::nil(), transit)),
        })
    }

    /// Creates a user's data key inside the caller's transaction.
    pub async fn create_key(&self, conn: &mut PgConnection, user_id: UserId) -> Result<DataKey, VaultError> {
        // A rotation updates this row: holding it shared until the caller commits means the key is
        // wrapped under the master key that is current when it lands, never under a retired one.
        let current: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1 FOR SHARE")
            .fetch_one(&mut *conn)
            .await?;
        if current != self.master.recipient() {
            return Err(VaultError::StaleMaster);
        }
        let key = DataKey::generate();
        let wrapped = self.master.wrap(&key_plaintext(&key))?;
        sqlx::query("INSERT INTO key_vault (user_id, key_id, wrapped) VALUES ($1, $2, $3)")
            .bind(user_id.as_uuid())
            .bind(key.key_id)
            .bind(wrapped)
            .execute(conn)
            .await?;
        Ok(key)
    }

    /// Remembers a key created in a transaction that has now committed.
    pub fn remember(&self, user_id: UserId, key: DataKey) {
        self.cache_put(user_id, key);
    }

    /// The user's data key, or `None` if it was destroyed (or never existed).
    pub async fn key_for(&self, user_id: UserId) -> Result<Option<DataKey>, VaultError> {
        if let Some(k) = self.cache.read().ok().and_then(|c| c.get(&user_id).cloned()) {
            return Ok(Some(k));
        }
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT wrapped FROM key_vault WHERE user_id = $1")
            .bind(user_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        let Some((wrapped,)) = row else {
            return Ok(None);
        };
        let key = key_from_plaintext(&self.master.unwrap_secret(&wrapped)?)?;
        self.cache_put(user_id, key.clone());
        Ok(Some(key))
    }

    /// Drops a user's key from the cache (on deletion).
    pub fn forget(&self, user_id: UserId) {
        if let Ok(mut c) = self.cache.write() {
            c.remove(&user_id);
        }
    }

    /// Seals a short-lived value for `purpose` (which binds it: it opens only for that purpose).
    pub fn seal_transit(&self, purpose: &str, fields: &serde_json::Map<String, serde_json::Value>) -> Option<Vec<u8>> {
        crate::sealing::seal(&self.transit_key, purpose_id(purpose), fields)
            .ok()
            .map(|s| s.to_bytes())
    }

    /// Opens what [`Vault::seal_transit`] sealed for `purpose`.
    pub fn open_transit(&self, purpose: &str, bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
        let sealed = crate::sealing::Sealed::from_bytes(bytes).ok()?;
        crate::sealing::open(&self.transit_key, purpose_id(purpose), &sealed).ok()
    }

    /// The keyed hash under which `value` is looked up (never stored in clear).
    pub fn blind_index(&self, kind: LookupKind, value: &str) -> Vec<u8> {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        let mut mac = Hmac::<Sha256>::new_from_slice(self.index_key.as_ref()).expect("any key length");
        mac.update(kind.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn cache_put(&self, user_id: UserId, key: DataKey) {
        if let Ok(mut c) = self.cache.write() {
            if c.len() >= CACHE_CAPACITY {
                // Bounded: drop an arbitrary entry; a miss costs one unwrap (~0.3 ms).
                if let Some(k) = c.keys().next().copied() {
                    c.remove(&k);
                }
            }
            c.insert(user_id, key);
        }
    }
}

fn purpose_id(purpose: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("oo:transit:{purpose}").as_bytes())
}

fn key_plaintext(key: &DataKey) -> Vec<u8> {
    let mut v = key.key_id.as_bytes().to_vec();
    v.extend_from_slice(key.secret_bytes());
    v
}

fn key_from_plaintext(p: &[u8]) -> Result<DataKey, VaultError> {
    if p.len() != 48 {
        return Err(VaultError::Unwrap);
    }
    let key_id = Uuid::from_slice(&p[..16]).map_err(|_| VaultError::Unwrap)?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&p[16..]);
    Ok(DataKey::from_parts(key_id, key))
}

async fn load_or_create_secret(pool: &PgPool, master: &MasterKey, name: &str) -> Result<[u8; 32], VaultError> {
    let fresh = DataKey::generate();
    let wrapped = master.wrap(fresh.secret_bytes())?;
    sqlx::query("INSERT INTO vault_secrets (name, wrapped) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(wrapped)
        .execute(pool)
        .await?;
    let (wrapped,): (Vec<u8>,) = sqlx::query_as("SELECT wrapped FROM vault_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    let plain = master.unwrap_secret(&wrapped)?;
    plain.try_into().map_err(|_| VaultError::Unwrap)
}

/// Re-wraps every live data key and every service secret under `new`, in one transaction, so
/// that the old master key can be destroyed: any copy of a key wrapped under it that survives
/// elsewhere (dead tuples, write-ahead log, backups) — a deleted user's included — becomes
/// unreadable with it. Returns how many keys and secrets were re-wrapped.
pub async fn rotate_master_key(pool: &PgPool, old: &MasterKey, new: &MasterKey) -> Result<(usize, usize), VaultError> {
    let mut tx = pool.begin().await?;
    // Taking the master row waits for registrations under way (they hold it shared until they
    // commit) and makes every later one see the new recipient and refuse to wrap under the old key.
    let current: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    if current != old.recipient() {
        return Err(VaultError::StaleMaster);
    }
    sqlx::query("UPDATE vault_master SET recipient = $1, updated_at = now() WHERE id = 1")
        .bind(new.recipient())
        .execute(&mut *tx)
        .await?;
    sqlx::query("LOCK TABLE key_vault, vault_secrets IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let keys: Vec<(uuid::Uuid, Vec<u8>)> = sqlx::query_as("SELECT user_id, wrapped FROM key_vault")
        .fetch_all(&mut *tx)
        .await?;
    for (user_id, wrapped) in &keys {
        let plain = old.unwrap_secret(wrapped)?;
        sqlx::query("UPDATE key_vault SET wrapped = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(new.wrap(&plain)?)
            .execute(&mut *tx)
            .await?;
    }
    let secrets: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT name, wrapped FROM vault_secrets")
        .fetch_all(&mut *tx)
        .await?;
    for (name, wrapped) in &secrets {
        let plain = old.unwrap_secret(wrapped)?;
        sqlx::query("UPDATE vault_secrets SET wrapped = $2 WHERE name = $1")
            .bind(name)
            .bind(new.wrap(&plain)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((keys.len(), secrets.len()))
}

/// Drops from `vault`'s cache the key of every user shredded from now on — by this process or
/// another one serving the same database — so that no process keeps a destroyed key in memory.
/// Runs until `shutdown`, from `from` (the head of the log when the cache was empty). Looks after
/// each commit of this process, at most every [`SHREDDING_POLL_MIN`], and every
/// [`SHREDDING_POLL_MAX`] in any case (another process's deletions); the process that shreds a
/// user drops the key itself at once.
pub async fn follow_shredding(
    vault: Vault,
    appended: Arc<tokio::sync::Notify>,
    from: crate::cursor::Cursor,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut cursor = from;
    while !shutdown.is_cancelled() {
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batch = match vault.pool.acquire().await {
            Ok(mut conn) => crate::store::read_shredded_after(&mut conn, cursor, SHREDDED_PAGE).await,
            Err(e) => Err(e),
        };
        match batch {
            Ok(shredded) => {
                for (at, user) in &shredded {
                    vault.forget(UserId::from_uuid(*user));
                    cursor = *at;
                }
                if shredded.len() as i64 == SHREDDED_PAGE {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading deletions failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = async {
                tokio::time::sleep(SHREDDING_POLL_MIN).await;
                let _ = tokio::time::timeout(SHREDDING_POLL_MAX - SHREDDING_POLL_MIN, notified).await;
            } => {}
        }
    }
}

/// The most deletions read at one look; a full page is followed at once by the next.
const SHREDDED_PAGE: i64 = 1000;
/// The shortest pause between two looks for deletions.
pub const SHREDDING_POLL_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest pause between two looks for deletions.
pub const SHREDDING_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(500);
