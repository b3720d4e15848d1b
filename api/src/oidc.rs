//! Sign-in with OpenID Connect: authorization code with PKCE (S256), `state` bound to the browser
//! by a sealed, short-lived cookie and accepted once across every replica (`oidc_used_states`),
//! `nonce` checked, and the ID token validated by the openidconnect crate (signature from the
//! provider's JWKS, by an algorithm of [`ID_TOKEN_ALGS`] whatever the provider's discovery lists;
//! issuer, audience, expiry and issued-at) and here (`azp`, which the crate leaves unchecked). A
//! user is identified by (issuer, subject) through the blind index, never by email. Outbound
//! requests follow no redirects; a failed discovery is remembered for a few seconds so that
//! sign-in attempts do not hammer an unreachable provider.

use crate::auth::SESSION_COOKIE;
use crate::error::{ApiError, ErrorCode, command_error};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use oo_commands::aggregate::Meta;
use oo_commands::vault::LookupKind;
use oo_domain::user::Email;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::RwLock;
use utoipa::IntoParams;

/// The cookie that binds a sign-in in progress to the browser that started it.
const STATE_COOKIE: &str = "oo_oidc";
const STATE_PURPOSE: &str = "oidc-state";
/// How long a sign-in may take at the provider.
const STATE_TTL_SECONDS: i64 = 600;

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// How long discovered provider metadata (and its signing keys) is trusted before it is fetched
/// again: providers rotate their keys.
const METADATA_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a failed discovery is remembered: meanwhile sign-ins are answered 503 at once.
const DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The only algorithms an ID token may be signed with, whatever the provider's discovery lists:
/// asymmetric signatures (no `none`, and no HMAC under the client secret, which the client's
/// operators hold too).
pub const ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The longest part of a provider's `error` parameter that is logged.
const PROVIDER_ERROR_LOGGED: usize = 100;

/// The provider, discovered on first use and again once its metadata is older than an hour, or
/// when an ID token is signed by a key it does not list yet.
#[derive(Default)]
pub struct Oidc {
    client: RwLock<Option<(Client, std::time::Instant)>>,
    /// When discovery last failed.
    failed: std::sync::Mutex<Option<std::time::Instant>>,
}

fn provider_unreachable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "the sign-in provider is unreachable; retry shortly",
    )
    .with_retry_after(DISCOVERY_RETRY.as_secs())
}

/// What a provider sent as its `error` parameter, made safe for a log line: at most
/// [`PROVIDER_ERROR_LOGGED`] characters, control and non-ASCII characters escaped.
pub fn loggable_provider_error(error: &str) -> String {
    let mut out: String = error
        .chars()
        .take(PROVIDER_ERROR_LOGGED)
        .flat_map(char::escape_default)
        .collect();
    if error.chars().nth(PROVIDER_ERROR_LOGGED).is_some() {
        out.push('…');
    }
    out
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oidc(..)")
    }
}

fn http_client() -> Result<openidconnect::reqwest::Client, ApiError> {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(ApiError::internal)
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::OidcNotConfigured,
        "sign-in with OpenID Connect is not configured",
    )
}

fn public_url(state: &AppState) -> &str {
    &state.public_url
}

async fn client(state: &AppState, refresh: bool) -> Result<Client, ApiError> {
    let Some((id, secret)) = state.config.oidc_credentials() else {
        return Err(not_configured());
    };
    if !refresh
        && let Some((client, fetched)) = state.oidc.client.read().await.as_ref()
        && fetched.elapsed() < METADATA_TTL
    {
        return Ok(client.clone());
    }
    let recently_failed = |s: &AppState| {
        s.oidc
            .failed
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < DISCOVERY_RETRY)
    };
    if recently_failed(state) {
        return Err(provider_unreachable());
    }
    let issuer = IssuerUrl::new(state.config.oidc_issuer.clone()).map_err(|_| not_configured())?;
    let metadata = match CoreProviderMetadata::discover_async(issuer, &http_client()?).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect discovery failed");
            if let Ok(mut f) = state.oidc.failed.lock() {
                *f = Some(std::time::Instant::now());
            }
            return Err(provider_unreachable());
        }
    };
    let redirect = RedirectUrl::new(format!("{}/auth/callback", public_url(state))).map_err(ApiError::internal)?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.to_owned()),
        Some(ClientSecret::new(secret.to_owned())),
    )
    .set_redirect_uri(redirect);
    *state.oidc.client.write().await = Some((client.clone(), std::time::Instant::now()));
    Ok(client)
}

