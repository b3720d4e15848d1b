//! `reward_pending`: served tips whose reward is not settled yet — when each was served, which
//! todo it showed, whether it was snoozed, and when that todo was completed within the settle
//! window. The reward join (`oo_commands::reward_join`) settles timeouts and completions from
//! what [`due`] reads of it; this projection only records, it never appends.
//!
//! Batches are folded: the tips served in a batch are inserted in one statement with what the same
//! batch says of them (a tip served and settled within one batch is never written); snoozes,
//! completions and settlements of earlier batches' tips are applied as statements, in log order.

use crate::{ApplyError, Projection, decode, decode_shared};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oo_commands::reward_join::DueTip;
use oo_commands::store::StoredEvent;
use oo_domain::ids::TipId;
use oo_domain::reward::Reaction;
use oo_domain::signal::SignalData;
use oo_domain::signals::SignalsEvent;
use oo_domain::tip::{CandidateKind, SETTLE_WINDOW, TipEvent};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

pub struct RewardPending;

/// The tips the reward join has to settle at `now` (at most `limit`, oldest first): those whose
/// settle window is over, and todos completed since (a row is here only while its tip is
/// unsettled: unanswered, snoozed, or answered too late).
pub async fn due(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueTip>, sqlx::Error> {
    /// tip_id, served_at, snoozed, completed_at.
    type DueRow = (Uuid, DateTime<Utc>, bool, Option<DateTime<Utc>>);
    let rows: Vec<DueRow> = sqlx::query_as(
        "SELECT tip_id, served_at, snoozed, completed_at FROM reward_pending \
         WHERE served_at <= $1 OR completed_at IS NOT NULL ORDER BY served_at, tip_id LIMIT $2",
    )
    .bind(now - SETTLE_WINDOW)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tip_id, served_at, snoozed, completed_at)| DueTip {
            tip_id: TipId::from_uuid(tip_id),
            served_at,
            snoozed,
            completed_at,
        })
        .collect())
}

/// A row of `reward_pending`, as a batch builds it.
struct Row {
    tip_id: Uuid,
    user_id: Uuid,
    served_at: DateTime<Utc>,
    todo: Option<String>,
    snoozed: bool,
    completed_at: Option<DateTime<Utc>>,
}

/// A change to rows of earlier batches.
enum Update {
    Snoozed(Uuid),
    Completed(Uuid, String, DateTime<Utc>),
    Settled(Uuid),
}

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
    let mut rows: Vec<Option<Row>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut updates: Vec<Update> = Vec::new();
    for event in events {
        match event.event_type.as_str() {
            "TipServed" => {
                let tip = decode_shared::<TipEvent>(event)?;
                let TipEvent::TipServed(d) = &*tip else {
                    continue;
                };
                let Some(chosen) = d.candidates.get(d.chosen) else {
                    continue;
                };
                let todo = match chosen.kind {
                    // Settled as it is served: never pending (its reward, in this batch, finds
                    // an empty slot rather than deleting a row that was never written).
                    CandidateKind::NotNow => {
                        index.insert(d.tip_id.as_uuid(), rows.len());
                        rows.push(None);
                        continue;
                    }
                    CandidateKind::Todo => chosen.candidate_id.strip_prefix("todo:").map(str::to_owned),
                    CandidateKind::Advice => None,
                };
                index.insert(d.tip_id.as_uuid(), rows.len());
                rows.push(Some(Row {
                    tip_id: d.tip_id.as_uuid(),
                    user_id: event.user_id,
                    served_at: d.served_at,
                    todo,
                    snoozed: false,
                    completed_at: None,
                }));
            }
            "TipReacted" => {
                if let TipEvent::TipReacted {
                    tip_id,
                    reaction: Reaction::Snooze,
                    ..
                } = &*decode_shared::<TipEvent>(event)?
                {
                    match index.get(&tip_id.as_uuid()).and_then(|i| rows.get_mut(*i)) {
                        Some(Some(row)) => row.snoozed = true,
                        Some(None) => {}
                        None => updates.push(Update::Snoozed(tip_id.as_uuid())),
                    }
                }
            }
            "TipRewarded" => {
                if let TipEvent::TipRewarded { tip_id, .. } = &*decode_shared::<TipEvent>(event)? {
                    match index.get(&tip_id.as_uuid()).and_then(|i| rows.get_mut(*i)) {
                        Some(slot) => *slot = None,
                        None => updates.push(Update::Settled(tip_id.as_uuid())),
                    }
                }
            }
            "SignalRecorded" => {
                let SignalsEvent::SignalRecorded { occurred_at, data, .. } = decode(event)?;
                if let SignalData::Task {
                    external_id,
                    completed: true,
                    ..
                } = data
                {
                    for row in rows.iter_mut().flatten() {
                        if row.user_id == event.user_id
                            && row.todo.as_deref() == Some(external_id.as_str())
                            && row.completed_at.is_none()
                            && occurred_at >= row.served_at
                            && occurred_at <= row.served_at + SETTLE_WINDOW
                        {
                            row.completed_at = Some(occurred_at);
                        }
                    }
                    updates.push(Update::Completed(
                        event.user_id,
                        external_id.as_str().to_owned(),
                        occurred_at,
                    ));
                }
            }
            _ => {}
        }
    }
    // Earlier batches' rows first (this batch's rows are not in the table yet).
    for u in updates {
        match u {
            Update::Snoozed(tip) => {
                sqlx::query("UPDATE reward_pending SET snoozed = true WHERE tip_id = $1")
                    .bind(tip)
                    .execute(&mut *conn)
                    .await?;
            }
            Update::Completed(user, todo, at) => {
                sqlx::query(
                    "UPDATE reward_pending SET completed_at = $3 WHERE user_id = $1 AND todo_external_id = $2 \
                     AND completed_at IS NULL AND $3 >= served_at AND $3 <= served_at + $4::interval",
                )
                .bind(user)
                .bind(todo)
                .bind(at)
                .bind(format!("{} seconds", SETTLE_WINDOW.num_seconds()))
                .execute(&mut *conn)
                .await?;
            }
            Update::Settled(tip) => {
                sqlx::query("DELETE FROM reward_pending WHERE tip_id = $1")
                    .bind(tip)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    if !rows.is_empty() {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO reward_pending (tip_id, user_id, served_at, todo_external_id, snoozed, completed_at) ",
        );
        insert.push_values(&rows, |mut b, r| {
            b.push_bind(r.tip_id)
                .push_bind(r.user_id)
                .push_bind(r.served_at)
                .push_bind(&r.todo)
                .push_bind(r.snoozed)
                .push_bind(r.completed_at);
        });
        insert.push(" ON CONFLICT DO NOTHING");
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}
