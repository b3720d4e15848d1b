//! The key vault: each user's data key, stored wrapped with age to the master key and
//! authenticated under a key derived from it, and the service's own secrets (the blind-index and
//! transit keys) kept the same way; the master-key rotation, in batches. Unwrapped keys are kept
//! in a bounded in-memory cache.
//!
//! The master key is an age x25519 identity kept outside the database (`OO_MASTER_KEY`: a file
//! holding it, or the identity itself). The file may hold several identities — the old and the
//! new one while a rotation is under way — and every one of them opens what was wrapped to it.
//! Without a configured key, one is generated into the data directory with a loud warning: fine
//! for development, not for production.
//!
//! Why the MAC: age wraps to a public recipient, so anyone who can write the database could plant
//! a data key they know and oO would seal new personal fields under it. Each row carries an
//! HMAC-SHA-256 of what it is (user and key id, or secret name) and of its wrapped bytes, under a
//! key derived from the secret half of the master key it is wrapped to; a row that fails it is
//! refused ([`VaultError::Forged`]).

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

/// How many data keys one transaction of a rotation re-wraps.
pub const ROTATION_BATCH: i64 = 500;

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
    #[error(
        "a master-key rotation is under way: this process must hold both the old and the new master key \
         (OO_MASTER_KEY may name a file holding both identities)"
    )]
    RotationUnderway,
    #[error("a rotation to another master key is under way: finish it first (oo keys rotate with that key)")]
    OtherRotation,
    #[error(
        "a key in the vault fails its authentication: it was not written by a holder of the master key \
         (the database was tampered with)"
    )]
    Forged,
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

/// One identity of the master key, with what derives from it.
struct Held {
    identity: age::x25519::Identity,
    recipient: String,
    mac_key: [u8; 32],
}

impl Held {
    fn new(identity: age::x25519::Identity) -> Self {
        let recipient = identity.to_public().to_string();
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        let mut kdf =
            Hmac::<Sha256>::new_from_slice(identity.to_string().expose_secret().as_bytes()).expect("any key length");
        kdf.update(b"oo:vault-mac:v1");
        let mac_key = kdf.finalize().into_bytes().into();
        Self {
            identity,
            recipient,
            mac_key,
        }
    }

    fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>, VaultError> {
        age::encrypt(&self.identity.to_public(), secret).map_err(|_| VaultError::Wrap)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, VaultError> {
        age::decrypt(&self.identity, wrapped).map_err(|_| VaultError::Unwrap)
    }

    /// The MAC's state over what the row is and its wrapped bytes.
    fn hasher(&self, what: &Bound<'_>, wrapped: &[u8]) -> Hmac<Sha256> {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("any key length");
        what.feed(&mut mac);
        mac.update(wrapped);
        mac
    }

    fn mac(&self, what: &Bound<'_>, wrapped: &[u8]) -> Vec<u8> {
        self.hasher(what, wrapped).finalize().into_bytes().to_vec()
    }

    fn verify(&self, what: &Bound<'_>, wrapped: &[u8], tag: &[u8]) -> Result<(), VaultError> {
        self.hasher(what, wrapped)
            .verify_slice(tag)
            .map_err(|_| VaultError::Forged)
    }
}

/// What a row of the vault is bound to by its MAC.
enum Bound<'a> {
    Key { user_id: Uuid, key_id: Uuid },
    Secret { name: &'a str },
}

impl Bound<'_> {
    fn feed(&self, mac: &mut Hmac<Sha256>) {
        match self {
            Self::Key { user_id, key_id } => {
                mac.update(b"key\0");
                mac.update(user_id.as_bytes());
                mac.update(key_id.as_bytes());
            }
            Self::Secret { name } => {
                mac.update(b"secret\0");
                mac.update(&(name.len() as u64).to_be_bytes());
                mac.update(name.as_bytes());
            }
        }
    }
}

