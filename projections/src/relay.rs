//! The NATS JetStream relay: a checkpointed consumer of the log that publishes every committed
//! event, in the safe global order, as a protobuf `EventEnvelope` to the stream `OO_EVENTS` on
//! `oo.events.v1.<aggregate>.<event_type>.<partition>` (DESIGN section 8).
//!
//! - Headers: `Nats-Msg-Id` (the event id: a re-publish is de-duplicated), `Oo-Event-Type`,
//!   `Oo-Schema-Version`, and `Nats-Expected-Last-Msg-Id` (the previous event's id), so that a
//!   pipelined message can never land before one that failed: the stream is always a prefix of
//!   the log, in order.
//! - Publishes are pipelined per batch; the checkpoint advances only after every acknowledgement.
//! - At start, and after any failed publish, the relay reconciles its checkpoint with the last
//!   message in the stream (NATS 2.9 may lose acknowledged messages if its host dies): it resumes
//!   right after the last event the stream holds.
//! - Personal fields travel sealed, exactly as stored. An event this build cannot decode travels
//!   too, without payload and with the header `Oo-Undecodable` (logged): it never stops the stream.
//!
//! Never appends events; one relay runs per database (an advisory lock: a second one waits).

use crate::status::Status;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use oo_commands::cursor::Cursor;
use oo_commands::store::{StoredEvent, cursor_of, read_after};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The relay's row in `checkpoints`.
pub const CHECKPOINT: &str = "nats_relay";

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub url: String,
    pub stream: String,
    /// JetStream's de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// How long the stream keeps messages (zero: for ever).
    pub max_age: Duration,
    pub batch: i64,
}

impl RelayConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            stream: "OO_EVENTS".into(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            batch: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("event {0} cannot be encoded: {1}")]
    Encode(uuid::Uuid, String),
}

fn nats<E: std::fmt::Display>(e: E) -> RelayError {
    RelayError::Nats(e.to_string())
}

/// `SignalRecorded` → `signal_recorded`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A stable partition of the user id, 0..64 (FNV-1a of its bytes), so that consumers can split
/// work by subject filter.
pub fn partition(user_id: uuid::Uuid) -> u64 {
    oo_domain::ids::fnv1a(*user_id.as_bytes()) % 64
}

/// An event's subject. System events (user id [`UserId::SYSTEM`], the `policy` stream) belong
/// to no person and go to the partition `system`, which no per-person subject filter matches.
///
/// [`UserId::SYSTEM`]: oo_domain::ids::UserId::SYSTEM
pub fn subject(e: &StoredEvent) -> String {
    let partition = if e.user_id.is_nil() {
        "system".to_owned()
    } else {
        partition(e.user_id).to_string()
    };
    format!("oo.events.v1.{}.{}.{partition}", e.aggregate_type, snake(&e.event_type))
}

/// The wire form of a stored event: public fields as stored (personal ones read
/// [`oo_domain::personal::SEALED`]) and the sealed envelope as it is. An event whose payload
/// this build cannot decode travels without one (`Err` says why, beside its bytes).
pub fn envelope(e: &StoredEvent) -> (Vec<u8>, Result<(), RelayError>) {
    let fields = oo_proto::Envelope {
        event_id: e.event_id,
        aggregate_type: &e.aggregate_type,
        aggregate_id: &e.aggregate_id,
        sequence: e.sequence,
        position: e.cursor.encode(),
        event_type: &e.event_type,
        schema_version: e.schema_version,
        user_id: e.user_id,
        occurred_at: e.occurred_at,
        recorded_at: e.recorded_at,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
    };
    match typed(e) {
        Ok((event, sealed)) => (oo_proto::encode_envelope(&fields, Some(&event), sealed), Ok(())),
        Err(err) => (oo_proto::encode_envelope(&fields, None, None), Err(err)),
    }
}

