//! `/integrations`: the connectors and the person's connections (DESIGN section 10), Todoist's
//! OAuth connect and callback, a sync now, and disconnecting. The work is the write side's
//! (`oo_commands::connections`); here are the session checks, the browser-bound OAuth state and
//! the HTTP answers. No token is ever returned or logged.

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use oo_commands::connections::ConnectorError;
use oo_domain::connection::Provider;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

const STATE_COOKIE: &str = "oo_todoist";
const STATE_PURPOSE: &str = "todoist-connect-state";
/// How long a connection may take at Todoist's authorize page.
const STATE_TTL_SECONDS: i64 = 600;

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionInfo {
    /// connected | broken (the provider refused the token: connect again)
    pub status: String,
    pub connected_at: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// `synced`, `failed: CODE` or `broken: CODE`; absent before the first sync.
    pub last_outcome: Option<String>,
    /// Open tasks this connection provides (candidates for tips).
    pub open_tasks: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorInfo {
    /// todoist
    pub provider: String,
    /// Whether this server has the connector's client credentials.
    pub configured: bool,
    /// The person's connection, if any.
    pub connection: Option<ConnectionInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationsResponse {
    pub connectors: Vec<ConnectorInfo>,
}

/// The connectors and the person's connections.
#[utoipa::path(get, path = "/integrations", operation_id = "list_integrations", security(("session" = [])),
    responses((status = 200, body = IntegrationsResponse), (status = 401, body = crate::error::Problem)))]
pub async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<IntegrationsResponse>, ApiError> {
    let connections = state.connectors.list(user.user_id).await.map_err(connector_error)?;
    // What the projections hold of each provider's tasks (the write side reads no projection).
    let open: Vec<(String, i64)> =
        sqlx::query_as("SELECT source, count(*) FROM open_tasks WHERE user_id = $1 GROUP BY source")
            .bind(user.user_id.as_uuid())
            .fetch_all(&state.pool)
            .await?;
    Ok(Json(IntegrationsResponse {
        connectors: Provider::ALL
            .into_iter()
            .map(|p| ConnectorInfo {
                provider: p.as_str().to_owned(),
                configured: state.connectors.todoist().is_some(),
                connection: connections.iter().find(|c| c.provider == p).map(|c| ConnectionInfo {
                    status: c.status.clone(),
                    connected_at: c.connected_at,
                    last_sync_at: c.last_sync_at,
                    last_outcome: c.last_outcome.clone(),
                    open_tasks: open
                        .iter()
                        .find(|(source, _)| source == c.provider.as_str())
                        .map_or(0, |(_, n)| *n),
                }),
            })
            .collect(),
    }))
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ConnectorNotConfigured,
        "the Todoist connector is not configured on this server (OO_TODOIST_CLIENT_ID)",
    )
}

fn refused(detail: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ConnectRefused, detail.to_owned())
}

/// The answer for a connector's failure.
pub fn connector_error(e: ConnectorError) -> ApiError {
    match e {
        ConnectorError::NotConfigured => not_configured(),
        ConnectorError::NotConnected => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotConnected,
            "Todoist is not connected",
        ),
        ConnectorError::Broken => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ConnectionBroken,
            "Todoist refused this connection's access: connect again",
        ),
        ConnectorError::CircuitOpen(wait) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ProviderUnavailable,
            "Todoist keeps failing; oO waits before calling it again",
        )
        .with_retry_after(wait.as_secs().max(1)),
        ConnectorError::Provider(p) if p.is_transient() => {
            let retry = match p {
                oo_commands::todoist::ProviderError::RateLimited { retry_after: Some(d) } => d.as_secs().max(1),
                _ => 30,
            };
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ProviderUnavailable,
                format!("Todoist could not be used ({}); retry later", p.code()),
            )
            .with_retry_after(retry)
        }
        ConnectorError::Provider(p) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ProviderUnavailable,
            format!("Todoist refused the request ({})", p.code()),
        ),
        ConnectorError::Store(s) => s.into(),
        ConnectorError::Vault(v) => v.into(),
        other => ApiError::internal(other),
    }
}

/// Starts connecting Todoist: redirects to Todoist's authorize page, with a state bound to this
/// browser (a sealed cookie) and to this person.
#[utoipa::path(get, path = "/integrations/todoist/connect", operation_id = "todoist_connect", security(("session" = [])),
    responses((status = 303, description = "to Todoist's authorize page"), (status = 401, body = crate::error::Problem),
      (status = 503, body = crate::error::Problem)))]
pub async fn connect(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    let client = state.connectors.todoist().ok_or_else(not_configured)?;
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
    let mut fields = Map::new();
    fields.insert("state".into(), json!(value));
    fields.insert("user".into(), json!(user.user_id.to_string()));
    let bound = crate::auth::seal_flow_state(&state, STATE_COOKIE, STATE_PURPOSE, fields, STATE_TTL_SECONDS)?;
    let location = HeaderValue::from_str(&client.authorize_url(&value)).map_err(ApiError::internal)?;
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::SET_COOKIE, bound)],
    )
        .into_response())
}

