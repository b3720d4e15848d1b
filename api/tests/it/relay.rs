//! The NATS JetStream relay: every committed event reaches the stream exactly once, in the log's
//! order, across a NATS outage (a killed server that may have lost what it had not synced).

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// The event ids in the stream, in stream order.
async fn stream_ids(url: &str) -> Vec<String> {
    let client = async_nats::connect(url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("OO_EVENTS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut ids = vec![];
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            ids.push(m.headers.get("Nats-Msg-Id").expect("msg id").as_str().to_owned());
        }
    }
    ids
}

#[tokio::test]
async fn every_event_reaches_the_stream_once_and_in_order_across_a_nats_outage() {
    let mut nats = PrivateNats::start();
    let url = nats.url.clone();
    let app = spawn_with(move |c| c.nats_url = Some(url)).await;
    let (token, _) = app.login("relay@example.org").await;
    // A system event too: a promotion, which belongs to no person.
    let r = app.promote_by_force("thompson").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let writer = {
        let (client, base, token) = (app.client.clone(), app.base.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                let signals: Vec<_> = (0..4)
                    .map(|k| mood(&format!("s{i}-{k}"), 1, "kept sealed in transit"))
                    .collect();
                let r = client
                    .post(format!("{base}/signals"))
                    .bearer_auth(&token)
                    .json(&json!({ "signals": signals }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), StatusCode::OK, "appends go on while NATS is down");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    let ready = app.send(reqwest::Method::GET, "/ready", None, None).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.start_server();
    writer.await.expect("writer");
    relay_caught_up(&app).await;
    assert!(ready.body["nats"] == "down" || ready.body["nats"] == "up");

    let log: Vec<String> = sqlx::query_scalar("SELECT event_id::text FROM events ORDER BY tx_id, position")
        .fetch_all(&app.pool)
        .await
        .expect("log");
    let stream = stream_ids(&nats.url).await;
    assert_eq!(stream.len(), log.len(), "every event once");
    assert_eq!(stream, log, "in the log's order");

    // The wire form: subject by aggregate, type and partition; personal fields stay sealed.
    let client = async_nats::connect(nats.url.as_str()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("OO_EVENTS").await.expect("stream");
    let last = stream.get_raw_message(log.len() as u64).await.expect("message");
    assert!(
        last.subject
            .as_str()
            .starts_with("oo.events.v1.signals.signal_recorded."),
        "{}",
        last.subject
    );
    assert_eq!(
        last.headers.get("Oo-Event-Type").map(|v| v.as_str()),
        Some("SignalRecorded")
    );
    let envelope = oo_proto::decode_envelope(last.payload.as_ref()).expect("protobuf");
    assert!(envelope.sealed.is_some(), "the note travels sealed");
    for seq in 1..=log.len() as u64 {
        let m = stream.get_raw_message(seq).await.expect("message");
        assert!(
            !String::from_utf8_lossy(&m.payload).contains("kept sealed in transit"),
            "no plaintext in the stream"
        );
    }
    // The promotion travels under the partition `system`, with the nil user id and no seal.
    let promoted: String = sqlx::query_scalar("SELECT event_id::text FROM events WHERE event_type = 'PolicyPromoted'")
        .fetch_one(&app.pool)
        .await
        .expect("the promotion");
    let seq = log.iter().position(|id| *id == promoted).expect("in the log") as u64 + 1;
    let m = stream.get_raw_message(seq).await.expect("message");
    assert_eq!(m.subject.as_str(), "oo.events.v1.policy.policy_promoted.system");
    let system = oo_proto::decode_envelope(m.payload.as_ref()).expect("protobuf");
    assert_eq!(
        (system.user_id.as_str(), system.sealed.is_none()),
        ("00000000-0000-0000-0000-000000000000", true)
    );
    assert!(matches!(
        oo_proto::event_from_envelope(system),
        Ok(oo_proto::DomainEvent::Policy(_))
    ));
    let text = format!("{envelope:?}");
    assert!(!text.contains("kept sealed in transit"));
    assert!(text.contains("[sealed]"));
    assert_eq!(
        app.send(reqwest::Method::GET, "/ready", None, None).await.body["nats"],
        "up"
    );

    let metrics = app.metrics().await;
    assert!(metrics.contains("oo_nats_up 1"), "{metrics}");
    assert!(metrics.contains("oo_projection_lag_events{path=\"nats_relay\"} 0"));
    assert!(metrics.contains("oo_projection_lag_seconds{path=\"nats_relay\"}"));

    // Another process follows the stream: `oo tail`, a durable pull consumer with a subject filter.
    let tail = |limit: usize| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oo"))
            .args([
                "tail",
                "--nats-url",
                &nats.url,
                "--subject",
                "oo.events.v1.signals.>",
                "--durable",
                "test-tail",
                "--limit",
                &limit.to_string(),
            ])
            .output()
            .expect("oo tail runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let first = tail(5);
    assert_eq!(first.len(), 5);
    for line in &first {
        assert_eq!(line["event_type"], "SignalRecorded");
        assert_eq!(
            line["payload"]["SignalRecorded"]["data"]["note"], "[sealed]",
            "personal fields stay sealed: {line}"
        );
        assert_eq!(line["sealed"], true);
    }
    let second = tail(3);
    let ids = |v: &[serde_json::Value]| {
        v.iter()
            .map(|l| l["event_id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let signal_ids: Vec<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE aggregate_type = 'signals' ORDER BY tx_id, position LIMIT 8",
    )
    .fetch_all(&app.pool)
    .await
    .expect("ids");
    assert_eq!(
        [ids(&first), ids(&second)].concat(),
        signal_ids,
        "the durable consumer resumes where it stopped, in order"
    );
}

async fn entry(app: &TestApp, name: &str) -> serde_json::Value {
    let r = app.get("/admin/projections", ADMIN_TOKEN).await;
    r.body["projections"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == name)
        .expect("entry")
        .clone()
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_poisoned_event_stops_only_its_projection_which_resumes_after_a_fix_and_a_rebuild() {
    let nats = PrivateNats::start();
    let url = nats.url.clone();
    let app = spawn_with(move |c| c.nats_url = Some(url)).await;
    let (token, _) = app.login("poison@example.org").await;

    // A projection that cannot apply an event: its table refuses the row.
    sqlx::query("ALTER TABLE open_tasks ADD CONSTRAINT refuses_urgent CHECK (priority < 4)")
        .execute(&app.pool)
        .await
        .expect("constraint");
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("a", "t1", "Urgent", 4, false), mood("m1", 1, "fine")]}),
    )
    .await;
    // An event no consumer of this build can decode at all.
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, schema_version, user_id, payload, occurred_at, correlation_id) \
         VALUES ($1, 'user', $2, 1, 'UserRegistered', 1, $3, '{\"UserRegistered\": {\"unknown\": true}}', now(), $1)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(uuid::Uuid::new_v4())
    .execute(&app.pool)
    .await
    .expect("a poisoned event");
    app.post("/signals", &token, json!({"signals": [mood("m2", -1, "later")]}))
        .await;

    wait_until("open_tasks reports the failure", async || {
        let e = entry(&app, "open_tasks").await;
        e["status"] == "failed"
            && e["last_error"].as_str().is_some_and(|m| m.contains("refuses_urgent"))
            && e["lag_events"].as_i64() > Some(0)
    })
    .await;
    let total = app.event_count().await;
    for other in ["features", "tip_log", "nats_relay"] {
        wait_until(other, async || {
            let e = entry(&app, other).await;
            e["lag_events"] == 0 && e["events_applied"].as_i64() == Some(total) && e["status"] != "failed"
        })
        .await;
    }
    let stream = stream_ids(&nats.url).await;
    assert_eq!(
        stream.len() as i64,
        total,
        "the relay carried every event, the undecodable one included"
    );

    // The fix, then a rebuild: the projection is whole again.
    sqlx::query("ALTER TABLE open_tasks DROP CONSTRAINT refuses_urgent")
        .execute(&app.pool)
        .await
        .expect("fix");
    let r = app
        .send(
            reqwest::Method::POST,
            "/admin/projections/open_tasks/rebuild",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until("open_tasks is live again", async || {
        let e = entry(&app, "open_tasks").await;
        e["status"] == "live" && e["lag_events"] == 0 && e["rebuild"].is_null()
    })
    .await;
    let urgent: i64 = sqlx::query_scalar("SELECT count(*) FROM open_tasks WHERE priority = 4")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(urgent, 1);
}

#[tokio::test]
async fn killing_oo_during_concurrent_appends_loses_and_duplicates_nothing() {
    let nats = PrivateNats::start();
    let database_url = format!("{}/oo_test_{}", server_url(), uuid::Uuid::new_v4().simple());
    let _db = DbGuard::new(&database_url);
    let data_dir = temp_dir("oo-data");
    let mut first = Served::start(
        &database_url,
        &data_dir,
        &[("OO_NATS_URL", nats.url.as_str()), ("OO_LOG", "warn")],
        std::process::Stdio::null(),
    );
    let http = reqwest::Client::new();
    let token = first.login("crash@example.org").await;

    // Eight clients append until their server dies; they remember what was acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = vec![];
    for c in 0..8 {
        let (http, base, token, acked) = (http.clone(), first.base.clone(), token.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("c{c}-{i}");
                let r = http
                    .post(format!("{base}/signals"))
                    .bearer_auth(&token)
                    .json(&json!({"signals": [mood(&id, 0, "n")]}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::OK => acked.lock().expect("lock").push(id),
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = first.child.kill(); // SIGKILL
    let _ = first.child.wait();
    for c in clients {
        c.await.expect("client");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "the load ran ({} acknowledged)", acked.len());

    let second = Served::start(
        &database_url,
        &data_dir,
        &[("OO_NATS_URL", nats.url.as_str()), ("OO_LOG", "warn")],
        std::process::Stdio::null(),
    );
    let app = TestApp::attach(&second.base, &database_url, &data_dir).await;
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT payload::json->'SignalRecorded'->>'signal_id' FROM events WHERE event_type = 'SignalRecorded'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("stored");
    let stored_set: std::collections::HashSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "no signal twice");
    for id in &acked {
        assert!(stored_set.contains(id), "acknowledged signal {id} was lost");
    }
    // The projections and the stream hold exactly the log.
    wait_caught_up(&app.pool).await;
    let moods: i64 = sqlx::query_scalar("SELECT signals_mood FROM user_features")
        .fetch_one(&app.pool)
        .await
        .expect("features");
    assert_eq!(moods as usize, stored.len());
    relay_caught_up(&app).await;
    let log: Vec<String> = sqlx::query_scalar("SELECT event_id::text FROM events ORDER BY tx_id, position")
        .fetch_all(&app.pool)
        .await
        .expect("log");
    assert_eq!(stream_ids(&nats.url).await, log);
}

/// Appends `n` moods for `token` through the API.
async fn append_moods(app: &TestApp, token: &str, prefix: &str, n: usize) {
    let signals: Vec<_> = (0..n).map(|k| mood(&format!("{prefix}-{k}"), 1, "relayed")).collect();
    let r = app.post("/signals", token, json!({ "signals": signals })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// The log's event ids, in its order.
async fn log_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id::text FROM events ORDER BY tx_id, position")
        .fetch_all(&app.pool)
        .await
        .expect("log")
}

#[tokio::test]
async fn the_relay_resumes_after_a_nats_restart_once_the_stream_was_idle_past_its_duplicate_window() {
    let mut nats = PrivateNats::start();
    let url = nats.url.clone();
    let app = spawn_with(move |c| {
        c.nats_url = Some(url);
        c.nats_duplicate_window_secs = 1;
    })
    .await;
    let (token, _) = app.login("idle-stream@example.org").await;
    append_moods(&app, &token, "before", 3).await;
    relay_caught_up(&app).await;
    // Idle for longer than the duplicate window, then a clean restart: NATS no longer knows the
    // stream's last message id, only its last sequence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.stop();
    nats.start_server();
    append_moods(&app, &token, "after", 3).await;
    relay_caught_up(&app).await;
    assert_eq!(
        stream_ids(&nats.url).await,
        log_ids(&app).await,
        "every event once, in order"
    );
}

#[tokio::test]
async fn the_relay_resumes_when_every_message_of_the_stream_has_expired() {
    let mut nats = PrivateNats::start();
    let url = nats.url.clone();
    let app = spawn_with(move |c| {
        c.nats_url = Some(url);
        c.nats_max_age_secs = 2;
        c.nats_duplicate_window_secs = 1;
    })
    .await;
    let (token, _) = app.login("expired-stream@example.org").await;
    append_moods(&app, &token, "before", 3).await;
    relay_caught_up(&app).await;
    let relayed = log_ids(&app).await.len();
    // Every message expires; a restart makes the relay reconcile with a stream whose last
    // sequence names a message that is gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.stop();
    nats.start_server();
    append_moods(&app, &token, "after", 3).await;
    relay_caught_up(&app).await;
    let log = log_ids(&app).await;
    let stream = stream_ids(&nats.url).await;
    assert_eq!(stream, log[relayed..].to_vec(), "what came after, once, in order");
}
