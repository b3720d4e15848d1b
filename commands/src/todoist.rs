//! Todoist's HTTP API as oO uses it (API v1; OAuth at `todoist.com`): the authorize URL, the
//! code exchange, `POST /api/v1/sync` (items, with a sync token), closing a task through the
//! sync API's `item_close` with a command uuid (a retry is harmless), and revoking a token. Each
//! way a provider misbehaves is a [`ProviderError`] of its own; what follows from it is decided
//! by the callers (`connections`).
//!
//! A token never appears in an error, a log line or a `Debug` output.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// How long one call to Todoist may take, by default.
pub const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct TodoistConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where `/oauth/authorize` and `/oauth/access_token` are (`https://todoist.com`).
    pub auth_url: String,
    /// Where `/api/v1/...` is (`https://api.todoist.com`).
    pub api_url: String,
    /// How long one call may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for TodoistConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TodoistConfig")
            .field("client_id", &self.client_id)
            .field("auth_url", &self.auth_url)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// Why a call to the provider did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider answered {0}")]
    Unavailable(u16),
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider could not be reached")]
    Unreachable,
    /// Our own words for what is wrong (never the provider's text: an answer may hold a task's).
    #[error("the provider's answer is not what its API documents: {0}")]
    Malformed(&'static str),
    /// The token is not (or no longer) valid: revoked, or the app's access removed.
    #[error("the provider refused the token ({0})")]
    Unauthorized(u16),
    #[error("the provider does not know it")]
    NotFound,
    /// Any other refusal (a 4xx the API does not lead us to expect).
    #[error("the provider refused the request ({0})")]
    Refused(u16),
    /// The request went through but the provider refused this one command (a task the person
    /// may not close, say): the token is fine.
    #[error("the provider refused the command ({0})")]
    CommandRefused(u16),
}

impl ProviderError {
    /// Our code for it, as events record it (never the provider's own text).
    pub fn code(&self) -> String {
        match self {
            Self::RateLimited { .. } => "rate_limited".into(),
            Self::Unavailable(s) | Self::Unauthorized(s) | Self::Refused(s) => format!("http_{s}"),
            Self::CommandRefused(s) => format!("command_{s}"),
            Self::Timeout => "timeout".into(),
            Self::Unreachable => "unreachable".into(),
            Self::Malformed(_) => "malformed".into(),
            Self::NotFound => "not_found".into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::Timeout | Self::Unreachable | Self::Malformed(_)
        )
    }

    /// Whether the provider refused the token itself (401/403 to the whole request): the
    /// connection is broken until the person connects again. Any other refusal is a failure
    /// like the others, retried later (an API change must not break every connection for good).
    pub fn refuses_token(&self) -> bool {
        matches!(self, Self::Unauthorized(_))
    }
}

/// One item of `POST /api/v1/sync`, with the fields oO reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Item {
    pub id: String,
    #[serde(default)]
    pub content: String,
    #[serde(default = "lowest")]
    pub priority: i64,
    #[serde(default)]
    pub due: Option<Due>,
    #[serde(default)]
    pub checked: bool,
    #[serde(default)]
    pub is_deleted: bool,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
}

fn lowest() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Due {
    /// `YYYY-MM-DD` (all day), `YYYY-MM-DDTHH:MM:SS` (floating) or with `Z` (fixed).
    pub date: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

impl Due {
    /// The due time in UTC: a fixed time as given, a floating one in `timezone` (UTC when none),
    /// an all-day date at the end of that day in UTC.
    pub fn to_utc(&self) -> Option<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(&self.date) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(&self.date, "%Y-%m-%dT%H:%M:%S") {
            let zone: chrono_tz::Tz = self
                .timezone
                .as_deref()
                .and_then(|z| z.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            return t.and_local_timezone(zone).earliest().map(|t| t.with_timezone(&Utc));
        }
        let day = NaiveDate::parse_from_str(&self.date, "%Y-%m-%d").ok()?;
        day.and_hms_opt(23, 59, 59).map(|t| t.and_utc())
    }
}

/// What one sync brought.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SyncPage {
    pub sync_token: String,
    #[serde(default)]
    pub full_sync: bool,
    #[serde(default)]
    pub items: Vec<Item>,
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Revoked,
    /// Todoist did not know the token (revoked there already, or never valid).
    UnknownToken,
}

#[derive(Debug, Clone)]
pub struct Todoist {
    http: reqwest::Client,
    config: TodoistConfig,
}

impl Todoist {
    pub fn new(config: TodoistConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| ProviderError::Unreachable)?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &TodoistConfig {
        &self.config
    }