/// A stored event's payload as a domain event, and its sealed fields.
fn typed(e: &StoredEvent) -> Result<(oo_proto::DomainEvent, Option<oo_proto::SealedFields>), RelayError> {
    let bad = |m: String| RelayError::Encode(e.event_id, m);
    let event = match e.aggregate_type.as_str() {
        "user" => oo_proto::DomainEvent::User(e.decode().map_err(|x| bad(x.to_string()))?),
        "signals" => oo_proto::DomainEvent::Signals(e.decode().map_err(|x| bad(x.to_string()))?),
        "tip" => oo_proto::DomainEvent::Tip(e.decode().map_err(|x| bad(x.to_string()))?),
        "policy" => oo_proto::DomainEvent::Policy(e.decode().map_err(|x| bad(x.to_string()))?),
        "connection" => oo_proto::DomainEvent::Connection(e.decode().map_err(|x| bad(x.to_string()))?),
        other => return Err(bad(format!("unknown aggregate type {other}"))),
    };
    let sealed = match &e.sealed {
        Some(bytes) => {
            let s = oo_commands::sealing::Sealed::from_bytes(bytes).map_err(|x| bad(x.to_string()))?;
            Some(oo_proto::SealedFields {
                key_id: s.key_id,
                nonce: s.nonce.to_vec(),
                ciphertext: s.ciphertext,
            })
        }
        None => None,
    };
    Ok((event, sealed))
}

