//! Read models built from the log, and how they are kept and rebuilt.
//!
//! # Layout
//! - [`projector`]: the checkpointed loop — reads the log in the safe global order in batches and
//!   applies each batch together with its checkpoint in one transaction.
//! - [`rebuild`]: blue/green rebuilds into fresh tables, swapped in atomically.
//! - [`open_tasks`], [`features`], [`tip_log`], [`bandit`], [`reward_pending`], [`policies`]: the
//!   projections.
//! - [`deciding`]: the typed read models a decision needs (a person's candidates and context,
//!   their model, the population's prior), for `/recommend` and the simulator.
//! - [`relay`]: the NATS JetStream relay (a checkpointed consumer that publishes, never appends).
//! - [`status`]: progress of every projection, shared with the API.
//!
//! Invariants: projections never append events and have no side effects beyond their tables and
//! checkpoints. The one stated exception is the [`relay`], whose effect is to publish each event
//! to NATS JetStream (it still never appends).

pub mod bandit;
pub mod deciding;
pub mod features;
pub mod open_tasks;
pub mod policies;
pub mod projector;
pub mod rebuild;
pub mod relay;
pub mod reward_pending;
pub mod status;
pub mod tip_log;

use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use sqlx::PgConnection;

/// A read model: a name, the tables it owns, and how a run of events changes them.
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The tables it owns, as defined by the migrations (rebuilds copy them).
    fn tables(&self) -> &'static [&'static str];
    /// The tables holding rows per user (a `user_id` column), purged when a user is shredded.
    fn user_tables(&self) -> &'static [&'static str] {
        self.tables()
    }
    /// The event types whose payloads `fold` decodes (`None`: all). The others still pass
    /// through `fold`, with an empty payload.
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Applies a run of events, in log order, that holds no `UserShredded` ([`apply_batch`]
    /// handles those). The result must be the same for any split of the log into runs (rebuilds
    /// batch differently from the live projector). Table names are unqualified so that a rebuild
    /// can point them at its fresh copies through the search path.
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>>;
}

/// Applies a batch in log order: folded between `UserShredded` events, at each of which the
/// user's rows are purged from the projection's user tables — the same result as applying the
/// events one by one, so a rebuild purges a shredded user again. An event of a person that comes
/// after their `UserShredded` in the log (a request that passed its session check just before
/// the deletion, the reward join settling an open tip) is never applied, live or in a rebuild:
/// nothing may bring the person's rows back. Their events before it are applied as they were
/// (and purged at it), so what they left in tables of no one person — the population's sums —
/// is the same live and rebuilt.
pub async fn apply_batch(
    projection: &dyn Projection,
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), ApplyError> {
    let shredded = shredded_in(&mut *conn, events).await?;
    apply_batch_with(projection, conn, events, &shredded).await
}

/// Where the log shredded each person of `events` who has been ([`apply_batch_with`]'s input:
/// one query for a round that applies the same events to several projections).
pub async fn shredded_in(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<Shredded, sqlx::Error> {
    let mut people: Vec<uuid::Uuid> = events.iter().map(|e| e.user_id).filter(|u| !u.is_nil()).collect();
    people.sort_unstable();
    people.dedup();
    oo_commands::store::shredded_among(conn, &people).await
}

/// Each shredded person's `UserShredded`, where it stands in the log.
pub type Shredded = std::collections::HashMap<uuid::Uuid, oo_commands::cursor::Cursor>;

/// [`apply_batch`] with `shredded` read already ([`shredded_in`] of these events or more).
pub async fn apply_batch_with(
    projection: &dyn Projection,
    conn: &mut PgConnection,
    events: &[StoredEvent],
    shredded: &Shredded,
) -> Result<(), ApplyError> {
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        if e.event_type == "UserShredded" {
            fold_kept(projection, &mut *conn, &events[start..i], shredded).await?;
            purge(&mut *conn, projection.user_tables(), e.user_id).await?;
            start = i + 1;
        }
    }
    fold_kept(projection, conn, &events[start..], shredded).await
}

/// Folds `events` but those that come after their person's `UserShredded` (copying the run
/// only when it holds some).
async fn fold_kept(
    projection: &dyn Projection,
    conn: &mut PgConnection,
    events: &[StoredEvent],
    shredded: &Shredded,
) -> Result<(), ApplyError> {
    let after_shredding = |e: &StoredEvent| shredded.get(&e.user_id).is_some_and(|at| e.cursor > *at);
    if !events.iter().any(after_shredding) {
        return projection.fold(conn, events).await;
    }
    let kept: Vec<StoredEvent> = events.iter().filter(|e| !after_shredding(e)).cloned().collect();
    projection.fold(conn, &kept).await
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("{0} is already being rebuilt")]
    Busy(String),
    #[error("event {event_id} cannot be applied: {reason}")]
    Poisoned { event_id: uuid::Uuid, reason: String },
}

/// Every projection of this build.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(open_tasks::OpenTasks),
        std::sync::Arc::new(features::Features),
        std::sync::Arc::new(tip_log::TipLog),
        std::sync::Arc::new(bandit::Bandit),
        std::sync::Arc::new(reward_pending::RewardPending),
        std::sync::Arc::new(policies::Policies),
    ]
}

/// The names of every projection of this build.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

/// Deletes a shredded user's rows.
pub(crate) async fn purge(conn: &mut PgConnection, tables: &[&str], user_id: uuid::Uuid) -> Result<(), ApplyError> {
    for t in tables {
        sqlx::query(&format!("DELETE FROM {t} WHERE user_id = $1"))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Decodes an event's public payload into its domain type.
pub(crate) fn decode<E: serde::de::DeserializeOwned>(event: &StoredEvent) -> Result<E, ApplyError> {
    event.decode().map_err(|e| ApplyError::Poisoned {
        event_id: event.event_id,
        reason: e.to_string(),
    })
}

/// Decodes an event's public payload once for every projection of a round that reads it.
pub(crate) fn decode_shared<E>(event: &StoredEvent) -> Result<std::sync::Arc<E>, ApplyError>
where
    E: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    event.decode_shared().map_err(|e| ApplyError::Poisoned {
        event_id: event.event_id,
        reason: e.to_string(),
    })
}
