//! The one error type of the HTTP API: every failure becomes `application/problem+json` with a
//! stable `code`. 5xx bodies say nothing internal; their cause is logged with the request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oo_commands::aggregate::CommandError;
use oo_commands::store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The stable error codes clients can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON.
    InvalidJson,
    /// 400: wrong types, missing or unknown fields.
    InvalidBody,
    /// 401: no valid session.
    Unauthorized,
    /// 401: admin endpoints need the admin token.
    AdminTokenRequired,
    /// 404: no such resource (or not yours).
    NotFound,
    /// 409: a different reaction to this tip was already recorded.
    ConflictingReaction,
    /// 409: the stream kept changing; retry.
    Contended,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 413: more than 1,000 signals in one request.
    TooManySignals,
    /// 415: the body must be application/json.
    UnsupportedMediaType,
    /// 422: a value is out of range or malformed.
    InvalidValue,
    /// 429: the per-user rate limit was exceeded.
    RateLimited,
    /// 429: the person's daily quota of accepted signals is used up (`OO_SIGNAL_QUOTA`).
    QuotaExceeded,
    /// 500: an unexpected error (logged).
    Internal,
    /// 503: the database is unreachable.
    Unavailable,
    /// 503: sign-in with OpenID Connect is not configured.
    OidcNotConfigured,
    /// 409: a rebuild of this projection is already running.
    RebuildRunning,
    /// 400: the sign-in could not be completed (state, code or ID token refused).
    SignInRefused,
    /// The offline gate refused a promotion (the body's `evidence` says why).
    PromotionRefused,
    /// The policy to promote is not one of the shadows (or serves already).
    NotAShadow,
    /// The serving line-up changed while a promotion was being weighed.
    LineupChanged,
    /// The request took longer than `OO_REQUEST_TIMEOUT_SECS`.
    RequestTimeout,
    /// A cookie-authenticated unsafe request from another site.
    CrossOrigin,
    /// 503: the connector is not configured on this server (Todoist's client credentials).
    ConnectorNotConfigured,
    /// 404: the person has no connection to this provider.
    NotConnected,
    /// 409: the provider refused the connection's token; connect again.
    ConnectionBroken,
    /// 502/503: the provider failed (rate limited, down, timed out, answered nonsense).
    ProviderUnavailable,
    /// 400: connecting could not be completed (state or code refused).
    ConnectRefused,
}

/// A problem body (RFC 9457) with our `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<code>`
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    /// With `promotion_refused`: what the offline gate saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<crate::routes::policies::EvidenceView>>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub retry_after: Option<u64>,
    pub evidence: Option<Box<crate::routes::policies::EvidenceView>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            evidence: None,
        }
    }
    pub fn bad_body(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidValue, detail)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such resource")
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid session is required",
        )
    }
    pub fn unavailable() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the database is unavailable; retry shortly",
            )
        }
    }
    /// An unexpected failure: logged here with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "unexpected error; it was logged",
        )
    }
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let code_text = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let body = Problem {
            kind: format!("/problems/{code_text}"),
            title,
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            evidence: self.evidence,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::Contended,
                "the resource changed concurrently; retry",
            )
            .with_retry_after(1),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::unavailable()
            }
            StoreError::Unexpected(cause) => Self::internal(cause),
        }
    }
}

impl From<oo_commands::vault::VaultError> for ApiError {
    fn from(e: oo_commands::vault::VaultError) -> Self {
        use oo_commands::vault::VaultError;
        match e {
            VaultError::Db(e) => StoreError::from_sqlx(e).into(),
            VaultError::StaleMaster | VaultError::RotationUnderway => {
                tracing::error!(error = %e, "this process cannot open the vault's keys");
                Self::unavailable()
            }
            other => Self::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from_sqlx(e).into()
    }
}

/// Maps a command's failure; the domain error is mapped by the caller's `domain` function.
pub fn command_error<E: std::error::Error + 'static>(
    e: CommandError<E>,
    domain: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match e {
        CommandError::Domain(d) => domain(d),
        CommandError::Store(s) => s.into(),
        CommandError::Contended(_) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Contended,
            "the resource changed concurrently; retry",
        )
        .with_retry_after(1),
        CommandError::NoKey => ApiError::not_found(),
        CommandError::Vault(v) => v.into(),
        other => ApiError::internal(other),
    }
}
