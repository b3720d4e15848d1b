//! The Todoist connector end to end, against a fake of Todoist's API v1 on loopback
//! (`todoist_fake`): connecting, first and incremental syncs, a replayed sync, `done` closing
//! the task there exactly once across an outage, a completion in Todoist settling a served tip,
//! disconnecting and deleting revoking the token, and each way Todoist can misbehave.

use crate::common::*;
use crate::todoist_fake::{CLIENT_ID, CLIENT_SECRET, Failure, FakeTodoist};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The server, configured for the fake: quick polls, background syncs far apart (the tests
/// sync when they mean to).
pub async fn spawn_for(fake: &FakeTodoist, adjust: impl FnOnce(&mut oo_api::config::ServeConfig)) -> TestApp {
    let (auth, api) = (fake.base.clone(), fake.base.clone());
    let app = spawn_with(move |c| {
        c.todoist_client_id = Some(CLIENT_ID.into());
        c.todoist_client_secret = Some(CLIENT_SECRET.into());
        c.todoist_auth_url = auth;
        c.todoist_api_url = api;
        c.todoist_sync_secs = 3600;
        c.connector_poll_ms = 50;
        c.settle_interval_secs = 1;
        adjust(c);
    })
    .await;
    fake.with(|s| s.redirect_uri = format!("{}/integrations/todoist/callback", app.base));
    app
}

/// Goes through Todoist's OAuth as a browser would: connect (303 to Todoist, with the state
/// cookie), Todoist's authorize page (302 back with a code), the callback with the cookie.
async fn connect(app: &TestApp, token: &str) -> reqwest::Response {
    let start = app
        .client
        .get(format!("{}/integrations/todoist/connect", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("connect");
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let to_todoist = start.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    let cookie = start.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let authorized = app.client.get(&to_todoist).send().await.expect("authorize");
    assert_eq!(authorized.status(), StatusCode::FOUND);
    let back = authorized.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    app.client
        .get(back)
        .bearer_auth(token)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("callback")
}

async fn connection(app: &TestApp, token: &str) -> Value {
    let r = app.get("/integrations", token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["connectors"][0].clone()
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

async fn open_todoist_tasks(app: &TestApp) -> i64 {
    wait_caught_up(&app.pool).await;
    sqlx::query_scalar("SELECT count(*) FROM open_tasks WHERE source = 'todoist'")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// Connected, with the first sync done.
async fn connected(fake: &FakeTodoist) -> (TestApp, String) {
    let app = spawn_for(fake, |_| {}).await;
    let (token, _) = app
        .login(&format!("todoist-{}@example.org", uuid::Uuid::new_v4().simple()))
        .await;
    let back = connect(&app, &token).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "{:?}", back.text().await);
    wait_until("the first sync is done", async || {
        !connection(&app, &token).await["connection"]["last_sync_at"].is_null()
    })
    .await;
    (app, token)
}

#[tokio::test]
async fn connecting_brings_the_tasks_in_and_syncs_add_only_what_changed() {
    let fake = FakeTodoist::start().await;
    fake.put("101", "Water the basil", 4, Some("2026-12-03"));
    fake.put("102", "Call the plumber", 2, None);
    let app = spawn_for(&fake, |_| {}).await;
    let (token, _) = app.login("todoist-sync@example.org").await;
    let before = connection(&app, &token).await;
    assert_eq!(before["provider"], "todoist");
    assert_eq!(before["configured"], true);
    assert!(before["connection"].is_null());

    let back = connect(&app, &token).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        back.headers()[reqwest::header::LOCATION],
        format!("{}/connect", app.base).as_str(),
        "back to the app's connect page"
    );
    wait_until("the first sync is done", async || {
        connection(&app, &token).await["connection"]["last_outcome"] == "synced"
    })
    .await;
    assert_eq!(open_todoist_tasks(&app).await, 2);
    let c = connection(&app, &token).await["connection"].clone();
    assert_eq!(c["status"], "connected");
    assert_eq!(c["open_tasks"], 2);
    assert_eq!(count(&app, "IntegrationConnected").await, 1);

    // Nothing changed: nothing recorded.
    let signals = count(&app, "SignalRecorded").await;
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["tasks"], 0);
    assert_eq!(count(&app, "SignalRecorded").await, signals);

    // One task added, one completed in Todoist: two signals, and the position to wait for.
    fake.put("103", "Book the train", 3, Some("2026-12-04T09:00:00Z"));
    fake.complete("102");
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["tasks"], 2);
    let tip = app
        .post("/recommend", &token, json!({"min_position": r.body["position"]}))
        .await;
    assert!(tip.status.is_success(), "{:?}", tip.body);
    let open: Vec<String> =
        sqlx::query_scalar("SELECT external_id FROM open_tasks WHERE source = 'todoist' ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .expect("rows");
    assert_eq!(open, ["101", "103"]);

    // The same page again (as after a crash before the cursor was saved): nothing is stored twice.
    fake.with(|s| s.always_full = true);
    let signals = count(&app, "SignalRecorded").await;
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["tasks"], 0, "every signal of the page is a repeat");
    assert_eq!(count(&app, "SignalRecorded").await, signals);

    // A signal carries what the item says; its title stays sealed in the log.
    let stored: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'SignalRecorded' \
         AND payload->'SignalRecorded'->'data'->>'external_id' = '103'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("signal");
    let data = &stored["SignalRecorded"]["data"];
    assert_eq!(data["source"], "todoist");
    assert_eq!(data["priority"], 3);
    assert_eq!(data["due"], "2026-12-04T09:00:00Z");
    assert_eq!(data["title"], "[sealed]");
}

/// The first `done`-reacted todo of Todoist's: recommends until one is served (others dismissed).
async fn serve_todoist_todo(app: &TestApp, token: &str) -> (String, String) {
    for _ in 0..300 {
        let tip = app.tip(token).await;
        let t = &tip["tip"];
        if t["kind"] == "todo" && t["source"] == "todoist" {
            return (
                t["id"].as_str().expect("id").to_owned(),
                t["title"].as_str().expect("title").to_owned(),
            );
        }
        let r = app
            .post("/feedback", token, json!({"tip_id": t["id"], "reaction": "dismiss"}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    panic!("no Todoist todo was served in 300 recommendations");
}

async fn closes(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT payload->'IntegrationTaskClosed'->>'external_id', payload->'IntegrationTaskClosed'->>'outcome' \
         FROM events WHERE event_type = 'IntegrationTaskClosed' ORDER BY tx_id, position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("closes")
}

#[tokio::test]
async fn done_closes_the_task_in_todoist_once_and_an_outage_only_delays_it() {
    let fake = FakeTodoist::start().await;
    fake.put("201", "Renew the passport", 4, None);
    let (app, token) = connected(&fake).await;
    let (tip, title) = serve_todoist_todo(&app, &token).await;
    assert_eq!(title, "Renew the passport");

    // Todoist is down for the next three calls: the close waits, then happens once.
    fake.fail_next([
        Failure::Status(503, None),
        Failure::Status(502, None),
        Failure::Status(500, None),
    ]);
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    wait_until("the task is closed in Todoist", async || !closes(&app).await.is_empty()).await;
    assert_eq!(closes(&app).await, [("201".to_owned(), "closed".to_owned())]);
    assert_eq!(fake.with(|s| s.closed.clone()), ["201"], "closed once");
    assert!(fake.with(|s| s.failures.is_empty()), "it went through the outage");
    // The same reaction again, and time for the closer to pass again: nothing more.
    let again = app
        .post("/feedback", &token, json!({"tip_id": tip, "reaction": "done"}))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(closes(&app).await.len(), 1);
    assert_eq!(fake.with(|s| s.closed.len()), 1);
}

#[tokio::test]
async fn a_done_on_a_todoist_task_no_connection_provided_is_recorded_and_never_sent() {
    let fake = FakeTodoist::start().await;
    let app = spawn_for(&fake, |_| {}).await;
    let (token, _) = app.login("todoist-by-hand@example.org").await;
    let mut by_hand = task("h1", "301", "Sent by hand as a Todoist task", 4, false);
    by_hand["data"]["source"] = json!("todoist");
    let r = app.post("/signals", &token, json!({ "signals": [by_hand] })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (tip, _) = serve_todoist_todo(&app, &token).await;
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until("the outcome is recorded", async || !closes(&app).await.is_empty()).await;
    assert_eq!(closes(&app).await, [("301".to_owned(), "no_connection".to_owned())]);
    assert_eq!(fake.with(|s| s.sync_calls), 0, "Todoist was never called");
}

#[tokio::test]
async fn a_task_completed_in_todoist_settles_the_tip_that_showed_it() {
    let fake = FakeTodoist::start().await;
    fake.put("401", "Send the invoice", 4, None);
    let (app, token) = connected(&fake).await;
    let (tip, _) = serve_todoist_todo(&app, &token).await;
    // No reaction: the person did it in Todoist.
    fake.complete("401");
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["tasks"], 1);
    wait_until("the reward join settles the tip", async || {
        let rewarded: Option<(f64, String)> = sqlx::query_as(
            "SELECT (payload->'TipRewarded'->>'reward')::float8, payload->'TipRewarded'->>'settled_by' \
             FROM events WHERE event_type = 'TipRewarded' AND aggregate_id = $1",
        )
        .bind(&tip)
        .fetch_optional(&app.pool)
        .await
        .expect("reward");
        rewarded.is_some_and(|(reward, by)| {
            assert_eq!((reward, by.as_str()), (1.0, "completion"));
            true
        })
    })
    .await;
}

#[tokio::test]
async fn disconnecting_revokes_the_token_until_todoist_confirms_and_drops_the_tasks() {
    let fake = FakeTodoist::start().await;
    fake.put("501", "Fix the bike", 3, None);
    let (app, token) = connected(&fake).await;
    assert_eq!(open_todoist_tasks(&app).await, 1);
    let issued = fake.token();
    // The first two revocations fail: it is retried until Todoist confirms.
    fake.fail_next([Failure::Status(503, None), Failure::Status(500, None)]);
    let r = app
        .send(reqwest::Method::DELETE, "/integrations/todoist", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(connection(&app, &token).await["connection"].is_null());
    assert_eq!(open_todoist_tasks(&app).await, 0, "its tasks are no longer candidates");
    wait_until("the token is revoked", async || {
        count(&app, "IntegrationTokenRevoked").await == 1
    })
    .await;
    assert_eq!(fake.with(|s| s.revoked.clone()), [issued]);
    assert!(fake.with(|s| s.revoke_calls) >= 3);
    wait_until("nothing of the token is kept", async || {
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM connections) + (SELECT count(*) FROM pending_revocations)",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        left == 0
    })
    .await;
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["code"], "not_connected");
    let r = app
        .send(reqwest::Method::DELETE, "/integrations/todoist", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Connecting again brings the tasks back, under a new generation.
    let back = connect(&app, &token).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    wait_until("the tasks are back", async || open_todoist_tasks(&app).await == 1).await;

    // A rebuild replays the disconnection and the reconnection alike: it equals the live tables.
    wait_caught_up(&app.pool).await;
    let live = projection_tables(&app.pool).await;
    for p in oo_projections::all() {
        oo_projections::rebuild::rebuild(
            &app.pool,
            p.as_ref(),
            &oo_projections::status::Status::default(),
            |_, _| {},
        )
        .await
        .expect("rebuild");
    }
    wait_caught_up(&app.pool).await;
    assert_eq!(
        projection_tables(&app.pool).await,
        live,
        "a rebuild equals the live build"
    );
}

#[tokio::test]
async fn deleting_the_account_revokes_the_token_and_no_copy_of_it_is_left() {
    let fake = FakeTodoist::start().await;
    fake.put("601", "Plan the holidays", 2, None);
    let (app, token) = connected(&fake).await;
    let issued = fake.token();
    let r = app.send(reqwest::Method::DELETE, "/me", Some(&token), None).await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(
        fake.with(|s| s.revoked.clone()),
        std::slice::from_ref(&issued),
        "revoked before the answer"
    );
    let disconnected: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'IntegrationDisconnected'->>'reason' FROM events WHERE event_type = 'IntegrationDisconnected'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(disconnected, ["deletion"]);
    let dump = std::process::Command::new(pg_bin().join("pg_dump"))
        .arg(&app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(
        !String::from_utf8_lossy(&dump.stdout).contains(&issued),
        "the token is nowhere in the database"
    );
}

#[tokio::test]
async fn a_deletion_while_todoist_is_down_revokes_the_token_later() {
    let fake = FakeTodoist::start().await;
    let (app, token) = connected(&fake).await;
    let issued = fake.token();
    fake.fail_next((0..4).map(|_| Failure::Status(503, None)));
    let r = app.send(reqwest::Method::DELETE, "/me", Some(&token), None).await;
    assert!(r.status.is_success(), "the deletion completes: {:?}", r.body);
    wait_until("the token is revoked after all", async || {
        fake.with(|s| s.revoked.contains(&issued))
    })
    .await;
    // Recorded, then forgotten (the event comes first, the row goes after it).
    wait_until("nothing of the token is kept", async || {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_revocations")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        pending == 0
    })
    .await;
    assert_eq!(count(&app, "IntegrationTokenRevoked").await, 1);
}

#[tokio::test]
async fn rate_limits_failures_and_nonsense_back_off_and_leave_nothing_half_applied() {
    let fake = FakeTodoist::start().await;
    fake.put("701", "Water the plants", 1, None);
    let (app, token) = connected(&fake).await;
    let signals = count(&app, "SignalRecorded").await;
    fake.put("702", "Pay the rent", 4, None);

    // 429 with Retry-After: a 503 that says when to come back.
    fake.fail_next([Failure::Status(429, Some(42))]);
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["code"], "provider_unavailable");
    assert_eq!(r.headers[reqwest::header::RETRY_AFTER], "42");
    assert_eq!(
        connection(&app, &token).await["connection"]["last_outcome"],
        "failed: rate_limited"
    );
    let due: f64 = sqlx::query_scalar("SELECT extract(epoch FROM next_sync_at - now())::float8 FROM connections")
        .fetch_one(&app.pool)
        .await
        .expect("next sync");
    assert!(due >= 40.0, "the next background sync waits at least as long: {due}");

    // A malformed answer: nothing of it is stored.
    fake.fail_next([Failure::Malformed]);
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(count(&app, "SignalRecorded").await, signals, "nothing half-applied");

    // Too slow: a timeout.
    let slow = FakeTodoist::start().await;
    slow.put("801", "Slow task", 1, None);
    let (slow_app, slow_token) = {
        let app = spawn_for(&slow, |c| c.todoist_timeout_ms = 300).await;
        let (token, _) = app.login("todoist-slow@example.org").await;
        assert_eq!(connect(&app, &token).await.status(), StatusCode::SEE_OTHER);
        (app, token)
    };
    wait_until("the first sync", async || {
        !connection(&slow_app, &slow_token).await["connection"]["last_sync_at"].is_null()
    })
    .await;
    slow.fail_next([Failure::Delay(Duration::from_secs(2))]);
    let r = slow_app
        .post("/integrations/todoist/sync", &slow_token, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(
        r.body["detail"].as_str().expect("detail").contains("timeout"),
        "{:?}",
        r.body
    );

    // Failures in a row open the circuit: oO stops calling Todoist for a while.
    fake.fail_next((0..5).map(|_| Failure::Status(503, None)));
    for _ in 0..4 {
        let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let calls = fake.with(|s| s.sync_calls);
    for _ in 0..3 {
        let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers.contains_key(reqwest::header::RETRY_AFTER));
    }
    assert_eq!(fake.with(|s| s.sync_calls), calls, "the open circuit calls nobody");
    assert_eq!(count(&app, "SignalRecorded").await, signals);
}

#[tokio::test]
async fn a_revoked_token_breaks_the_connection_once_and_is_not_retried() {
    let fake = FakeTodoist::start().await;
    fake.put("901", "Clean the gutter", 2, None);
    let app = spawn_for(&fake, |c| c.todoist_sync_secs = 1).await;
    let (token, _) = app.login("todoist-broken@example.org").await;
    assert_eq!(connect(&app, &token).await.status(), StatusCode::SEE_OTHER);
    wait_until("the first sync", async || {
        connection(&app, &token).await["connection"]["last_outcome"] == "synced"
    })
    .await;
    // The person removes oO's access in Todoist.
    fake.with(|s| s.tokens.values_mut().for_each(|v| *v = false));
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "connection_broken");
    let c = connection(&app, &token).await["connection"].clone();
    assert_eq!(c["status"], "broken");
    assert_eq!(c["last_outcome"], "broken: http_401");
    let calls = fake.with(|s| s.sync_calls);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fake.with(|s| s.sync_calls),
        calls,
        "a broken connection is not synced in the background"
    );
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'IntegrationSynced' \
         AND payload->'IntegrationSynced'->'outcome'->>'outcome' = 'broken'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(broken, 1, "recorded once");
}

#[tokio::test]
async fn the_connect_flow_refuses_what_this_browser_and_person_did_not_start() {
    let fake = FakeTodoist::start().await;
    let app = spawn_for(&fake, |_| {}).await;
    let (alice, _) = app.login("todoist-alice@example.org").await;
    let (mallory, _) = app.login("todoist-mallory@example.org").await;
    let start = app
        .client
        .get(format!("{}/integrations/todoist/connect", app.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("connect");
    let cookie = start.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let authorized = app
        .client
        .get(start.headers()[reqwest::header::LOCATION].to_str().expect("location"))
        .send()
        .await
        .expect("authorize");
    let back = authorized.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    let callback = |who: &str, cookie: Option<&str>, url: &str| {
        let mut req = app.client.get(url.to_owned()).bearer_auth(who.to_owned());
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, c.to_owned());
        }
        req.send()
    };
    let r = callback(&alice, None, &back).await.expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no state cookie");
    let r = callback(&mallory, Some(&cookie), &back).await.expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "another person's state");
    let forged = back.replace("state=", "state=x");
    let r = callback(&alice, Some(&cookie), &forged).await.expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "another state");
    let r = callback(&alice, Some(&cookie), &back).await.expect("callback");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the right browser and person");
    let r = callback(&alice, Some(&cookie), &back).await.expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "once");
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["code"], "connect_refused");
    let r = app
        .client
        .get(format!(
            "{}/integrations/todoist/callback?error=access_denied",
            app.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(connection(&app, &mallory).await["connection"].is_null());
}

#[tokio::test]
async fn without_todoist_configured_the_connector_answers_503_after_the_session_check() {
    let app = spawn_app().await;
    let r = app
        .send(reqwest::Method::GET, "/integrations/todoist/connect", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "401 first");
    let (token, _) = app.login("todoist-none@example.org").await;
    for (method, path) in [
        (reqwest::Method::GET, "/integrations/todoist/connect"),
        (reqwest::Method::GET, "/integrations/todoist/callback?code=x&state=y"),
        (reqwest::Method::POST, "/integrations/todoist/sync"),
    ] {
        let r = app.send(method, path, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {:?}", r.body);
        assert_eq!(r.body["code"], "connector_not_configured");
    }
    let c = connection(&app, &token).await;
    assert_eq!(c["configured"], false);
    assert!(c["connection"].is_null());
}

/// `oo serve` as a process, configured for the fake, with NATS and every log at debug, appended
/// to `log`.
fn start_process(
    fake: &FakeTodoist,
    database_url: &str,
    data_dir: &std::path::Path,
    nats: &str,
    log: &std::path::Path,
) -> Served {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let served = Served::start(
        database_url,
        data_dir,
        &[
            ("OO_NATS_URL", nats),
            ("OO_LOG", "debug"),
            ("OO_TODOIST_CLIENT_ID", CLIENT_ID),
            ("OO_TODOIST_CLIENT_SECRET", CLIENT_SECRET),
            ("OO_TODOIST_AUTH_URL", &fake.base),
            ("OO_TODOIST_API_URL", &fake.base),
            ("OO_TODOIST_SYNC_SECS", "3600"),
            ("OO_CONNECTOR_POLL_MS", "50"),
        ],
        log.into(),
    );
    fake.with(|s| s.redirect_uri = format!("{}/integrations/todoist/callback", served.base));
    served
}

#[tokio::test]
async fn a_close_survives_a_sigkill_of_oo_and_the_token_never_reaches_a_log_nats_or_an_answer() {
    let fake = FakeTodoist::start().await;
    fake.put("1001", "Repair the fence", 4, None);
    let nats = PrivateNats::start();
    let database_url = format!("{}/oo_test_{}", server_url(), uuid::Uuid::new_v4().simple());
    let _db = DbGuard::new(&database_url);
    let data_dir = temp_dir("oo-data");
    let log = data_dir.join("oo.log");
    let first = start_process(&fake, &database_url, &data_dir, &nats.url, &log);
    let app = TestApp::attach(&first.base, &database_url, &data_dir).await;
    let (token, _) = app.login("todoist-process@example.org").await;
    assert_eq!(connect(&app, &token).await.status(), StatusCode::SEE_OTHER);
    wait_until("the first sync", async || {
        !connection(&app, &token).await["connection"]["last_sync_at"].is_null()
    })
    .await;
    let issued = fake.token();
    let (tip, _) = serve_todoist_todo(&app, &token).await;

    // Todoist applies the close but answers late; oO is killed meanwhile.
    fake.with(|s| s.close_delay = Some(Duration::from_secs(3)));
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until("Todoist closed the task", async || !fake.with(|s| s.closed.is_empty())).await;
    drop(first);
    assert!(closes(&app).await.is_empty(), "oO died before it heard back");
    fake.with(|s| s.close_delay = None);

    // Restarted, the closer sends the same command again: Todoist answers from its record.
    let second = start_process(&fake, &database_url, &data_dir, &nats.url, &log);
    let app = TestApp::attach(&second.base, &database_url, &data_dir).await;
    wait_until("the close is recorded", async || !closes(&app).await.is_empty()).await;
    assert_eq!(closes(&app).await, [("1001".to_owned(), "closed".to_owned())]);
    assert_eq!(fake.with(|s| s.closed.clone()), ["1001"], "closed once");
    assert!(
        !fake.with(|s| s.repeated_commands.is_empty()),
        "the retry carried the same command uuid"
    );

    // No answer carries the token.
    for path in ["/integrations", "/me", "/me/export"] {
        let r = app.get(path, &token).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.body.to_string().contains(&issued), "{path} shows the token");
    }
    let r = app.get("/admin/events?limit=1000", ADMIN_TOKEN).await;
    assert!(!r.body.to_string().contains(&issued), "the log shows the token");
    let r = app
        .send(reqwest::Method::DELETE, "/integrations/todoist", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    wait_until("the token is revoked", async || {
        count(&app, "IntegrationTokenRevoked").await == 1
    })
    .await;

    // Nor does any NATS message, nor any log line (debug included).
    relay_caught_up(&app).await;
    let client = async_nats::connect(nats.url.as_str()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("OO_EVENTS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut connection_events = 0;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        assert!(
            !String::from_utf8_lossy(&m.payload).contains(&issued),
            "message {seq} carries the token"
        );
        connection_events += usize::from(m.subject.as_str().starts_with("oo.events.v1.connection."));
    }
    assert!(
        connection_events >= 4,
        "connection events are relayed too ({connection_events})"
    );
    drop(second);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("DEBUG"), "debug logs were on");
    assert!(!logged.contains(&issued), "a log line carries the token");
}

/// A revocation waits for Todoist without a transaction open: one would hold back every reader
/// of the log (projections, relay) for as long as Todoist takes.
#[tokio::test]
async fn a_slow_revocation_holds_no_transaction_open() {
    let fake = FakeTodoist::start().await;
    let (app, token) = connected(&fake).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("name");
    fake.fail_next([Failure::Delay(Duration::from_secs(2))]);
    let r = app
        .send(reqwest::Method::DELETE, "/integrations/todoist", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    wait_until("Todoist is asked", async || fake.with(|s| s.revoke_calls) > 0).await;
    // Idle in a transaction for half a second or more (a moment between two statements is not).
    let until = Instant::now() + Duration::from_millis(1800);
    while Instant::now() < until {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%' \
             AND state_change < now() - interval '500 milliseconds'",
        )
        .bind(&database)
        .fetch_one(&app.pool)
        .await
        .expect("activity");
        if open > 0 {
            let what: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, query FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            )
            .bind(&database)
            .fetch_all(&app.pool)
            .await
            .expect("activity");
            panic!("a transaction waits on Todoist: {what:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("the token is revoked", async || {
        count(&app, "IntegrationTokenRevoked").await == 1
    })
    .await;
}

#[tokio::test]
async fn a_close_todoist_refuses_is_recorded_and_the_connection_stays() {
    let fake = FakeTodoist::start().await;
    fake.put("1101", "A task in a shared project", 4, None);
    let (app, token) = connected(&fake).await;
    let (tip, _) = serve_todoist_todo(&app, &token).await;
    fake.with(|s| s.refuse_closes = Some(403));
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until("the outcome is recorded", async || !closes(&app).await.is_empty()).await;
    assert_eq!(closes(&app).await, [("1101".to_owned(), "refused".to_owned())]);
    let c = connection(&app, &token).await["connection"].clone();
    assert_eq!(
        c["status"], "connected",
        "one refused command says nothing of the token"
    );
    let r = app.post("/integrations/todoist/sync", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn connecting_again_while_connected_revokes_the_old_token_first() {
    let fake = FakeTodoist::start().await;
    fake.put("1201", "Sort the photos", 2, None);
    let (app, token) = connected(&fake).await;
    let first = fake.token();
    let back = connect(&app, &token).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    wait_until("the old token is revoked", async || {
        fake.with(|s| s.revoked.contains(&first))
    })
    .await;
    assert_eq!(count(&app, "IntegrationDisconnected").await, 1);
    assert_eq!(count(&app, "IntegrationConnected").await, 2);
    wait_until("the tasks come back under the new connection", async || {
        open_todoist_tasks(&app).await == 1
    })
    .await;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM connections WHERE generation = 2")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(live, 1);
}