/// After a failed ID token check: a fresh client if the failure could come from keys we have not
/// fetched yet, otherwise the refusal.
async fn client_for_retry(
    state: &AppState,
    error: &openidconnect::ClaimsVerificationError,
) -> Result<Client, ApiError> {
    tracing::info!(error = %error, "ID token refused");
    match error {
        openidconnect::ClaimsVerificationError::SignatureVerification(_) => client(state, true).await,
        _ => Err(refused("the ID token is not valid")),
    }
}

fn cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
    crate::auth::set_cookie(name, value, max_age, state.cookie_secure)
}

/// Starts a sign-in: redirects to the provider.
#[utoipa::path(get, path = "/auth/login",
    responses((status = 303, description = "to the provider"), (status = 503, body = crate::error::Problem)))]
pub async fn login(State(state): State<AppState>) -> Result<Response, ApiError> {
    let client = client(&state, false).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut fields = Map::new();
    fields.insert("state".into(), json!(csrf.secret()));
    fields.insert("verifier".into(), json!(verifier.secret()));
    fields.insert("nonce".into(), json!(nonce.secret()));
    let bound = crate::auth::seal_flow_state(&state, STATE_COOKIE, STATE_PURPOSE, fields, STATE_TTL_SECONDS)?;
    let location = HeaderValue::from_str(url.as_str()).map_err(ApiError::internal)?;
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::SET_COOKIE, bound)],
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

fn refused(detail: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::SignInRefused, detail.to_owned())
}

/// The client's ID-token verifier, limited to [`ID_TOKEN_ALGS`].
fn id_token_verifier(client: &Client) -> openidconnect::core::CoreIdTokenVerifier<'_> {
    client.id_token_verifier().set_allowed_algs(ID_TOKEN_ALGS)
}

/// Records `state` as used, once across every replica: a replayed callback is refused before the
/// provider is called. Forgets states that have expired anyway.
async fn use_state_once(state: &AppState, value: &str) -> Result<(), ApiError> {
    if first_use_of_state(state, value).await? {
        Ok(())
    } else {
        Err(refused("this sign-in was already completed; start again"))
    }
}

/// Records `value` as used; whether it was the first use (across every replica).
pub(crate) async fn first_use_of_state(state: &AppState, value: &str) -> Result<bool, ApiError> {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(value.as_bytes()).to_vec();
    let fresh = sqlx::query(
        "INSERT INTO oidc_used_states (state_hash, expires_at) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (state_hash) DO NOTHING",
    )
    .bind(hash)
    .bind(STATE_TTL_SECONDS as f64)
    .execute(&state.pool)
    .await?
    .rows_affected()
        == 1;
    sqlx::query("DELETE FROM oidc_used_states WHERE expires_at < now()")
        .execute(&state.pool)
        .await?;
    Ok(fresh)
}

