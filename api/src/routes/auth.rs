//! The ways in that this server offers, sign-in for development, logout, and the documents
//! consent is given to. OpenID Connect sign-in itself is in `crate::oidc`.

use crate::auth::{CurrentUser, SESSION_COOKIE};
use crate::error::{ApiError, command_error};
use crate::json;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use oo_commands::aggregate::Meta;
use oo_domain::user::Email;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevLoginRequest {
    /// At most 254 characters; no whitespace; one `@`; a domain with an inner dot.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^@.\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^@.\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]$"
    )]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DevLoginResponse {
    /// The session token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub user_id: String,
    pub position: String,
}

fn session_cookie(token: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    crate::auth::set_cookie(SESSION_COOKIE, token, max_age, secure)
}

/// Development sign-in by email (only with `--dev`): the same email gives the same user.
#[utoipa::path(post, path = "/auth/dev-login", request_body = DevLoginRequest,
    responses((status = 200, body = DevLoginResponse), (status = 422, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn dev_login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let req: DevLoginRequest = json::parse(&headers, &body)?;
    if !Email::is_well_formed(&req.email) {
        return Err(ApiError::invalid_value(format!(
            "email: {}",
            oo_domain::user::InvalidEmail
        )));
    }
    let email = Email::parse(&req.email).map_err(|e| ApiError::invalid_value(format!("email: {e}")))?;
    let meta = Meta::new(Utc::now());
    let (user_id, _) = oo_commands::identity::find_or_register(&state.write.store, &state.write.vault, &email, meta)
        .await
        .map_err(|e| command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    record_consent(&state, user_id, meta).await?;
    let ttl = Duration::hours(state.config.session_ttl_hours);
    let session = oo_commands::identity::start_session(&state.write.users, &state.pool, user_id, ttl, meta)
        .await
        .map_err(|e| command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    let position = crate::routes::health::head_or(&state, session.cursor).await?;
    let cookie = session_cookie(&session.token, ttl.num_seconds(), state.cookie_secure)?;
    let body = DevLoginResponse {
        token: session.token,
        user_id: user_id.to_string(),
        position,
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthMethods {
    /// `GET /auth/login` signs in with the configured OpenID provider.
    pub oidc: bool,
    /// `POST /auth/dev-login` exists (development mode only).
    pub dev_login: bool,
    /// The SHA-256 of the terms of use (`GET /legal/terms`) that signing in consents to.
    pub terms_sha256: String,
    /// The SHA-256 of the privacy notice (`GET /legal/privacy`) that signing in consents to.
    pub privacy_sha256: String,
}

/// The ways in that this server offers, and the versions of the documents that signing in
/// records consent to (what the sign-in page shows before anyone signs in).
#[utoipa::path(get, path = "/auth/methods", responses((status = 200, body = AuthMethods)))]
pub async fn methods(State(state): State<AppState>) -> Json<AuthMethods> {
    Json(AuthMethods {
        oidc: state.config.oidc_credentials().is_some(),
        dev_login: state.config.dev,
        terms_sha256: TERMS.hash.clone(),
        privacy_sha256: PRIVACY.hash.clone(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutResponse {
    pub position: String,
}

/// Revokes the current session.
#[utoipa::path(post, path = "/auth/logout", security(("session" = [])),
    responses((status = 200, body = LogoutResponse), (status = 401, body = crate::error::Problem)))]
pub async fn logout(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    let meta = Meta::new(Utc::now());
    let cursor =
        oo_commands::identity::revoke_session(&state.write.users, &state.pool, user.user_id, user.session_id, meta)
            .await
            .map_err(|e| command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    let position = crate::routes::health::head_or(&state, cursor).await?;
    let cookie = session_cookie("", 0, state.cookie_secure)?;
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, cookie)],
        Json(LogoutResponse { position }),
    )
        .into_response())
}

/// The documents consent is given to, shipped with the binary, and the SHA-256 of each.
pub struct Legal {
    pub text: &'static str,
    pub hash: String,
}

fn legal(text: &'static str) -> Legal {
    use sha2::Digest;
    Legal {
        text,
        hash: hex::encode(sha2::Sha256::digest(text.as_bytes())),
    }
}

pub static TERMS: std::sync::LazyLock<Legal> = std::sync::LazyLock::new(|| legal(include_str!("../../legal/terms.md")));
pub static PRIVACY: std::sync::LazyLock<Legal> =
    std::sync::LazyLock::new(|| legal(include_str!("../../legal/privacy.md")));

fn markdown(doc: &Legal) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    (
        [
            (header::CONTENT_TYPE, "text/markdown; charset=utf-8".to_owned()),
            (header::ETAG, etag),
        ],
        doc.text,
    )
        .into_response()
}

/// The terms of use; signing in records consent to this version (its SHA-256).
#[utoipa::path(get, path = "/legal/terms", responses((status = 200, content_type = "text/markdown", body = String)))]
pub async fn terms() -> Response {
    markdown(&TERMS)
}

/// The privacy notice; signing in records consent to this version (its SHA-256).
#[utoipa::path(get, path = "/legal/privacy", responses((status = 200, content_type = "text/markdown", body = String)))]
pub async fn privacy() -> Response {
    markdown(&PRIVACY)
}

/// Records consent to the current documents (nothing new if it was already given to them).
pub async fn record_consent(state: &AppState, user_id: oo_domain::ids::UserId, meta: Meta) -> Result<(), ApiError> {
    let command = oo_domain::user::UserCommand::GiveConsent {
        terms_hash: TERMS.hash.clone(),
        privacy_hash: PRIVACY.hash.clone(),
        at: meta.now,
    };
    state
        .write
        .users
        .execute(&user_id.to_string(), command, meta)
        .await
        .map_err(|e| command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    Ok(())
}
