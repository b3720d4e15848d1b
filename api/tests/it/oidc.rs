//! Sign-in with OpenID Connect against a real provider on loopback (npm `oauth2-mock-server`,
//! driven by `api/tests/oidc/mock-provider.mjs`): the happy path, and refusals of a wrong state,
//! a missing state cookie, a replayed callback, and ID tokens with a wrong nonce, audience,
//! issuer or authorized party, expired, unsigned, signed with another key or with an HMAC under
//! the client secret that the provider's discovery allows.

use crate::common::*;
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn peer_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// An OpenID provider run by node from one of the scripts in `api/tests/oidc`, stopped on drop.
pub struct Provider {
    child: Child,
    pub issuer: String,
}

impl Provider {
    /// Starts `script` with `env`, then reads its `issuer <url>` line and keeps draining its
    /// output (a provider that logs to a closed pipe dies).
    fn run(script: &str, env: &[(&str, String)]) -> Self {
        Self::try_run(script, env).expect("the provider says where it listens")
    }

    /// As [`Provider::run`]; `None` when the provider exits before saying where it listens (its
    /// port was taken).
    fn try_run(script: &str, env: &[(&str, String)]) -> Option<Self> {
        npm_install(&peer_dir());
        let mut child = Command::new("node")
            .arg(peer_dir().join(script))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run node ({e}): install Node.js, on Debian/Ubuntu `sudo apt-get install nodejs npm`, \
                     on macOS `brew install node`"
                )
            });
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("the provider's output");
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let Some(issuer) = line.trim().strip_prefix("issuer ") else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        Some(Self {
            issuer: issuer.to_owned(),
            child,
        })
    }

    /// The lenient mock (oauth2-mock-server) signing in `subject`, misbehaving as `tamper` says.
    pub fn start(tamper: &str, subject: &str, email: &str) -> Self {
        let env = [
            ("OO_MOCK_TAMPER", tamper.to_owned()),
            ("OO_MOCK_SUBJECT", subject.to_owned()),
            ("OO_MOCK_EMAIL", email.to_owned()),
        ];
        Self::run("mock-provider.mjs", &env)
    }

    /// The strict provider (oidc-provider): PKCE required and verified, exact redirect URIs,
    /// single-use codes. `None` if `port` was taken.
    fn strict(port: u16, redirect_uri: &str) -> Option<Self> {
        Self::try_run(
            "strict-provider.mjs",
            &[
                ("OO_PROVIDER_PORT", port.to_string()),
                ("OO_REDIRECT_URI", redirect_uri.to_owned()),
            ],
        )
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /me` with a session cookie (`name=value`).
async fn me_with_cookie(app: &TestApp, cookie: &str) -> serde_json::Value {
    let r = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("me");
    r.json().await.expect("json")
}

pub async fn app_for(provider: &Provider) -> TestApp {
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
    let (state_cookie, back) = to_callback(app).await;
    let mut req = app.client.get(edit(back));
    if send_state_cookie {
        req = req.header("cookie", state_cookie);
    }
    req.send().await.expect("callback")
}

/// /auth/login, then the provider: the state cookie and the callback URL the browser holds.
async fn to_callback(app: &TestApp) -> (String, String) {
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
    (state_cookie, back)
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
    let me2: serde_json::Value = me_with_cookie(&app, &session2).await;
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
    let me1: serde_json::Value = me_with_cookie(&app, &s1).await;
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
    for tamper in [
        "nonce",
        "audience",
        "issuer",
        "expired",
        "unsigned",
        "wrong_key",
        "azp",
        "hs256",
    ] {
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

#[tokio::test]
async fn a_callback_is_accepted_once() {
    let provider = Provider::start("none", "subject-r", "r@example.org");
    let app = app_for(&provider).await;
    // The callback URL and the state cookie, as someone who captured them would hold them.
    let (state_cookie, back) = to_callback(&app).await;
    let replay = || app.client.get(&back).header("cookie", &state_cookie).send();
    let token_requests = || async {
        let r: serde_json::Value = reqwest::get(format!("{}/oo-test/token-requests", provider.issuer))
            .await
            .expect("count")
            .json()
            .await
            .expect("json");
        r["count"].as_i64().expect("a count")
    };
    let first = replay().await.expect("callback");
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(token_requests().await, 1);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    for _ in 0..3 {
        let again = replay().await.expect("callback");
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);
        assert!(set_cookie(again.headers(), "oo_session").is_none());
        let body: serde_json::Value = again.json().await.expect("json");
        assert_eq!(body["code"], "sign_in_refused");
    }
    // Another replica (same database, own process state) refuses it too.
    let other = spawn_at(&app.database_url, app.data_dir.clone(), |c| {
        c.oidc_issuer = provider.issuer.clone();
        c.oidc_client_id = Some("oo-test-client".into());
        c.oidc_client_secret = Some("oo-test-secret".into());
    })
    .await;
    let back_other = back.replace(&app.base, &other.base);
    let r = other
        .client
        .get(&back_other)
        .header("cookie", &state_cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(after, sessions, "no session from a replay");
    assert_eq!(
        token_requests().await,
        1,
        "no replay reached the provider's token endpoint"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_asked_again_only_after_a_pause() {
    // A port nothing listens on.
    let port = free_port();
    let app = spawn_with(move |c| {
        c.oidc_issuer = format!("http://127.0.0.1:{port}");
        c.oidc_client_id = Some("oo-test-client".into());
        c.oidc_client_secret = Some("oo-test-secret".into());
    })
    .await;
    let r = app.send(reqwest::Method::GET, "/auth/login", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    // Now the provider comes up on that port; within the pause oO does not ask it again.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the same port");
    listener.set_nonblocking(true).expect("nonblocking");
    let r = app.send(reqwest::Method::GET, "/auth/login", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a failed discovery is remembered: no second connection within the pause"
    );
}

/// A browser: follows nothing by itself, keeps cookies by name.
struct Browser {
    client: reqwest::Client,
    jar: std::collections::BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: Default::default(),
        }
    }
    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            if let Some((k, val)) = v.split(';').next().and_then(|kv| kv.split_once('=')) {
                if val.is_empty() {
                    self.jar.remove(k);
                } else {
                    self.jar.insert(k.to_owned(), val.to_owned());
                }
            }
        }
    }
    fn cookies(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = self
            .client
            .get(url)
            .header("cookie", self.cookies())
            .send()
            .await
            .expect("get");
        self.keep(&r);
        r
    }
    async fn post_form(&mut self, url: &str, body: String) -> reqwest::Response {
        let r = self
            .client
            .post(url)
            .header("cookie", self.cookies())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("post");
        self.keep(&r);
        r
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Signs in at the strict provider as `login` up to the redirect back to oO; returns the
/// callback URL (not yet visited) with the browser holding oO's state cookie.
async fn authorize(browser: &mut Browser, app: &TestApp, provider: &Provider, login: &str) -> String {
    let r = browser.get(&format!("{}/auth/login", app.base)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut url = r.headers()["location"].to_str().expect("location").to_owned();
    for _ in 0..20 {
        if url.starts_with(&format!("{}/auth/callback", app.base)) {
            return url;
        }
        let r = browser.get(&url).await;
        if r.status().is_redirection() {
            url = absolute(&provider.issuer, r.headers()["location"].to_str().expect("location"));
            continue;
        }
        assert_eq!(r.status(), StatusCode::OK, "at {url}");
        let html = r.text().await.expect("html");
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a form")
            .to_owned();
        let prompt = html
            .split("name=\"prompt\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("login")
            .to_owned();
        let r = browser
            .post_form(
                &absolute(&provider.issuer, &action),
                format!("prompt={prompt}&login={login}&password=x"),
            )
            .await;
        assert!(r.status().is_redirection(), "after the {prompt} form: {}", r.status());
        url = absolute(&provider.issuer, r.headers()["location"].to_str().expect("location"));
    }
    panic!("no redirect back to oO");
}

async fn strict_setup() -> (TestApp, Provider) {
    strict_setup_with(None).await
}

/// oO configured for the strict provider (with `public_url` if given), and the provider. Its
/// port is chosen before either starts, since each names the other; if another socket takes the
/// port in between, the provider cannot listen, and both start again on another port.
async fn strict_setup_with(public_url: Option<&str>) -> (TestApp, Provider) {
    for _ in 0..5 {
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let public_url = public_url.map(str::to_owned);
        let app = spawn_with(move |c| {
            c.oidc_issuer = issuer;
            c.oidc_client_id = Some("oo-test-client".into());
            c.oidc_client_secret = Some("oo-test-secret".into());
            if public_url.is_some() {
                c.public_url = public_url;
            }
        })
        .await;
        if let Some(provider) = Provider::strict(port, &format!("{}/auth/callback", app.base)) {
            return (app, provider);
        }
    }
    panic!("the strict provider could not listen on any of five free ports");
}

#[tokio::test]
async fn a_strict_provider_accepts_our_pkce_and_refuses_a_replayed_code_or_a_mismatched_verifier() {
    let (app, provider) = strict_setup().await;

    // The happy path: PKCE verified by the provider, exact redirect URI.
    let mut browser = Browser::new();
    let callback = authorize(&mut browser, &app, &provider, "grace").await;
    let state_cookie = browser.jar.get("oo_oidc").cloned().expect("state cookie");
    let r = browser.get(&callback).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    assert!(browser.jar.contains_key("oo_session"));
    let me: serde_json::Value = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", format!("oo_session={}", browser.jar["oo_session"]))
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], "grace@example.org");

    // The same code again (with the state cookie a replaying attacker would need): refused.
    let r = app
        .client
        .get(&callback)
        .header("cookie", format!("oo_oidc={state_cookie}"))
        .send()
        .await
        .expect("replay");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a code is single-use");

    // A code issued for one sign-in, presented with another sign-in's state and verifier: the
    // provider checks the PKCE verifier against the first sign-in's challenge.
    let mut first = Browser::new();
    let callback_a = authorize(&mut first, &app, &provider, "mallory").await;
    let mut second = Browser::new();
    let callback_b = authorize(&mut second, &app, &provider, "mallory").await;
    let code_a = callback_a
        .split("code=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("code")
        .to_owned();
    let state_b = callback_b
        .split("state=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("state")
        .to_owned();
    let mixed = format!("{}/auth/callback?code={code_a}&state={state_b}", app.base);
    let r = app
        .client
        .get(&mixed)
        .header("cookie", format!("oo_oidc={}", second.jar["oo_oidc"]))
        .send()
        .await
        .expect("mixed");
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the provider refused a verifier that does not match the code's challenge"
    );
}

#[tokio::test]
async fn a_strict_provider_refuses_a_redirect_uri_it_does_not_know() {
    let (app, provider) = strict_setup_with(Some("http://127.0.0.1:1")).await;
    let mut browser = Browser::new();
    let r = browser.get(&format!("{}/auth/login", app.base)).await;
    let to_provider = r.headers()["location"].to_str().expect("location").to_owned();
    assert!(to_provider.starts_with(&provider.issuer));
    let r = browser.get(&to_provider).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the provider refuses an unregistered redirect URI"
    );
}
