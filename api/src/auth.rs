//! Who is asking: the session extractor (bearer token or cookie, with the per-user rate limit)
//! and the admin extractor (constant-time comparison with `OO_ADMIN_TOKEN`).

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use oo_domain::ids::{SessionId, UserId};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "oo_session";

/// The signed-in user, taken from the session — never from a path or body field.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser {
    pub user_id: UserId,
    pub session_id: SessionId,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A cookie's name as oO sets it: `__Host-` first when cookies are `Secure`, so that the browser
/// keeps it to this exact origin (no `Domain`, `Path=/`, HTTPS only).
pub fn cookie_name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// The `Set-Cookie` value of one of oO's cookies (`max_age` 0 clears it).
pub fn set_cookie(base: &str, value: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    let name = cookie_name(base, secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .map_err(ApiError::internal)
}

/// The value of one of oO's cookies in `headers`.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, base: &str, secure: bool) -> Option<&'a str> {
    let name = cookie_name(base, secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses a cookie-authenticated unsafe request from another site: one that says
/// `Sec-Fetch-Site: cross-site`, or, unless it says `same-origin`, whose `Origin` is not oO's
/// public origin. A bearer token is
/// never sent by a browser on its own, so bearer requests pass, and so do requests with neither
/// header (non-browser clients).
fn check_same_origin(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    if parts.method.is_safe() {
        return Ok(());
    }
    let cross = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::CrossOrigin,
            "a cookie-authenticated request must come from oO's own pages",
        )
    };
    match parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // Set by the browser itself, never by a page: oO's own page, whatever host name it was
        // opened under (127.0.0.1 or localhost on a developer's machine).
        Some(v) if v.eq_ignore_ascii_case("same-origin") => return Ok(()),
        Some(v) if v.eq_ignore_ascii_case("cross-site") => return Err(cross()),
        _ => {}
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !origin.eq_ignore_ascii_case(&origin_of(&state.public_url)) {
            return Err(cross());
        }
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or("")),
        None => url.to_owned(),
    }
}

/// The session token a request carries (bearer or cookie), not yet checked against the
/// sessions table: for `POST /recommend`, which checks it in the same query that reads the
/// person ([`crate::recommender::Person::Session`]). 401 when there is none.
#[derive(Debug, Clone)]
pub struct SessionToken(pub String);

impl SessionToken {
    fn of(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer(parts) {
            Some(t) => t,
            None => {
                let t = cookie_value(&parts.headers, SESSION_COOKIE, state.cookie_secure)
                    .ok_or_else(ApiError::unauthorized)?;
                check_same_origin(parts, state)?;
                t
            }
        };
        if token.is_empty() || token.len() > 200 {
            return Err(ApiError::unauthorized());
        }
        Ok(Self(token.to_owned()))
    }
}

impl FromRequestParts<AppState> for SessionToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::of(parts, state)
    }
}

/// The per-user rate limit: 429 with `Retry-After` past it.
pub fn admit(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    if let Err(not_until) = state.limiter.check_key(&user_id.as_uuid()) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many requests; slow down",
        )
        .with_retry_after(wait.as_secs().max(1)));
    }
    Ok(())
}

impl CurrentUser {
    /// Checks a session token against the sessions table and the rate limit.
    pub async fn authenticate(state: &AppState, token: &SessionToken) -> Result<Self, ApiError> {
        let (user_id, session_id) = oo_commands::identity::authenticate(&state.pool, &token.0, chrono::Utc::now())
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        admit(state, user_id)?;
        Ok(Self { user_id, session_id })
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::authenticate(state, &SessionToken::of(parts, state)?).await
    }
}

/// How long a wrong admin token waits for its 401.
const FAILED_ADMIN_DELAY: std::time::Duration = std::time::Duration::from_millis(250);
/// How many wrong admin tokens one client address may send per [`ADMIN_FAILURE_WINDOW`]; past
/// that, every admin request from it is answered 429 without looking at its token.
pub const MAX_ADMIN_FAILURES: u32 = 10;
/// The window over which failed admin attempts are counted.
pub const ADMIN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// The client's address: the peer's, or, when the peer is a trusted proxy (`OO_TRUSTED_PROXIES`),
/// the rightmost `X-Forwarded-For` entry that is not one.
pub fn client_address(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if !trusted.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .rev()
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

/// Failed admin-token attempts per client address, over [`ADMIN_FAILURE_WINDOW`].
#[derive(Debug, Default)]
pub struct AdminFailures(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>);

impl AdminFailures {
    /// How long `address` must still wait, if it has used up its failures.
    pub fn blocked(&self, address: std::net::IpAddr) -> Option<std::time::Duration> {
        let map = self.0.lock().ok()?;
        let (count, since) = map.get(&address)?;
        let left = ADMIN_FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_ADMIN_FAILURES).then_some(left)
    }

    /// Counts one failure of `address`.
    pub fn record(&self, address: std::net::IpAddr) {
        if let Ok(mut map) = self.0.lock() {
            let entry = map.entry(address).or_insert((0, std::time::Instant::now()));
            if entry.1.elapsed() >= ADMIN_FAILURE_WINDOW {
                *entry = (0, std::time::Instant::now());
            }
            entry.0 += 1;
        }
    }

    /// Forgets the addresses whose window has passed.
    pub fn forget_old(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, (_, since)| since.elapsed() < ADMIN_FAILURE_WINDOW);
        }
    }
}

