//! `POST /feedback`: a reaction to a tip. The first settling reaction settles the reward in the
//! same command; a repeat is accepted and stores nothing; a different one is refused with 409.

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorCode, command_error};
use crate::json;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use oo_commands::aggregate::Meta;
use oo_domain::ids::TipId;
use oo_domain::reward::Reaction;
use oo_domain::tip::{TipCommand, TipError};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The tip's id, as `/recommend` gave it.
    #[schema(format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub tip_id: String,
    #[schema(value_type = ReactionName)]
    pub reaction: String,
}

/// How the person took a tip.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // describes the wire format
pub enum ReactionName {
    Done,
    Helpful,
    Snooze,
    NotHelpful,
    Dismiss,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResponse {
    pub position: String,
}

/// Records a reaction to one of my tips.
#[utoipa::path(post, path = "/feedback", request_body = FeedbackRequest, security(("session" = [])),
    responses((status = 202, body = FeedbackResponse), (status = 400, body = crate::error::Problem),
      (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
      (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn feedback(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<FeedbackResponse>), ApiError> {
    let started = Instant::now();
    let req: FeedbackRequest = json::parse(&headers, &body)?;
    let hyphenated = req.tip_id.len() == 36;
    let tip_id: TipId = Some(req.tip_id.as_str())
        .filter(|_| hyphenated)
        .ok_or(())
        .and_then(|t| t.parse().map_err(|_| ()))
        .map_err(|_| ApiError::invalid_value("tip_id: must be a tip id (UUID)"))?;
    let reaction = Reaction::parse(&req.reaction).map_err(|e| ApiError::invalid_value(format!("reaction: {e}")))?;
    let now = Utc::now();
    let command = TipCommand::React {
        user_id: user.user_id,
        reaction,
        at: now,
    };
    let executed = state
        .write
        .tips
        .execute(&tip_id.to_string(), command, Meta::new(now))
        .await
        .map_err(|e| {
            command_error(e, |d| match d {
                TipError::NotFound => ApiError::not_found(),
                TipError::ConflictingReaction(r) => ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::ConflictingReaction,
                    format!(
                        "this tip already has the reaction {}; a different one is refused",
                        r.as_str()
                    ),
                ),
                other => ApiError::invalid_value(other.to_string()),
            })
        })?;
    state.metrics.observe_command("react", started.elapsed().as_secs_f64());
    let position = crate::routes::health::head_or(&state, executed.cursor).await?;
    Ok((StatusCode::ACCEPTED, Json(FeedbackResponse { position })))
}
