//! Sign-in with OpenID Connect against a real provider on loopback (npm `oauth2-mock-server`,
//! driven by `api/tests/oidc/mock-provider.mjs`): the happy path, and refusals of a wrong state,
//! a missing state cookie, and ID tokens with a wrong nonce, audience or issuer, expired,
//! unsigned or signed with another key.

use crate::common::*;
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

static NPM: Mutex<bool> = Mutex::new(false);

fn peer_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs the provider's npm package once per test run if it is not there yet.
fn ensure_npm_install() {
    let mut done = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if *done || peer_dir().join("node_modules/oauth2-mock-server").exists() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund"])
        .current_dir(peer_dir())
        .status()
        .expect("npm runs (Debian's nodejs and npm)");
    assert!(status.success(), "npm install in api/tests/oidc failed");
    *done = true;
}

struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(tamper: &str, subject: &str, email: &str) -> Self {
        ensure_npm_install();
        let mut child = Command::new("node")
            .arg(peer_dir().join("mock-provider.mjs"))
            .env("OO_MOCK_TAMPER", tamper)
            .env("OO_MOCK_SUBJECT", subject)
            .env("OO_MOCK_EMAIL", email)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the provider says where it listens");
        let issuer = line.trim().strip_prefix("issuer ").expect("issuer line").to_owned();
        Self { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn app_for(provider: &Provider) -> TestApp {
    let issuer = provider.issuer.clone();
    spawn_with(move |c| {
        c.oidc_issuer = issuer;
        c.oidc_client_id = Some("oo-test-client".into());
        c.oidc_client_secret = Some("oo-test-secret".into());
    })
    .await
}

fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Walks the browser's part: /auth/login, the provider, back to /auth/callback (with `edit`
/// applied to the callback URL). Returns the callback's response.
async fn sign_in(app: &TestApp, edit: impl FnOnce(String) -> String, send_state_cookie: bool) -> reqwest::Response {
    let r = app
        .client
        .get(format!("{}/auth/login", app.base))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let state_cookie = set_cookie(r.headers(), "oo_oidc").expect("state cookie");
    let to_provider = r.headers()["location"].to_str().expect("location").to_owned();
    assert!(
        to_provider.contains("code_challenge_method=S256"),
        "PKCE S256: {to_provider}"
    );
    assert!(to_provider.contains("nonce=") && to_provider.contains("state="));
    let r = app.client.get(&to_provider).send().await.expect("provider");
    assert!(r.status().is_redirection(), "{}", r.status());
    let back = r.headers()["location"].to_str().expect("location").to_owned();
    assert!(back.starts_with(&format!("{}/auth/callback", app.base)), "{back}");
    let mut req = app.client.get(edit(back));
    if send_state_cookie {
        req = req.header("cookie", state_cookie);
    }
    req.send().await.expect("callback")
}

#[tokio::test]
async fn signing_in_with_openid_connect_registers_once_and_starts_a_session() {
    let provider = Provider::start("none", "subject-ada", "ada.oidc@example.org");
    let app = app_for(&provider).await;
    let r = sign_in(&app, |u| u, true).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let session = set_cookie(r.headers(), "oo_session").expect("session cookie");
    let me = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
    let me: serde_json::Value = me.json().await.expect("json");
    assert_eq!(me["email"], "ada.oidc@example.org");
    // Signing in recorded consent to the documents as served.
    for (doc, field) in [("terms", "terms_hash"), ("privacy", "privacy_hash")] {
        let text = app
            .client
            .get(format!("{}/legal/{doc}", app.base))
            .send()
            .await
            .expect("legal")
            .text()
            .await
            .expect("text");
        assert!(text.len() > 200, "{doc} is a real document");
        use sha2::Digest;
        assert_eq!(
            me["consents"][0][field].as_str(),
            Some(hex::encode(sha2::Sha256::digest(text.as_bytes())).as_str())
        );
    }

    let again = sign_in(&app, |u| u, true).await;
    let session2 = set_cookie(again.headers(), "oo_session").expect("session cookie");
    let me2: serde_json::Value = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", &session2)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(
        me2["user_id"], me["user_id"],
        "the same (issuer, subject) is the same user"
    );
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(registered, 1);
    let consents: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ConsentGiven'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(consents, 1, "consent to the same versions is recorded once");
}

#[tokio::test]
async fn users_are_identified_by_subject_not_by_email() {
    let first = Provider::start("none", "subject-1", "shared@example.org");
    let app = app_for(&first).await;
    let r = sign_in(&app, |u| u, true).await;
    let s1 = set_cookie(r.headers(), "oo_session").expect("session");
    let me1: serde_json::Value = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", &s1)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    // A dev sign-in with the same email is another identity.
    let (_, dev_user) = app.login("shared@example.org").await;
    assert_ne!(me1["user_id"].as_str(), Some(dev_user.as_str()));
}

#[tokio::test]
async fn sign_in_answers_503_when_not_configured() {
    let app = spawn_app().await;
    let r = app.send(reqwest::Method::GET, "/auth/login", None, None).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("oidc_not_configured"))
    );
}

#[tokio::test]
async fn a_wrong_state_or_a_missing_state_cookie_is_refused() {
    let provider = Provider::start("none", "subject-s", "s@example.org");
    let app = app_for(&provider).await;
    let before = app.event_count().await;
    let r = sign_in(&app, |u| u.replace("state=", "state=forged"), true).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["code"], "sign_in_refused");
    let r = sign_in(&app, |u| u, false).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no state cookie: another browser");
    assert_eq!(app.event_count().await, before, "nobody was registered");
}

#[tokio::test]
async fn bad_id_tokens_are_refused() {
    for tamper in ["nonce", "audience", "issuer", "expired", "unsigned", "wrong_key"] {
        let provider = Provider::start(tamper, "subject-t", "t@example.org");
        let app = app_for(&provider).await;
        let r = sign_in(&app, |u| u, true).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "an ID token with a bad {tamper} was accepted"
        );
        assert!(set_cookie(r.headers(), "oo_session").is_none(), "{tamper}: no session");
        assert_eq!(app.event_count().await, 0, "{tamper}: nobody was registered");
    }
}