/// An admin request: `Authorization: Bearer $OO_ADMIN_TOKEN`, nothing else.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter().zip(hb.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let denied = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AdminTokenRequired,
                "admin endpoints need the admin token",
            )
        };
        let expected = state.admin_token.as_ref().ok_or_else(denied)?;
        let address = client_address(&parts.extensions, &parts.headers, &state.config.trusted_proxies);
        if let Some(wait) = state.admin_failures.blocked(address) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many wrong admin tokens from this address; wait",
            )
            .with_retry_after(wait.as_secs().max(1)));
        }
        let given = bearer(parts).ok_or_else(denied)?;
        if constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes()) {
            Ok(Admin)
        } else {
            // A wrong token is answered slowly, and counted: guessing costs time, then stops.
            state.admin_failures.record(address);
            tracing::warn!(%address, "a wrong admin token");
            tokio::time::sleep(FAILED_ADMIN_DELAY).await;
            Err(denied())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_carry_the_host_prefix_and_are_read_under_it() {
        let set = set_cookie(SESSION_COOKIE, "t0k", 60, true).expect("a header");
        let set = set.to_str().expect("text");
        assert!(
            set.starts_with("__Host-oo_session=t0k; Path=/;") && set.ends_with("; Secure"),
            "{set}"
        );
        let plain = set_cookie(SESSION_COOKIE, "t0k", 60, false).expect("a header");
        assert!(plain.to_str().expect("text").starts_with("oo_session=t0k;"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("oo_session=plain; __Host-oo_session=hosted"),
        );
        assert_eq!(cookie_value(&headers, SESSION_COOKIE, true), Some("hosted"));
        assert_eq!(cookie_value(&headers, SESSION_COOKIE, false), Some("plain"));
        assert_eq!(origin_of("https://oo.example.org/app?x=1"), "https://oo.example.org");
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

/// The state of a redirect flow (OpenID Connect sign-in, connecting a provider), bound to the
/// browser that started it: sealed under the service's transit key into a short-lived cookie
/// `name`, for `purpose` only. [`seal_flow_state`] makes the cookie; [`open_flow_state`] checks
/// it against the `state` the provider sent back.
pub fn seal_flow_state(
    state: &crate::state::AppState,
    name: &str,
    purpose: &str,
    mut fields: serde_json::Map<String, serde_json::Value>,
    ttl_seconds: i64,
) -> Result<HeaderValue, ApiError> {
    use base64::Engine;
    fields.insert(
        "expires".into(),
        serde_json::json!(chrono::Utc::now().timestamp() + ttl_seconds),
    );
    let sealed = state
        .write
        .vault
        .seal_transit(purpose, &fields)
        .ok_or_else(|| ApiError::internal("cannot seal a flow's state"))?;
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    set_cookie(name, &value, ttl_seconds, state.cookie_secure)
}

/// Why a flow's state cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStateRefused {
    /// No cookie, or not one this service sealed for this purpose: another browser.
    NotStarted,
    Expired,
    /// The `state` sent back is not the cookie's.
    Mismatch,
}

/// The fields sealed by [`seal_flow_state`], once the cookie is found, opened, unexpired and
/// its `state` equal (in constant time) to `returned`.
pub fn open_flow_state(
    state: &crate::state::AppState,
    headers: &axum::http::HeaderMap,
    name: &str,
    purpose: &str,
    returned: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, FlowStateRefused> {
    use base64::Engine;
    let fields = cookie_value(headers, name, state.cookie_secure)
        .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|b| state.write.vault.open_transit(purpose, &b))
        .ok_or(FlowStateRefused::NotStarted)?;
    if fields
        .get("expires")
        .and_then(serde_json::Value::as_i64)
        .is_none_or(|e| e < chrono::Utc::now().timestamp())
    {
        return Err(FlowStateRefused::Expired);
    }
    let expected = fields
        .get("state")
        .and_then(serde_json::Value::as_str)
        .ok_or(FlowStateRefused::NotStarted)?;
    if !constant_time_eq(expected.as_bytes(), returned.as_bytes()) {
        return Err(FlowStateRefused::Mismatch);
    }
    Ok(fields)
}