/// The master key: one age identity, or several while a rotation is under way (each opens what
/// was wrapped to it). Never printed.
#[derive(Clone)]
pub struct MasterKey(Arc<[Held]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// One identity (`AGE-SECRET-KEY-1…`).
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        let identity = age::x25519::Identity::from_str(s.trim()).map_err(|_| VaultError::BadMasterKey)?;
        Ok(Self(Arc::from([Held::new(identity)])))
    }

    /// Every identity in an age identity file's text (comments and blank lines skipped); the
    /// first one wraps a vault that has none yet.
    pub fn parse_file(text: &str) -> Result<Self, VaultError> {
        let held = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .map(|l| age::x25519::Identity::from_str(l).map(Held::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| VaultError::BadMasterKey)?;
        if held.is_empty() {
            return Err(VaultError::BadMasterKey);
        }
        Ok(Self(held.into()))
    }

    /// `configured` is `OO_MASTER_KEY`: an identity (`AGE-SECRET-KEY-1…`) or a file holding one
    /// or more.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<(Self, MasterKeySource), VaultError> {
        if let Some(c) = configured {
            let text = if c.trim_start().starts_with("AGE-SECRET-KEY-") {
                c.to_owned()
            } else {
                std::fs::read_to_string(c)?
            };
            return Ok((Self::parse_file(&text)?, MasterKeySource::Configured));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            return Ok((Self::parse_file(&text)?, MasterKeySource::DataDir(path)));
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
        Self(Arc::from([Held::new(age::x25519::Identity::generate())]))
    }

    /// Both keys' identities: what a process holds while a rotation from `self` to `other` runs.
    pub fn and(&self, other: &MasterKey) -> MasterKey {
        let mut held: Vec<Held> = self.0.iter().map(|h| Held::new(h.identity.clone())).collect();
        for h in other.0.iter() {
            if !self.holds(&h.recipient) {
                held.push(Held::new(h.identity.clone()));
            }
        }
        Self(held.into())
    }

    /// The first identity in age's text form, for writing a key file. Handle with care.
    pub fn secret_string(&self) -> String {
        self.first().identity.to_string().expose_secret().to_owned()
    }

    /// Wraps a data key to the first identity, as the vault stores it (without its MAC).
    pub fn wrap_key(&self, key: &DataKey) -> Result<Vec<u8>, VaultError> {
        self.first().wrap(&key_plaintext(key))
    }

    /// Unwraps a data key wrapped by [`MasterKey::wrap_key`].
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        key_from_plaintext(&self.first().unwrap(wrapped)?)
    }

    /// The first identity's public half, recorded in `vault_master` by a new vault.
    pub fn recipient(&self) -> String {
        self.first().recipient.clone()
    }

    /// Whether this key holds the identity of `recipient`.
    pub fn holds(&self, recipient: &str) -> bool {
        self.held(recipient).is_some()
    }

    fn held(&self, recipient: &str) -> Option<&Held> {
        self.0.iter().find(|h| h.recipient == recipient)
    }

    fn first(&self) -> &Held {
        #[allow(clippy::indexing_slicing)] // never empty: every constructor makes at least one
        &self.0[0]
    }

    /// Wraps and authenticates a user's data key under the identity of `recipient`.
    fn seal_key(&self, recipient: &str, user_id: Uuid, key: &DataKey) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let held = self.held(recipient).ok_or(VaultError::StaleMaster)?;
        let wrapped = held.wrap(&key_plaintext(key))?;
        let mac = held.mac(
            &Bound::Key {
                user_id,
                key_id: key.key_id,
            },
            &wrapped,
        );
        Ok((wrapped, mac))
    }

    /// Checks and unwraps a row of `key_vault`.
    fn open_key(&self, user_id: Uuid, row: &KeyRow) -> Result<DataKey, VaultError> {
        let (Some(recipient), Some(mac)) = (&row.wrapped_for, &row.mac) else {
            return Err(VaultError::Forged);
        };
        let held = self.held(recipient).ok_or(VaultError::StaleMaster)?;
        held.verify(
            &Bound::Key {
                user_id,
                key_id: row.key_id,
            },
            &row.wrapped,
            mac,
        )?;
        let key = key_from_plaintext(&held.unwrap(&row.wrapped)?)?;
        if key.key_id != row.key_id {
            return Err(VaultError::Forged);
        }
        Ok(key)
    }

    fn seal_secret(&self, recipient: &str, name: &str, secret: &[u8]) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let held = self.held(recipient).ok_or(VaultError::StaleMaster)?;
        let wrapped = held.wrap(secret)?;
        let mac = held.mac(&Bound::Secret { name }, &wrapped);
        Ok((wrapped, mac))
    }

    fn open_secret(&self, name: &str, row: &SecretRow) -> Result<[u8; 32], VaultError> {
        let (Some(recipient), Some(mac)) = (&row.wrapped_for, &row.mac) else {
            return Err(VaultError::Forged);
        };
        let held = self.held(recipient).ok_or(VaultError::StaleMaster)?;
        held.verify(&Bound::Secret { name }, &row.wrapped, mac)?;
        held.unwrap(&row.wrapped)?.try_into().map_err(|_| VaultError::Unwrap)
    }
}