    /// Where to send the person to grant access (`scope=data:read_write`).
    pub fn authorize_url(&self, state: &str) -> String {
        let mut url = format!("{}/oauth/authorize?", self.config.auth_url.trim_end_matches('/'));
        url.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", &self.config.client_id)
                .append_pair("scope", "data:read_write")
                .append_pair("state", state)
                .finish(),
        );
        url
    }

    /// Exchanges an authorization code for an access token, server-side.
    pub async fn exchange(&self, code: &str) -> Result<SecretString, ProviderError> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let response = self
            .http
            .post(format!(
                "{}/oauth/access_token",
                self.config.auth_url.trim_end_matches('/')
            ))
            .form(&[
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", self.config.client_secret.expose_secret()),
                ("code", code),
            ])
            .send()
            .await
            .map_err(transport)?;
        let body = checked(response).await?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Malformed("the token answer is not JSON of the documented shape"))?;
        if token.access_token.is_empty() {
            return Err(ProviderError::Malformed("an empty access token"));
        }
        Ok(SecretString::from(token.access_token))
    }

    /// `POST /api/v1/sync` for items after `sync_token` (`*`: everything).
    pub async fn sync(&self, token: &SecretString, sync_token: &str) -> Result<SyncPage, ProviderError> {
        let response = self
            .http
            .post(self.api("/api/v1/sync"))
            .bearer_auth(token.expose_secret())
            .form(&[("sync_token", sync_token), ("resource_types", r#"["items"]"#)])
            .send()
            .await
            .map_err(transport)?;
        let body = checked(response).await?;
        let page: SyncPage = serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Malformed("the sync answer is not JSON of the documented shape"))?;
        if page.sync_token.is_empty() {
            return Err(ProviderError::Malformed("no sync_token"));
        }
        Ok(page)
    }

    /// Closes the task `item_id` through the sync API's `item_close`, under `command` (the same
    /// uuid again is answered from Todoist's record of it: a retry closes nothing twice).
    pub async fn close(&self, token: &SecretString, item_id: &str, command: Uuid) -> Result<(), ProviderError> {
        let commands = serde_json::json!([{
            "type": "item_close",
            "uuid": command.to_string(),
            "args": { "id": item_id },
        }])
        .to_string();
        let response = self
            .http
            .post(self.api("/api/v1/sync"))
            .bearer_auth(token.expose_secret())
            .form(&[("commands", commands.as_str())])
            .send()
            .await
            .map_err(transport)?;
        let body = checked(response).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| ProviderError::Malformed("the command answer is not JSON"))?;
        match answer.pointer(&format!("/sync_status/{command}")) {
            Some(serde_json::Value::String(s)) if s == "ok" => Ok(()),
            Some(serde_json::Value::Object(e)) => {
                let code = e.get("http_code").and_then(serde_json::Value::as_u64).unwrap_or(400);
                match code {
                    404 => Err(ProviderError::NotFound),
                    429 => Err(ProviderError::RateLimited { retry_after: None }),
                    c if c >= 500 => Err(ProviderError::Unavailable(c as u16)),
                    // Todoist's "item not found" comes as error_code 22 with http_code 400.
                    _ if e.get("error_code").and_then(serde_json::Value::as_u64) == Some(22) => {
                        Err(ProviderError::NotFound)
                    }
                    // The request was accepted with its token: a refusal of this one command
                    // (a task in a project the person may not change) says nothing of the token.
                    c => Err(ProviderError::CommandRefused(c as u16)),
                }
            }
            _ => Err(ProviderError::Malformed("no sync_status for the command")),
        }
    }

    /// Revokes `token` (`POST /api/v1/revoke` with the app's credentials).
    pub async fn revoke(&self, token: &SecretString) -> Result<Revoked, ProviderError> {
        let response = self
            .http
            .post(self.api("/api/v1/revoke"))
            .form(&[
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", self.config.client_secret.expose_secret()),
                ("token", token.expose_secret()),
            ])
            .send()
            .await
            .map_err(transport)?;
        match checked(response).await {
            Ok(_) => Ok(Revoked::Revoked),
            Err(ProviderError::Unauthorized(_) | ProviderError::NotFound) => Ok(Revoked::UnknownToken),
            Err(e) => Err(e),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_url.trim_end_matches('/'))
    }
}

fn transport(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else if e.is_body() || e.is_decode() {
        ProviderError::Malformed("the body was cut short")
    } else {
        ProviderError::Unreachable
    }
}

/// The body of a successful answer, or the error its status says.
async fn checked(response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.map_err(transport)?;
    match status {
        200..=299 => Ok(body.to_vec()),
        401 | 403 => Err(ProviderError::Unauthorized(status)),
        404 => Err(ProviderError::NotFound),
        429 => Err(ProviderError::RateLimited { retry_after }),
        500..=599 => Err(ProviderError::Unavailable(status)),
        _ => Err(ProviderError::Refused(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(date: &str, timezone: Option<&str>) -> Option<DateTime<Utc>> {
        Due {
            date: date.into(),
            timezone: timezone.map(str::to_owned),
        }
        .to_utc()
    }

    #[test]
    fn due_dates_of_each_form_become_utc_times() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        assert_eq!(due("2026-12-03T09:00:00Z", None), Some(at("2026-12-03T09:00:00Z")));
        assert_eq!(
            due("2026-12-03T09:00:00", Some("Europe/Paris")),
            Some(at("2026-12-03T08:00:00Z")),
            "floating, in the item's zone"
        );
        assert_eq!(due("2026-12-03T09:00:00", None), Some(at("2026-12-03T09:00:00Z")));
        assert_eq!(
            due("2026-12-03", None),
            Some(at("2026-12-03T23:59:59Z")),
            "all day: its end"
        );
        assert_eq!(due("next week", None), None);
    }

    #[test]
    fn errors_carry_our_codes_never_the_providers_text() {
        assert_eq!(ProviderError::Unavailable(503).code(), "http_503");
        assert_eq!(ProviderError::RateLimited { retry_after: None }.code(), "rate_limited");
        assert_eq!(ProviderError::Malformed("cut short").code(), "malformed");
        assert!(ProviderError::Unauthorized(403).refuses_token());
        assert!(!ProviderError::Refused(400).refuses_token() && !ProviderError::CommandRefused(403).refuses_token());
        assert!(ProviderError::Timeout.is_transient());
        assert!(!ProviderError::Unauthorized(401).is_transient());
    }

    #[test]
    fn the_configuration_never_shows_its_secret() {
        let config = TodoistConfig {
            client_id: "id".into(),
            client_secret: SecretString::from("very-secret".to_owned()),
            auth_url: "https://todoist.com".into(),
            api_url: "https://api.todoist.com".into(),
            timeout: TIMEOUT,
        };
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
