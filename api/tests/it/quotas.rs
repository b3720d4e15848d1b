//! What one account can take: a daily quota of accepted signals, and an export that streams
//! however long the history.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn batch(prefix: &str, n: usize) -> Value {
    let signals: Vec<Value> = (0..n)
        .map(|i| mood(&format!("{prefix}-{i}"), (i % 5) as i64 - 2, "fine"))
        .collect();
    json!({ "signals": signals })
}

#[tokio::test]
async fn a_daily_quota_of_accepted_signals_refuses_whole_batches_and_spares_the_rest() {
    let app = spawn_with(|c| {
        c.dev = true;
        c.signal_quota = 5;
    })
    .await;
    let (token, _) = app.login("quota@example.org").await;
    let (other, _) = app.login("quota-other@example.org").await;
    assert_eq!(app.post("/signals", &token, batch("a", 3)).await.status, StatusCode::OK);
    // Duplicates were stored before: they do not count again.
    let r = app.post("/signals", &token, batch("a", 3)).await;
    assert_eq!((r.status, r.body["duplicates"].as_i64()), (StatusCode::OK, Some(3)));
    let before = app.event_count().await;
    let r = app.post("/signals", &token, batch("b", 3)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.body["code"], "quota_exceeded");
    assert!(
        r.body["detail"].as_str().is_some_and(|d| d.contains("2 left")),
        "{:?}",
        r.body
    );
    let wait: i64 = r.headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=86_400).contains(&wait), "until midnight UTC: {wait}");
    assert_eq!(app.event_count().await, before, "the refused batch stored nothing");
    // What fits still fits; then nothing more today.
    assert_eq!(app.post("/signals", &token, batch("c", 2)).await.status, StatusCode::OK);
    assert_eq!(
        app.post("/signals", &token, batch("d", 1)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Recommendations and reactions do not count, and other people have their own quota.
    let tip = app.tip(&token).await;
    let r = app
        .post(
            "/feedback",
            &token,
            json!({"tip_id": tip["tip"]["id"], "reaction": "helpful"}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(app.post("/signals", &other, batch("e", 5)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_long_history_is_exported_streamed_whole_and_in_order() {
    let app = spawn_app().await;
    let (token, uid) = app.login("long-history@example.org").await;
    // More than two pages of events.
    for b in 0..12 {
        let r = app.post("/signals", &token, batch(&format!("h{b}"), 100)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let tip = app.tip(&token).await;
    wait_caught_up(&app.pool).await;
    let r = app
        .client
        .get(format!("{}/me/export", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not built whole first: {:?}",
        r.headers()
    );
    assert_eq!(r.headers()["content-type"], "application/json");
    let export: Value = r.json().await.expect("one well-formed JSON document");
    assert_eq!(export["user_id"], uid.as_str());
    let events = export["events"].as_array().expect("events");
    let moods = events.iter().filter(|e| e["event_type"] == "SignalRecorded").count();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE user_id = $1::text::uuid")
        .bind(&uid)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events.len() as i64, stored, "every event of mine");
    assert!(moods >= 1_200, "{moods} signals");
    let positions: Vec<&str> = events
        .iter()
        .map(|e| e["position"].as_str().expect("position"))
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(positions, sorted, "in the log's order, each once");
    assert!(
        events.iter().any(|e| e.to_string().contains("\"note\":\"fine\"")),
        "personal fields opened"
    );
    let tips = export["tips"].as_array().expect("tips");
    assert!(tips.iter().any(|t| t["tip_id"] == tip["tip"]["id"]), "{tips:?}");
    assert!(export["features"].is_object() || export["features"].is_null());
}
