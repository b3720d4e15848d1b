//! `open_tasks`: each user's current candidate todos. The latest task signal for an external id
//! is the task's state; a completed task leaves the table, and so do a provider's tasks when the
//! person disconnects it (`IntegrationDisconnected`). Titles stay sealed: a row keeps the
//! sealed envelope of the event that set it, opened with the user's key only when served.

use crate::{ApplyError, Projection, decode};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::connection::ConnectionEvent;
use oo_domain::signal::SignalData;
use oo_domain::signals::SignalsEvent;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub struct OpenTasks;

/// The last word on one task within a batch.
struct Last<'a> {
    event: &'a StoredEvent,
    source: &'static str,
    priority: i16,
    due: Option<DateTime<Utc>>,
    completed: bool,
    /// When the task was first seen since it was last completed within this batch (or since the
    /// batch began): what `first_seen_at` becomes for a new row.
    first_seen: Option<DateTime<Utc>>,
    /// A completion came earlier in the batch: the row starts afresh.
    reset: bool,
}

#[derive(Default)]
struct Columns {
    user: Vec<Uuid>,
    external_id: Vec<String>,
    source: Vec<&'static str>,
    priority: Vec<i16>,
    due: Vec<Option<DateTime<Utc>>>,
    first_seen: Vec<DateTime<Utc>>,
    updated: Vec<DateTime<Utc>>,
    title_event: Vec<Uuid>,
    sealed: Vec<Option<Vec<u8>>>,
}

async fn upsert(conn: &mut PgConnection, c: &Columns, keep_first_seen: bool) -> Result<(), sqlx::Error> {
    if c.user.is_empty() {
        return Ok(());
    }
    let first_seen = if keep_first_seen {
        "open_tasks.first_seen_at"
    } else {
        "EXCLUDED.first_seen_at"
    };
    sqlx::query(&format!(
        "INSERT INTO open_tasks (user_id, external_id, source, priority, due, first_seen_at, updated_at, title_event_id, sealed) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::timestamptz[], $6::timestamptz[], \
           $7::timestamptz[], $8::uuid[], $9::bytea[]) \
         ON CONFLICT (user_id, external_id) DO UPDATE SET source = EXCLUDED.source, priority = EXCLUDED.priority, \
         due = EXCLUDED.due, first_seen_at = {first_seen}, updated_at = EXCLUDED.updated_at, \
         title_event_id = EXCLUDED.title_event_id, sealed = EXCLUDED.sealed"
    ))
    .bind(&c.user)
    .bind(&c.external_id)
    .bind(&c.source)
    .bind(&c.priority)
    .bind(&c.due)
    .bind(&c.first_seen)
    .bind(&c.updated)
    .bind(&c.title_event)
    .bind(&c.sealed)
    .execute(conn)
    .await?;
    Ok(())
}

impl Projection for OpenTasks {
    fn name(&self) -> &'static str {
        "open_tasks"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["open_tasks"]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["SignalRecorded", "IntegrationDisconnected"])
    }
    /// Folds the batch to the last word on each task, then applies it in three set-based
    /// statements: completions, tasks that restart after a completion, and the rest.
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(fold(conn, events))
    }
}

/// Folds a run of events (with no `UserShredded` in it) and writes it, cut at each
/// disconnection, which removes the tasks the provider brought.
async fn fold(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ApplyError> {
    let mut rest = events;
    while let Some(cut) = rest.iter().position(|e| e.event_type == "IntegrationDisconnected") {
        fold_signals(&mut *conn, &rest[..cut]).await?;
        if let ConnectionEvent::IntegrationDisconnected { user_id, provider, .. } = decode(&rest[cut])? {
            sqlx::query("DELETE FROM open_tasks WHERE user_id = $1 AND source = $2")
                .bind(user_id.as_uuid())
                .bind(provider.as_str())
                .execute(&mut *conn)
                .await?;
        }
        rest = &rest[cut + 1..];
    }
    fold_signals(conn, rest).await
}

/// Folds a run of signals and writes it.
async fn fold_signals(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ApplyError> {
    let mut order: Vec<(Uuid, String)> = Vec::new();
    let mut last: HashMap<(Uuid, String), Last<'_>> = HashMap::new();
    for event in events {
        if event.event_type != "SignalRecorded" {
            continue;
        }
        let SignalsEvent::SignalRecorded {
            user_id,
            occurred_at,
            data,
            ..
        } = decode(event)?;
        let SignalData::Task {
            source,
            external_id,
            priority,
            due,
            completed,
            ..
        } = data
        else {
            continue;
        };
        let key = (user_id.as_uuid(), external_id.as_str().to_owned());
        let (first_seen, reset) = match last.get(&key) {
            Some(prev) if prev.completed => (Some(occurred_at), true),
            Some(prev) => (prev.first_seen.or(Some(occurred_at)), prev.reset),
            None => {
                order.push(key.clone());
                (Some(occurred_at), false)
            }
        };
        let first_seen = if completed { None } else { first_seen };
        let reset = reset || (completed && last.contains_key(&key));
        last.insert(
            key,
            Last {
                event,
                source: source.as_str(),
                priority: i16::from(priority.get()),
                due,
                completed,
                first_seen,
                reset,
            },
        );
    }
    let (mut gone_users, mut gone_ids) = (Vec::new(), Vec::new());
    let (mut fresh, mut kept) = (Columns::default(), Columns::default());
    for key in order {
        let Some(l) = last.remove(&key) else { continue };
        if l.completed {
            gone_users.push(key.0);
            gone_ids.push(key.1);
            continue;
        }
        let c = if l.reset { &mut fresh } else { &mut kept };
        c.user.push(key.0);
        c.external_id.push(key.1);
        c.source.push(l.source);
        c.priority.push(l.priority);
        c.due.push(l.due);
        c.first_seen.push(l.first_seen.unwrap_or(l.event.occurred_at));
        c.updated.push(l.event.occurred_at);
        c.title_event.push(l.event.event_id);
        c.sealed.push(l.event.sealed.clone());
    }
    if !gone_users.is_empty() {
        sqlx::query(
            "DELETE FROM open_tasks WHERE (user_id, external_id) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))",
        )
        .bind(&gone_users)
        .bind(&gone_ids)
        .execute(&mut *conn)
        .await?;
    }
    upsert(&mut *conn, &fresh, false).await?;
    upsert(&mut *conn, &kept, true).await?;
    Ok(())
}