/// Completes a sign-in: checks `state` against the browser's cookie, exchanges the code with the
/// PKCE verifier, validates the ID token and its nonce, registers the user on first sign-in and
/// starts a session.
#[utoipa::path(get, path = "/auth/callback", params(CallbackQuery),
    responses((status = 303, description = "signed in; the session cookie is set"), (status = 400, body = crate::error::Problem),
      (status = 503, body = crate::error::Problem)))]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let client = client(&state, false).await?;
    if let Some(e) = q.error {
        tracing::info!(error = %loggable_provider_error(&e), "the provider refused the sign-in");
        return Err(refused("the provider refused the sign-in"));
    }
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return Err(refused("code and state are required"));
    };
    use crate::auth::FlowStateRefused;
    let bound =
        crate::auth::open_flow_state(&state, &headers, STATE_COOKIE, STATE_PURPOSE, &returned_state).map_err(|e| {
            match e {
                FlowStateRefused::NotStarted => {
                    refused("this browser did not start a sign-in (missing or invalid state cookie)")
                }
                FlowStateRefused::Expired => refused("the sign-in took too long; start again"),
                FlowStateRefused::Mismatch => refused("state does not match"),
            }
        })?;
    let text = |k: &str| bound.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(expected_state), Some(verifier), Some(nonce)) = (text("state"), text("verifier"), text("nonce")) else {
        return Err(refused("invalid sign-in state"));
    };
    use_state_once(&state, &expected_state).await?;
    let http = http_client()?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|_| not_configured())?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&http)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "code exchange failed");
            refused("the provider did not accept the code")
        })?;
    let id_token = token
        .id_token()
        .ok_or_else(|| refused("the provider returned no ID token"))?;
    let nonce = Nonce::new(nonce);
    let claims = match id_token.claims(&id_token_verifier(&client), &nonce) {
        Ok(c) => c.clone(),
        Err(first) => {
            // Perhaps the provider rotated its keys since discovery: fetch them again, once.
            let fresh = client_for_retry(&state, &first).await?;
            id_token
                .claims(&id_token_verifier(&fresh), &nonce)
                .cloned()
                .map_err(|e| {
                    tracing::info!(error = %e, "ID token refused");
                    refused("the ID token is not valid")
                })?
        }
    };
    // The authorized party, when named, must be this client (OpenID Connect Core 3.1.3.7 step 5);
    // with several audiences it must be named (step 4).
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client.client_id().as_str() => {
            tracing::info!(azp = %loggable_provider_error(azp.as_str()), "ID token for another party refused");
            return Err(refused("the ID token was issued to another party"));
        }
        None if claims.audiences().len() > 1 => {
            return Err(refused("the ID token names several audiences and no authorized party"));
        }
        _ => {}
    }
    let now = Utc::now();
    if claims.issue_time() > now + Duration::minutes(2) {
        return Err(refused("the ID token is issued in the future"));
    }
    let email = claims
        .email()
        .map(|e| e.as_str().to_owned())
        .ok_or_else(|| refused("the provider shared no email address"))
        .and_then(|e| Email::parse(&e).map_err(|_| refused("the provider's email address is not valid")))?;
    let subject = format!("{}\0{}", claims.issuer().as_str(), claims.subject().as_str());
    let meta = Meta::new(now);
    let (user_id, _) = oo_commands::identity::find_or_register_by(
        &state.write.store,
        &state.write.vault,
        LookupKind::OidcSubject,
        &subject,
        &email,
        meta,
    )
    .await
    .map_err(|e| command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    crate::routes::auth::record_consent(&state, user_id, meta).await?;
    let ttl = Duration::hours(state.config.session_ttl_hours);
    let session = oo_commands::identity::start_session(&state.write.users, &state.pool, user_id, ttl, meta)
        .await
        .map_err(|e| command_error(e, |d| refused(&d.to_string())))?;
    let home = HeaderValue::from_str(&format!("{}/", public_url(&state))).map_err(ApiError::internal)?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, home)]).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, &session.token, ttl.num_seconds())?,
    );
    h.append(header::SET_COOKIE, cookie(&state, STATE_COOKIE, "", 0)?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_error_is_logged_bounded_and_escaped() {
        assert_eq!(loggable_provider_error("access_denied"), "access_denied");
        let forged = "access_denied\nINFO signed in as admin\u{1b}[2J";
        let logged = loggable_provider_error(forged);
        assert!(!logged.contains('\n') && !logged.contains('\u{1b}'), "{logged}");
        assert!(logged.starts_with("access_denied\\n"));
        let long = "x".repeat(10_000);
        let logged = loggable_provider_error(&long);
        assert_eq!(
            logged.chars().count(),
            PROVIDER_ERROR_LOGGED + 1,
            "bounded, with an ellipsis"
        );
        assert!(loggable_provider_error("é").starts_with("\\u{"), "non-ASCII escaped");
    }
}
