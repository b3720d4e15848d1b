//! `features`: per-user context features — signal counts by kind, activity by hour of day,
//! completed tasks, latest mood, place and time zone, tips served.

use crate::{ApplyError, Projection, decode};
use chrono::Timelike;
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::signal::SignalData;
use oo_domain::signals::SignalsEvent;
use sqlx::PgConnection;

pub struct Features;

impl Projection for Features {
    fn name(&self) -> &'static str {
        "features"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["user_features"]
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
            match event.event_type.as_str() {
                "SignalRecorded" => {
                    let SignalsEvent::SignalRecorded {
                        user_id,
                        occurred_at,
                        data,
                        ..
                    } = decode(event)?;
                    let kind_column = match data.kind() {
                        oo_domain::signal::SignalKind::Task => "signals_task",
                        oo_domain::signal::SignalKind::Habit => "signals_habit",
                        oo_domain::signal::SignalKind::Calendar => "signals_calendar",
                        oo_domain::signal::SignalKind::Mood => "signals_mood",
                        oo_domain::signal::SignalKind::Context => "signals_context",
                    };
                    let completed = matches!(data, SignalData::Task { completed: true, .. });
                    let (mood, place, tz) = match &data {
                        SignalData::Mood { score, .. } => (Some(i16::from(score.get())), None, None),
                        SignalData::Context { place, time_zone, .. } => (
                            None,
                            Some(place.as_str()),
                            time_zone.as_ref().map(|t| t.as_str().to_owned()),
                        ),
                        _ => (None, None, None),
                    };
                    // Postgres arrays are 1-based.
                    let hour_slot = occurred_at.hour() as i32 + 1;
                    sqlx::query("INSERT INTO user_features (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
                        .bind(user_id.as_uuid())
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!(
                        "UPDATE user_features SET {kind_column} = {kind_column} + 1, \
                           activity_by_hour[$2] = activity_by_hour[$2] + 1, \
                           tasks_completed = tasks_completed + $3, \
                           latest_mood = CASE WHEN $4::smallint IS NOT NULL AND (latest_mood_at IS NULL OR latest_mood_at <= $5) THEN $4 ELSE latest_mood END, \
                           latest_mood_at = CASE WHEN $4::smallint IS NOT NULL AND (latest_mood_at IS NULL OR latest_mood_at <= $5) THEN $5 ELSE latest_mood_at END, \
                           place = COALESCE($6, place), \
                           time_zone = COALESCE($7, time_zone), \
                           last_signal_at = GREATEST(last_signal_at, $5) \
                         WHERE user_id = $1"
                    ))
                    .bind(user_id.as_uuid())
                    .bind(hour_slot)
                    .bind(i64::from(completed))
                    .bind(mood)
                    .bind(occurred_at)
                    .bind(place)
                    .bind(tz)
                    .execute(conn)
                    .await?;
                }
                "TipServed" => {
                    sqlx::query(
                        "INSERT INTO user_features (user_id, tips_served) VALUES ($1, 1) \
                         ON CONFLICT (user_id) DO UPDATE SET tips_served = user_features.tips_served + 1",
                    )
                    .bind(event.user_id)
                    .execute(conn)
                    .await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}
