//! `POST /recommend`: one tip, now. Parses the request, then four calls: the projections read
//! the person's candidates and context ([`DecisionReader::prepare`]) and the population's prior,
//! the policies decide with a fresh seed ([`Policies::decide`]), and the command side appends
//! `TipServed` (durably) and opens the text to show ([`oo_commands::serving::serve`]) before
//! this answers.
//!
//! [`DecisionReader::prepare`]: oo_projections::deciding::DecisionReader::prepare
//! [`Policies::decide`]: oo_domain::decision::Policies::decide

use crate::auth::{CurrentUser, SessionToken};
use crate::error::{ApiError, command_error};
use crate::json;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use oo_commands::cursor::Cursor;
use oo_domain::decision::{Overrides, parse_time_zone};
use oo_domain::signal::Place;
use oo_domain::tip::CandidateKind;
use oo_projections::deciding::Person;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How long `min_position` may wait for the projections.
const MAX_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(default, deserialize_with = "crate::json::optional_object")]
    pub context: Option<RecommendContext>,
    /// Wait (up to 2 s) until the projections have passed this position.
    #[serde(default)]
    #[schema(pattern = r"^c[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$")]
    pub min_position: Option<String>,
}

/// What the client knows of the moment; overrides what oO has learned.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendContext {
    #[serde(default)]
    #[schema(value_type = Option<crate::routes::signals::PlaceName>)]
    pub place: Option<String>,
    /// -2 (low) to 2 (high).
    #[serde(default, deserialize_with = "crate::json::optional_integer")]
    #[schema(minimum = -2, maximum = 2)]
    pub mood: Option<i64>,
    /// An IANA time zone name (the document lists them).
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

/// What a request asks for, validated.
struct Asked {
    min_position: Option<Cursor>,
    overrides: Overrides,
}

/// Parses and validates the optional body: 400 for malformed JSON, 422 for values out of range.
fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Asked, ApiError> {
    let req: RecommendRequest = json::parse_optional(headers, body)?.unwrap_or_default();
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
    let time_zone = ctx_in
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
    Ok(Asked {
        min_position,
        overrides: Overrides { place, mood, time_zone },
    })
}

/// The next tip, or 204 when the policy chose "not now" (the decision is logged all the same).
#[utoipa::path(post, path = "/recommend", request_body(content = RecommendRequest, description = "optional"), security(("session" = [])),
    responses((status = 200, body = RecommendResponse), (status = 204, description = "nothing worth showing now"),
      (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
      (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn recommend(
    State(state): State<AppState>,
    token: SessionToken,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let asked = parse(&headers, &body);
    let now = Utc::now();
    let serving = state.serving.current();
    let reader = &serving.reader;
    let (prepared, min_position) = match asked {
        // A bad body is refused after the session and the rate limit (401 and 429 come first),
        // without reading the person.
        Err(e) => {
            CurrentUser::authenticate(&state, &token).await?;
            return Err(e);
        }
        Ok(Asked {
            min_position: Some(target),
            overrides,
        }) => {
            // Read-your-writes: authenticated first, so that nobody without a session can make
            // the server wait; then the person is read once the projections have caught up.
            let user = CurrentUser::authenticate(&state, &token).await?;
            let reached = oo_projections::projector::wait_for(
                &state.pool,
                &state.status,
                &oo_projections::names(),
                target,
                MAX_WAIT,
            )
            .await?;
            let prepared = reader
                .prepare(&state.pool, Person::Known(user.user_id), overrides, now)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            (prepared, Some(reached))
        }
        Ok(Asked {
            min_position: None,
            overrides,
        }) => {
            // The common case: the session is checked by the query that reads the person.
            let prepared = reader
                .prepare(&state.pool, Person::Session(&token.0), overrides, now)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            crate::auth::admit(&state, prepared.user_id)?;
            (prepared, None)
        }
    };
    let stale = min_position.is_some_and(|reached| !reached);
    let prior = reader.prior(&state.pool).await?;
    let decided = serving.policies.decide(&prepared, &prior, rand::rngs::OsRng.next_u64());
    let served = oo_commands::serving::serve(&state.write.tips, &state.write.vault, prepared, decided)
        .await
        .map_err(|e| command_error(e, ApiError::internal))?;
    state
        .metrics
        .observe_command("serve_tip", started.elapsed().as_secs_f64());
    let kind = served.kind;
    if kind == CandidateKind::NotNow {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let position = crate::routes::health::head_or(&state, served.executed.cursor).await?;
    let tip = TipView {
        id: served.tip_id.to_string(),
        kind: kind.as_str().to_owned(),
        title: served.title,
        body: served.body,
        source: served.source,
        deep_link: served.deep_link,
        meta: TipMeta {
            policy: served.policy,
            score: served.score,
            propensity: served.propensity,
        },
    };
    Ok(Json(RecommendResponse { tip, position, stale }).into_response())
}
