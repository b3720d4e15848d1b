//! Admin endpoints of the serving line-up (bearer `OO_ADMIN_TOKEN` only): `GET /admin/policies`
//! (the serving policy and the shadows with their recent mean reward and decision count) and
//! `POST /admin/policies/promote` (a shadow serves if the offline gate lets it; DESIGN
//! section 12). The work is [`crate::promotion`]'s; this module maps it to HTTP.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorCode};
use crate::json;
use crate::promotion::{PromoteError, promote};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use oo_domain::promotion::{Evidence, Interval};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An estimate with its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct IntervalView {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl From<Interval> for IntervalView {
    fn from(i: Interval) -> Self {
        Self {
            value: i.value,
            ci_low: i.ci_low,
            ci_high: i.ci_high,
        }
    }
}

/// What the offline gate saw.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvidenceView {
    /// N: how many of the latest settled decisions the gate asked for.
    pub window: u64,
    /// How many it weighed: settled, served by the serving policy, with the candidate's whole
    /// distribution logged, of people not deleted.
    pub decisions: u64,
    pub min_decisions: u64,
    pub first_served_at: Option<DateTime<Utc>>,
    pub last_served_at: Option<DateTime<Utc>>,
    /// The serving policy's mean settled reward on those decisions (its on-policy value).
    pub serving_value: f64,
    /// The candidate's self-normalised IPS estimate (`null`: not computable).
    pub snips: Option<IntervalView>,
    /// The candidate's doubly robust estimate (`null`: not computable).
    pub dr: Option<IntervalView>,
    pub bootstrap: u64,
    pub seed: u64,
    /// Why the gate refuses; empty when it passes.
    pub refusals: Vec<String>,
    pub passes: bool,
}

impl From<&Evidence> for EvidenceView {
    fn from(e: &Evidence) -> Self {
        Self {
            window: e.window,
            decisions: e.decisions,
            min_decisions: e.min_decisions,
            first_served_at: e.first_served_at,
            last_served_at: e.last_served_at,
            serving_value: e.serving_value,
            snips: e.snips.map(Into::into),
            dr: e.dr.map(Into::into),
            bootstrap: e.bootstrap,
            seed: e.seed,
            refusals: e.refusals.clone(),
            passes: e.passes(),
        }
    }
}

/// One policy of the line-up over the latest settled decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// The canonical spec (every parameter spelled out).
    pub spec: String,
    /// serving | shadow
    pub role: String,
    /// The decisions it is judged on: those it served, or (a shadow) those that logged its
    /// distribution.
    pub decisions: u64,
    /// The mean reward it earned (serving), or its SNIPS estimate (a shadow); `null` without
    /// decisions.
    pub mean_reward: Option<f64>,
}

/// The latest promotion.
#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionView {
    pub promoted_at: DateTime<Utc>,
    pub serving: String,
    pub replaced: String,
    pub forced: bool,
    pub evidence: EvidenceView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PoliciesResponse {
    pub serving: PolicyView,
    pub shadows: Vec<PolicyView>,
    /// How many of the latest settled decisions the figures are over.
    pub window: u64,
    /// `null` before the first promotion (the configured line-up serves).
    pub last_promotion: Option<PromotionView>,
}

/// The serving policy and the shadows, each with its mean reward and decision count over the
/// latest settled decisions.
#[utoipa::path(get, path = "/admin/policies", security(("admin" = [])),
    responses((status = 200, body = PoliciesResponse), (status = 401, body = crate::error::Problem)))]
pub async fn policies(State(state): State<AppState>, _admin: Admin) -> Result<Json<PoliciesResponse>, ApiError> {
    let lineup = state.serving.current().policies.lineup();
    let window = state.config.gate.window.max(1);
    let overview = crate::promotion::overview(&state.pool, &lineup, window)
        .await
        .map_err(ApiError::internal)?;
    let mut recent = overview.recent.into_iter().map(|r| PolicyView {
        spec: r.spec,
        role: r.role.to_owned(),
        decisions: r.decisions as u64,
        mean_reward: r.mean_reward,
    });
    let serving = recent.next().ok_or_else(|| ApiError::internal("no serving policy"))?;
    let last_promotion = overview.last_promotion.map(|p| PromotionView {
        promoted_at: p.promoted_at,
        serving: p.lineup.serving,
        replaced: p.replaced,
        forced: p.forced,
        evidence: EvidenceView::from(&p.evidence),
    });
    Ok(Json(PoliciesResponse {
        serving,
        shadows: recent.collect(),
        window: window as u64,
        last_promotion,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// A policy spec as `OO_POLICY` takes it; it must name one of the shadows.
    pub spec: String,
    /// Promote whatever the gate says (logged as forced).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromoteResponse {
    /// The policy that serves from now on, and the shadows.
    pub serving: String,
    pub shadows: Vec<String>,
    pub replaced: String,
    pub forced: bool,
    pub evidence: EvidenceView,
    /// The position of the `PolicyPromoted` event in the log.
    pub position: Option<i64>,
}

/// Makes a shadow the serving policy if its offline lower 95% bounds (SNIPS and DR on the
/// latest settled decisions) are at least the serving policy's on-policy value, or if forced.
/// This server switches at once; others when their projection reads the promotion.
#[utoipa::path(post, path = "/admin/policies/promote", request_body = PromoteRequest, security(("admin" = [])),
    responses((status = 200, body = PromoteResponse), (status = 400, body = crate::error::Problem),
      (status = 401, body = crate::error::Problem), (status = 409, body = crate::error::Problem,
        description = "promotion_refused (with the evidence) or lineup_changed"),
      (status = 422, body = crate::error::Problem, description = "not_a_shadow or invalid_value")))]
pub async fn promote_policy(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PromoteResponse>, ApiError> {
    let req: PromoteRequest = json::parse(&headers, &body)?;
    let current = state.serving.current().policies.lineup();
    let promoted = promote(
        &state.write,
        &state.pool,
        &current,
        &req.spec,
        req.force,
        &state.config.gate.options(),
    )
    .await
    .map_err(promote_error)?;
    if let Some(position) = promoted.position {
        state
            .serving
            .switch(&promoted.lineup, position)
            .map_err(ApiError::internal)?;
    }
    Ok(Json(PromoteResponse {
        serving: promoted.lineup.serving,
        shadows: promoted.lineup.shadows,
        replaced: promoted.replaced,
        forced: promoted.forced,
        evidence: EvidenceView::from(&promoted.evidence),
        position: promoted.position,
    }))
}

fn promote_error(e: PromoteError) -> ApiError {
    let detail = e.to_string();
    match e {
        PromoteError::InvalidSpec(_) => ApiError::invalid_value(format!("spec: {detail}")),
        PromoteError::NotAShadow { .. } | PromoteError::AlreadyServing(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::NotAShadow, detail)
        }
        PromoteError::Refused { evidence, .. } => ApiError {
            evidence: Some(Box::new(EvidenceView::from(evidence.as_ref()))),
            ..ApiError::new(StatusCode::CONFLICT, ErrorCode::PromotionRefused, detail)
        },
        PromoteError::LineupChanged(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::LineupChanged, detail),
        PromoteError::Read(e) => ApiError::internal(e),
        PromoteError::Command(e) => crate::error::command_error(e, |d| {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::PromotionRefused, d.to_string())
        }),
    }
}
