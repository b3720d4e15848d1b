//! `reward_pending`: served tips whose reward is not settled yet — when each was served, which
//! todo it showed, whether it was snoozed, and when that todo was completed within the settle
//! window. The reward join (`oo_commands::reward_join`) settles timeouts and completions from it;
//! this projection only records, it never appends.

use crate::{ApplyError, Projection, decode};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::reward::Reaction;
use oo_domain::signal::SignalData;
use oo_domain::signals::SignalsEvent;
use oo_domain::tip::{CandidateKind, SETTLE_WINDOW, TipEvent};
use sqlx::PgConnection;

pub struct RewardPending;

impl Projection for RewardPending {
    fn name(&self) -> &'static str {
        "reward_pending"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["reward_pending"]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["TipServed", "TipReacted", "TipRewarded", "SignalRecorded"])
    }
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            match event.event_type.as_str() {
                "UserShredded" => crate::purge(conn, self.tables(), event.user_id).await,
                "TipServed" => {
                    let TipEvent::TipServed(d) = decode::<TipEvent>(event)? else {
                        return Ok(());
                    };
                    let Some(chosen) = d.candidates.get(d.chosen) else {
                        return Ok(());
                    };
                    let todo = match chosen.kind {
                        CandidateKind::NotNow => return Ok(()),
                        CandidateKind::Todo => chosen.candidate_id.strip_prefix("todo:").map(str::to_owned),
                        CandidateKind::Advice => None,
                    };
                    sqlx::query(
                        "INSERT INTO reward_pending (tip_id, user_id, served_at, todo_external_id) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(d.tip_id.as_uuid())
                    .bind(event.user_id)
                    .bind(d.served_at)
                    .bind(todo)
                    .execute(conn)
                    .await?;
                    Ok(())
                }
                "TipReacted" => {
                    if let TipEvent::TipReacted {
                        tip_id,
                        reaction: Reaction::Snooze,
                        ..
                    } = decode::<TipEvent>(event)?
                    {
                        sqlx::query("UPDATE reward_pending SET snoozed = true WHERE tip_id = $1")
                            .bind(tip_id.as_uuid())
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                }
                "TipRewarded" => {
                    if let TipEvent::TipRewarded { tip_id, .. } = decode::<TipEvent>(event)? {
                        sqlx::query("DELETE FROM reward_pending WHERE tip_id = $1")
                            .bind(tip_id.as_uuid())
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                }
                "SignalRecorded" => {
                    let SignalsEvent::SignalRecorded { occurred_at, data, .. } = decode(event)?;
                    if let SignalData::Task {
                        external_id,
                        completed: true,
                        ..
                    } = data
                    {
                        sqlx::query(
                            "UPDATE reward_pending SET completed_at = $3 WHERE user_id = $1 AND todo_external_id = $2 \
                             AND completed_at IS NULL AND $3 >= served_at AND $3 <= served_at + $4::interval",
                        )
                        .bind(event.user_id)
                        .bind(external_id.as_str())
                        .bind(occurred_at)
                        .bind(format!("{} seconds", SETTLE_WINDOW.num_seconds()))
                        .execute(conn)
                        .await?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }
}
