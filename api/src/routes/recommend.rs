//! `POST /recommend`: one tip, now. Gathers candidates (the user's open todos, the advices that
//! fit this moment, and "not now"), builds their feature vectors, lets the serving policy draw
//! one with a logged seed, and appends `TipServed` (durably) before answering.

use crate::auth::CurrentUser;
use crate::error::{ApiError, command_error};
use crate::json;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use oo_commands::aggregate::{Meta, open_fields};
use oo_commands::cursor::Cursor;
use oo_commands::sealing::REDACTED;
use oo_domain::advice::{self, Advice};
use oo_domain::features::{CandidateSource, FEATURE_VERSION, UserContext, features};
use oo_domain::ids::TipId;
use oo_domain::policy::draw;
use oo_domain::signal::{Place, Priority};
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, TipCommand, TipError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::time::{Duration, Instant};
use utoipa::ToSchema;
use uuid::Uuid;

/// How long `min_position` may wait for the projections.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// The most todos considered per decision.
const MAX_TODOS: i64 = 50;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(default)]
    pub context: Option<RecommendContext>,
    /// Wait (up to 2 s) until the projections have passed this position.
    #[serde(default)]
    pub min_position: Option<String>,
}

/// What the client knows of the moment; overrides what oO has learned.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendContext {
    /// home | work | commute | elsewhere
    #[serde(default)]
    pub place: Option<String>,
    /// -2..2
    #[serde(default)]
    pub mood: Option<i64>,
    /// IANA time zone name
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TipMeta {
    pub policy: String,
    pub score: f64,
    pub propensity: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TipView {
    pub id: String,
    /// todo | advice
    pub kind: String,
    pub title: String,
    pub body: String,
    /// todoist | manual | oo
    pub source: String,
    pub deep_link: Option<String>,
    pub meta: TipMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendResponse {
    pub tip: TipView,
    pub position: String,
    /// True when `min_position` was not reached within 2 s.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

struct Todo {
    external_id: String,
    source: String,
    priority: Priority,
    due: Option<DateTime<Utc>>,
    first_seen_at: DateTime<Utc>,
    title_event_id: Uuid,
    sealed: Option<Vec<u8>>,
}

enum Candidate<'a> {
    Todo(Todo),
    Advice(&'a Advice),
    NotNow,
}

pub(crate) fn parse_time_zone(s: &str) -> Option<chrono_tz::Tz> {
    s.parse::<chrono_tz::Tz>().ok()
}

/// The next tip, or 204 when the policy chose "not now" (the decision is logged all the same).
#[utoipa::path(post, path = "/recommend", request_body(content = RecommendRequest, description = "optional"), security(("session" = [])),
    responses((status = 200, body = RecommendResponse), (status = 204, description = "nothing worth showing now"),
      (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
      (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn recommend(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: RecommendRequest = json::parse_optional(&headers, &body)?.unwrap_or_default();
    let ctx_in = req.context.unwrap_or_default();
    let place = ctx_in
        .place
        .as_deref()
        .map(Place::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_value(format!("context.{e}")))?;
    let mood = ctx_in
        .mood
        .map(oo_domain::signal::MoodScore::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_value(format!("context.mood: {}", e.message)))?;
    let tz_in = ctx_in
        .time_zone
        .as_deref()
        .map(|s| {
            parse_time_zone(s)
                .ok_or_else(|| ApiError::invalid_value("context.time_zone: must be an IANA time zone name"))
        })
        .transpose()?;
    let min_position = req
        .min_position
        .as_deref()
        .map(|p| Cursor::decode(p).map_err(|_| ApiError::invalid_value("min_position: not a position of this log")))
        .transpose()?;

    let mut stale = false;
    if let Some(target) = min_position {
        let names: Vec<&str> = oo_projections::all().iter().map(|p| p.name()).collect();
        stale = !oo_projections::projector::wait_for(&state.pool, &state.status, &names, target, MAX_WAIT).await?;
    }

    let now = Utc::now();
    let uid = user.user_id.as_uuid();
    // The person's features and open todos, read side by side.
    let features_query = sqlx::query("SELECT latest_mood, place, time_zone FROM user_features WHERE user_id = $1")
        .bind(uid)
        .fetch_optional(&state.pool);
    let todos_query = sqlx::query(
        "SELECT external_id, source, priority, due, first_seen_at, title_event_id, sealed FROM open_tasks \
         WHERE user_id = $1 ORDER BY priority DESC, due ASC NULLS LAST, first_seen_at LIMIT $2",
    )
    .bind(uid)
    .bind(MAX_TODOS)
    .fetch_all(&state.pool);
    let (features_row, rows) = tokio::try_join!(features_query, todos_query)?;
    let (known_mood, known_place, known_tz) = match &features_row {
        Some(r) => (
            r.try_get::<Option<i16>, _>("latest_mood")?,
            r.try_get::<Option<String>, _>("place")?,
            r.try_get::<Option<String>, _>("time_zone")?,
        ),
        None => (None, None, None),
    };
    let tz = tz_in.or_else(|| known_tz.as_deref().and_then(parse_time_zone));
    let local_time = match tz {
        Some(tz) => now.with_timezone(&tz).fixed_offset(),
        None => now.fixed_offset(),
    };
    let ctx = UserContext {
        local_time,
        now,
        mood: mood.map(|m| m.get()).or(known_mood.map(|m| m as i8)),
        place: place.or_else(|| known_place.as_deref().and_then(|p| Place::parse(p).ok())),
    };

    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(rows.len() + 20);
    for r in rows {
        let priority = Priority::parse(i64::from(r.try_get::<i16, _>("priority")?)).map_err(ApiError::internal)?;
        candidates.push(Candidate::Todo(Todo {
            external_id: r.try_get("external_id")?,
            source: r.try_get("source")?,
            priority,
            due: r.try_get("due")?,
            first_seen_at: r.try_get("first_seen_at")?,
            title_event_id: r.try_get("title_event_id")?,
            sealed: r.try_get("sealed")?,
        }));
    }
    let (part, weekend) = (ctx.day_part(), ctx.is_weekend());
    candidates.extend(
        advice::library()
            .iter()
            .filter(|a| a.fits(part, weekend))
            .map(Candidate::Advice),
    );
    candidates.push(Candidate::NotNow);

    let logged: Vec<LoggedCandidate> = candidates
        .iter()
        .map(|c| {
            let (id, kind, source) = match c {
                Candidate::Todo(t) => (
                    format!("todo:{}", t.external_id),
                    CandidateKind::Todo,
                    CandidateSource::Todo {
                        priority: t.priority,
                        due: t.due,
                        first_seen_at: t.first_seen_at,
                    },
                ),
                Candidate::Advice(a) => (
                    format!("advice:{}", a.id),
                    CandidateKind::Advice,
                    CandidateSource::Advice(a),
                ),
                Candidate::NotNow => ("not_now".to_owned(), CandidateKind::NotNow, CandidateSource::NotNow),
            };
            LoggedCandidate {
                candidate_id: id,
                kind,
                features: features(&source, &ctx),
            }
        })
        .collect();
    let vectors: Vec<Vec<f64>> = logged.iter().map(|c| c.features.clone()).collect();
    let (scores, distribution) = state.policy.distribution(&vectors);
    let seed = rand::rngs::OsRng.next_u64();
    let chosen = draw(&distribution, seed);

    let (title, body, source, deep_link) = match &candidates[chosen] {
        Candidate::Todo(t) => {
            let key = state.vault.key_for(user.user_id).await?;
            let fields = open_fields(key.as_ref(), t.title_event_id, t.sealed.as_deref());
            let text = |p: &str| {
                fields
                    .as_ref()
                    .and_then(|f| f.get(p))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let title = text("/SignalRecorded/data/title").unwrap_or_else(|| REDACTED.to_owned());
            let body = text("/SignalRecorded/data/project").unwrap_or_default();
            let link = (t.source == "todoist").then(|| format!("todoist://task?id={}", t.external_id));
            (title, body, t.source.clone(), link)
        }
        Candidate::Advice(a) => (a.title.clone(), a.body.clone(), "oo".to_owned(), None),
        Candidate::NotNow => (String::new(), String::new(), "oo".to_owned(), None),
    };

    let tip_id = TipId::from_uuid(Uuid::now_v7());
    let decision = Decision {
        tip_id,
        user_id: user.user_id,
        served_at: now,
        candidates: logged,
        chosen,
        policy: state.policy.name().to_owned(),
        policy_version: state.policy.version().to_owned(),
        feature_version: FEATURE_VERSION,
        score: scores[chosen],
        propensity: distribution[chosen],
        distribution,
        seed,
        shadow: vec![],
        title: title.clone(),
        body: body.clone(),
    };
    let (kind, score, propensity, policy) = (
        decision.candidates[chosen].kind,
        decision.score,
        decision.propensity,
        decision.policy.clone(),
    );
    let executed = state
        .tips
        .execute_new(
            &tip_id.to_string(),
            TipCommand::Serve(Box::new(decision)),
            Meta::new(now),
        )
        .await
        .map_err(|e| command_error(e, |d: TipError| ApiError::internal(d)))?;
    state
        .metrics
        .observe_command("serve_tip", started.elapsed().as_secs_f64());
    if kind == CandidateKind::NotNow {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let position = crate::routes::health::head_or(&state, executed.cursor).await?;
    let tip = TipView {
        id: tip_id.to_string(),
        kind: kind.as_str().to_owned(),
        title,
        body,
        source,
        deep_link,
        meta: TipMeta {
            policy,
            score,
            propensity,
        },
    };
    Ok(Json(RecommendResponse { tip, position, stale }).into_response())
}
