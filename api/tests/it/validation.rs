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

/// Reads from `stream` until the server closes it or `within` passes; returns what came and
/// whether it closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn half_a_request_header_is_dropped_and_a_slow_body_times_out() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_with(|c| {
        c.header_timeout_secs = 1;
        c.request_timeout_secs = 1;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut half = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: oo\r\nX-Slow: ")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut half, std::time::Duration::from_secs(5)).await;
    assert!(closed, "the connection was still open after 5 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let (token, _) = app.login("slow-body@example.org").await;
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /signals HTTP/1.1\r\nHost: oo\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"signals\": ["
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut slow, std::time::Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // The server still answers everyone else.
    let r = app.send(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_must_say_it_is_json_and_a_cookie_request_from_another_site_is_refused() {
    let app = spawn_app().await;
    let (token, _) = app.login("same-site@example.org").await;
    let body = r#"{"signals": []}"#;
    let post =
        |auth: Option<(&'static str, String)>, extra: Vec<(&'static str, String)>, body: Option<&'static str>| {
            let mut req = app.client.post(format!("{}/signals", app.base));
            if let Some((name, value)) = auth {
                req = req.header(name, value);
            }
            for (name, value) in extra {
                req = req.header(name, value);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            req.send()
        };
    let json_type = || vec![("content-type", "application/json; charset=utf-8".to_owned())];
    let bearer = || Some(("authorization", format!("Bearer {token}")));
    let cookie = || Some(("cookie", format!("oo_session={token}")));
    let code = |r: reqwest::Response| async move {
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        (status, body["code"].as_str().unwrap_or("").to_owned())
    };

    // No type, or another one: 415, after authentication (401 first).
    let r = code(post(bearer(), vec![], Some(body)).await.expect("sent")).await;
    assert_eq!(r, (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type".into()));
    let r = code(
        post(bearer(), vec![("content-type", "text/plain".into())], Some(body))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(r.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = code(post(None, vec![], Some(body)).await.expect("sent")).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    let r = code(post(bearer(), json_type(), Some(body)).await.expect("sent")).await;
    assert_eq!(r.0, StatusCode::OK, "{r:?}");
    // A bodiless POST /recommend needs no type.
    let r = app
        .client
        .post(format!("{}/recommend", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert!(
        r.status() == StatusCode::OK || r.status() == StatusCode::NO_CONTENT,
        "{}",
        r.status()
    );

    // A cookie request from another site: 403, whether the browser says so or the origin does.
    let mut evil = json_type();
    evil.push(("origin", "https://evil.example".into()));
    let r = code(post(cookie(), evil.clone(), Some(body)).await.expect("sent")).await;
    assert_eq!(r, (StatusCode::FORBIDDEN, "cross_origin".into()));
    let mut fetched = json_type();
    fetched.push(("sec-fetch-site", "cross-site".into()));
    let r = code(post(cookie(), fetched, Some(body)).await.expect("sent")).await;
    assert_eq!(r, (StatusCode::FORBIDDEN, "cross_origin".into()));
    // A sibling site's page (same site, another origin) is refused by its origin.
    let mut sibling = evil.clone();
    sibling.push(("sec-fetch-site", "same-site".into()));
    let r = code(post(cookie(), sibling, Some(body)).await.expect("sent")).await;
    assert_eq!(r, (StatusCode::FORBIDDEN, "cross_origin".into()));
    // oO's own page under another of its host names: the browser says same-origin.
    let mut renamed = json_type();
    renamed.push(("origin", app.base.replace("127.0.0.1", "localhost")));
    renamed.push(("sec-fetch-site", "same-origin".into()));
    assert_eq!(
        code(post(cookie(), renamed, Some(body)).await.expect("sent")).await.0,
        StatusCode::OK
    );
    // From oO's own origin, or with neither header, or with a bearer token: accepted.
    let mut own = json_type();
    own.push(("origin", app.base.clone()));
    assert_eq!(
        code(post(cookie(), own, Some(body)).await.expect("sent")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        code(post(cookie(), json_type(), Some(body)).await.expect("sent"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        code(post(bearer(), evil, Some(body)).await.expect("sent")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bodies_are_objects_as_the_document_says_and_whole_numbers_may_carry_a_point() {
    let app = spawn_app().await;
    let (token, _) = app.login("shapes@example.org").await;
    let before = app.event_count().await;
    for (path, body) in [
        ("/recommend", "[null, null]"),
        ("/recommend", r#"{"context": [null, null]}"#),
        (
            "/signals",
            r#"{"signals": [["s1", "mood", "2026-01-05T09:00:00Z", {"score": 1}]]}"#,
        ),
        (
            "/signals",
            r#"{"signals": [{"id": "s1", "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": [1, null]}]}"#,
        ),
        ("/feedback", r#"["00000000-0000-4000-8000-000000000000", "done"]"#),
    ] {
        let r = app.raw_post(path, &token, "application/json", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {body}: {:?}", r.body);
    }
    assert_eq!(app.event_count().await, before, "nothing stored");
    // JSON Schema counts 3.0 as an integer; so does oO.
    let r = app
        .raw_post(
            "/signals",
            &token,
            "application/json",
            r#"{"signals": [{"id": "s2", "kind": "task", "occurred_at": "2026-01-05T09:00:00Z",
                "data": {"source": "manual", "external_id": "an id with spaces", "title": "Call Ann", "priority": 3.0, "completed": false}},
               {"id": "s3", "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": -1.0}}]}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .raw_post(
            "/signals",
            &token,
            "application/json",
            r#"{"signals": [{"id": "s4", "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": 1.5}}]}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    // A tip id is the hyphenated form the document gives, not any form a UUID parser takes.
    let r = app
        .post(
            "/feedback",
            &token,
            json!({"tip_id": "00000000000040008000000000000000", "reaction": "done"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
}
