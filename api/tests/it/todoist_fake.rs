//! A fake of the parts of Todoist's API v1 oO uses, on loopback, after Todoist's published
//! documentation: OAuth (`GET /oauth/authorize` redirecting back with `code` and `state`,
//! `POST /oauth/access_token`), `POST /api/v1/sync` (items with sync tokens: `*` for everything,
//! then what changed; `item_close` commands, answered once per command uuid, in `sync_status`),
//! and `POST /api/v1/revoke`. Errors come as Todoist's JSON error bodies. A test can script the
//! next answers to fail (a status with `Retry-After`, a malformed body, a delay), and reads what
//! the fake saw.

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CLIENT_ID: &str = "fake-todoist-client";
pub const CLIENT_SECRET: &str = "fake-todoist-secret";

/// A scripted misbehaviour of the next call to `/api/v1/sync` or `/api/v1/revoke`.
#[derive(Debug, Clone)]
pub enum Failure {
    Status(u16, Option<u64>),
    Malformed,
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct FakeItem {
    pub id: String,
    pub content: String,
    pub priority: i64,
    pub due: Option<String>,
    pub checked: bool,
    pub is_deleted: bool,
    pub version: u64,
    pub updated_at: String,
    pub completed_at: Option<String>,
}

#[derive(Default)]
pub struct Inner {
    pub redirect_uri: String,
    codes: HashMap<String, String>,
    pub tokens: HashMap<String, bool>,
    pub items: Vec<FakeItem>,
    version: u64,
    commands: HashMap<String, Value>,
    /// Item ids closed, one entry per close that changed something.
    pub closed: Vec<String>,
    /// Commands received again (a retry), by uuid.
    pub repeated_commands: Vec<String>,
    pub revoked: Vec<String>,
    pub sync_calls: u32,
    pub revoke_calls: u32,
    pub failures: VecDeque<Failure>,
    /// Answer every sync as a full one, whatever its token (a page seen again).
    pub always_full: bool,
    /// How long to wait before answering an `item_close` (after applying it).
    pub close_delay: Option<Duration>,
    /// Refuse every `item_close` with this `http_code` (a task the person may not change).
    pub refuse_closes: Option<u16>,
}

#[derive(Clone)]
pub struct FakeTodoist {
    pub base: String,
    pub inner: Arc<Mutex<Inner>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn error(status: u16, tag: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(
            json!({"error": message, "error_code": status, "error_tag": tag, "http_code": status, "error_extra": {}}),
        ),
    )
        .into_response()
}

impl FakeTodoist {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = Self { base, inner };
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/access_token", post(access_token))
            .route("/api/v1/sync", post(sync))
            .route("/api/v1/revoke", post(revoke))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("fake state"))
    }

    /// Adds (or changes) a task.
    pub fn put(&self, id: &str, content: &str, priority: i64, due: Option<&str>) {
        self.with(|s| {
            s.version += 1;
            let version = s.version;
            let item = FakeItem {
                id: id.into(),
                content: content.into(),
                priority,
                due: due.map(str::to_owned),
                checked: false,
                is_deleted: false,
                version,
                updated_at: now(),
                completed_at: None,
            };
            match s.items.iter_mut().find(|i| i.id == id) {
                Some(i) => *i = item,
                None => s.items.push(item),
            }
        })
    }

    /// Completes a task, as the person would in Todoist.
    pub fn complete(&self, id: &str) {
        self.with(|s| {
            s.version += 1;
            let version = s.version;
            if let Some(i) = s.items.iter_mut().find(|i| i.id == id) {
                i.checked = true;
                i.version = version;
                i.updated_at = now();
                i.completed_at = Some(now());
            }
        })
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.with(|s| s.failures.extend(failures))
    }

    /// The one token issued (panics unless exactly one was).
    pub fn token(&self) -> String {
        self.with(|s| {
            assert_eq!(s.tokens.len(), 1, "one token issued");
            s.tokens.keys().next().cloned().expect("a token")
        })
    }
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    scope: String,
    state: String,
}