/// Completes connecting Todoist: checks the state against this browser's cookie and this
/// person, exchanges the code server-side, keeps the token sealed, starts the first sync, and
/// redirects to the app's connect page.
#[utoipa::path(get, path = "/integrations/todoist/callback", operation_id = "todoist_callback", params(crate::oidc::CallbackQuery), security(("session" = [])),
    responses((status = 303, description = "connected; back to the app"), (status = 400, body = crate::error::Problem),
      (status = 401, body = crate::error::Problem), (status = 502, body = crate::error::Problem),
      (status = 503, body = crate::error::Problem)))]
pub async fn callback(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Query(q): Query<crate::oidc::CallbackQuery>,
) -> Result<Response, ApiError> {
    state.connectors.todoist().ok_or_else(not_configured)?;
    if let Some(e) = q.error {
        tracing::info!(error = %crate::oidc::loggable_provider_error(&e), "Todoist refused the connection");
        return Err(refused("Todoist refused the connection"));
    }
    let (Some(code), Some(returned)) = (q.code, q.state) else {
        return Err(refused("code and state are required"));
    };
    use crate::auth::FlowStateRefused;
    let bound = crate::auth::open_flow_state(&state, &headers, STATE_COOKIE, STATE_PURPOSE, &returned).map_err(
        |e| match e {
            FlowStateRefused::NotStarted => {
                refused("this browser did not start connecting Todoist (missing or invalid state cookie)")
            }
            FlowStateRefused::Expired => refused("connecting took too long; start again"),
            FlowStateRefused::Mismatch => refused("state does not match"),
        },
    )?;
    let text = |k: &str| bound.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(expected), Some(owner)) = (text("state"), text("user")) else {
        return Err(refused("invalid connection state"));
    };
    if owner != user.user_id.to_string() {
        return Err(refused("this connection was started by another person"));
    }
    if !crate::oidc::first_use_of_state(&state, &format!("todoist:{expected}")).await? {
        return Err(refused("this connection was already completed; start again"));
    }
    state
        .connectors
        .connect(user.user_id, &code)
        .await
        .map_err(|e| match e {
            ConnectorError::Provider(p) if !p.is_transient() => {
                tracing::info!(error = %p, "Todoist did not accept the code");
                refused("Todoist did not accept the code")
            }
            other => connector_error(other),
        })?;
    // The first sync, off the request: the person is sent back at once.
    let connectors = state.connectors.clone();
    let user_id = user.user_id;
    tokio::spawn(async move {
        if let Err(e) = connectors.sync(user_id).await {
            tracing::info!(error = %e, "the first Todoist sync failed; the background sync retries");
        }
    });
    // Back to the app's connect page, which shows the new connection.
    let page = HeaderValue::from_str(&format!("{}/connect", state.public_url)).map_err(ApiError::internal)?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, page)]).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        crate::auth::set_cookie(STATE_COOKIE, "", 0, state.cookie_secure)?,
    );
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncResponse {
    /// The log's position once this sync's signals are stored: `min_position` for
    /// `/recommend` waits for them.
    pub position: String,
    /// Task signals recorded (repeats of earlier ones not counted).
    pub tasks: u32,
}

/// Syncs the person's Todoist now; answers once its signals are stored.
#[utoipa::path(post, path = "/integrations/todoist/sync", operation_id = "todoist_sync", security(("session" = [])),
    responses((status = 200, body = SyncResponse), (status = 401, body = crate::error::Problem),
      (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
      (status = 502, body = crate::error::Problem), (status = 503, body = crate::error::Problem)))]
pub async fn sync(State(state): State<AppState>, user: CurrentUser) -> Result<Json<SyncResponse>, ApiError> {
    let report = state.connectors.sync(user.user_id).await.map_err(connector_error)?;
    let position = crate::routes::health::head_or(&state, report.cursor).await?;
    Ok(Json(SyncResponse {
        position,
        tasks: report.tasks,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisconnectedResponse {
    pub position: String,
}

/// Disconnects Todoist: its token is revoked at Todoist (retried until Todoist confirms) and
/// forgotten with the sync state here; its tasks stop being candidates.
#[utoipa::path(delete, path = "/integrations/todoist", operation_id = "todoist_disconnect", security(("session" = [])),
    responses((status = 200, body = DisconnectedResponse), (status = 401, body = crate::error::Problem),
      (status = 404, body = crate::error::Problem)))]
pub async fn disconnect(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<DisconnectedResponse>, ApiError> {
    let cursor = state
        .connectors
        .disconnect(user.user_id)
        .await
        .map_err(connector_error)?;
    let connectors = state.connectors.clone();
    let user_id = user.user_id;
    tokio::spawn(async move {
        if let Err(e) = connectors.revoke_pending_of(user_id).await {
            tracing::info!(error = %e, "revoking the token at once failed; the revoker retries");
        }
    });
    let position = crate::routes::health::head_or(&state, cursor).await?;
    Ok(Json(DisconnectedResponse { position }))
}
