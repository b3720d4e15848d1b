//! People's connections to providers (Todoist), owned by the write side. A connector is a
//! process manager: it acts on the provider in reaction to requests and to the log, and records
//! every outcome as an event of the `Connection` aggregate.
//! - Connecting: the code is exchanged server-side and the token sealed, under the person's own
//!   data key, into the operational table `connections` (never into an event).
//! - Syncing ([`Connectors::sync`]): the provider's changed items become task signals through
//!   the same command as `POST /signals`, with ids derived from the item's state, so a replayed
//!   sync adds nothing; the sync cursor moves only once they are stored. One at a time per
//!   person (an advisory lock), many people at once ([`Connectors::run_syncs`]).
//! - Closing ([`Connectors::run_closer`]): a checkpointed consumer of the log turns a `done` on a
//!   provider's todo into `item_close` there, with the tip's id as the command's uuid, and
//!   records the outcome once per tip. An outage delays it; it never loses or repeats one.
//! - Disconnecting ([`Connectors::disconnect`], and [`hand_over_for_deletion`] for `DELETE /me`):
//!   the token moves to `pending_revocations`, sealed under oO's transit key, and the connection's
//!   row goes; [`Connectors::run_revoker`] revokes it at the provider until the provider confirms
//!   (or does not know the token), and records that.
//! - A provider that misbehaves: rate limits, 5xx, timeouts and nonsense back off per connection
//!   with jitter, behind a circuit breaker per provider; a refused token marks the connection
//!   broken (an event) and it is not tried again until the person reconnects.

use crate::aggregate::{CommandError, Meta, Repository};
use crate::cursor::Cursor;
use crate::sealing::{self, DataKey};
use crate::store::StoreError;
use crate::todoist::{ProviderError, Revoked, SyncPage, Todoist};
use crate::vault::{Vault, VaultError};
use crate::write_side::WriteSide;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use oo_domain::connection::{
    CloseOutcome, Connection, ConnectionCommand, ConnectionError, DisconnectReason, Provider, RevokeOutcome,
    SyncOutcome, stream_id,
};
use oo_domain::ids::{SignalId, TipId, UserId};
use oo_domain::signal::{ExternalId, Priority, SignalData, TaskSource, Text};
use oo_domain::signals::{MAX_SIGNALS_PER_COMMAND, NewSignal, SignalsEvent};
use oo_domain::tip::{CandidateKind, TipEvent};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The closer's checkpoint (in `checkpoints`, beside the projections').
pub const CLOSER: &str = "todoist_closer";
/// What seals a token waiting for its revocation (the vault's transit key, this purpose).
const REVOCATION_PURPOSE: &str = "oo.connections.revocation.v1";
/// The longest a failing connection waits between syncs.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// How the connectors run.
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    /// Between two background syncs of a connection (jittered by ±20%).
    pub sync_interval: Duration,
    /// Background syncs running at once, across people.
    pub parallel_syncs: usize,
    /// How often the background loops look for work.
    pub poll: Duration,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_secs(300),
            parallel_syncs: 4,
            poll: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("this connector is not configured")]
    NotConfigured,
    #[error("not connected")]
    NotConnected,
    #[error("the provider refused the connection's token; connect again")]
    Broken,
    #[error("the provider is failing; retry after {0:?}")]
    CircuitOpen(Duration),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Command(String),
    #[error("stored connection state is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for ConnectorError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::from_sqlx(e))
    }
}

impl<E: std::error::Error + 'static> From<CommandError<E>> for ConnectorError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Store(s) => Self::Store(s),
            CommandError::Vault(v) => Self::Vault(v),
            CommandError::NoKey => Self::NotConnected,
            other => Self::Command(other.to_string()),
        }
    }
}

/// A circuit breaker for one provider: after [`Breaker::THRESHOLD`] transient failures in a
/// row, calls are refused for a pause that doubles each time it opens again (up to 10 minutes);
/// after the pause one call is let through, and a success closes it.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    opened: u32,
    open_until: Option<std::time::Instant>,
}

impl Breaker {
    const THRESHOLD: u32 = 5;

    /// `Err(wait)` while open.
    pub fn check(&self) -> Result<(), Duration> {
        let state = self.state.lock().map_err(|_| Duration::from_secs(1))?;
        match state.open_until {
            Some(until) if until > std::time::Instant::now() => Err(until - std::time::Instant::now()),
            _ => Ok(()),
        }
    }

    pub fn success(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = BreakerState::default();
        }
    }

    pub fn failure(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failures += 1;
            if s.failures >= Self::THRESHOLD {
                let pause = Duration::from_secs(15u64 << s.opened.min(5)).min(Duration::from_secs(600));
                s.opened += 1;
                s.failures = 0;
                s.open_until = Some(std::time::Instant::now() + pause);
                tracing::warn!(
                    pause_seconds = pause.as_secs(),
                    "the provider keeps failing: its circuit is open"
                );
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.check().is_err()
    }
}

/// What `GET /integrations` shows of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionView {
    pub provider: Provider,
    /// `connected` or `broken`.
    pub status: String,
    pub connected_at: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncReport {
    /// Where the last signal it stored stands (`None`: it stored none).
    pub cursor: Option<Cursor>,
    pub tasks: u32,
    pub full: bool,
}

