//! Admin endpoints (bearer `OO_ADMIN_TOKEN` only): projection status and blue/green rebuilds,
//! and the tail of the log (personal fields stay sealed).

use crate::auth::Admin;
use crate::error::{ApiError, ErrorCode};
use crate::rebuilds::{Phase, RebuildRefused};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use chrono::{DateTime, Utc};
use oo_commands::cursor::Cursor;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildView {
    pub events_applied: u64,
    pub events_total: u64,
    pub events_per_second: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    pub name: String,
    /// projection | relay | consumer
    pub kind: &'static str,
    pub position: Option<String>,
    pub lag_events: i64,
    /// Every event consumed since the last rebuild (equals the log's size when caught up).
    pub events_applied: i64,
    /// live | queued (a rebuild waits for this server's previous one) | rebuilding | failed | off
    pub status: String,
    pub last_error: Option<String>,
    pub rebuild: Option<RebuildView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsResponse {
    pub projections: Vec<ProjectionView>,
}

/// Status of every projection, of the relay, of the reward join and of the Todoist closer.
#[utoipa::path(get, path = "/admin/projections", security(("admin" = [])),
    responses((status = 200, body = ProjectionsResponse), (status = 401, body = crate::error::Problem)))]
pub async fn projections(State(state): State<AppState>, _admin: Admin) -> Result<Json<ProjectionsResponse>, ApiError> {
    let checkpoints = oo_projections::projector::checkpoints(&state.pool).await?;
    let here = state.rebuilds.phases();
    let mut out = Vec::new();
    for p in oo_projections::all() {
        let name = p.name();
        let cp = checkpoints.iter().find(|c| c.name == name);
        let cursor = cp.map(|c| c.cursor).unwrap_or(Cursor::START);
        let lag = oo_commands::store::count_after(&state.pool, cursor).await?;
        let rebuild = state.status.rebuild(name).map(|r| RebuildView {
            events_applied: r.events_applied,
            events_total: r.events_total,
            events_per_second: r.events_per_second(),
        });
        out.push(ProjectionView {
            name: name.to_owned(),
            kind: "projection",
            position: cp.map(|c| c.cursor.encode()),
            lag_events: lag,
            events_applied: cp.map_or(0, |c| c.events_applied),
            status: if here.get(name) == Some(&Phase::Queued) {
                "queued".into()
            } else if rebuild.is_some()
                || here.contains_key(name)
                || checkpoints
                    .iter()
                    .any(|c| c.is_running_rebuild_of(name, chrono::Utc::now()))
            {
                "rebuilding".into()
            } else {
                cp.map_or("live".into(), |c| c.status.clone())
            },
            last_error: cp.and_then(|c| c.last_error.clone()),
            rebuild,
        });
    }
    let relay = checkpoints.iter().find(|c| c.name == oo_projections::relay::CHECKPOINT);
    let relay_lag = match (relay, &state.config.nats_url) {
        (Some(c), Some(_)) => oo_commands::store::count_after(&state.pool, c.cursor).await?,
        _ => 0,
    };
    out.push(ProjectionView {
        name: oo_projections::relay::CHECKPOINT.into(),
        kind: "relay",
        position: relay.map(|c| c.cursor.encode()),
        lag_events: relay_lag,
        events_applied: relay.map_or(0, |c| c.events_applied),
        status: match (&state.config.nats_url, relay) {
            (None, _) => "off".into(),
            (Some(_), Some(c)) => c.status.clone(),
            (Some(_), None) => "live".into(),
        },
        last_error: relay.and_then(|c| c.last_error.clone()),
        rebuild: None,
    });
    // The reward join consumes the log through `reward_pending`: it has consumed every event up
    // to the head its last settling pass waited for.
    let join = state.reward_join.lock().map(|j| j.clone()).unwrap_or_default();
    let lag = oo_commands::store::count_after(&state.pool, join.position.unwrap_or(Cursor::START)).await?;
    let applied = match join.position {
        Some(_) => oo_commands::store::count_after(&state.pool, Cursor::START).await? - lag,
        None => 0,
    };
    out.push(ProjectionView {
        name: crate::jobs::REWARD_JOIN.into(),
        kind: "consumer",
        position: join.position.map(|c| c.encode()),
        lag_events: lag,
        events_applied: applied,
        status: if join.last_error.is_some() { "failed" } else { "live" }.into(),
        last_error: join.last_error,
        rebuild: None,
    });
    // The Todoist closer (an outbox of `done`s), where this server runs it.
    if state.connectors.todoist().is_some() {
        let closer = checkpoints.iter().find(|c| c.name == oo_commands::connections::CLOSER);
        let position = closer.map_or(Cursor::START, |c| c.cursor);
        out.push(ProjectionView {
            name: oo_commands::connections::CLOSER.into(),
            kind: "consumer",
            position: closer.map(|c| c.cursor.encode()),
            lag_events: oo_commands::store::count_after(&state.pool, position).await?,
            events_applied: closer.map_or(0, |c| c.events_applied),
            status: if closer.is_some_and(|c| c.last_error.is_some()) {
                "failed"
            } else {
                "live"
            }
            .into(),
            last_error: closer.and_then(|c| c.last_error.clone()),
            rebuild: None,
        });
    }
    Ok(Json(ProjectionsResponse { projections: out }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    pub name: String,
    /// queued: it starts once this server's previous rebuild has finished (at once if none runs).
    pub status: &'static str,
}

/// Queues a blue/green rebuild of one projection: this server runs its rebuilds one at a time, in
/// the order asked; progress shows in GET /admin/projections.
#[utoipa::path(post, path = "/admin/projections/{name}/rebuild", security(("admin" = [])),
    params(("name" = String, Path, description = "a projection of this build (the document lists them)")),
    responses((status = 202, body = RebuildStarted), (status = 401, body = crate::error::Problem),
      (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn rebuild(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildStarted>), ApiError> {
    let projection = oo_projections::all()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(ApiError::not_found)?;
    state
        .rebuilds
        .start(projection, state.status.clone())
        .map_err(|e| match e {
            RebuildRefused::Running(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::RebuildRunning, e.to_string()),
            RebuildRefused::Poisoned => ApiError::internal(e),
        })?;
    Ok((StatusCode::ACCEPTED, Json(RebuildStarted { name, status: "queued" })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Opaque cursor (`next` of a previous page); absent: from the start.
    #[param(pattern = r"^c[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$")]
    pub after: Option<String>,
    /// 1..1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// 1..1000: the latest events instead, newest first (not with `after` or `limit`); `next`
    /// is then the newest one's position, to follow the log from there with `after`.
    #[param(minimum = 1, maximum = 1000)]
    pub latest: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub event_id: String,
    pub position: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub user_id: String,
    pub recorded_at: DateTime<Utc>,
    /// Public fields; personal ones read "[sealed]".
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The sealed envelope of the personal fields (base64), if any.
    pub sealed: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    pub events: Vec<EventView>,
    pub next: String,
}

/// The log in its global order, page by page; or its latest events, newest first (`latest`).
#[utoipa::path(get, path = "/admin/events", security(("admin" = [])), params(EventsQuery),
    responses((status = 200, body = EventsResponse), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn events(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_body(e.body_text()))?;
    let after = q
        .after
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(|_| ApiError::invalid_value("after: not a position of this log"))?
        .unwrap_or(Cursor::START);
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_value("limit: must be from 1 to 1000"));
    }
    let mut conn = state.pool.acquire().await?;
    let (events, next) = match q.latest {
        Some(_) if q.after.is_some() || q.limit.is_some() => {
            return Err(ApiError::invalid_value("latest: not with after or limit"));
        }
        Some(latest) if !(1..=1000).contains(&latest) => {
            return Err(ApiError::invalid_value("latest: must be from 1 to 1000"));
        }
        Some(latest) => {
            let events = oo_commands::store::read_latest(&mut conn, latest).await?;
            let next = events.first().map_or(Cursor::START, |e| e.cursor);
            (events, next)
        }
        None => {
            let events = oo_commands::store::read_after(&mut conn, after, limit).await?;
            let next = events.last().map_or(after, |e| e.cursor);
            (events, next)
        }
    };
    let next = next.encode();
    let b64 = base64::engine::general_purpose::STANDARD;
    let events = events
        .into_iter()
        .map(|e| EventView {
            event_id: e.event_id.to_string(),
            position: e.cursor.encode(),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            schema_version: e.schema_version,
            user_id: e.user_id.to_string(),
            recorded_at: e.recorded_at,
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            sealed: e.sealed.map(|s| b64.encode(s)),
        })
        .collect();
    Ok(Json(EventsResponse { events, next }))
}
