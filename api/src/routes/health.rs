//! Liveness, readiness and metrics.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use oo_commands::cursor::Cursor;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectorLag {
    pub name: String,
    pub lag_events: i64,
    /// Age of the oldest event not yet applied (relayed), in seconds.
    pub lag_seconds: f64,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub postgres: &'static str,
    /// `up`, `down` (appends go on; the relay catches up when NATS is back) or `off` (no OO_NATS_URL).
    pub nats: &'static str,
    pub projections: Vec<ProjectorLag>,
    /// Age of the oldest open transaction on the server; it holds back every reader of the log.
    pub oldest_transaction_seconds: f64,
}

/// How long `/ready`'s and `/metrics`' figures are reused: each costs a count over the log's
/// tail per consumer, and these routes take no credentials.
pub const HEALTH_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The figures of the last [`lags`], shared by `/ready` and `/metrics`; one request at a time
/// refreshes them, the others wait for it and reuse its answer.
#[derive(Debug, Default)]
pub struct HealthCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<ProjectorLag>, f64)>>,
    /// How many times the figures were computed (`oo_health_refreshes`).
    pub refreshes: std::sync::atomic::AtomicU64,
}

/// The projectors' lag and the oldest open transaction, at most [`HEALTH_MAX_AGE`] old.
pub(crate) async fn cached_lags(state: &AppState) -> Result<(Vec<ProjectorLag>, f64), sqlx::Error> {
    let mut last = state.health.last.lock().await;
    if let Some((at, lags, oldest)) = last.as_ref()
        && at.elapsed() < HEALTH_MAX_AGE
    {
        return Ok((lags.clone(), *oldest));
    }
    let (lags, oldest) = lags(state).await?;
    state
        .health
        .refreshes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *last = Some((std::time::Instant::now(), lags.clone(), oldest));
    Ok((lags, oldest))
}

pub(crate) async fn lags(state: &AppState) -> Result<(Vec<ProjectorLag>, f64), sqlx::Error> {
    let mut out = Vec::new();
    for c in oo_projections::projector::checkpoints(&state.pool).await? {
        if c.name.contains('#') {
            continue;
        }
        let lag = oo_commands::store::count_after(&state.pool, c.cursor).await?;
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (now() - min(recorded_at)))::float8 FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)",
        )
        .bind(c.cursor.tx_id.to_string())
        .bind(c.cursor.position)
        .fetch_one(&state.pool)
        .await?;
        out.push(ProjectorLag {
            name: c.name,
            lag_events: lag,
            lag_seconds: seconds.unwrap_or(0.0).max(0.0),
            status: c.status,
        });
    }
    let oldest: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (now() - min(xact_start)))::float8 FROM pg_stat_activity \
         WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid()",
    )
    .fetch_one(&state.pool)
    .await?;
    Ok((out, oldest.unwrap_or(0.0).max(0.0)))
}

/// Readiness: Postgres reachable, projector lag, NATS state.
#[utoipa::path(get, path = "/ready", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let nats = match (&state.config.nats_url, state.status.relay_up()) {
        (None, _) => "off",
        (Some(_), true) => "up",
        (Some(_), false) => "down",
    };
    match cached_lags(&state).await {
        Ok((projections, oldest)) => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                postgres: "up",
                nats,
                projections,
                oldest_transaction_seconds: oldest,
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Ready {
                    status: "unavailable",
                    postgres: "down",
                    nats,
                    projections: vec![],
                    oldest_transaction_seconds: 0.0,
                }),
            )
        }
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Ok((lag, oldest)) = cached_lags(&state).await
        && let Ok(mut s) = state.metrics.snapshot.lock()
    {
        s.health_refreshes = state.health.refreshes.load(std::sync::atomic::Ordering::Relaxed);
        s.lag = lag.into_iter().map(|l| (l.name, l.lag_events, l.lag_seconds)).collect();
        s.oldest_transaction_seconds = oldest;
        s.nats_up = state.config.nats_url.as_ref().map(|_| state.status.relay_up());
    }
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

/// The position to answer with when a request wrote nothing: the head of the log.
pub(crate) async fn head_or(state: &AppState, written: Option<Cursor>) -> Result<String, ApiError> {
    Ok(match written {
        Some(c) => c.encode(),
        None => state.write.store.head().await?.encode(),
    })
}
