//! The background jobs `oo serve` runs beside the HTTP server, each stopped by the server's
//! cancellation token: the reward join (settling what no reaction settled, off the request
//! path) and the rate limiter's clean-up. The projector, the relay and the vault's deletion
//! follower are started by [`crate::Application::build`] from their own crates.

use oo_commands::aggregate::Repository;
use oo_commands::cursor::Cursor;
use oo_commands::reward_join::Settled;
use oo_domain::tip::Tip;
use oo_projections::status::Status;
use sqlx::PgPool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The name of the reward join in `GET /admin/projections`.
pub const REWARD_JOIN: &str = "reward_join";

/// The most tips one pass of the reward join settles.
const JOIN_BATCH: i64 = 1_000;
/// How long a pass waits for `reward_pending` to catch up with the log.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// One pass of the reward join that settled what was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinPass {
    /// The head of the log that `reward_pending` had passed when the pass read it.
    pub caught_up_to: Cursor,
    pub settled: Settled,
}

/// What the reward join of this process last did, shown by `GET /admin/projections` as the
/// consumer `reward_join`.
#[derive(Debug, Clone, Default)]
pub struct JoinStatus {
    /// The head its last settling pass had caught up to (`None` before the first).
    pub position: Option<Cursor>,
    /// The last pass's error, cleared by the next pass that settles.
    pub last_error: Option<String>,
}

/// One pass of the reward join (at most `limit` tips), on a `reward_pending` that has applied
/// every event stored before the pass began: a snoozed todo's completion that the projector has
/// not applied yet would otherwise be settled as a timeout. `None`: the projection did not
/// catch up within `wait`, and nothing was settled.
pub async fn settle_rewards(
    pool: &PgPool,
    status: &Status,
    tips: &Repository<Tip>,
    limit: i64,
    wait: Duration,
) -> anyhow::Result<Option<JoinPass>> {
    // `now` before the head: whatever was stored before `now` is at or below the head.
    let now = chrono::Utc::now();
    let head = oo_commands::store::head(pool).await?;
    if !oo_projections::projector::wait_for(pool, status, &["reward_pending"], head, wait).await? {
        return Ok(None);
    }
    let due = oo_projections::reward_pending::due(pool, now, limit).await?;
    let settled = oo_commands::reward_join::settle(tips, &due, now).await?;
    Ok(Some(JoinPass {
        caught_up_to: head,
        settled,
    }))
}

/// Runs a pass of the reward join every `every` until `shutdown`, and reports each pass in
/// `report`. A pass under way is finished; the wait between passes is cut short.
pub async fn run_reward_join(
    pool: PgPool,
    status: Status,
    tips: Repository<Tip>,
    every: Duration,
    report: Arc<Mutex<JoinStatus>>,
    shutdown: CancellationToken,
) {
    loop {
        let pass = settle_rewards(&pool, &status, &tips, JOIN_BATCH, JOIN_WAIT).await;
        // The lock is held by this block only, never across an `await`.
        {
            let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
            match pass {
                Ok(Some(JoinPass { caught_up_to, settled })) => {
                    if settled.completions + settled.timeouts > 0 {
                        tracing::info!(
                            completions = settled.completions,
                            timeouts = settled.timeouts,
                            "rewards settled"
                        );
                    }
                    *report = JoinStatus {
                        position: Some(caught_up_to),
                        last_error: None,
                    };
                }
                Ok(None) => tracing::warn!("reward_pending is behind the log; the reward join waits for it"),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "the reward join failed; retrying");
                    report.last_error = Some(format!("{e:#}"));
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Forgets, every minute until `shutdown`, the rate limiters' state of people and addresses
/// that have not asked for anything lately, failed admin attempts past their window, and signal
/// quotas of days before yesterday.
pub async fn clean_rate_limiters(state: crate::state::AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {
                state.limiter.retain_recent();
                state.anon_limiter.retain_recent();
                state.admin_failures.forget_old();
                if let Err(e) = sqlx::query("DELETE FROM signal_quota WHERE day < current_date - 1")
                    .execute(&state.pool)
                    .await
                {
                    tracing::warn!(error = %e, "cannot forget past days' signal quotas");
                }
            }
        }
    }
}

/// Completes every deletion that was requested and not finished, now and then every `every`
/// until `shutdown`: a deletion interrupted without a crash (the final append refused while the
/// database was away, say) completes within one period, without a restart. Deleting is
/// idempotent, so one running meanwhile is not disturbed.
pub async fn sweep_deletions(
    write: oo_commands::WriteSide,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = complete_deletions(&write, &pool).await {
            tracing::warn!(error = %e, "cannot complete the interrupted deletions; trying again later");
        }
    }
}

/// Completes the deletions that were requested and not finished; returns how many.
pub async fn complete_deletions(write: &oo_commands::WriteSide, pool: &PgPool) -> anyhow::Result<usize> {
    let interrupted = oo_commands::identity::interrupted_deletions(pool).await?;
    for user_id in &interrupted {
        let meta = oo_commands::aggregate::Meta::new(chrono::Utc::now());
        oo_commands::identity::delete_user(&write.users, &write.vault, &write.connections, pool, *user_id, meta)
            .await?;
        tracing::info!("completed an account deletion that was interrupted");
    }
    Ok(interrupted.len())
}
