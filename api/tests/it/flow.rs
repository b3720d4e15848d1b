//! The client's flow end to end: sign in, send signals, get a tip, react, read your writes.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_newcomer_signs_in_sends_signals_gets_a_tip_and_reacts() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("Ada@Example.org").await;
    let (again, same_user) = app.login("ada@example.org").await;
    assert_eq!(user_id, same_user, "the same email is the same user");
    assert_ne!(token, again, "each sign-in is a new session");

    let me = app.get("/me", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "ada@example.org");
    assert_eq!(me.body["user_id"], user_id.as_str());

    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("s1", "t1", "Call the dentist", 4, false), mood("s2", 1, "slept well")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    let first_position = r.body["position"].as_str().expect("position").to_owned();

    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [mood("s2", -2, "a different body, same id")]}),
        )
        .await;
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        r.body["position"],
        first_position.as_str(),
        "nothing written: the head of the log"
    );

    let tip = app.tip(&token).await;
    let tip_id = tip["tip"]["id"].as_str().expect("tip id").to_owned();
    assert!(
        tip["tip"]["meta"]["propensity"]
            .as_f64()
            .is_some_and(|p| p > 0.0 && p <= 1.0)
    );
    assert_eq!(tip["tip"]["meta"]["policy"], "linucb", "the default serving policy");
    assert!(!tip["tip"]["title"].as_str().expect("title").is_empty());

    let before = app.event_count().await;
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip_id, "reaction": "helpful"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(app.event_count().await, before + 2, "TipReacted and TipRewarded");
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip_id, "reaction": "helpful"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "a retry is accepted");
    assert_eq!(app.event_count().await, before + 2, "and stores nothing");
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip_id, "reaction": "dismiss"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["code"], "conflicting_reaction");
    assert_eq!(r.headers["content-type"], "application/problem+json");

    let r = app.send(Method::POST, "/auth/logout", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/me", &token).await.status,
        StatusCode::UNAUTHORIZED,
        "a revoked session is refused"
    );
    assert_eq!(
        app.get("/me", &again).await.status,
        StatusCode::OK,
        "other sessions live on"
    );
}

#[tokio::test]
async fn min_position_makes_a_write_visible_to_the_next_read() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("rw@example.org").await;
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("s1", "t-42", "Renew passport", 3, false)]}),
        )
        .await;
    let position = r.body["position"].as_str().expect("position").to_owned();
    let rec = app.post("/recommend", &token, json!({"min_position": position})).await;
    assert!(rec.status == StatusCode::OK || rec.status == StatusCode::NO_CONTENT);
    if rec.status == StatusCode::OK {
        assert!(
            rec.body.get("stale").is_none(),
            "the projections passed the position in time"
        );
    }
    let uid: uuid::Uuid = user_id.parse().expect("uuid");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_tasks WHERE user_id = $1 AND external_id = 't-42'")
        .bind(uid)
        .fetch_one(&app.pool)
        .await
        .expect("query");
    assert_eq!(open, 1, "the task was projected before /recommend answered");

    // Completing the task removes it from the candidates, visible through min_position again.
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("s2", "t-42", "Renew passport", 3, true)]}),
        )
        .await;
    let position = r.body["position"].as_str().expect("position").to_owned();
    let _ = app.post("/recommend", &token, json!({"min_position": position})).await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_tasks WHERE user_id = $1")
        .bind(uid)
        .fetch_one(&app.pool)
        .await
        .expect("query");
    assert_eq!(open, 0);
}

