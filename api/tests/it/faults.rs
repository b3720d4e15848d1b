//! Postgres going away: requests fail cleanly with 503 and nothing is acknowledged that was not
//! stored; the service recovers by itself when Postgres is back. Runs on a private cluster.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn requests_fail_with_503_while_postgres_is_down_and_recover_without_a_restart() {
    let cluster = PrivateCluster::start();
    let app = spawn_on(&cluster.url, |_| {}).await;
    let (token, _) = app.login("down@example.org").await;
    let r = app
        .post("/signals", &token, json!({"signals": [mood("before", 1, "fine")]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    cluster.stop();
    let r = app
        .post("/signals", &token, json!({"signals": [mood("during", 1, "lost?")]}))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["code"], "unavailable");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.headers.contains_key("retry-after"));
    let ready = app.send(reqwest::Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .post("/signals", &token, json!({"signals": [mood("during", 1, "retried")]}))
            .await;
        if r.status == StatusCode::OK {
            assert_eq!(
                r.body["accepted"], 1,
                "the refused signal was not stored: its retry is new"
            );
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SignalRecorded'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn a_postgres_restart_under_load_answers_200_or_503_and_acknowledges_only_what_was_stored() {
    restart_under_load(PrivateCluster::stop).await;
}

/// An append is acknowledged only once its commit is durable: a Postgres crash (immediate
/// shutdown, which loses WAL still in shared memory) keeps every acknowledged signal.
#[tokio::test]
async fn a_postgres_crash_under_load_keeps_everything_acknowledged() {
    restart_under_load(PrivateCluster::crash).await;
}

/// Appends from eight clients while `halt` takes Postgres down and it starts again: every
/// answer is 200, 503 or 409, and every acknowledged signal is in the log afterwards.
async fn restart_under_load(halt: fn(&PrivateCluster)) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let cluster = PrivateCluster::start();
    let app = spawn_on(&cluster.url, |_| {}).await;
    let (token, _) = app.login("restart@example.org").await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let answers = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = vec![];
    for c in 0..8 {
        let (http, base, token, acked, answers, stop) = (
            app.client.clone(),
            app.base.clone(),
            token.clone(),
            acked.clone(),
            answers.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = format!("c{c}-{i}");
                if let Ok(r) = http
                    .post(format!("{base}/signals"))
                    .bearer_auth(&token)
                    .json(&json!({"signals": [mood(&id, 0, "n")]}))
                    .send()
                    .await
                {
                    let status = r.status().as_u16();
                    let code = r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|b| b["code"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if status == 200 {
                        acked.lock().expect("lock").push(id);
                    }
                    answers.lock().expect("lock").push((status, code));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    halt(&cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_server();
    let before = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < before + 20 {
        assert!(Instant::now() < deadline, "no recovery after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let answers = answers.lock().expect("lock").clone();
    // Requests that met the restart either waited for a connection and succeeded, or failed
    // cleanly: 503 (the database was away) or 409 with Retry-After (the stream kept changing under
    // concurrent retries); none may succeed without its signal stored.
    for (status, code) in &answers {
        assert!(
            *status == 200 || (*status == 503 && code == "unavailable") || (*status == 409 && code == "contended"),
            "unexpected answer {status} {code}"
        );
    }
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT payload::json->'SignalRecorded'->>'signal_id' FROM events WHERE event_type = 'SignalRecorded'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("stored");
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    for id in acked.lock().expect("lock").iter() {
        assert!(stored.contains(id), "signal {id} was acknowledged but not stored");
    }
}
