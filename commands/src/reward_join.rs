//! The reward join: settles the rewards that no reaction settled (DESIGN section 6), outside
//! the request path. Given the tips that are due (which the caller reads from the projections
//! once they have caught up), it appends through the `Tip` aggregate:
//! - a todo completed within the settle window, its tip unanswered or snoozed →
//!   `SettleCompletion` (reward +1);
//! - a tip whose window is over → `SettleTimeout` (reward 0).
//!
//! Exactly once: the aggregate settles a tip at most once (a second command decides nothing), so
//! the join may run again after a crash, or beside a reaction arriving at the same moment, and
//! the optimistic check on the tip's stream orders them. A tip stops being due only when the
//! projector sees its `TipRewarded`.

use crate::aggregate::{CommandError, Meta, Repository};
use chrono::{DateTime, Utc};
use oo_domain::ids::TipId;
use oo_domain::tip::{SETTLE_WINDOW, Tip, TipCommand, TipError};

/// A tip that may be settled: served at `served_at`, snoozed or not, its todo completed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueTip {
    pub tip_id: TipId,
    pub served_at: DateTime<Utc>,
    pub snoozed: bool,
    pub completed_at: Option<DateTime<Utc>>,
}

/// What one pass settled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub completions: usize,
    pub timeouts: usize,
}

/// Settles each of `due` (oldest first) at `now`.
pub async fn settle(
    tips: &Repository<Tip>,
    due: &[DueTip],
    now: DateTime<Utc>,
) -> Result<Settled, CommandError<TipError>> {
    let mut settled = Settled::default();
    for tip in due {
        let id = tip.tip_id.to_string();
        let command = match tip.completed_at {
            Some(completed_at) => TipCommand::SettleCompletion { completed_at, at: now },
            _ => TipCommand::SettleTimeout { at: now },
        };
        let completion = matches!(command, TipCommand::SettleCompletion { .. });
        match tips.execute(&id, command, Meta::new(now)).await {
            Ok(done) if !done.written.is_empty() => {
                if completion {
                    settled.completions += 1;
                } else {
                    settled.timeouts += 1;
                }
            }
            // A completion the aggregate does not take (the tip got another reaction meanwhile,
            // say) must not keep the tip waiting for ever: past the window, it times out.
            Ok(_) if completion && tip.served_at <= now - SETTLE_WINDOW => {
                match tips
                    .execute(&id, TipCommand::SettleTimeout { at: now }, Meta::new(now))
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
