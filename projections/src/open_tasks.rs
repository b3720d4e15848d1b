//! `open_tasks`: each user's current candidate todos. The latest task signal for an external id
//! is the task's state; a completed task leaves the table. Titles stay sealed: a row keeps the
//! sealed envelope of the event that set it, opened with the user's key only when served.

use crate::{ApplyError, Projection, decode};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::signal::SignalData;
use oo_domain::signals::SignalsEvent;
use sqlx::PgConnection;

pub struct OpenTasks;

impl Projection for OpenTasks {
    fn name(&self) -> &'static str {
        "open_tasks"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["open_tasks"]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["SignalRecorded"])
    }
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            if event.event_type != "SignalRecorded" {
                return Ok(());
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
                return Ok(());
            };
            if completed {
                sqlx::query("DELETE FROM open_tasks WHERE user_id = $1 AND external_id = $2")
                    .bind(user_id.as_uuid())
                    .bind(external_id.as_str())
                    .execute(conn)
                    .await?;
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO open_tasks (user_id, external_id, source, priority, due, first_seen_at, updated_at, title_event_id, sealed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) \
                 ON CONFLICT (user_id, external_id) DO UPDATE SET source = EXCLUDED.source, priority = EXCLUDED.priority, \
                 due = EXCLUDED.due, updated_at = EXCLUDED.updated_at, title_event_id = EXCLUDED.title_event_id, sealed = EXCLUDED.sealed",
            )
            .bind(user_id.as_uuid())
            .bind(external_id.as_str())
            .bind(source.as_str())
            .bind(i16::from(priority.get()))
            .bind(due)
            .bind(occurred_at)
            .bind(event.event_id)
            .bind(&event.sealed)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}
