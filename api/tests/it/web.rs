//! The web app in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini), against the server and the real peers the other tests use (the
//! OpenID provider on loopback, the Todoist fake). Every page is checked with axe-core injected
//! into it (no serious or critical violation) and photographed at a phone's and a desktop's
//! width; `OO_UPDATE_SCREENSHOTS=1` writes the photographs into `docs/screenshots/` as well.
//! The headers that keep the pages safe are checked over plain HTTP first.

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PHONE: (u32, u32) = (360, 780);
const DESKTOP: (u32, u32) = (1280, 860);

/// chromedriver on a free loopback port, and one Chromium session through it. `close` ends the
/// session; on drop (a failed test too) chromedriver's process group, Chromium included, is
/// killed and the profile removed.
struct Browser {
    client: Client,
    driver: Child,
    profile: PathBuf,
}

/// Chromium: `OO_CHROMIUM`, else where Debian, Ubuntu or Homebrew put it.
fn chromium() -> String {
    std::env::var("OO_CHROMIUM").unwrap_or_else(|_| {
        [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/Applications/Chromium.app/Contents/MacOS/Chromium",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
        .to_owned()
    })
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new(std::env::var("OO_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver ({e}): install Chromium and its driver, on Debian/Ubuntu \
                     `sudo apt-get install chromium chromium-driver`, or set OO_CHROMEDRIVER and OO_CHROMIUM"
                )
            });
        let profile = temp_dir("oo-chromium");
        let downloads = profile.join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads folder");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.display()),
                         format!("--window-size={},{}", DESKTOP.0, DESKTOP.1)],
                "prefs": {"download.default_directory": downloads.display().to_string(),
                          "download.prompt_for_download": false}
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.clone());
            match builder.connect(&url).await {
                Ok(c) => break c,
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no Chromium session through chromedriver at {url}: {e}"),
            }
        };
        Self {
            client,
            driver,
            profile,
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Evaluates `expr` in the page (a JavaScript expression).
    async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// Waits (up to 20 s) until `expr` is truthy in the page; returns its value.
    async fn until(&self, what: &str, expr: &str) -> Value {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.client.execute(&format!("return ({expr});"), vec![]).await
                && !matches!(v, Value::Null | Value::Bool(false))
                && v != json!("")
            {
                return v;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let text = self.js("document.body ? document.body.innerText : ''").await;
                panic!("waited 20 s for {what} ({expr}) at {url}; the page says: {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.expect("clear");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Presses one key with the focus on the page itself (not in a field).
    async fn press(&self, key: &str) {
        self.js("document.activeElement && document.activeElement.blur(), true")
            .await;
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .send_keys(key)
            .await
            .unwrap_or_else(|e| panic!("press {key}: {e}"));
    }

    /// The visible text of the element `css`, or "" when it is missing or hidden.
    async fn text(&self, css: &str) -> String {
        let expr = format!(
            "(() => {{ const e = document.querySelector({css:?}); return e && !e.closest('[hidden]') ? e.innerText : ''; }})()"
        );
        self.js(&expr).await.as_str().unwrap_or_default().to_owned()
    }

    /// Checks the page as it stands with axe-core at a phone's and a desktop's size, and writes a
    /// screenshot of each as `<name>-phone.png` and `<name>-desktop.png`.
    async fn check_page(&self, name: &str) {
        for (size, (w, h)) in [("phone", PHONE), ("desktop", DESKTOP)] {
            self.client.set_window_size(w, h).await.expect("window size");
            tokio::time::sleep(Duration::from_millis(150)).await;
            let width = self.js("window.innerWidth").await.as_u64().unwrap_or(0);
            assert!(
                width <= u64::from(w) && width + 40 >= u64::from(w),
                "{name}: the viewport is {width} px wide, not about {w}"
            );
            let overflow = self
                .js("document.documentElement.scrollWidth > window.innerWidth + 1")
                .await;
            assert_eq!(overflow, json!(false), "{name} scrolls sideways at {w} px");
            self.axe(&format!("{name} ({size})")).await;
            let png = self.client.screenshot().await.expect("screenshot");
            write_screenshot(&format!("{name}-{size}.png"), &png);
        }
        self.client
            .set_window_size(DESKTOP.0, DESKTOP.1)
            .await
            .expect("window size");
    }

    /// Runs axe-core in the page; fails on any serious or critical violation.
    async fn axe(&self, page: &str) {
        self.client.execute(axe_source(), vec![]).await.expect("axe-core loads");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))
                    .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
                vec![],
            )
            .await
            .expect("axe.run");
        let grave: Vec<&Value> = result
            .as_array()
            .expect("violations")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(grave.is_empty(), "{page}: accessibility violations {grave:#?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// axe-core's script, read once per test run.
fn axe_source() -> &'static str {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AXE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
        npm_install(&dir);
        std::fs::read_to_string(dir.join("node_modules/axe-core/axe.min.js")).expect("axe.min.js")
    })
}