/// The connectors of one process.
#[derive(Clone)]
pub struct Connectors {
    write: WriteSide,
    pool: PgPool,
    /// Connections of their own for the per-person locks, which are held while the provider
    /// answers (seconds): never the requests' connections. At most as many locks at once as it
    /// has connections (`lock_slots`); the others wait their turn.
    locks: PgPool,
    lock_slots: Arc<tokio::sync::Semaphore>,
    /// One gate per person with work in this process.
    gates: Arc<Mutex<std::collections::HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>>,
    todoist: Option<Todoist>,
    breaker: Arc<Breaker>,
    settings: ConnectorSettings,
}

/// A connection's row.
struct Row {
    generation: i32,
    secrets: Vec<u8>,
    status: String,
    failures: i32,
}

impl Connectors {
    /// `locks`: a pool for the per-person locks (a few connections, apart from the requests').
    pub fn new(write: WriteSide, locks: PgPool, todoist: Option<Todoist>, settings: ConnectorSettings) -> Self {
        let pool = write.store.pool().clone();
        let slots = locks.options().get_max_connections() as usize;
        Self {
            write,
            pool,
            locks,
            lock_slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            gates: Arc::default(),
            todoist,
            breaker: Arc::default(),
            settings,
        }
    }

    pub fn todoist(&self) -> Option<&Todoist> {
        self.todoist.as_ref()
    }

