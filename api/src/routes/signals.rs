//! `POST /signals`: ingestion. Bodies become domain values at this edge; a batch with one bad
//! signal stores nothing. Repeated signal ids are acknowledged as duplicates and stored once.

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorCode, command_error};
use crate::json;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use oo_commands::aggregate::Meta;
use oo_domain::ids::SignalId;
use oo_domain::signal::{
    ExternalId, InvalidField, MoodScore, Place, Priority, SignalData, SignalKind, TaskSource, Text, TimeZoneName,
};
use oo_domain::signals::{MAX_SIGNALS_PER_COMMAND, NewSignal, SignalsError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalsRequest {
    /// At most 1,000 signals.
    #[serde(deserialize_with = "json::objects")]
    #[schema(value_type = Vec<Signal>, max_items = 1000)]
    pub signals: Vec<SignalDto>,
}

/// A signal as the document describes it: one schema per `kind`, each with its own `data`.
/// `SignalDto` parses the same wire format, so that an error can name the signal's index.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)] // describes the wire format; never built
pub enum Signal {
    Task {
        /// Client-chosen, unique per person: 1–128 printable ASCII characters.
        #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
        id: String,
        occurred_at: DateTime<Utc>,
        data: TaskData,
    },
    Habit {
        #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
        id: String,
        occurred_at: DateTime<Utc>,
        data: HabitData,
    },
    Calendar {
        #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
        id: String,
        occurred_at: DateTime<Utc>,
        /// `end` must not be before `start` (422 otherwise).
        data: CalendarData,
    },
    Mood {
        #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
        id: String,
        occurred_at: DateTime<Utc>,
        data: MoodData,
    },
    Context {
        #[schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")]
        id: String,
        occurred_at: DateTime<Utc>,
        data: ContextData,
    },
}

/// Where a task comes from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // describes the wire format
pub enum TaskSourceName {
    Todoist,
    Manual,
}

/// Where the person is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // describes the wire format
pub enum PlaceName {
    Home,
    Work,
    Commute,
    Elsewhere,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalDto {
    /// Client-chosen, unique per user: 1–128 printable ASCII characters.
    pub id: String,
    /// task | habit | calendar | mood | context
    pub kind: String,
    /// RFC 3339.
    pub occurred_at: String,
    /// Shape depends on `kind` (TaskData, HabitData, CalendarData, MoodData, ContextData).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskData {
    #[schema(value_type = TaskSourceName)]
    pub source: String,
    /// The source app's id of the task: 1 to 1024 characters, none a control character.
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    pub external_id: String,
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: String,
    /// 1 (lowest) to 4 (highest).
    #[serde(deserialize_with = "json::integer")]
    #[schema(minimum = 1, maximum = 4)]
    pub priority: i64,
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub due: Option<String>,
    pub completed: bool,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HabitData {
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    pub done: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarData {
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub title: String,
    #[schema(value_type = DateTime<Utc>)]
    pub start: String,
    /// Not before `start`.
    #[schema(value_type = DateTime<Utc>)]
    pub end: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoodData {
    /// -2 (low) to 2 (high).
    #[serde(deserialize_with = "json::integer")]
    #[schema(minimum = -2, maximum = 2)]
    pub score: i64,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextData {
    #[schema(value_type = PlaceName)]
    pub place: String,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub activity: Option<String>,
    /// An IANA time zone name's shape, e.g. `Europe/Paris`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z][A-Za-z0-9/_+-]*$")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignalsResponse {
    pub accepted: usize,
    pub duplicates: usize,
    /// Opaque position of the last event written (or the head of the log).
    pub position: String,
}

fn at(i: usize, e: InvalidField) -> ApiError {
    ApiError::invalid_value(format!("signals[{i}].{}: {}", e.field, e.message))
}

fn data<T: DeserializeOwned>(i: usize, v: &serde_json::Value) -> Result<T, ApiError> {
    json::object(v).map_err(|e| ApiError::bad_body(format!("signals[{i}].data: {e}")))
}

fn time(i: usize, field: &'static str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            at(
                i,
                InvalidField {
                    field,
                    message: "must be an RFC 3339 date-time",
                },
            )
        })
}

fn opt_text(field: &'static str, s: Option<&str>) -> Result<Option<Text>, InvalidField> {
    s.map(|s| Text::parse(field, s)).transpose()
}

/// Turns one DTO into a domain signal.
pub fn parse_signal(i: usize, dto: &SignalDto) -> Result<NewSignal, ApiError> {
    let id = SignalId::parse(&dto.id).map_err(|e| ApiError::invalid_value(format!("signals[{i}].id: {e}")))?;
    let kind = SignalKind::parse(&dto.kind).map_err(|e| at(i, e))?;
    let occurred_at = time(i, "occurred_at", &dto.occurred_at)?;
    let data = match kind {
        SignalKind::Task => {
            let d: TaskData = data(i, &dto.data)?;
            let due = d.due.as_deref().map(|s| time(i, "due", s)).transpose()?;
            SignalData::Task {
                source: TaskSource::parse(&d.source).map_err(|e| at(i, e))?,
                external_id: ExternalId::parse(&d.external_id).map_err(|e| at(i, e))?,
                title: Text::parse("title", &d.title).map_err(|e| at(i, e))?,
                priority: Priority::parse(d.priority).map_err(|e| at(i, e))?,
                due,
                completed: d.completed,
                project: opt_text("project", d.project.as_deref()).map_err(|e| at(i, e))?,
            }
        }
        SignalKind::Habit => {
            let d: HabitData = data(i, &dto.data)?;
            SignalData::Habit {
                name: Text::parse("name", &d.name).map_err(|e| at(i, e))?,
                done: d.done,
            }
        }
        SignalKind::Calendar => {
            let d: CalendarData = data(i, &dto.data)?;
            let title = Text::parse("title", &d.title).map_err(|e| at(i, e))?;
            SignalData::calendar(title, time(i, "start", &d.start)?, time(i, "end", &d.end)?).map_err(|e| at(i, e))?
        }
        SignalKind::Mood => {
            let d: MoodData = data(i, &dto.data)?;
            SignalData::Mood {
                score: MoodScore::parse(d.score).map_err(|e| at(i, e))?,
                note: opt_text("note", d.note.as_deref()).map_err(|e| at(i, e))?,
            }
        }
        SignalKind::Context => {
            let d: ContextData = data(i, &dto.data)?;
            SignalData::Context {
                place: Place::parse(&d.place).map_err(|e| at(i, e))?,
                activity: opt_text("activity", d.activity.as_deref()).map_err(|e| at(i, e))?,
                time_zone: d
                    .time_zone
                    .as_deref()
                    .map(|tz| match oo_domain::decision::parse_time_zone(tz) {
                        Some(_) => TimeZoneName::parse(tz),
                        None => Err(InvalidField {
                            field: "time_zone",
                            message: "must be a known IANA time zone name",
                        }),
                    })
                    .transpose()
                    .map_err(|e| at(i, e))?,
            }
        }
    };
    Ok(NewSignal { id, occurred_at, data })
}

/// Records signals. Answers once they are durable, with the position to wait for.
#[utoipa::path(post, path = "/signals", request_body = SignalsRequest, security(("session" = [])),
    responses((status = 200, body = SignalsResponse), (status = 400, body = crate::error::Problem),
      (status = 401, body = crate::error::Problem), (status = 413, body = crate::error::Problem),
      (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem),
      (status = 503, body = crate::error::Problem)))]
pub async fn post_signals(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SignalsResponse>, ApiError> {
    let started = Instant::now();
    let req: SignalsRequest = json::parse(&headers, &body)?;
    if req.signals.len() > MAX_SIGNALS_PER_COMMAND {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManySignals,
            format!("at most {MAX_SIGNALS_PER_COMMAND} signals per request"),
        ));
    }
    let signals = req
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| parse_signal(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    let total = signals.len();
    let ids: Vec<String> = signals.iter().map(|s| s.id.as_str().to_owned()).collect();
    let quota = Quota::reserve(&state, user.user_id, &ids).await?;
    let executed = match state
        .write
        .signals
        .record(user.user_id, signals, Meta::new(Utc::now()))
        .await
    {
        Ok(executed) => executed,
        Err(e) => {
            quota.give_back(&state, quota.reserved).await;
            return Err(command_error(e, |d| match d {
                SignalsError::TooMany => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooManySignals, d.to_string())
                }
                other => ApiError::invalid_value(other.to_string()),
            }));
        }
    };
    state
        .metrics
        .observe_command("record_signals", started.elapsed().as_secs_f64());
    let accepted = executed.written.len();
    // Signals stored meanwhile by a concurrent request do not count twice.
    quota.give_back(&state, quota.reserved.saturating_sub(accepted)).await;
    let position = crate::routes::health::head_or(&state, executed.cursor).await?;
    Ok(Json(SignalsResponse {
        accepted,
        duplicates: total - accepted,
        position,
    }))
}