fn write_screenshot(file: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&target).expect("screenshots folder");
    std::fs::write(target.join(file), png).expect("write the screenshot");
    if std::env::var_os("OO_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::write(docs.join(file), png).expect("write docs/screenshots");
    }
}

/// Signs in through the sign-in page's development form; ends on the tip page.
async fn dev_sign_in(b: &Browser, app: &TestApp, email: &str) {
    b.goto(&format!("{}/signin", app.base)).await;
    b.until("the development form", "!document.getElementById('dev').hidden")
        .await;
    b.type_into("#email", email).await;
    b.click("#dev button[type=submit]").await;
    b.until(
        "the tip page",
        "location.pathname === '/' && document.readyState === 'complete'",
    )
    .await;
}

/// Waits for the tip page to settle on a tip or on "not now"; returns "tip" or "empty".
async fn settled(b: &Browser) -> String {
    b.until(
        "a tip or the calm state",
        "['tip', 'empty'].includes(document.body.dataset.state) && document.body.dataset.state",
    )
    .await
    .as_str()
    .expect("a state")
    .to_owned()
}

/// Reacts (`act`), then waits until the page has settled again on what came next.
async fn then_next(b: &Browser, act: impl AsyncFnOnce()) -> String {
    let before = b.js("document.body.dataset.shown").await;
    act().await;
    b.until(
        "the next tip or the calm state",
        &format!("document.body.dataset.shown !== {before} && ['tip', 'empty'].includes(document.body.dataset.state)"),
    )
    .await;
    settled(b).await
}

async fn user_reactions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT payload->'TipReacted'->>'reaction' FROM events WHERE event_type = 'TipReacted' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("reactions")
}