/// Creates or updates the stream.
pub async fn ensure_stream(js: &jetstream::Context, config: &RelayConfig) -> Result<stream::Stream, RelayError> {
    let cfg = stream::Config {
        name: config.stream.clone(),
        subjects: vec!["oo.events.v1.>".into()],
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.get_stream(&config.stream).await {
        Ok(_) => {
            js.update_stream(cfg).await.map_err(nats)?;
            js.get_stream(&config.stream).await.map_err(nats)
        }
        Err(_) => js.get_or_create_stream(cfg).await.map_err(nats),
    }
}

async fn checkpoint(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let (tx, position): (String, i64) = sqlx::query_as("SELECT tx_id::text, position FROM checkpoints WHERE name = $1")
        .bind(CHECKPOINT)
        .fetch_one(pool)
        .await?;
    cursor_of(&tx, position)
}

async fn set_checkpoint(pool: &PgPool, cursor: Cursor, applied: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE checkpoints SET tx_id = $2::text::xid8, position = $3, events_applied = events_applied + $4, status = 'live', \
         last_error = NULL, updated_at = now() WHERE name = $1",
    )
    .bind(CHECKPOINT)
    .bind(cursor.tx_id.to_string())
    .bind(cursor.position)
    .bind(applied)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets the checkpoint to the last event the stream holds (or the start of the log if it holds
/// none); returns the stream's last sequence, which the next publish must follow. When that last
/// message is gone (expired under `OO_NATS_MAX_AGE_SECS`, and every earlier one with it), the
/// stream says nothing of what it held: the checkpoint stays as it is.
pub async fn reconcile(pool: &PgPool, stream: &mut stream::Stream) -> Result<u64, RelayError> {
    let last = stream.info().await.map_err(nats)?.state.last_sequence;
    let last_id = if last == 0 {
        None
    } else {
        match stream.get_raw_message(last).await {
            Ok(m) => m
                .headers
                .get("Nats-Msg-Id")
                .and_then(|v| v.as_str().parse::<uuid::Uuid>().ok()),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(last),
            Err(e) => return Err(nats(e)),
        }
    };
    let (cursor, count) = match last_id {
        Some(id) => {
            let row: Option<(String, i64)> =
                sqlx::query_as("SELECT tx_id::text, position FROM events WHERE event_id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            match row {
                Some((tx, position)) => {
                    let c = cursor_of(&tx, position)?;
                    (c, 1 + oo_commands::store::count_before(pool, c).await?)
                }
                None => (Cursor::START, 0),
            }
        }
        None => (Cursor::START, 0),
    };
    sqlx::query(
        "UPDATE checkpoints SET tx_id = $2::text::xid8, position = $3, events_applied = $4, updated_at = now() WHERE name = $1",
    )
    .bind(CHECKPOINT)
    .bind(cursor.tx_id.to_string())
    .bind(cursor.position)
    .bind(count)
    .execute(pool)
    .await?;
    Ok(last)
}

/// Publishes one batch after the checkpoint; returns how many events it relayed.
async fn step(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &RelayConfig,
    last_sequence: &mut u64,
) -> Result<usize, RelayError> {
    let from = checkpoint(pool).await?;
    let events = {
        let mut conn = pool.acquire().await?;
        read_after(&mut conn, from, config.batch).await?
    };
    if events.is_empty() {
        return Ok(0);
    }
    let mut acks = Vec::with_capacity(events.len());
    // Each publish names the stream sequence it must follow, which NATS keeps across restarts
    // (a last message id it rebuilds only from the duplicate window, so an idle stream forgot it
    // and refused every publish for good). A publish that does not follow is refused and the
    // relay reconciles.
    for (expected, e) in (*last_sequence..).zip(&events) {
        // An event this build cannot decode still travels, in its place, without a typed
        // payload (consumers see `Oo-Undecodable`), so one bad event never stops the stream.
        let (body, encoded) = envelope(e);
        let undecodable = match encoded {
            Ok(()) => false,
            Err(err) => {
                tracing::error!(event_id = %e.event_id, error = %err, "relay: event cannot be encoded; relayed without payload");
                true
            }
        };
        let mut headers = HeaderMap::new();
        if undecodable {
            headers.insert("Oo-Undecodable", "true");
        }
        headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
        headers.insert("Oo-Event-Type", e.event_type.as_str());
        headers.insert("Oo-Schema-Version", e.schema_version.to_string().as_str());
        headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
        acks.push(
            js.publish_with_headers(subject(e), headers, body.into())
                .await
                .map_err(nats)?,
        );
    }
    let mut sequence = *last_sequence;
    for ack in acks {
        let ack = ack.await.map_err(nats)?;
        sequence = sequence.max(ack.sequence);
    }
    if let Some(last) = events.last() {
        set_checkpoint(pool, last.cursor, events.len() as i64).await?;
        *last_sequence = sequence;
    }
    Ok(events.len())
}

/// Runs the relay until aborted: connects (retrying), reconciles, publishes, and reconciles again
/// after any failure. Appends keep working while NATS is down; the relay catches up after.
pub async fn run(
    pool: PgPool,
    config: RelayConfig,
    appended: std::sync::Arc<tokio::sync::Notify>,
    status: Status,
    shutdown: CancellationToken,
) {
    if let Err(e) = crate::projector::ensure_checkpoint(&pool, CHECKPOINT).await {
        tracing::error!(error = %e, "relay: no checkpoint");
        return;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        // Stopped between steps: a publish under way is acknowledged or re-published next time.
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = session(&pool, &config, &appended, &status) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                status.set_relay_up(false);
                tracing::warn!(error = %e, "relay interrupted; reconnecting");
                let _ = sqlx::query("UPDATE checkpoints SET status = 'failed', last_error = $2 WHERE name = $1")
                    .bind(CHECKPOINT)
                    .bind(e.to_string())
                    .execute(&pool)
                    .await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session(
    pool: &PgPool,
    config: &RelayConfig,
    appended: &tokio::sync::Notify,
    status: &Status,
) -> Result<(), RelayError> {
    // One relay per database: the others wait on this lock (held by a connection of its own; a
    // relay that dies releases it with its connection).
    let mut guard = pool.acquire().await?;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('oo.relay'))")
            .fetch_one(&mut *guard)
            .await?;
        if locked {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let result = relay_session(pool, config, appended, status).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('oo.relay'))")
        .execute(&mut *guard)
        .await;
    result
}

async fn relay_session(
    pool: &PgPool,
    config: &RelayConfig,
    appended: &tokio::sync::Notify,
    status: &Status,
) -> Result<(), RelayError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(config.url.as_str())
        .await
        .map_err(nats)?;
    let js = jetstream::new(client);
    let mut stream = ensure_stream(&js, config).await?;
    let mut last_sequence = reconcile(pool, &mut stream).await?;
    status.set_relay_up(true);
    loop {
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match step(pool, &js, config, &mut last_sequence).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {
                let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            }
            Err(e) => {
                // Some publish may have failed after others landed: resume after whatever the
                // stream holds last.
                // A relay that cannot advance says so: the checkpoint shows `failed` with the
                // error (in `/admin/projections`) until a publish lands again.
                tracing::warn!(error = %e, "relay: publish failed; reconciling with the stream");
                let _ = sqlx::query(
                    "UPDATE checkpoints SET status = 'failed', last_error = $2, updated_at = now() WHERE name = $1",
                )
                .bind(CHECKPOINT)
                .bind(e.to_string())
                .execute(pool)
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                last_sequence = reconcile(pool, &mut stream).await?;
            }
        }
    }
}
