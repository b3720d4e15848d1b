//! The HTTP routes (DESIGN section 10) and the middleware around them.

pub mod admin;
pub mod auth;
pub mod feedback;
pub mod health;
pub mod integrations;
pub mod me;
pub mod policies;
pub mod recommend;
pub mod signals;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use std::time::Instant;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    // What takes neither a session nor the admin token: limited per client address.
    let mut anonymous = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/auth/login", get(crate::oidc::login))
        .route(
            "/auth/callback",
            get(crate::oidc::callback).layer(middleware::map_response(no_store)),
        )
        .route("/legal/terms", get(auth::terms))
        .route("/legal/privacy", get(auth::privacy))
        .route("/auth/methods", get(auth::methods))
        // The web app: static shells, no personal data in them.
        .merge(crate::web::routes());
    if state.config.dev {
        anonymous = anonymous.route(
            "/auth/dev-login",
            post(auth::dev_login).layer(middleware::map_response(no_store)),
        );
    }
    let anonymous = anonymous
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), limit_anonymous));
    Router::new()
        .route("/auth/logout", post(auth::logout))
        .route(
            "/me",
            get(me::me)
                .delete(me::delete_me)
                .layer(middleware::map_response(no_store)),
        )
        .route("/me/export", get(me::export).layer(middleware::map_response(no_store)))
        .route("/signals", post(signals::post_signals))
        .route("/recommend", post(recommend::recommend))
        .route("/feedback", post(feedback::feedback))
        .route("/integrations", get(integrations::list))
        .route("/integrations/todoist", axum::routing::delete(integrations::disconnect))
        .route("/integrations/todoist/connect", get(integrations::connect))
        .route("/integrations/todoist/callback", get(integrations::callback))
        .route("/integrations/todoist/sync", post(integrations::sync))
        .route("/admin/projections", get(admin::projections))
        .route("/admin/projections/{name}/rebuild", post(admin::rebuild))
        .route("/admin/events", get(admin::events))
        .route("/admin/policies", get(policies::policies))
        .route("/admin/policies/promote", post(policies::promote_policy))
        .merge(anonymous)
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .layer(middleware::from_fn_with_state(state.clone(), request_deadline))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let path = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            tracing::info_span!("http", method = %req.method(), path = %path)
        }))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn(crate::web::security_headers))
        .with_state(state)
}

/// Load shedding: at most `OO_MAX_IN_FLIGHT` requests are served at once; past that a request is
/// answered 503 at once rather than queued. Liveness, readiness and metrics always answer.
async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    if matches!(req.uri().path(), "/health" | "/ready" | "/metrics") {
        return next.run(req).await;
    }
    match state.in_flight.clone().try_acquire_owned() {
        Ok(_slot) => next.run(req).await,
        Err(_) => {
            let mut e = ApiError::unavailable();
            e.detail = "oO is at capacity; retry shortly".into();
            e.into_response()
        }
    }
}

/// The per-address limit of what needs neither a session nor the admin token: 429
/// `rate_limited` with `Retry-After` past it.
async fn limit_anonymous(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    use governor::clock::{Clock, DefaultClock};
    let address = crate::auth::client_address(req.extensions(), req.headers(), &state.config.trusted_proxies);
    match state.anon_limiter.check_key(&address) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                crate::error::ErrorCode::RateLimited,
                "too many requests from this address; slow down",
            )
            .with_retry_after(wait.as_secs().max(1))
            .into_response()
        }
    }
}

/// Ends a request that takes longer than `OO_REQUEST_TIMEOUT_SECS`, body and answer included,
/// with 408 `request_timeout`. Whatever it had asked the store to append is still appended (the
/// writer does not depend on the request), and a deletion runs detached from it.
async fn request_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let limit = std::time::Duration::from_secs(state.config.request_timeout_secs.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            crate::error::ErrorCode::RequestTimeout,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// `Cache-Control: no-store` on answers that carry a person's data or a session token: no
/// browser or proxy may keep them.
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// The metrics' method label, from a fixed set: anyone can send any method, and each raw one
/// would add a series for good.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method()).to_owned();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let labels = crate::metrics::HttpLabels {
        method,
        path: path.clone(),
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_duration
        .get_or_create(&crate::metrics::PathLabels { path })
        .observe(started.elapsed().as_secs_f64());
    response
}
