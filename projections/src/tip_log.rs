//! `tip_log`: served tips with their reactions and settled rewards — the metrics baseline.
//!
//! Batches are folded: the tips served in a batch are inserted in one statement with what the
//! same batch says of them (a "not now" and its reward come in one command); reactions and
//! rewards to tips of earlier batches are applied as updates, in log order.

use crate::{ApplyError, Projection, decode_shared};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::tip::TipEvent;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub struct TipLog;

/// A row of `tip_log`, as a batch builds it.
struct Row {
    tip_id: Uuid,
    user_id: Uuid,
    served_at: DateTime<Utc>,
    policy: String,
    policy_version: String,
    chosen_kind: &'static str,
    chosen_id: String,
    candidates: i32,
    propensity: f64,
    score: f64,
    first_reaction: Option<&'static str>,
    last_reaction: Option<&'static str>,
    reactions: i32,
    reacted_at: Option<DateTime<Utc>>,
    reward: Option<f64>,
    settled_by: Option<&'static str>,
    rewarded_at: Option<DateTime<Utc>>,
}

/// A change to a tip served in an earlier batch.
enum Update {
    Reacted(Uuid, &'static str, DateTime<Utc>),
    Rewarded(Uuid, f64, &'static str, DateTime<Utc>),
}

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
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(fold(conn, events))
    }
}

/// Folds a run of events (with no `UserShredded` in it) and writes it.
async fn fold(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ApplyError> {
    let mut rows: Vec<Row> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut updates: Vec<Update> = Vec::new();
    for event in events {
        if event.aggregate_type != "tip" {
            continue;
        }
        match &*decode_shared::<TipEvent>(event)? {
            TipEvent::TipServed(d) => {
                let chosen = d.candidates.get(d.chosen).ok_or_else(|| ApplyError::Poisoned {
                    event_id: event.event_id,
                    reason: "chosen candidate out of range".into(),
                })?;
                index.insert(d.tip_id.as_uuid(), rows.len());
                rows.push(Row {
                    tip_id: d.tip_id.as_uuid(),
                    user_id: d.user_id.as_uuid(),
                    served_at: d.served_at,
                    policy: d.policy.clone(),
                    policy_version: d.policy_version.clone(),
                    chosen_kind: chosen.kind.as_str(),
                    chosen_id: chosen.candidate_id.clone(),
                    candidates: d.candidates.len() as i32,
                    propensity: d.propensity,
                    score: d.score,
                    first_reaction: None,
                    last_reaction: None,
                    reactions: 0,
                    reacted_at: None,
                    reward: None,
                    settled_by: None,
                    rewarded_at: None,
                });
            }
            TipEvent::TipReacted {
                tip_id,
                reaction,
                reacted_at,
                ..
            } => match index.get(&tip_id.as_uuid()).and_then(|i| rows.get_mut(*i)) {
                Some(row) => {
                    row.first_reaction = row.first_reaction.or(Some(reaction.as_str()));
                    row.last_reaction = Some(reaction.as_str());
                    row.reactions += 1;
                    row.reacted_at = row.reacted_at.or(Some(*reacted_at));
                }
                None => updates.push(Update::Reacted(tip_id.as_uuid(), reaction.as_str(), *reacted_at)),
            },
            TipEvent::TipRewarded {
                tip_id,
                reward,
                settled_by,
                settled_at,
                ..
            } => match index.get(&tip_id.as_uuid()).and_then(|i| rows.get_mut(*i)) {
                Some(row) => {
                    row.reward = Some(*reward);
                    row.settled_by = Some(settled_by.as_str());
                    row.rewarded_at = Some(*settled_at);
                }
                None => updates.push(Update::Rewarded(
                    tip_id.as_uuid(),
                    *reward,
                    settled_by.as_str(),
                    *settled_at,
                )),
            },
        }
    }
    if !rows.is_empty() {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO tip_log (tip_id, user_id, served_at, policy, policy_version, chosen_kind, chosen_id, candidates, \
             propensity, score, first_reaction, last_reaction, reactions, reacted_at, reward, settled_by, rewarded_at) ",
        );
        insert.push_values(&rows, |mut b, r| {
            b.push_bind(r.tip_id)
                .push_bind(r.user_id)
                .push_bind(r.served_at)
                .push_bind(&r.policy)
                .push_bind(&r.policy_version)
                .push_bind(r.chosen_kind)
                .push_bind(&r.chosen_id)
                .push_bind(r.candidates)
                .push_bind(r.propensity)
                .push_bind(r.score)
                .push_bind(r.first_reaction)
                .push_bind(r.last_reaction)
                .push_bind(r.reactions)
                .push_bind(r.reacted_at)
                .push_bind(r.reward)
                .push_bind(r.settled_by)
                .push_bind(r.rewarded_at);
        });
        insert.build().execute(&mut *conn).await?;
    }
    for u in updates {
        match u {
            Update::Reacted(tip, reaction, at) => {
                sqlx::query(
                    "UPDATE tip_log SET first_reaction = COALESCE(first_reaction, $2), last_reaction = $2, \
                     reactions = reactions + 1, reacted_at = COALESCE(reacted_at, $3) WHERE tip_id = $1",
                )
                .bind(tip)
                .bind(reaction)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            Update::Rewarded(tip, reward, by, at) => {
                sqlx::query("UPDATE tip_log SET reward = $2, settled_by = $3, rewarded_at = $4 WHERE tip_id = $1")
                    .bind(tip)
                    .bind(reward)
                    .bind(by)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(())
}