/// A reservation of signals against the person's daily quota (`signal_quota`, one row per person
/// per UTC day, across every replica).
#[derive(Debug, Clone, Copy)]
struct Quota {
    user_id: oo_domain::ids::UserId,
    day: chrono::NaiveDate,
    /// How many signals this request reserved.
    reserved: usize,
}

impl Quota {
    /// Reserves today's quota for the signals among `ids` that are new (a retried batch, stored
    /// before, counts nothing and is always acknowledged), or answers 429, reserving nothing,
    /// when they would pass it.
    async fn reserve(state: &AppState, user_id: oo_domain::ids::UserId, ids: &[String]) -> Result<Self, ApiError> {
        let now = Utc::now();
        let day = now.date_naive();
        let limit = state.config.signal_quota;
        // One round trip: count the ids not stored before and reserve them, unless that would
        // pass the quota (then nothing is reserved).
        let (fresh, reserved): (i64, bool) = sqlx::query_as(
            "WITH fresh AS (SELECT count(DISTINCT id) AS n FROM unnest($2::text[]) AS id \
               WHERE NOT EXISTS (SELECT 1 FROM ingested_signals s WHERE s.user_id = $1 AND s.signal_id = id)), \
             reserved AS (INSERT INTO signal_quota (user_id, day, accepted) \
               SELECT $1, $3, n FROM fresh WHERE n > 0 AND n <= $4 \
               ON CONFLICT (user_id, day) DO UPDATE SET accepted = signal_quota.accepted + EXCLUDED.accepted \
               WHERE signal_quota.accepted + EXCLUDED.accepted <= $4 RETURNING 1) \
             SELECT (SELECT n FROM fresh), EXISTS (SELECT 1 FROM reserved)",
        )
        .bind(user_id.as_uuid())
        .bind(ids)
        .bind(day)
        .bind(limit)
        .fetch_one(&state.pool)
        .await?;
        let quota = Self {
            user_id,
            day,
            reserved: usize::try_from(fresh).unwrap_or(0),
        };
        if fresh > 0 && !reserved {
            let used: i64 = sqlx::query_scalar("SELECT accepted FROM signal_quota WHERE user_id = $1 AND day = $2")
                .bind(user_id.as_uuid())
                .bind(day)
                .fetch_optional(&state.pool)
                .await?
                .unwrap_or(0);
            let left = (limit - used).max(0);
            let midnight = day
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(now, |t| t.and_utc());
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QuotaExceeded,
                format!("the daily quota of {limit} signals is reached ({left} left today); the batch was not stored"),
            )
            .with_retry_after(u64::try_from((midnight - now).num_seconds()).unwrap_or(1).max(1)));
        }
        Ok(quota)
    }

    /// Gives back `n` reserved signals that were not stored (duplicates, a failed append).
    async fn give_back(self, state: &AppState, n: usize) {
        if n == 0 {
            return;
        }
        let n = reserved_count(n);
        let given = sqlx::query("UPDATE signal_quota SET accepted = accepted - $3 WHERE user_id = $1 AND day = $2")
            .bind(self.user_id.as_uuid())
            .bind(self.day)
            .bind(n)
            .execute(&state.pool)
            .await;
        if let Err(e) = given {
            // Counted once too often: the person's quota is smaller by `n` today, nothing worse.
            tracing::warn!(error = %e, "cannot give back reserved signals");
        }
    }
}

fn reserved_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
