//! `features`: per-user context features — signal counts by kind, activity by hour of day,
//! completed tasks, latest mood, place and time zone, tips served.

use crate::{ApplyError, Projection, decode};
use chrono::{DateTime, Timelike, Utc};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::signal::{SignalData, SignalKind};
use oo_domain::signals::SignalsEvent;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

pub struct Features;

/// One user's changes in a batch, folded so that one statement applies them.
#[derive(Default)]
struct Delta {
    by_kind: [i64; 5],
    tasks_completed: i64,
    activity: [i64; 24],
    /// The latest mood by time of occurrence (a later event wins a tie, as it would one by one).
    mood: Option<(i16, DateTime<Utc>)>,
    /// The last place and time zone in log order.
    place: Option<&'static str>,
    time_zone: Option<String>,
    tips_served: i64,
    last_signal_at: Option<DateTime<Utc>>,
}

fn kind_index(kind: SignalKind) -> usize {
    match kind {
        SignalKind::Task => 0,
        SignalKind::Habit => 1,
        SignalKind::Calendar => 2,
        SignalKind::Mood => 3,
        SignalKind::Context => 4,
    }
}

impl Delta {
    fn signal(&mut self, occurred_at: DateTime<Utc>, data: &SignalData) {
        self.by_kind[kind_index(data.kind())] += 1;
        self.activity[occurred_at.hour() as usize] += 1;
        match data {
            SignalData::Task { completed: true, .. } => self.tasks_completed += 1,
            SignalData::Mood { score, .. } if self.mood.is_none_or(|(_, at)| at <= occurred_at) => {
                self.mood = Some((i16::from(score.get()), occurred_at));
            }
            SignalData::Context { place, time_zone, .. } => {
                self.place = Some(place.as_str());
                if let Some(tz) = time_zone {
                    self.time_zone = Some(tz.as_str().to_owned());
                }
            }
            _ => {}
        }
        self.last_signal_at = Some(self.last_signal_at.map_or(occurred_at, |t| t.max(occurred_at)));
    }
}

/// One upsert for a whole batch: row `i` of the arrays is one user's delta, and that user's 24
/// hourly counters are elements `24(i-1)+1 ..= 24i` of the flat `$8`.
const UPSERT: &str = "INSERT INTO user_features (user_id, signals_task, signals_habit, signals_calendar, signals_mood, \
    signals_context, tasks_completed, activity_by_hour, latest_mood, latest_mood_at, place, time_zone, tips_served, last_signal_at) \
    SELECT u, st, sh, sc, sm, sx, tc, ($8::int8[])[(i - 1) * 24 + 1 : i * 24], lm, lma, pl, tz, ts, lsa \
    FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $9::int2[], \
        $10::timestamptz[], $11::text[], $12::text[], $13::int8[], $14::timestamptz[]) \
        WITH ORDINALITY AS t(u, st, sh, sc, sm, sx, tc, lm, lma, pl, tz, ts, lsa, i) \
    ON CONFLICT (user_id) DO UPDATE SET \
    signals_task = user_features.signals_task + EXCLUDED.signals_task, \
    signals_habit = user_features.signals_habit + EXCLUDED.signals_habit, \
    signals_calendar = user_features.signals_calendar + EXCLUDED.signals_calendar, \
    signals_mood = user_features.signals_mood + EXCLUDED.signals_mood, \
    signals_context = user_features.signals_context + EXCLUDED.signals_context, \
    tasks_completed = user_features.tasks_completed + EXCLUDED.tasks_completed, \
    activity_by_hour = ARRAY(SELECT a + b FROM unnest(user_features.activity_by_hour, EXCLUDED.activity_by_hour) \
        WITH ORDINALITY AS t(a, b, i) ORDER BY i), \
    latest_mood = CASE WHEN EXCLUDED.latest_mood IS NOT NULL AND (user_features.latest_mood_at IS NULL \
        OR user_features.latest_mood_at <= EXCLUDED.latest_mood_at) THEN EXCLUDED.latest_mood ELSE user_features.latest_mood END, \
    latest_mood_at = CASE WHEN EXCLUDED.latest_mood IS NOT NULL AND (user_features.latest_mood_at IS NULL \
        OR user_features.latest_mood_at <= EXCLUDED.latest_mood_at) THEN EXCLUDED.latest_mood_at ELSE user_features.latest_mood_at END, \
    place = COALESCE(EXCLUDED.place, user_features.place), \
    time_zone = COALESCE(EXCLUDED.time_zone, user_features.time_zone), \
    tips_served = user_features.tips_served + EXCLUDED.tips_served, \
    last_signal_at = GREATEST(user_features.last_signal_at, EXCLUDED.last_signal_at)";

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
    // Users in the order they first appear, so statements run in a stable order.
    let mut order: Vec<Uuid> = Vec::new();
    let mut deltas: HashMap<Uuid, Delta> = HashMap::new();
    for event in events {
        let delta = match event.event_type.as_str() {
            "SignalRecorded" | "TipServed" => deltas.entry(event.user_id).or_insert_with(|| {
                order.push(event.user_id);
                Delta::default()
            }),
            _ => continue,
        };
        if event.event_type == "TipServed" {
            delta.tips_served += 1;
        } else {
            let SignalsEvent::SignalRecorded { occurred_at, data, .. } = decode(event)?;
            delta.signal(occurred_at, &data);
        }
    }
    if order.is_empty() {
        return Ok(());
    }
    // Column arrays, users in the order they first appear (each user once, so the upsert never
    // touches a row twice).
    let n = order.len();
    let mut by_kind: [Vec<i64>; 5] = Default::default();
    let (mut completed, mut activity) = (Vec::with_capacity(n), Vec::with_capacity(n * 24));
    let (mut mood, mut mood_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut place, mut time_zone) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut tips, mut last_signal) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for user in &order {
        let d = deltas.remove(user).unwrap_or_default();
        for (k, column) in by_kind.iter_mut().enumerate() {
            column.push(d.by_kind[k]);
        }
        completed.push(d.tasks_completed);
        activity.extend_from_slice(&d.activity);
        mood.push(d.mood.map(|(m, _)| m));
        mood_at.push(d.mood.map(|(_, at)| at));
        place.push(d.place);
        time_zone.push(d.time_zone);
        tips.push(d.tips_served);
        last_signal.push(d.last_signal_at);
    }
    let [task, habit, calendar, moods, context] = by_kind;
    sqlx::query(UPSERT)
        .bind(&order)
        .bind(task)
        .bind(habit)
        .bind(calendar)
        .bind(moods)
        .bind(context)
        .bind(completed)
        .bind(activity)
        .bind(mood)
        .bind(mood_at)
        .bind(place)
        .bind(time_zone)
        .bind(tips)
        .bind(last_signal)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