async fn authorize(State(fake): State<FakeTodoist>, Query(q): Query<AuthorizeQuery>) -> Response {
    if q.client_id != CLIENT_ID {
        return error(400, "INVALID_CLIENT", "Invalid client_id");
    }
    if q.scope != "data:read_write" {
        return error(400, "INVALID_SCOPE", "Invalid scope");
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("tdtok{}", uuid::Uuid::new_v4().simple());
    let redirect = fake.with(|s| {
        s.codes.insert(code.clone(), token);
        s.redirect_uri.clone()
    });
    let location = format!("{redirect}?code={code}&state={}", q.state);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[derive(serde::Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: String,
}

async fn access_token(State(fake): State<FakeTodoist>, Form(f): Form<TokenForm>) -> Response {
    if f.client_id != CLIENT_ID || f.client_secret != CLIENT_SECRET {
        return error(400, "INVALID_CLIENT", "Invalid client credentials");
    }
    let token = fake.with(|s| {
        let token = s.codes.remove(&f.code)?;
        s.tokens.insert(token.clone(), true);
        Some(token)
    });
    match token {
        Some(t) => axum::Json(json!({"access_token": t, "token_type": "Bearer"})).into_response(),
        None => error(400, "BAD_AUTHORIZATION_CODE", "Bad authorization code"),
    }
}

/// The scripted failure for this call, if any (a delay is served here and is not a failure).
async fn scripted(fake: &FakeTodoist) -> Option<Response> {
    let failure = fake.with(|s| s.failures.pop_front())?;
    match failure {
        Failure::Status(status, retry_after) => {
            let mut r = error(status, "SCRIPTED", "Service temporarily unavailable");
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, secs.to_string().parse().expect("header"));
            }
            Some(r)
        }
        Failure::Malformed => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"sync_token\": \"v1\", \"items\": [{\"id\": ",
            )
                .into_response(),
        ),
        Failure::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

fn item_json(i: &FakeItem) -> Value {
    json!({
        "id": i.id,
        "content": i.content,
        "description": "",
        "priority": i.priority,
        "due": i.due.as_ref().map(|d| json!({"date": d, "timezone": null, "is_recurring": false, "string": d, "lang": "en"})),
        "checked": i.checked,
        "is_deleted": i.is_deleted,
        "project_id": "6Jf8VQXxpwv56VQ7",
        "updated_at": i.updated_at,
        "completed_at": i.completed_at,
    })
}

async fn sync(
    State(fake): State<FakeTodoist>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let valid = token
        .as_ref()
        .is_some_and(|t| fake.with(|s| s.tokens.get(t).copied().unwrap_or(false)));
    fake.with(|s| s.sync_calls += 1);
    if let Some(r) = scripted(&fake).await {
        return r;
    }
    if !valid {
        return error(401, "AUTH_INVALID_TOKEN", "Invalid token");
    }
    if let Some(commands) = form.get("commands") {
        let Ok(commands) = serde_json::from_str::<Vec<Value>>(commands) else {
            return error(400, "INVALID_ARGUMENT_VALUE", "Invalid argument value");
        };
        let mut status = serde_json::Map::new();
        let mut delay = None;
        for c in commands {
            let uuid = c["uuid"].as_str().unwrap_or_default().to_owned();
            let result = fake.with(|s| {
                if let Some(r) = s.commands.get(&uuid) {
                    s.repeated_commands.push(uuid.clone());
                    return r.clone();
                }
                let id = c["args"]["id"].as_str().unwrap_or_default().to_owned();
                let r = if c["type"] != "item_close" {
                    json!({"error_code": 20, "error": "Invalid command", "http_code": 400})
                } else if let Some(code) = s.refuse_closes {
                    json!({"error_code": 9, "error": "Insufficient permissions", "http_code": code})
                } else {
                    s.version += 1;
                    let version = s.version;
                    match s.items.iter_mut().find(|i| i.id == id && !i.is_deleted) {
                        Some(i) => {
                            if !i.checked {
                                i.checked = true;
                                i.version = version;
                                i.updated_at = now();
                                i.completed_at = Some(now());
                                s.closed.push(id);
                            }
                            json!("ok")
                        }
                        None => json!({"error_code": 22, "error": "Item not found", "http_code": 404}),
                    }
                };
                s.commands.insert(uuid.clone(), r.clone());
                delay = s.close_delay;
                r
            });
            status.insert(uuid, result);
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        return axum::Json(json!({"sync_status": status, "temp_id_mapping": {}, "full_sync": false})).into_response();
    }
    let sync_token = form.get("sync_token").cloned().unwrap_or_else(|| "*".into());
    let body = fake.with(|s| {
        let since = if s.always_full {
            None
        } else {
            sync_token.strip_prefix('v').and_then(|v| v.parse::<u64>().ok())
        };
        let items: Vec<Value> = s
            .items
            .iter()
            .filter(|i| match since {
                // A full sync: the live, open items.
                None => !i.checked && !i.is_deleted,
                Some(v) => i.version > v,
            })
            .map(item_json)
            .collect();
        json!({"sync_token": format!("v{}", s.version), "full_sync": since.is_none(), "items": items})
    });
    axum::Json(body).into_response()
}

#[derive(serde::Deserialize)]
struct RevokeForm {
    client_id: String,
    client_secret: String,
    token: String,
}

async fn revoke(State(fake): State<FakeTodoist>, Form(f): Form<RevokeForm>) -> Response {
    fake.with(|s| s.revoke_calls += 1);
    if let Some(r) = scripted(&fake).await {
        return r;
    }
    if f.client_id != CLIENT_ID || f.client_secret != CLIENT_SECRET {
        return error(400, "INVALID_CLIENT", "Invalid client credentials");
    }
    let known = fake.with(|s| match s.tokens.get_mut(&f.token) {
        Some(valid) if *valid => {
            *valid = false;
            s.revoked.push(f.token.clone());
            true
        }
        _ => false,
    });
    if known {
        StatusCode::OK.into_response()
    } else {
        error(401, "AUTH_INVALID_TOKEN", "Invalid token")
    }
}