#[tokio::test]
async fn a_todo_tip_shows_its_title_opened_from_the_sealed_log() {
    let app = spawn_app().await;
    let (token, _) = app.login("todo@example.org").await;
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("s1", "t1", "Water the basil", 2, false)]}),
        )
        .await;
    let position = r.body["position"].as_str().expect("position").to_owned();
    let mut seen_todo = false;
    for _ in 0..400 {
        let r = app.post("/recommend", &token, json!({"min_position": position})).await;
        if r.status == StatusCode::OK && r.body["tip"]["kind"] == "todo" {
            assert_eq!(r.body["tip"]["title"], "Water the basil");
            assert_eq!(r.body["tip"]["source"], "manual");
            seen_todo = true;
            break;
        }
    }
    assert!(seen_todo, "the random policy never chose the only todo in 400 draws");
}

#[tokio::test]
async fn nobody_reacts_to_another_users_tip() {
    let app = spawn_app().await;
    let (alice, _) = app.login("alice@example.org").await;
    let (bob, _) = app.login("bob@example.org").await;
    let tip = app.tip(&alice).await;
    let tip_id = tip["tip"]["id"].as_str().expect("tip id");
    let before = app.event_count().await;
    let r = app
        .post("/feedback", &bob, json!({"tip_id": tip_id, "reaction": "dismiss"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another user's tip does not exist for bob"
    );
    assert_eq!(r.body["code"], "not_found");
    assert_eq!(app.event_count().await, before);
    assert_eq!(app.get("/me", &bob).await.body["email"], "bob@example.org");
    let r = app
        .post("/feedback", &alice, json!({"tip_id": tip_id, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn requests_without_a_valid_session_are_refused() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/me"),
        (Method::POST, "/signals"),
        (Method::POST, "/recommend"),
        (Method::POST, "/feedback"),
        (Method::POST, "/auth/logout"),
    ] {
        let r = app.send(method.clone(), path, None, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(r.body["code"], "unauthorized");
        let r = app
            .send(method, path, Some("oo_not-a-real-token"), Some(json!({})))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} with a made-up token");
    }
    // The session cookie works like the bearer token.
    let r = app
        .client
        .post(format!("{}/auth/dev-login", app.base))
        .json(&json!({"email": "c@example.org"}))
        .send()
        .await
        .expect("sent");
    let cookie = r.headers()["set-cookie"].to_str().expect("cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let me = app
        .client
        .get(format!("{}/me", app.base))
        .header("cookie", pair)
        .send()
        .await
        .expect("sent");
    assert_eq!(me.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_per_user_rate_limit_answers_429_with_retry_after() {
    let app = spawn_with(|c| {
        c.rate_limit = oo_api::config::RateLimit {
            per_second: 1,
            burst: 2,
        }
    })
    .await;
    let (token, _) = app.login("fast@example.org").await;
    let (other, _) = app.login("calm@example.org").await;
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(app.get("/me", &token).await);
    }
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429 within 4 quick requests");
    assert_eq!(limited.body["code"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(
        app.get("/me", &other).await.status,
        StatusCode::OK,
        "the limit is per user"
    );
    // `/recommend` authenticates inside its one query and is limited the same way; a limited
    // request is refused before its body is looked at.
    let (quick, _) = app.login("quick@example.org").await;
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(
            app.send(
                Method::POST,
                "/recommend",
                Some(&quick),
                Some(json!({"min_position": 7})),
            )
            .await,
        );
    }
    assert_eq!(statuses[0].status, StatusCode::BAD_REQUEST, "{:?}", statuses[0].body);
    assert_eq!(statuses[0].body["code"], "invalid_body");
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429 on /recommend within 4 quick requests");
    assert_eq!(limited.body["code"], "rate_limited");
}

#[tokio::test]
async fn dev_login_exists_only_in_dev_mode_and_dev_mode_only_on_loopback() {
    let app = spawn_with(|c| c.dev = false).await;
    let r = app
        .send(
            Method::POST,
            "/auth/dev-login",
            None,
            Some(json!({"email": "x@example.org"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let mut config = oo_api::config::ServeConfig::for_database(&app.database_url, temp_dir("oo-data"));
    config.dev = true;
    config.bind = "0.0.0.0:0".parse().expect("addr");
    let err = oo_api::Application::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}