#[tokio::test]
async fn pages_are_embedded_and_carry_a_strict_policy_and_no_referrer() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/signin", "text/html"),
        ("/connect", "text/html"),
        ("/account", "text/html"),
        ("/console", "text/html"),
        ("/offline", "text/html"),
        ("/sw.js", "text/javascript"),
        ("/manifest.webmanifest", "application/manifest+json"),
        ("/assets/tip.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/icon-512.png", "image/png"),
    ] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if kind == "text/html" {
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
                "{csp}"
            );
            assert!(csp.contains("default-src 'none'"), "{csp}");
        }
        let etag = header("etag");
        assert!(!etag.is_empty(), "{path}: a validator");
        let again = app
            .client
            .get(format!("{}{path}", app.base))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("get");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    // API answers carry a policy that runs nothing, and the session never reaches the page's
    // storage: it is an HttpOnly cookie.
    let r = app
        .client
        .post(format!("{}/auth/dev-login", app.base))
        .json(&json!({"email": "headers@example.org"}))
        .send()
        .await
        .expect("login");
    let h = r.headers().clone();
    assert!(
        h.get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("default-src 'none'") && v.contains("sandbox"))
    );
    let cookie = h.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let missing = app
        .client
        .get(format!("{}/assets/nothing.js", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let methods = app.get("/auth/methods", "").await;
    assert_eq!(methods.status, StatusCode::OK);
    assert_eq!(methods.body["dev_login"], true);
    assert_eq!(methods.body["oidc"], false);
    let terms = app
        .client
        .get(format!("{}/legal/terms", app.base))
        .send()
        .await
        .expect("terms");
    let etag = terms.headers()["etag"]
        .to_str()
        .expect("etag")
        .trim_matches('"')
        .to_owned();
    assert_eq!(methods.body["terms_sha256"], etag.as_str());
}

#[tokio::test]
async fn a_newcomer_signs_in_adds_a_task_sees_it_on_the_black_page_and_reacts_by_mouse_and_key() {
    let app = spawn_with(|c| c.policy = "random".into()).await;
    let b = Browser::start().await;
    // Not signed in: the tip page sends the person to sign in.
    b.goto(&format!("{}/", app.base)).await;
    b.until("the sign-in page", "location.pathname === '/signin'").await;
    b.until(
        "the consent hashes",
        "document.getElementById('terms-hash').textContent.length === 64",
    )
    .await;
    b.check_page("signin").await;
    dev_sign_in(&b, &app, "newcomer@example.org").await;
    settled(&b).await;

    // Adds a task by hand, then follows the link to the tip page.
    b.goto(&format!("{}/connect", app.base)).await;
    b.until("the connectors", "document.querySelector('#connectors .card') !== null")
        .await;
    b.check_page("connect").await;
    b.type_into("#task-title", "Water the basil").await;
    b.click("#task-form button[type=submit]").await;
    b.until("the task accepted", "document.querySelector('#added a') !== null")
        .await;
    b.click("#added a").await;

    // Until the task is the tip: other tips are dismissed with the keyboard (X), and "not now"
    // is asked again. The task is then marked done with the mouse.
    let mut dismissed_by_key = 0;
    let mut saw_calm = false;
    let mut state = settled(&b).await;
    for _ in 0..300 {
        if state == "tip" && b.text("#tip-title").await == "Water the basil" {
            break;
        }
        if state == "tip" {
            state = then_next(&b, async || b.press("x").await).await;
            dismissed_by_key += 1;
        } else {
            if !saw_calm {
                saw_calm = true;
                let when = b.text("#empty-when").await;
                assert!(when.contains("looks again at"), "the calm state says when: {when}");
                assert_eq!(b.text("#error").await, "", "not now is not an error");
                b.check_page("not-now").await;
            }
            b.goto(&format!("{}/", app.base)).await;
            state = settled(&b).await;
        }
    }
    assert_eq!(b.text("#tip-title").await, "Water the basil", "the task came as a tip");
    assert!(b.text("#tip-source").await.to_lowercase().contains("your list"));
    let bg = b.js("getComputedStyle(document.body).backgroundColor").await;
    assert_eq!(bg, json!("rgb(0, 0, 0)"), "the tip page is black");
    b.check_page("tip").await;
    state = then_next(&b, async || b.click("[data-reaction=done]").await).await;
    let reactions = user_reactions(&app).await;
    assert_eq!(reactions.last().map(String::as_str), Some("done"), "{reactions:?}");
    assert_eq!(
        reactions.iter().filter(|r| *r == "dismiss").count(),
        dismissed_by_key,
        "each X was one dismiss"
    );

    // Until "not now" shows, if it has not yet: dismiss with the keyboard.
    for _ in 0..300 {
        if saw_calm {
            break;
        }
        if state == "empty" {
            saw_calm = true;
            b.check_page("not-now").await;
        } else {
            state = then_next(&b, async || b.press("x").await).await;
        }
    }
    assert!(saw_calm, "the random policy never chose 'not now'");
    b.close().await;
}

#[tokio::test]
async fn signing_in_through_the_openid_provider_shows_the_tip_page() {
    let provider = crate::oidc::Provider::start("none", "browser-subject", "browser-person@example.org");
    let app = crate::oidc::app_for(&provider).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/signin", app.base)).await;
    b.until("the provider's button", "!document.getElementById('oidc').hidden")
        .await;
    b.click("#oidc-button").await;
    b.until(
        "back on the tip page",
        "location.pathname === '/' && location.port !== ''",
    )
    .await;
    settled(&b).await;
    b.goto(&format!("{}/account", app.base)).await;
    b.until(
        "the profile",
        "document.getElementById('email').textContent.includes('@')",
    )
    .await;
    assert_eq!(b.text("#email").await, "browser-person@example.org");
    let consent = b.text("#consents").await;
    let methods = app.get("/auth/methods", "").await;
    assert!(
        consent.contains(methods.body["terms_sha256"].as_str().expect("hash")),
        "{consent}"
    );
    b.check_page("account").await;
    // Sign out ends the session: the pages send the person back to sign in.
    b.click("#signout").await;
    b.until("the sign-in page", "location.pathname === '/signin'").await;
    b.goto(&format!("{}/account", app.base)).await;
    b.until("sent to sign in again", "location.pathname === '/signin'")
        .await;
    b.close().await;
}

#[tokio::test]
async fn connecting_and_disconnecting_todoist_from_the_connect_page() {
    let fake = crate::todoist_fake::FakeTodoist::start().await;
    fake.put("101", "Call the plumber", 4, None);
    let app = crate::todoist::spawn_for(&fake, |c| c.policy = "random".into()).await;
    let b = Browser::start().await;
    dev_sign_in(&b, &app, "connector@example.org").await;
    b.goto(&format!("{}/connect", app.base)).await;
    b.until(
        "the Todoist card",
        "document.querySelector('[data-provider=todoist] a.button') !== null",
    )
    .await;
    b.click("[data-provider=todoist] a.button").await;
    // Todoist's authorize page (the fake) sends the browser back; oO shows the connection.
    b.until("back on the connect page", "location.pathname === '/connect'")
        .await;
    b.until(
        "the connection with its task",
        "(document.querySelector('[data-provider=todoist]') || {dataset: {}}).dataset.openTasks === '1'",
    )
    .await;
    assert!(b.text("[data-provider=todoist]").await.contains("connected"));
    b.check_page("connect-todoist").await;
    b.click("[data-provider=todoist] button.danger").await;
    b.until(
        "disconnected",
        "document.querySelector('[data-provider=todoist] a.button') !== null",
    )
    .await;
    assert!(b.text("#status").await.contains("disconnected"));
    let token = fake.token();
    let started = Instant::now();
    while !fake.with(|s| s.revoked.contains(&token)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the token was never revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.close().await;
}

#[tokio::test]
async fn export_then_delete_the_account_from_the_me_page() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    dev_sign_in(&b, &app, "leaving@example.org").await;
    b.goto(&format!("{}/connect", app.base)).await;
    b.until("the forms", "document.getElementById('mood-form') !== null")
        .await;
    b.type_into("#mood-note", "tired but fine").await;
    b.click("#mood-form button[type=submit]").await;
    b.until("the mood noted", "document.querySelector('#added a') !== null")
        .await;

    b.goto(&format!("{}/account", app.base)).await;
    b.until(
        "the profile",
        "document.getElementById('email').textContent === 'leaving@example.org'",
    )
    .await;
    // The download link gives the export, decrypted, to this session only.
    let export = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const href = document.querySelector('a[download]').getAttribute('href');
             fetch(href).then(r => r.json()).then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("export");
    let text = export.to_string();
    assert!(text.contains("tired but fine"), "the export holds the note: {text}");
    b.click("a[download]").await;
    let downloads = b.profile.join("downloads/oo-export.json");
    let started = Instant::now();
    while !downloads.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the export was never downloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    b.click("#delete").await;
    b.until("the confirmation", "document.getElementById('confirm').open")
        .await;
    let what = b.text("#confirm-what").await;
    for destroyed in ["key", "email", "tasks", "session", "Todoist", "cannot be undone"] {
        assert!(what.contains(destroyed), "the confirmation names {destroyed}: {what}");
    }
    b.axe("delete confirmation").await;
    b.click("#confirm-delete").await;
    assert!(
        b.text("#confirm-error").await.contains("Type the word"),
        "a bare click deletes nothing"
    );
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserDeletionRequested'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(requested, 0, "nothing deleted before the word is typed");
    b.type_into("#confirm-word", "delete").await;
    b.click("#confirm-delete").await;
    b.until("the deletion completed", "!document.getElementById('deleted').hidden")
        .await;
    assert!(b.text("#deleted-detail").await.contains("purged"));
    b.check_page("deleted").await;
    let shredded: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserShredded'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(shredded, 1);
    b.goto(&format!("{}/", app.base)).await;
    b.until("signed out", "location.pathname === '/signin'").await;
    b.close().await;
}

#[tokio::test]
async fn the_console_shows_a_rebuild_in_progress_and_takes_no_session() {
    let app = spawn_app().await;
    let (token, _) = app.login("console@example.org").await;
    let signals = tasks("c", 30);
    assert_eq!(
        app.post("/signals", &token, json!({ "signals": signals })).await.status,
        StatusCode::OK
    );
    wait_caught_up(&app.pool).await;
    let b = Browser::start().await;
    // Signed in as a person, the console still shows nothing without the admin token.
    dev_sign_in(&b, &app, "console@example.org").await;
    b.goto(&format!("{}/console", app.base)).await;
    b.until("the token form", "document.getElementById('token') !== null")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.js("document.getElementById('panels').hidden").await, json!(true));
    b.type_into("#token", "not-the-token-not-the-token-not-the-token").await;
    b.click("#token-form button[type=submit]").await;
    b.until(
        "refused",
        "document.getElementById('error').textContent.includes('not accepted')",
    )
    .await;
    assert_eq!(b.js("document.getElementById('panels').hidden").await, json!(true));
    let stored = b
        .js("JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage), document.cookie])")
        .await;
    assert_eq!(stored, json!("[[],[],\"\"]"), "no token kept, no cookie readable");

    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#token-form button[type=submit]").await;
    b.until(
        "the projections",
        "document.querySelectorAll('#projections tr').length > 1",
    )
    .await;
    b.until(
        "the latest events",
        "document.querySelectorAll('#events tr').length > 0",
    )
    .await;
    let events = b.text("#events").await;
    assert!(
        events.contains("[sealed]") && !events.contains("task 7"),
        "sealed: {events}"
    );
    assert!(b.text("#policies").await.contains("serving"));
    b.check_page("console").await;

    // Hold the live checkpoints: the rebuild applies every event, then waits to swap.
    let name = "open_tasks";
    let mut holder = hold_live_checkpoints(&app.database_url).await;
    b.click(&format!("button[aria-label='Rebuild {name}']")).await;
    let progress = b
        .until(
            "the rebuild's progress",
            &format!(
                "(() => {{ const p = document.querySelector('tr[data-name={name}] progress'); return p && p.value > 0 ? [p.value, p.max] : null; }})()"
            ),
        )
        .await;
    assert!(progress[0].as_f64() <= progress[1].as_f64(), "{progress}");
    assert_eq!(
        b.js(&format!(
            "document.querySelector('tr[data-name={name}]').dataset.status"
        ))
        .await,
        json!("rebuilding")
    );
    b.check_page("console-rebuilding").await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("release");
    b.until(
        "the rebuild done",
        &format!("document.querySelector('tr[data-name={name}]').dataset.status === 'live' && !document.querySelector('tr[data-name={name}] progress')"),
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn the_app_installs_and_shows_the_offline_page_without_the_server() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    dev_sign_in(&b, &app, "offline@example.org").await;
    settled(&b).await;
    let manifest = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json()).then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("manifest");
    assert_eq!(manifest["display"], "standalone");
    assert!(
        manifest["icons"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["sizes"] == "512x512"))
    );
    b.until(
        "the service worker in control",
        "navigator.serviceWorker.controller !== null",
    )
    .await;
    let cached = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             (async () => { const out = [];
               for (const name of await caches.keys()) {
                 for (const r of await (await caches.open(name)).keys()) out.push(new URL(r.url).pathname);
               }
               return out.sort(); })().then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("the caches");
    let cached: Vec<&str> = cached
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut shell: Vec<&str> = oo_api::web::ASSETS
        .iter()
        .map(|a| a.path)
        .filter(|p| *p != "/sw.js")
        .collect();
    shell.sort_unstable();
    assert_eq!(cached, shell, "the shell, and nothing else (no API answer), is cached");

    let base = app.base.clone();
    drop(app);
    let started = Instant::now();
    while reqwest::get(format!("{base}/health")).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(20), "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The page still open: a reaction that cannot be sent keeps the tip, to be sent again.
    if settled(&b).await == "tip" {
        b.press("x").await;
        b.until(
            "the reaction refused",
            "document.getElementById('error').textContent !== ''",
        )
        .await;
        assert!(b.text("#error").await.contains("cannot be reached"));
        assert!(!b.text("#tip-title").await.is_empty(), "the tip stays");
        assert_eq!(
            b.js("document.querySelector('[data-reaction=dismiss]').disabled").await,
            json!(false),
            "and can be answered again"
        );
    }
    // Asking for a tip fails calmly: the error and a way to ask again, no stale tip.
    b.js("document.getElementById('again').click(), true").await;
    b.until("the error state", "document.body.dataset.state === 'error'")
        .await;
    assert!(b.text("#error").await.contains("cannot be reached"));
    assert_eq!(b.js("document.getElementById('tip').hidden").await, json!(true));
    assert_eq!(b.js("document.getElementById('retry-row').hidden").await, json!(false));
    b.goto(&format!("{base}/")).await;
    b.until("the offline page", "document.title === 'Offline · oO'").await;
    assert!(b.text("main").await.contains("cannot be reached"));
    b.check_page("offline").await;
    b.close().await;
}
