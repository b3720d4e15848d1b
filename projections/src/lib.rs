//! Read models built from the log, and how they are kept and rebuilt.
//!
//! # Layout
//! - [`projector`]: the checkpointed loop — reads the log in the safe global order in batches and
//!   applies each batch together with its checkpoint in one transaction.
//! - [`rebuild`]: blue/green rebuilds into fresh tables, swapped in atomically.
//! - [`open_tasks`], [`features`], [`tip_log`], [`bandit`], [`reward_pending`]: the projections.
//! - [`relay`]: the NATS JetStream relay (a checkpointed consumer that publishes, never appends).
//! - [`status`]: progress of every projection, shared with the API.
//!
//! Invariant: projections never append events and have no side effects beyond their tables.

pub mod bandit;
pub mod features;
pub mod open_tasks;
pub mod projector;
pub mod rebuild;
pub mod relay;
pub mod reward_pending;
pub mod status;
pub mod tip_log;

use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use sqlx::PgConnection;

/// A read model: a name, the tables it owns, and how one event changes them.
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The tables it owns, as defined by the migrations (rebuilds copy them).
    fn tables(&self) -> &'static [&'static str];
    /// The event types whose payloads `apply` decodes (`None`: all). The others still pass
    /// through `apply`, with an empty payload.
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Applies a batch of events in log order. The default applies them one by one; a
    /// projection may fold the batch first, as long as the result is the same for any split of
    /// the log into batches (rebuilds batch differently from the live projector).
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            for e in events {
                self.apply(&mut *conn, e).await?;
            }
            Ok(())
        })
    }
    /// Applies one event. Table names are unqualified so that a rebuild can point them at its
    /// fresh copies through the search path.
    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent)
    -> BoxFuture<'a, Result<(), ApplyError>>;
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
    ]
}

/// Applies a batch with a set-based `fold`, cut at every `UserShredded`: what came before is
/// folded and written, then the user's rows are purged from `tables` — the same result as applying
/// the events one by one.
macro_rules! fold_with_shredding {
    ($conn:expr, $events:expr, $tables:expr, $fold:path) => {{
        let events = $events;
        let mut start = 0;
        for (i, e) in events.iter().enumerate() {
            if e.event_type == "UserShredded" {
                $fold(&mut *$conn, &events[start..i]).await?;
                crate::purge(&mut *$conn, $tables, e.user_id).await?;
                start = i + 1;
            }
        }
        $fold(&mut *$conn, &events[start..]).await
    }};
}
pub(crate) use fold_with_shredding;

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
