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