    fn client(&self) -> Result<&Todoist, ConnectorError> {
        self.todoist.as_ref().ok_or(ConnectorError::NotConfigured)
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Completes a connection: exchanges `code` for a token, records `IntegrationConnected`, and
    /// keeps the token sealed under the person's key. The caller runs the first sync.
    pub async fn connect(&self, user: UserId, code: &str) -> Result<(), ConnectorError> {
        let client = self.client()?;
        let token = client.exchange(code).await?;
        let (lock, _gate) = self.lock(user).await?;
        let result = self.connect_locked(user, token).await;
        lock.release().await;
        result
    }

    /// Connecting again while connected is a disconnection (the old token revoked, its tasks
    /// dropped) followed by a new connection.
    async fn connect_locked(&self, user: UserId, token: SecretString) -> Result<(), ConnectorError> {
        let key = self.key_of(user).await?;
        let now = Utc::now();
        let id = stream_id(user, Provider::Todoist);
        if let Some(row) = self.row(user).await? {
            self.end(user, &row).await?;
        }
        let executed = self
            .write
            .connections
            .execute(
                &id,
                ConnectionCommand::Connect {
                    user_id: user,
                    provider: Provider::Todoist,
                    at: now,
                },
                Meta::new(now),
            )
            .await?;
        let generation = executed.state.generation as i32;
        let secrets = seal_secrets(&key, user, generation, &token, "*")?;
        sqlx::query(
            "INSERT INTO connections (user_id, provider, generation, secrets, status, connected_at, next_sync_at) \
             VALUES ($1, $2, $3, $4, 'connected', $5, $5 + make_interval(secs => $6)) \
             ON CONFLICT (user_id, provider) DO UPDATE SET \
             generation = EXCLUDED.generation, secrets = EXCLUDED.secrets, status = 'connected', \
             connected_at = EXCLUDED.connected_at, last_sync_at = NULL, last_outcome = NULL, failures = 0, \
             next_sync_at = EXCLUDED.next_sync_at",
        )
        .bind(user.as_uuid())
        .bind(Provider::Todoist.as_str())
        .bind(generation)
        .bind(secrets)
        .bind(now)
        // The first sync is the caller's (right after connecting); the background's comes later.
        .bind(jittered(self.settings.sync_interval).as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The person's connections.
    pub async fn list(&self, user: UserId) -> Result<Vec<ConnectionView>, ConnectorError> {
        type ViewRow = (String, String, DateTime<Utc>, Option<DateTime<Utc>>, Option<String>);
        let rows: Vec<ViewRow> = sqlx::query_as(
            "SELECT provider, status, connected_at, last_sync_at, last_outcome FROM connections \
             WHERE user_id = $1 ORDER BY provider",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(provider, status, connected_at, last_sync_at, last_outcome)| {
                Some(ConnectionView {
                    provider: Provider::parse(&provider)?,
                    status,
                    connected_at,
                    last_sync_at,
                    last_outcome,
                })
            })
            .collect())
    }

    /// Syncs the person's Todoist now (waiting for a sync already running for them).
    pub async fn sync(&self, user: UserId) -> Result<SyncReport, ConnectorError> {
        let client = self.client()?;
        let (lock, _gate) = self.lock(user).await?;
        let result = self.sync_locked(client, user).await;
        lock.release().await;
        result
    }

    async fn sync_locked(&self, client: &Todoist, user: UserId) -> Result<SyncReport, ConnectorError> {
        let id = stream_id(user, Provider::Todoist);
        let Some(row) = self.row(user).await? else {
            return Err(ConnectorError::NotConnected);
        };
        let state = self.write.connections.load(&id).await?.state;
        if !state.connected || state.generation as i32 != row.generation {
            // Disconnected (or reconnected) by a request that stopped before it removed the row.
            self.hand_over_row(user, &row).await?;
            return Err(ConnectorError::NotConnected);
        }
        if row.status == "broken" {
            return Err(ConnectorError::Broken);
        }
        let key = self.key_of(user).await?;
        let (token, sync_token) = open_secrets(&key, user, row.generation, &row.secrets)?;
        if let Err(wait) = self.breaker.check() {
            return Err(ConnectorError::CircuitOpen(wait));
        }
        let now = Utc::now();
        let page = match client.sync(&token, &sync_token).await {
            Ok(page) => {
                self.breaker.success();
                page
            }
            Err(e) => return Err(self.sync_failed(user, &row, e, now).await),
        };
        let full = page.full_sync;
        let (signals, skipped) = signals_of(&page, &key, row.generation, now);
        if skipped > 0 {
            tracing::warn!(skipped, "Todoist items without a usable id were left out");
        }
        // The cursor moves only once every signal is stored: a crash in between repeats the
        // same page, whose signals are then acknowledged as repeats.
        let mut tasks = 0u32;
        let mut cursor = None;
        for chunk in signals.chunks(MAX_SIGNALS_PER_COMMAND) {
            let executed = self.write.signals.record(user, chunk.to_vec(), Meta::new(now)).await?;
            tasks += executed.written.len() as u32;
            cursor = executed.cursor.or(cursor);
        }
        let secrets = seal_secrets(&key, user, row.generation, &token, &page.sync_token)?;
        let next = jittered(self.settings.sync_interval);
        sqlx::query(
            "UPDATE connections SET secrets = $3, last_sync_at = $4, last_outcome = 'synced', failures = 0, \
             next_sync_at = $4 + make_interval(secs => $5) WHERE user_id = $1 AND provider = $2 AND generation = $6",
        )
        .bind(user.as_uuid())
        .bind(Provider::Todoist.as_str())
        .bind(secrets)
        .bind(now)
        .bind(next.as_secs_f64())
        .bind(row.generation)
        .execute(&self.pool)
        .await?;
        self.record_sync(&id, SyncOutcome::Synced { tasks, full }, now).await?;
        Ok(SyncReport { cursor, tasks, full })
    }

    /// Records a failed sync and schedules the next one; returns the error to give back.
    async fn sync_failed(&self, user: UserId, row: &Row, e: ProviderError, now: DateTime<Utc>) -> ConnectorError {
        let id = stream_id(user, Provider::Todoist);
        // Only a refused token breaks the connection (until the person connects again; never
        // retried in a loop). Anything else backs off and is tried again.
        let outcome = if e.refuses_token() {
            SyncOutcome::Broken { reason: e.code() }
        } else {
            if e.is_transient() {
                self.breaker.failure();
            }
            SyncOutcome::Failed { reason: e.code() }
        };
        let wait = match &e {
            ProviderError::RateLimited {
                retry_after: Some(after),
            } => backoff(self.settings.sync_interval, row.failures as u32 + 1).max(*after),
            _ => backoff(self.settings.sync_interval, row.failures as u32 + 1),
        };
        // Of this generation only: a reconnection meanwhile is not broken by its predecessor.
        let updated = sqlx::query(
            "UPDATE connections SET status = CASE WHEN $6 THEN 'broken' ELSE status END, last_sync_at = $3, \
             last_outcome = $4, failures = failures + 1, next_sync_at = $3 + make_interval(secs => $5) \
             WHERE user_id = $1 AND provider = $2 AND generation = $7",
        )
        .bind(user.as_uuid())
        .bind(Provider::Todoist.as_str())
        .bind(now)
        .bind(match &outcome {
            SyncOutcome::Broken { reason } => format!("broken: {reason}"),
            _ => format!("failed: {}", e.code()),
        })
        .bind(wait.as_secs_f64())
        .bind(matches!(outcome, SyncOutcome::Broken { .. }))
        .bind(row.generation)
        .execute(&self.pool)
        .await;
        match updated {
            Err(db) => return db.into(),
            Ok(done) if done.rows_affected() == 0 => return ConnectorError::NotConnected,
            Ok(_) => {}
        }
        let broken = matches!(outcome, SyncOutcome::Broken { .. });
        if let Err(record) = self.record_sync(&id, outcome, now).await {
            return record;
        }
        if broken { ConnectorError::Broken } else { e.into() }
    }

    async fn record_sync(&self, id: &str, outcome: SyncOutcome, now: DateTime<Utc>) -> Result<(), ConnectorError> {
        match self
            .write
            .connections
            .execute(id, ConnectionCommand::RecordSync { outcome, at: now }, Meta::new(now))
            .await
        {
            Ok(_) | Err(CommandError::Domain(ConnectionError::NotConnected)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The person's lock, on the locks' pool, once a slot is free. Requests of one person queue
    /// on a gate of this process first, so that they take one slot, not all.
    async fn lock(&self, user: UserId) -> Result<(PersonLock, tokio::sync::OwnedMutexGuard<()>), ConnectorError> {
        let gate = {
            let mut gates = self
                .gates
                .lock()
                .map_err(|_| ConnectorError::Corrupt("the gates are poisoned".into()))?;
            gates.retain(|_, g| Arc::strong_count(g) > 1);
            gates.entry(user).or_default().clone()
        };
        let gate = gate.lock_owned().await;
        let slot = self
            .lock_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnectorError::Corrupt("the lock slots are closed".into()))?;
        let mut lock = PersonLock::take(&self.locks, user).await?;
        lock.slot = Some(slot);
        Ok((lock, gate))
    }

    /// The person's data key (none: deleted, so not connected either).
    async fn key_of(&self, user: UserId) -> Result<DataKey, ConnectorError> {
        self.write
            .vault
            .key_for(user)
            .await?
            .ok_or(ConnectorError::NotConnected)
    }

    async fn row(&self, user: UserId) -> Result<Option<Row>, ConnectorError> {
        let row: Option<(i32, Vec<u8>, String, i32)> = sqlx::query_as(
            "SELECT generation, secrets, status, failures FROM connections WHERE user_id = $1 AND provider = $2",
        )
        .bind(user.as_uuid())
        .bind(Provider::Todoist.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(generation, secrets, status, failures)| Row {
            generation,
            secrets,
            status,
            failures,
        }))
    }

    /// Disconnects the person's Todoist: records `IntegrationDisconnected`, then hands the token
    /// over for revocation and forgets the connection (its token and sync state).
    pub async fn disconnect(&self, user: UserId) -> Result<Option<Cursor>, ConnectorError> {
        // After any sync of theirs: nothing it stores can come after the disconnection.
        let (lock, _gate) = self.lock(user).await?;
        let result = self.disconnect_locked(user).await;
        lock.release().await;
        result
    }

    async fn disconnect_locked(&self, user: UserId) -> Result<Option<Cursor>, ConnectorError> {
        let Some(row) = self.row(user).await? else {
            return Err(ConnectorError::NotConnected);
        };
        self.end(user, &row).await
    }

    /// Ends a connection: records `IntegrationDisconnected` (by the person; nothing when the
    /// aggregate says it ended already), then hands the token over for revocation and forgets
    /// the row.
    async fn end(&self, user: UserId, row: &Row) -> Result<Option<Cursor>, ConnectorError> {
        let now = Utc::now();
        let executed = self
            .write
            .connections
            .execute(
                &stream_id(user, Provider::Todoist),
                ConnectionCommand::Disconnect {
                    reason: DisconnectReason::ByPerson,
                    at: now,
                },
                Meta::new(now),
            )
            .await?;
        self.hand_over_row(user, row).await?;
        Ok(executed.cursor)
    }

    /// Moves a connection's token to `pending_revocations` and deletes its row, in one
    /// transaction.
    async fn hand_over_row(&self, user: UserId, row: &Row) -> Result<(), ConnectorError> {
        let key = self.write.vault.key_for(user).await?;
        hand_over(
            &self.pool,
            &self.write.vault,
            key.as_ref(),
            user,
            row.generation,
            &row.secrets,
        )
        .await
    }

    /// Before `DELETE /me` shreds the person: disconnects every connection of theirs and tries
    /// to revoke the tokens at once (for at most `within`); a revocation that fails stays
    /// pending, sealed under oO's own key, for [`Connectors::run_revoker`].
    pub async fn prepare_deletion(&self, user: UserId, within: Duration) -> Result<(), ConnectorError> {
        let now = Utc::now();
        hand_over_for_deletion(
            &self.pool,
            &self.write.vault,
            &self.write.connections,
            user,
            Meta::new(now),
        )
        .await?;
        match tokio::time::timeout(within, self.revoke_pending_of(user)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "a token's revocation failed during a deletion; it will be retried");
                Ok(())
            }
            Err(_) => {
                tracing::info!("revoking tokens during a deletion took too long; they will be retried");
                Ok(())
            }
        }
    }

    /// Tries every pending revocation of `user` now (`DELETE /me` does before it shreds); what
    /// fails stays for [`Connectors::run_revoker`].
    pub async fn revoke_pending_of(&self, user: UserId) -> Result<(), ConnectorError> {
        let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM pending_revocations WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_all(&self.pool)
            .await?;
        for (id,) in ids {
            self.revoke_one(id).await?;
        }
        Ok(())
    }

    /// Revokes one pending token; `Ok(false)` when it must be tried again later.
    async fn revoke_one(&self, id: Uuid) -> Result<bool, ConnectorError> {
        let Some(client) = self.todoist.as_ref() else {
            return Ok(false);
        };
        // Claimed with a lease, in a statement of its own: no transaction stays open while
        // Todoist answers (it would hold back every reader of the log), and a process that dies
        // meanwhile leaves the row to be claimed again once the lease is over.
        let lease = client.config().timeout.saturating_mul(3).max(Duration::from_secs(60));
        let row: Option<(Uuid, Vec<u8>, i32)> = sqlx::query_as(
            "UPDATE pending_revocations SET next_attempt_at = now() + make_interval(secs => $2) \
             WHERE id = $1 AND next_attempt_at <= now() RETURNING user_id, token, attempts",
        )
        .bind(id)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        let Some((user, sealed, attempts)) = row else {
            return Ok(true);
        };
        let user = UserId::from_uuid(user);
        let token = self
            .write
            .vault
            .open_transit(REVOCATION_PURPOSE, &sealed)
            .and_then(|f| {
                f.get("token")
                    .and_then(Value::as_str)
                    .map(|t| SecretString::from(t.to_owned()))
            });
        let outcome = match token {
            None => {
                tracing::error!("a pending revocation cannot be opened; it is dropped");
                None
            }
            Some(token) => match client.revoke(&token).await {
                Ok(Revoked::Revoked) => Some(RevokeOutcome::Revoked),
                Ok(Revoked::UnknownToken) => Some(RevokeOutcome::UnknownToken),
                Err(e) => {
                    // From four polls (20 s by default), doubling, at most an hour.
                    let wait = jittered(self.settings.poll.saturating_mul(4u32 << (attempts as u32).min(10)))
                        .min(Duration::from_secs(3600));
                    tracing::info!(error = %e, attempts = attempts + 1, "a token's revocation failed; it will be retried");
                    sqlx::query(
                        "UPDATE pending_revocations SET attempts = attempts + 1, \
                         next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(wait.as_secs_f64())
                    .execute(&self.pool)
                    .await?;
                    return Ok(false);
                }
            },
        };
        // Recorded first: a crash before the row goes revokes again, which Todoist answers
        // "unknown token" and the aggregate records nothing twice.
        if let Some(outcome) = outcome {
            let now = Utc::now();
            self.write
                .connections
                .execute(
                    &stream_id(user, Provider::Todoist),
                    ConnectionCommand::RecordRevocation { outcome, at: now },
                    Meta::new(now),
                )
                .await?;
        }
        sqlx::query("DELETE FROM pending_revocations WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// The background revoker: due pending revocations, until `shutdown`.
    pub async fn run_revoker(self, shutdown: CancellationToken) {
        loop {
            let due: Result<Vec<(Uuid,)>, sqlx::Error> = sqlx::query_as(
                "SELECT id FROM pending_revocations WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 20",
            )
            .fetch_all(&self.pool)
            .await;
            match due {
                Ok(ids) => {
                    for (id,) in ids {
                        if let Err(e) = self.revoke_one(id).await {
                            tracing::warn!(error = %e, "revoking a token failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read pending revocations"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// The background syncs: every connection whose time has come, at most
    /// `parallel_syncs` at once, until `shutdown`.
    pub async fn run_syncs(self, shutdown: CancellationToken) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.settings.parallel_syncs.max(1)));
        loop {
            if self.todoist.is_some() && !self.breaker.is_open() {
                // Claimed: their next sync is put off by an interval now, so that one that fails
                // before it records anything (a store error, say) is not tried again at every
                // poll, and two servers do not both take it. A sync sets the real next time.
                let due: Result<Vec<(Uuid,)>, sqlx::Error> = sqlx::query_as(
                    "UPDATE connections SET next_sync_at = now() + make_interval(secs => $1) \
                     WHERE (user_id, provider) IN (SELECT user_id, provider FROM connections \
                       WHERE status = 'connected' AND next_sync_at <= now() ORDER BY next_sync_at LIMIT 100 \
                       FOR UPDATE SKIP LOCKED) RETURNING user_id",
                )
                .bind(jittered(self.settings.sync_interval).as_secs_f64())
                .fetch_all(&self.pool)
                .await;
                match due {
                    Ok(users) => {
                        let mut running = tokio::task::JoinSet::new();
                        for (user,) in users {
                            let Ok(slot) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let this = self.clone();
                            running.spawn(async move {
                                let _slot = slot;
                                let user = UserId::from_uuid(user);
                                match this.sync(user).await {
                                    Ok(_) | Err(ConnectorError::NotConnected | ConnectorError::Broken) => {}
                                    Err(ConnectorError::CircuitOpen(_)) => {}
                                    Err(e) => tracing::info!(error = %e, "a background sync failed"),
                                }
                            });
                        }
                        while running.join_next().await.is_some() {}
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the connections due for a sync"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// The closer: follows the log from its checkpoint and closes at Todoist each todo of
    /// Todoist's that got a `done`, until `shutdown`.
    pub async fn run_closer(self, shutdown: CancellationToken) {
        let mut pause = self.settings.poll;
        loop {
            let wait = match self.close_pass().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.settings.poll,
                Err(e) => {
                    tracing::info!(error = %e, "closing tasks at Todoist is held up; retrying");
                    let _ = sqlx::query("UPDATE checkpoints SET last_error = $2, updated_at = now() WHERE name = $1")
                        .bind(CLOSER)
                        .bind(e.to_string())
                        .execute(&self.pool)
                        .await;
                    pause = (pause * 2).min(Duration::from_secs(300));
                    jittered(pause)
                }
            };
            if wait.is_zero() {
                pause = self.settings.poll;
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass of the closer over up to 100 reactions; `Ok(true)` when there may be more.
    pub async fn close_pass(&self) -> Result<bool, ConnectorError> {
        sqlx::query("INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(CLOSER)
            .execute(&self.pool)
            .await?;
        let (tx_id, position): (String, i64) =
            sqlx::query_as("SELECT tx_id::text, position FROM checkpoints WHERE name = $1")
                .bind(CLOSER)
                .fetch_one(&self.pool)
                .await?;
        let mut at = Cursor {
            tx_id: tx_id
                .parse()
                .map_err(|_| ConnectorError::Corrupt("checkpoint".into()))?,
            position,
        };
        // Every reaction before this head is visible to the read below (its horizon is at
        // least as far): once they are handled, the checkpoint may move past the other events.
        let head = crate::store::safe_head(&self.pool).await?;
        let events = {
            let mut conn = self.pool.acquire().await?;
            crate::store::read_of_types_after(&mut conn, at, 100, &["TipReacted"]).await?
        };
        let more = events.len() == 100;
        for event in events {
            // An outage stops the pass here: the checkpoint stays before this reaction.
            self.close_for(&event).await?;
            at = event.cursor;
            sqlx::query(
                "UPDATE checkpoints SET tx_id = $2::text::xid8, position = $3, events_applied = events_applied + 1, \
                 last_error = NULL, updated_at = now() WHERE name = $1",
            )
            .bind(CLOSER)
            .bind(at.tx_id.to_string())
            .bind(at.position)
            .execute(&self.pool)
            .await?;
        }
        if !more && head > at {
            sqlx::query(
                "UPDATE checkpoints SET tx_id = $2::text::xid8, position = $3, last_error = NULL, updated_at = now() \
                 WHERE name = $1",
            )
            .bind(CLOSER)
            .bind(head.tx_id.to_string())
            .bind(head.position)
            .execute(&self.pool)
            .await?;
        }
        Ok(more)
    }

    /// Acts on one `TipReacted`.
    async fn close_for(&self, event: &crate::store::StoredEvent) -> Result<(), ConnectorError> {
        let TipEvent::TipReacted {
            tip_id,
            user_id,
            reaction,
            ..
        } = event
            .decode::<TipEvent>()
            .map_err(|e| ConnectorError::Corrupt(e.to_string()))?
        else {
            return Ok(());
        };
        if reaction != oo_domain::reward::Reaction::Done {
            return Ok(());
        }
        let Some(external_id) = self.todo_of(tip_id).await? else {
            return Ok(());
        };
        let Some((signal_id, source)) = self.latest_task_signal(user_id, &external_id).await? else {
            return Ok(());
        };
        if source != TaskSource::Todoist {
            return Ok(());
        }
        let id = stream_id(user_id, Provider::Todoist);
        let now = Utc::now();
        let record = |outcome: CloseOutcome| ConnectionCommand::RecordClose {
            user_id,
            provider: Provider::Todoist,
            tip_id,
            external_id: external_id.clone(),
            outcome,
            at: now,
        };
        let state = self.write.connections.load(&id).await?.state;
        if state.closed.contains(&tip_id) {
            return Ok(());
        }
        // Provided by the live connection: its generation is in the signal's id.
        let row = self.row(user_id).await?;
        let live = row.as_ref().filter(|r| {
            state.connected
                && r.generation as u32 == state.generation
                && generation_of(&signal_id) == Some(state.generation)
        });
        let outcome = match (live, self.todoist.as_ref()) {
            (Some(row), Some(client)) if row.status == "connected" => {
                let Some(key) = self.write.vault.key_for(user_id).await? else {
                    return Ok(());
                };
                let (token, _) = open_secrets(&key, user_id, row.generation, &row.secrets)?;
                if let Err(wait) = self.breaker.check() {
                    return Err(ConnectorError::CircuitOpen(wait));
                }
                match client.close(&token, &external_id, tip_id.as_uuid()).await {
                    Ok(()) => {
                        self.breaker.success();
                        CloseOutcome::Closed
                    }
                    Err(ProviderError::NotFound) => CloseOutcome::NotFound,
                    Err(e) if e.is_transient() => {
                        self.breaker.failure();
                        return Err(e.into());
                    }
                    Err(e) if e.refuses_token() => {
                        let _ = self.sync_failed(user_id, row, e, now).await;
                        CloseOutcome::Broken
                    }
                    // This one close is refused (the token is fine): recorded, not retried.
                    Err(_) => CloseOutcome::Refused,
                }
            }
            (Some(_), Some(_)) => CloseOutcome::Broken,
            // Not configured here: another process may be; leave the reaction for it.
            (_, None) => return Err(ConnectorError::NotConfigured),
            (None, _) => CloseOutcome::NoConnection,
        };
        self.write
            .connections
            .execute(&id, record(outcome), Meta::new(now))
            .await?;
        Ok(())
    }

    /// The todo a tip showed (its external id), if it showed one.
    async fn todo_of(&self, tip: TipId) -> Result<Option<String>, ConnectorError> {
        let Some(served) = crate::store::read_event(&self.pool, "tip", &tip.to_string(), 1).await? else {
            return Ok(None);
        };
        let TipEvent::TipServed(d) = served
            .decode::<TipEvent>()
            .map_err(|e| ConnectorError::Corrupt(e.to_string()))?
        else {
            return Ok(None);
        };
        Ok(d.candidates
            .get(d.chosen)
            .filter(|c| c.kind == CandidateKind::Todo)
            .and_then(|c| c.candidate_id.strip_prefix("todo:"))
            .map(str::to_owned))
    }

    /// The id and source of the latest task signal of `user` for `external_id`.
    async fn latest_task_signal(
        &self,
        user: UserId,
        external_id: &str,
    ) -> Result<Option<(String, TaskSource)>, ConnectorError> {
        let payload: Option<String> = sqlx::query_scalar(
            "SELECT payload::text FROM events WHERE user_id = $1 AND event_type = 'SignalRecorded' \
             AND payload->'SignalRecorded'->'data'->>'kind' = 'task' \
             AND payload->'SignalRecorded'->'data'->>'external_id' = $2 \
             ORDER BY tx_id DESC, position DESC LIMIT 1",
        )
        .bind(user.as_uuid())
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let event: SignalsEvent = serde_json::from_str(&payload).map_err(|e| ConnectorError::Corrupt(e.to_string()))?;
        let SignalsEvent::SignalRecorded { signal_id, data, .. } = event;
        Ok(match data {
            SignalData::Task { source, .. } => Some((signal_id.as_str().to_owned(), source)),
            _ => None,
        })
    }
}

/// Before a deletion destroys the person's key: records the disconnection of each of their
/// connections and hands the tokens over for revocation (sealed under oO's transit key), so that
/// they are revoked even though the person's key is gone. Rows whose token can no longer be
/// opened (the key is gone already: a deletion resumed) are simply removed.
pub async fn hand_over_for_deletion(
    pool: &PgPool,
    vault: &Vault,
    connections: &Repository<Connection>,
    user: UserId,
    meta: Meta,
) -> Result<(), ConnectorError> {
    let key = vault.key_for(user).await?;
    let lock = PersonLock::take(pool, user).await?;
    let result = async {
        let rows: Vec<(String, i32, Vec<u8>)> =
            sqlx::query_as("SELECT provider, generation, secrets FROM connections WHERE user_id = $1")
                .bind(user.as_uuid())
                .fetch_all(pool)
                .await?;
        hand_over_rows(pool, vault, connections, user, meta, rows, key.as_ref()).await
    }
    .await;
    lock.release().await;
    result
}

async fn hand_over_rows(
    pool: &PgPool,
    vault: &Vault,
    connections: &Repository<Connection>,
    user: UserId,
    meta: Meta,
    rows: Vec<(String, i32, Vec<u8>)>,
    key: Option<&DataKey>,
) -> Result<(), ConnectorError> {
    for (provider, generation, secrets) in rows {
        let Some(provider) = Provider::parse(&provider) else {
            continue;
        };
        match connections
            .execute(
                &stream_id(user, provider),
                ConnectionCommand::Disconnect {
                    reason: DisconnectReason::Deletion,
                    at: meta.now,
                },
                meta,
            )
            .await
        {
            Ok(_) | Err(CommandError::Domain(_)) => {}
            Err(e) => return Err(e.into()),
        }
        hand_over(pool, vault, key, user, generation, &secrets).await?;
    }
    Ok(())
}

/// One person's connector work at a time, across processes: a session advisory lock, held on a
/// connection of its own until released. Dropped without [`PersonLock::release`] (a request
/// that timed out, a cancelled task, even while still waiting for the lock), the connection is
/// closed rather than returned to the pool, which ends the session and its lock with it.
struct PersonLock {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    id: String,
    released: bool,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PersonLock {
    async fn take(pool: &PgPool, user: UserId) -> Result<Self, ConnectorError> {
        let mut lock = Self {
            conn: pool.acquire().await?,
            id: stream_id(user, Provider::Todoist),
            released: false,
            slot: None,
        };
        sqlx::query("SELECT pg_advisory_lock(hashtext('oo.connector.' || $1))")
            .bind(&lock.id)
            .execute(&mut *lock.conn)
            .await?;
        Ok(lock)
    }

    async fn release(mut self) {
        let released = sqlx::query("SELECT pg_advisory_unlock(hashtext('oo.connector.' || $1))")
            .bind(&self.id)
            .execute(&mut *self.conn)
            .await;
        self.released = released.is_ok();
    }
}

impl Drop for PersonLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

async fn hand_over(
    pool: &PgPool,
    vault: &Vault,
    key: Option<&DataKey>,
    user: UserId,
    generation: i32,
    secrets: &[u8],
) -> Result<(), ConnectorError> {
    let token = key
        .and_then(|k| open_secrets(k, user, generation, secrets).ok())
        .map(|(t, _)| t);
    let mut tx = pool.begin().await?;
    if let Some(token) = token {
        let mut fields = Map::new();
        fields.insert("token".into(), Value::String(token.expose_secret().to_owned()));
        let sealed = vault
            .seal_transit(REVOCATION_PURPOSE, &fields)
            .ok_or_else(|| ConnectorError::Corrupt("cannot seal a token for its revocation".into()))?;
        sqlx::query("INSERT INTO pending_revocations (id, user_id, provider, token) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(user.as_uuid())
            .bind(Provider::Todoist.as_str())
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM connections WHERE user_id = $1 AND provider = $2 AND generation = $3")
        .bind(user.as_uuid())
        .bind(Provider::Todoist.as_str())
        .bind(generation)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// What the secrets of a connection are bound to (the associated data of their seal).
fn secrets_id(user: UserId, generation: i32) -> Uuid {
    let digest = Sha256::digest(format!("oo.connection.secrets.v1:{user}:todoist:{generation}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn seal_secrets(
    key: &DataKey,
    user: UserId,
    generation: i32,
    token: &SecretString,
    sync_token: &str,
) -> Result<Vec<u8>, ConnectorError> {
    let mut fields = Map::new();
    fields.insert("token".into(), json!(token.expose_secret()));
    fields.insert("sync_token".into(), json!(sync_token));
    sealing::seal(key, secrets_id(user, generation), &fields)
        .map(|s| s.to_bytes())
        .map_err(|e| ConnectorError::Corrupt(e.to_string()))
}

fn open_secrets(
    key: &DataKey,
    user: UserId,
    generation: i32,
    bytes: &[u8],
) -> Result<(SecretString, String), ConnectorError> {
    let sealed = sealing::Sealed::from_bytes(bytes).map_err(|e| ConnectorError::Corrupt(e.to_string()))?;
    let fields = sealing::open(key, secrets_id(user, generation), &sealed)
        .map_err(|e| ConnectorError::Corrupt(e.to_string()))?;
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    match (text("token"), text("sync_token")) {
        (Some(token), Some(sync)) => Ok((SecretString::from(token), sync)),
        _ => Err(ConnectorError::Corrupt("a connection's secrets lack a field".into())),
    }
}

/// The task signals of a sync page, and how many items were left out (no usable id). A signal's
/// id is `td{generation}-` + a keyed digest of the item's state under the person's data key: the
/// same state gives the same id (a replayed sync stores nothing twice), a change a new one, and
/// nothing of the task's text can be read from the id (the key goes with the person).
pub fn signals_of(page: &SyncPage, key: &DataKey, generation: i32, now: DateTime<Utc>) -> (Vec<NewSignal>, usize) {
    let mut skipped = 0;
    let mut out = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let Ok(external_id) = ExternalId::parse(&item.id) else {
            skipped += 1;
            continue;
        };
        let due = item.due.as_ref().and_then(|d| d.to_utc());
        let completed = item.checked || item.is_deleted;
        let priority = Priority::parse(item.priority.clamp(1, 4)).unwrap_or_else(|_| lowest_priority());
        let title = task_title(&item.content);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.secret_bytes()).unwrap_or_else(|_| unreachable!());
        for part in [
            item.id.as_str(),
            item.content.as_str(),
            &item.priority.to_string(),
            item.due.as_ref().map_or("", |d| d.date.as_str()),
            if item.checked { "checked" } else { "open" },
            if item.is_deleted { "deleted" } else { "live" },
            item.updated_at.as_deref().unwrap_or(""),
        ] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        let digest = hex(&mac.finalize().into_bytes()[..12]);
        let Ok(id) = SignalId::parse(&format!("td{generation}-{digest}")) else {
            skipped += 1;
            continue;
        };
        let occurred_at = [
            item.completed_at.as_deref().filter(|_| item.checked),
            item.updated_at.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc))
        .min(now);
        out.push(NewSignal {
            id,
            occurred_at,
            data: SignalData::Task {
                source: TaskSource::Todoist,
                external_id,
                title,
                priority,
                due,
                completed,
                project: None,
            },
        });
    }
    (out, skipped)
}

/// The generation a Todoist task signal's id names (`td{generation}-…`).
fn generation_of(signal_id: &str) -> Option<u32> {
    signal_id.strip_prefix("td")?.split('-').next()?.parse().ok()
}

fn lowest_priority() -> Priority {
    #[allow(clippy::expect_used)] // 1 is a priority
    Priority::parse(1).expect("1 is a priority")
}

/// A task's title as oO keeps it: control characters as spaces, at most 500 characters, and a
/// placeholder for an empty one.
fn task_title(content: &str) -> Text {
    let cleaned: String = content
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .chars()
        .take(500)
        .collect();
    Text::parse("title", &cleaned)
        .or_else(|_| Text::parse("title", "(untitled task)"))
        .unwrap_or_else(|_| unreachable!())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `base`, ±20%.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// The wait after `failures` failures in a row: the interval doubled each time, jittered,
/// at most [`MAX_BACKOFF`].
fn backoff(interval: Duration, failures: u32) -> Duration {
    let base = Duration::from_secs(15).max(interval / 4);
    jittered(base.saturating_mul(1u32 << failures.min(12))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::todoist::{Due, Item};

    fn item(id: &str, content: &str, checked: bool) -> Item {
        Item {
            id: id.into(),
            content: content.into(),
            priority: 4,
            due: Some(Due {
                date: "2026-12-03".into(),
                timezone: None,
            }),
            checked,
            is_deleted: false,
            updated_at: Some("2026-12-03T08:00:00Z".into()),
            completed_at: checked.then(|| "2026-12-03T09:00:00Z".into()),
        }
    }

    #[test]
    fn an_item_becomes_the_same_signal_each_time_and_a_changed_one_a_new_signal() {
        let key = DataKey::generate();
        let now = Utc::now();
        let page = |items| SyncPage {
            sync_token: "t".into(),
            full_sync: false,
            items,
        };
        let (a, _) = signals_of(&page(vec![item("1", "Water the basil", false)]), &key, 1, now);
        let (b, _) = signals_of(&page(vec![item("1", "Water the basil", false)]), &key, 1, now);
        assert_eq!(a, b, "a replayed sync gives the same signals");
        let (c, _) = signals_of(&page(vec![item("1", "Water the basil", true)]), &key, 1, now);
        assert_ne!(a[0].id, c[0].id, "a completion is a new signal");
        assert!(matches!(c[0].data, SignalData::Task { completed: true, .. }));
        assert_eq!(
            c[0].occurred_at.to_rfc3339(),
            "2026-12-03T09:00:00+00:00",
            "when it was completed"
        );
        let (d, _) = signals_of(&page(vec![item("1", "Water the basil", false)]), &key, 2, now);
        assert_ne!(a[0].id, d[0].id, "another connection, other signals");
        assert_eq!(generation_of(d[0].id.as_str()), Some(2));
        assert!(!a[0].id.as_str().contains("basil"));
        let other_key = DataKey::generate();
        let (e, _) = signals_of(&page(vec![item("1", "Water the basil", false)]), &other_key, 1, now);
        assert_ne!(a[0].id, e[0].id, "the digest is keyed");
    }

    #[test]
    fn titles_are_cleaned_and_never_empty() {
        assert_eq!(task_title("  a\tb\nc ").as_str(), "a b c");
        assert_eq!(task_title("").as_str(), "(untitled task)");
        assert_eq!(task_title(&"x".repeat(600)).as_str().chars().count(), 500);
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_a_success_closes_it() {
        let b = Breaker::default();
        for _ in 0..Breaker::THRESHOLD - 1 {
            b.failure();
        }
        assert!(!b.is_open());
        b.failure();
        assert!(b.is_open());
        b.success();
        assert!(!b.is_open());
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let i = Duration::from_secs(300);
        assert!(backoff(i, 1) < backoff(i, 6));
        assert!(backoff(i, 30) <= MAX_BACKOFF);
    }
}