/// A row of `key_vault`.
#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: Uuid,
    wrapped: Vec<u8>,
    wrapped_for: Option<String>,
    mac: Option<Vec<u8>>,
}

/// A row of `key_vault` with its user.
#[derive(sqlx::FromRow)]
struct UserKeyRow {
    user_id: Uuid,
    #[sqlx(flatten)]
    row: KeyRow,
}

/// A row of `vault_secrets` with its name.
#[derive(sqlx::FromRow)]
struct NamedSecretRow {
    name: String,
    #[sqlx(flatten)]
    row: SecretRow,
}

/// A row of `vault_secrets`.
#[derive(sqlx::FromRow)]
struct SecretRow {
    wrapped: Vec<u8>,
    wrapped_for: Option<String>,
    mac: Option<Vec<u8>>,
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

/// `vault_master`'s one row.
#[derive(sqlx::FromRow)]
struct MasterRow {
    recipient: String,
    previous_recipient: Option<String>,
    authenticated: bool,
}

const MASTER_ROW: &str = "SELECT recipient, previous_recipient, authenticated FROM vault_master WHERE id = 1";

impl Vault {
    /// Opens the vault, creating the service's secrets on first use. Refuses a master key that
    /// is not the vault's current one, or that lacks the previous one while a rotation runs.
    pub async fn open(pool: PgPool, master: MasterKey) -> Result<Self, VaultError> {
        sqlx::query(
            "INSERT INTO vault_master (id, recipient, authenticated) VALUES (1, $1, true) ON CONFLICT (id) DO NOTHING",
        )
        .bind(master.recipient())
        .execute(&pool)
        .await?;
        let row: MasterRow = sqlx::query_as(MASTER_ROW).fetch_one(&pool).await?;
        if !master.holds(&row.recipient) {
            return Err(VaultError::StaleMaster);
        }
        if row.previous_recipient.as_deref().is_some_and(|p| !master.holds(p)) {
            return Err(VaultError::RotationUnderway);
        }
        if !row.authenticated {
            authenticate_legacy_rows(&pool, &master).await?;
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
        let key = DataKey::generate();
        let (wrapped, mac) = self.master.seal_key(&current, user_id.as_uuid(), &key)?;
        sqlx::query("INSERT INTO key_vault (user_id, key_id, wrapped, wrapped_for, mac) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id.as_uuid())
            .bind(key.key_id)
            .bind(wrapped)
            .bind(&current)
            .bind(mac)
            .execute(conn)
            .await?;
        Ok(key)
    }

    /// Remembers a key created in a transaction that has now committed.
    pub fn remember(&self, user_id: UserId, key: DataKey) {
        self.cache_put(user_id, key);
    }

    /// The user's data key, or `None` if it was destroyed (or never existed). A key that fails
    /// its authentication is refused ([`VaultError::Forged`]) and logged.
    pub async fn key_for(&self, user_id: UserId) -> Result<Option<DataKey>, VaultError> {
        if let Some(k) = self.cache.read().ok().and_then(|c| c.get(&user_id).cloned()) {
            return Ok(Some(k));
        }
        let row: Option<KeyRow> =
            sqlx::query_as("SELECT key_id, wrapped, wrapped_for, mac FROM key_vault WHERE user_id = $1")
                .bind(user_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key = self.master.open_key(user_id.as_uuid(), &row).inspect_err(|e| {
            if matches!(e, VaultError::Forged) {
                tracing::error!(user = %user_id, "a data key in the vault fails its authentication: refused");
            }
        })?;
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
    let current: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let fresh = DataKey::generate();
    let (wrapped, mac) = master.seal_secret(&current, name, fresh.secret_bytes())?;
    sqlx::query(
        "INSERT INTO vault_secrets (name, wrapped, wrapped_for, mac) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(wrapped)
    .bind(&current)
    .bind(mac)
    .execute(pool)
    .await?;
    let row: SecretRow = sqlx::query_as("SELECT wrapped, wrapped_for, mac FROM vault_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    master.open_secret(name, &row).inspect_err(|e| {
        if matches!(e, VaultError::Forged) {
            tracing::error!(
                secret = name,
                "a service secret in the vault fails its authentication: refused"
            );
        }
    })
}

/// Authenticates, once, the rows written before keys were authenticated (migration 0010): each
/// must unwrap under the current master key (and a data key must carry its row's key id). One
/// transaction, once per database.
async fn authenticate_legacy_rows(pool: &PgPool, master: &MasterKey) -> Result<(), VaultError> {
    let mut tx = pool.begin().await?;
    let row: MasterRow = sqlx::query_as(&format!("{MASTER_ROW} FOR UPDATE"))
        .fetch_one(&mut *tx)
        .await?;
    if row.authenticated {
        return Ok(());
    }
    let held = master.held(&row.recipient).ok_or(VaultError::StaleMaster)?;
    sqlx::query("LOCK TABLE key_vault, vault_secrets IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let keys: Vec<(Uuid, Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT user_id, key_id, wrapped FROM key_vault WHERE mac IS NULL")
            .fetch_all(&mut *tx)
            .await?;
    for (user_id, key_id, wrapped) in &keys {
        let key = key_from_plaintext(&held.unwrap(wrapped)?)?;
        if key.key_id != *key_id {
            return Err(VaultError::Forged);
        }
        sqlx::query("UPDATE key_vault SET wrapped_for = $2, mac = $3 WHERE user_id = $1")
            .bind(user_id)
            .bind(&row.recipient)
            .bind(held.mac(
                &Bound::Key {
                    user_id: *user_id,
                    key_id: *key_id,
                },
                wrapped,
            ))
            .execute(&mut *tx)
            .await?;
    }
    let secrets: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT name, wrapped FROM vault_secrets WHERE mac IS NULL")
        .fetch_all(&mut *tx)
        .await?;
    for (name, wrapped) in &secrets {
        held.unwrap(wrapped)?;
        sqlx::query("UPDATE vault_secrets SET wrapped_for = $2, mac = $3 WHERE name = $1")
            .bind(name)
            .bind(&row.recipient)
            .bind(held.mac(&Bound::Secret { name }, wrapped))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE vault_master SET authenticated = true WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(
        keys = keys.len(),
        secrets = secrets.len(),
        "authenticated the vault's keys written before keys carried a MAC"
    );
    Ok(())
}

/// A master-key rotation under way: every live data key and the service's secrets are re-wrapped
/// to the new master key in short transactions of [`ROTATION_BATCH`] keys, so that no reader of
/// the log waits on it (ADR 0002: readers stop below the oldest transaction in flight). While it
/// runs, `vault_master` names both keys and every process must hold both; an interrupted rotation
/// is resumed by starting it again with the same keys.
pub struct Rotation {
    pool: PgPool,
    /// The old key and the new one.
    keys: MasterKey,
    new: String,
    /// Re-wrapped so far by this rotation.
    pub keys_rewrapped: usize,
    pub secrets_rewrapped: usize,
}

impl Rotation {
    /// Records the new master key as the current one and the old as the previous one (in one
    /// short transaction that waits for registrations in flight and makes every later one wrap to
    /// the new key), then re-wraps the service's secrets.
    pub async fn begin(pool: &PgPool, old: &MasterKey, new: &MasterKey) -> Result<Self, VaultError> {
        let keys = old.and(new);
        let new_recipient = new.recipient();
        let mut tx = pool.begin().await?;
        let row: MasterRow = sqlx::query_as(&format!("{MASTER_ROW} FOR UPDATE"))
            .fetch_one(&mut *tx)
            .await?;
        if row.recipient == new_recipient {
            // Resuming (or already done): what is left is wrapped to the previous key.
            if row.previous_recipient.as_deref().is_some_and(|p| !keys.holds(p)) {
                return Err(VaultError::RotationUnderway);
            }
        } else {
            if row.previous_recipient.is_some() {
                return Err(VaultError::OtherRotation);
            }
            if !old.holds(&row.recipient) {
                return Err(VaultError::StaleMaster);
            }
            sqlx::query(
                "UPDATE vault_master SET previous_recipient = recipient, recipient = $1, updated_at = now() WHERE id = 1",
            )
            .bind(&new_recipient)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        let mut tx = pool.begin().await?;
        let secrets: Vec<NamedSecretRow> = sqlx::query_as(
            "SELECT name, wrapped, wrapped_for, mac FROM vault_secrets \
             WHERE wrapped_for IS DISTINCT FROM $1 FOR UPDATE",
        )
        .bind(&new_recipient)
        .fetch_all(&mut *tx)
        .await?;
        for NamedSecretRow { name, row } in &secrets {
            let secret = keys.open_secret(name, row)?;
            let (wrapped, mac) = keys.seal_secret(&new_recipient, name, &secret)?;
            sqlx::query("UPDATE vault_secrets SET wrapped = $2, wrapped_for = $3, mac = $4 WHERE name = $1")
                .bind(name)
                .bind(wrapped)
                .bind(&new_recipient)
                .bind(mac)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Self {
            pool: pool.clone(),
            keys,
            new: new_recipient,
            keys_rewrapped: 0,
            secrets_rewrapped: secrets.len(),
        })
    }

    /// How many data keys are still wrapped to another key than the new one.
    pub async fn remaining(&self) -> Result<i64, VaultError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM key_vault WHERE wrapped_for IS DISTINCT FROM $1")
                .bind(&self.new)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Re-wraps up to `batch` data keys in one transaction; 0 when none is left.
    pub async fn step(&mut self, batch: i64) -> Result<usize, VaultError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<UserKeyRow> = sqlx::query_as(
            "SELECT user_id, key_id, wrapped, wrapped_for, mac FROM key_vault \
             WHERE wrapped_for IS DISTINCT FROM $1 ORDER BY user_id LIMIT $2 FOR UPDATE",
        )
        .bind(&self.new)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for UserKeyRow { user_id, row } in &rows {
            let user_id = *user_id;
            let key = self.keys.open_key(user_id, row)?;
            let (wrapped, mac) = self.keys.seal_key(&self.new, user_id, &key)?;
            sqlx::query("UPDATE key_vault SET wrapped = $2, wrapped_for = $3, mac = $4 WHERE user_id = $1")
                .bind(user_id)
                .bind(wrapped)
                .bind(&self.new)
                .bind(mac)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.keys_rewrapped += rows.len();
        Ok(rows.len())
    }

    /// Ends the rotation once every key is under the new master key: from then on the old one
    /// opens nothing in the vault and may be destroyed.
    pub async fn finish(self) -> Result<(usize, usize), VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM vault_master WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM key_vault WHERE wrapped_for IS DISTINCT FROM $1")
            .bind(&self.new)
            .fetch_one(&mut *tx)
            .await?;
        if left > 0 {
            return Err(VaultError::RotationUnderway);
        }
        sqlx::query(
            "UPDATE vault_master SET previous_recipient = NULL, updated_at = now() WHERE id = 1 AND recipient = $1",
        )
        .bind(&self.new)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((self.keys_rewrapped, self.secrets_rewrapped))
    }
}

/// Re-wraps every live data key and every service secret under `new`, in batches of `batch`, so
/// that the old master key can be destroyed: any copy of a key wrapped under it that survives
/// elsewhere (dead tuples, write-ahead log, backups) — a deleted user's included — becomes
/// unreadable with it. `progress` is told the keys done and the keys in all after each batch.
/// Returns how many keys and secrets were re-wrapped.
pub async fn rotate_master_key(
    pool: &PgPool,
    old: &MasterKey,
    new: &MasterKey,
    batch: i64,
    mut progress: impl FnMut(usize, usize),
) -> Result<(usize, usize), VaultError> {
    let mut rotation = Rotation::begin(pool, old, new).await?;
    let total = usize::try_from(rotation.remaining().await?).unwrap_or(0);
    while rotation.step(batch).await? > 0 {
        progress(rotation.keys_rewrapped, total.max(rotation.keys_rewrapped));
    }
    rotation.finish().await
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
