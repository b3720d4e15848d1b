//! Bad input gets a clear 4xx with a stable code, and stores nothing.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn expect(app: &TestApp, token: &str, path: &str, body: Value, status: StatusCode, code: &str) {
    let r = app.post(path, token, body.clone()).await;
    assert_eq!(r.status, status, "{path} {body}: {:?}", r.body);
    assert_eq!(r.body["code"], code, "{path} {body}");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn malformed_or_out_of_range_signals_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let (token, _) = app.login("v@example.org").await;
    let before = app.event_count().await;
    let good = task("ok", "t1", "Fine", 2, false);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"signals": [good.clone()], "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (json!({"signals": "nope"}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            json!({"signals": [{"id": "a", "kind": "task", "occurred_at": "2026-01-05T09:00:00Z", "data": {"source": "manual", "external_id": "t", "title": "x", "priority": "high", "completed": false}}]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": 1, "mystery": true}}]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"signals": [good.clone(), task("b", "t2", "x", 9, false)]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [mood("m", 3, "too happy")]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "dream", "occurred_at": "2026-01-05T09:00:00Z", "data": {}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "mood", "occurred_at": "yesterday", "data": {"score": 1}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "has space", "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": 1}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "mood", "occurred_at": "2099-01-05T09:00:00Z", "data": {"score": 1}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "calendar", "occurred_at": "2026-01-05T09:00:00Z", "data": {"title": "t", "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T09:00:00Z"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "context", "occurred_at": "2026-01-05T09:00:00Z", "data": {"place": "moon"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [{"id": "a", "kind": "context", "occurred_at": "2026-01-05T09:00:00Z", "data": {"place": "home", "time_zone": "Mars/Olympus"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"signals": [task("b", "t2", "   ", 2, false)]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
    ];
    for (body, status, code) in cases {
        expect(&app, &token, "/signals", body, status, code).await;
    }
    let many: Vec<Value> = (0..1001).map(|i| mood(&format!("m{i}"), 0, "n")).collect();
    expect(
        &app,
        &token,
        "/signals",
        json!({ "signals": many }),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_signals",
    )
    .await;

    let r = app
        .raw_post("/signals", &token, "application/json", "{\"signals\": [")
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let r = app.raw_post("/signals", &token, "text/plain", "{}").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type"))
    );
    let huge = format!("{{\"signals\": [], \"pad\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = app.raw_post("/signals", &token, "application/json", &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(app.event_count().await, before, "nothing was stored");
    let r = app.post("/signals", &token, json!({"signals": [good]})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the good signal alone is accepted: {:?}",
        r.body
    );
}

#[tokio::test]
async fn bad_feedback_and_recommend_bodies_are_refused() {
    let app = spawn_app().await;
    let (token, _) = app.login("f@example.org").await;
    let before = app.event_count().await;
    expect(
        &app,
        &token,
        "/feedback",
        json!({"tip_id": "not-a-uuid", "reaction": "done"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    expect(
        &app,
        &token,
        "/feedback",
        json!({"tip_id": uuid::Uuid::now_v7(), "reaction": "meh"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    expect(
        &app,
        &token,
        "/feedback",
        json!({"tip_id": uuid::Uuid::now_v7(), "reaction": "done"}),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect(
        &app,
        &token,
        "/feedback",
        json!({"tip_id": 5, "reaction": "done"}),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    expect(
        &app,
        &token,
        "/recommend",
        json!({"context": {"mood": 7}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    for context in [json!({"time_zone": "Mars/Olympus_Mons"}), json!({"place": "moon"})] {
        expect(
            &app,
            &token,
            "/recommend",
            json!({ "context": context }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        )
        .await;
    }
    expect(
        &app,
        &token,
        "/recommend",
        json!({"min_position": "yesterday"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    expect(
        &app,
        &token,
        "/recommend",
        json!({"surprise": true}),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    assert_eq!(app.event_count().await, before);
}
