//! `tip_log`: served tips with their reactions and settled rewards — the metrics baseline.

use crate::{ApplyError, Projection, decode};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::tip::TipEvent;
use sqlx::PgConnection;

pub struct TipLog;

impl Projection for TipLog {
    fn name(&self) -> &'static str {
        "tip_log"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["tip_log"]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["TipServed", "TipReacted", "TipRewarded"])
    }
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            if event.event_type == "UserShredded" {
                return crate::purge(conn, self.tables(), event.user_id).await;
            }
            if event.aggregate_type != "tip" {
                return Ok(());
            }
            match decode::<TipEvent>(event)? {
                TipEvent::TipServed(d) => {
                    let chosen = d.candidates.get(d.chosen).ok_or_else(|| ApplyError::Poisoned {
                        event_id: event.event_id,
                        reason: "chosen candidate out of range".into(),
                    })?;
                    sqlx::query(
                        "INSERT INTO tip_log (tip_id, user_id, served_at, policy, policy_version, chosen_kind, chosen_id, candidates, propensity, score) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(d.tip_id.as_uuid())
                    .bind(d.user_id.as_uuid())
                    .bind(d.served_at)
                    .bind(&d.policy)
                    .bind(&d.policy_version)
                    .bind(chosen.kind.as_str())
                    .bind(&chosen.candidate_id)
                    .bind(d.candidates.len() as i32)
                    .bind(d.propensity)
                    .bind(d.score)
                    .execute(conn)
                    .await?;
                }
                TipEvent::TipReacted {
                    tip_id,
                    reaction,
                    reacted_at,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE tip_log SET first_reaction = COALESCE(first_reaction, $2), last_reaction = $2, \
                         reactions = reactions + 1, reacted_at = COALESCE(reacted_at, $3) WHERE tip_id = $1",
                    )
                    .bind(tip_id.as_uuid())
                    .bind(reaction.as_str())
                    .bind(reacted_at)
                    .execute(conn)
                    .await?;
                }
                TipEvent::TipRewarded {
                    tip_id,
                    reward,
                    settled_by,
                    settled_at,
                    ..
                } => {
                    sqlx::query("UPDATE tip_log SET reward = $2, settled_by = $3, rewarded_at = $4 WHERE tip_id = $1")
                        .bind(tip_id.as_uuid())
                        .bind(reward)
                        .bind(settled_by.as_str())
                        .bind(settled_at)
                        .execute(conn)
                        .await?;
                }
            }
            Ok(())
        })
    }
}
