//! The reward join: settles the rewards that no reaction settled (DESIGN section 6), outside
//! the request path. It reads the `reward_pending` projection (which the projector keeps from the
//! log, checkpointed) and appends through the `Tip` aggregate:
//! - a snoozed todo completed within the settle window → `SettleCompletion` (reward +1);
//! - a tip whose window is over → `SettleTimeout` (reward 0).
//!
//! Exactly once: the aggregate settles a tip at most once (a second command decides nothing), so
//! the join may run again after a crash, or beside a reaction arriving at the same moment, and
//! the optimistic check on the tip's stream orders them. A row leaves `reward_pending` only when
//! the projector sees the `TipRewarded`.

use crate::aggregate::{CommandError, Meta, Repository};
use chrono::{DateTime, Utc};
use oo_domain::tip::{SETTLE_WINDOW, Tip, TipCommand, TipError};
use sqlx::{PgPool, Row};

/// What one pass settled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub completions: usize,
    pub timeouts: usize,
}

/// Settles every tip that is due at `now` (at most `limit` per pass), oldest first.
pub async fn settle_due(
    pool: &PgPool,
    tips: &Repository<Tip>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Settled, CommandError<TipError>> {
    let rows = sqlx::query(
        "SELECT tip_id, served_at, snoozed, completed_at FROM reward_pending \
         WHERE served_at <= $1 OR (snoozed AND completed_at IS NOT NULL) ORDER BY served_at, tip_id LIMIT $2",
    )
    .bind(now - SETTLE_WINDOW)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| CommandError::Store(crate::store::StoreError::from_sqlx(e)))?;
    let mut settled = Settled::default();
    for r in rows {
        let get = |e: sqlx::Error| CommandError::Store(crate::store::StoreError::from_sqlx(e));
        let tip_id: uuid::Uuid = r.try_get("tip_id").map_err(get)?;
        let snoozed: bool = r.try_get("snoozed").map_err(get)?;
        let completed_at: Option<DateTime<Utc>> = r.try_get("completed_at").map_err(get)?;
        let command = match completed_at {
            Some(completed_at) if snoozed => TipCommand::SettleCompletion { completed_at, at: now },
            _ => TipCommand::SettleTimeout { at: now },
        };
        let completion = matches!(command, TipCommand::SettleCompletion { .. });
        let served_at: DateTime<Utc> = r.try_get("served_at").map_err(get)?;
        match tips.execute(&tip_id.to_string(), command, Meta::new(now)).await {
            Ok(done) if !done.written.is_empty() => {
                if completion {
                    settled.completions += 1;
                } else {
                    settled.timeouts += 1;
                }
            }
            // A completion the aggregate does not take (the tip got another reaction meanwhile,
            // say) must not keep the row waiting for ever: past the window, it times out.
            Ok(_) if completion && served_at <= now - SETTLE_WINDOW => {
                match tips
                    .execute(
                        &tip_id.to_string(),
                        TipCommand::SettleTimeout { at: now },
                        Meta::new(now),
                    )
                    .await
                {
                    Ok(done) if !done.written.is_empty() => settled.timeouts += 1,
                    Ok(_) | Err(CommandError::Domain(TipError::NotFound | TipError::NotDue)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(_) => {}
            // Not served (a purged or foreign row) or not due after all: nothing to settle now.
            Err(CommandError::Domain(TipError::NotFound | TipError::NotDue)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(settled)
}
