//! Export of my data, master-key rotation, and the authorization matrix.

use crate::common::*;
use oo_api::config::DbConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn my_export_holds_all_my_data_decrypted_and_nothing_of_anyone_else() {
    let app = spawn_app().await;
    let (alice, _) = app.login("alice-export@example.org").await;
    let (bob, _) = app.login("bob-export@example.org").await;
    app.post(
        "/signals",
        &alice,
        json!({"signals": [task("a", "t1", "Alice's secret errand", 3, false), mood("b", 1, "Alice feels fine")]}),
    )
    .await;
    app.post(
        "/signals",
        &bob,
        json!({"signals": [task("a", "t1", "Bob's secret errand", 3, false)]}),
    )
    .await;
    let tip = app.tip(&alice).await;
    app.post(
        "/feedback",
        &alice,
        json!({"tip_id": tip["tip"]["id"], "reaction": "helpful"}),
    )
    .await;

    wait_caught_up(&app.pool).await;
    let r = app.get("/me/export", &alice).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let text = r.body.to_string();
    for expected in [
        "alice-export@example.org",
        "Alice's secret errand",
        "Alice feels fine",
        "UserRegistered",
        "TipServed",
        "TipReacted",
    ] {
        assert!(text.contains(expected), "{expected} in the export");
    }
    assert!(!text.contains("[sealed]"), "every personal field is opened");
    assert!(!text.contains("Bob"), "nothing of Bob's");
    let tip_title = tip["tip"]["title"].as_str().expect("title");
    assert!(text.contains(tip_title), "the tip's text is opened too");
    // Every decision is in the tip log, "not now" ones included (asking until a tip comes may
    // take several).
    let served = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event_type"] == "TipServed")
        .count();
    assert!(served >= 1);
    assert_eq!(r.body["tips"].as_array().map(|t| t.len()), Some(served));
    assert!(r.body["features"].is_object());
    let bob_export = app.get("/me/export", &bob).await.body.to_string();
    assert!(!bob_export.contains("Alice"));
    // Bob's tips never come from Alice's todos, and Alice's tip does not exist for Bob.
    for _ in 0..100 {
        let r = app.post("/recommend", &bob, json!({})).await;
        assert!(!r.body.to_string().contains("Alice"), "Bob was shown Alice's data");
    }
    let r = app
        .post(
            "/feedback",
            &bob,
            json!({"tip_id": tip["tip"]["id"], "reaction": "dismiss"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Deleting Bob leaves Alice whole.
    assert_eq!(
        app.send(Method::DELETE, "/me", Some(&bob), None).await.status,
        StatusCode::OK
    );
    let again = app.get("/me/export", &alice).await.body.to_string();
    assert!(again.contains("Alice's secret errand") && again.contains("alice-export@example.org"));
}

#[tokio::test]
async fn every_user_endpoint_refuses_a_missing_invalid_revoked_or_expired_session() {
    let app = spawn_app().await;
    let (revoked, _) = app.login("revoked@example.org").await;
    assert_eq!(
        app.send(Method::POST, "/auth/logout", Some(&revoked), None)
            .await
            .status,
        StatusCode::OK
    );
    let (expired, expired_user) = app.login("expired@example.org").await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1")
        .bind(expired_user.parse::<uuid::Uuid>().expect("uuid"))
        .execute(&app.pool)
        .await
        .expect("expire");
    let endpoints = [
        (Method::GET, "/me"),
        (Method::GET, "/me/export"),
        (Method::DELETE, "/me"),
        (Method::POST, "/signals"),
        (Method::POST, "/recommend"),
        (Method::POST, "/feedback"),
        (Method::POST, "/auth/logout"),
    ];
    let before = app.event_count().await;
    for (method, path) in endpoints {
        for (label, token) in [
            ("missing", None),
            ("invalid", Some("oo_forged")),
            ("revoked", Some(revoked.as_str())),
            ("expired", Some(expired.as_str())),
        ] {
            let r = app
                .send(
                    method.clone(),
                    path,
                    token,
                    Some(json!({"signals": [mood("x", 1, "n")]})),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a {label} session: {:?}",
                r.body
            );
            assert_eq!(r.body["code"], "unauthorized");
        }
    }
    assert_eq!(app.event_count().await, before, "nothing was stored");
}

#[tokio::test]
async fn rotating_the_master_key_keeps_every_user_readable_under_the_new_key_only() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("rotate@example.org").await;
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("a", "t1", "Survives rotation", 2, false)]}),
    )
    .await;

    let new_key = oo_commands::vault::MasterKey::generate();
    let file = temp_dir("oo-newkey").join("master.key");
    std::fs::write(&file, format!("{}\n", new_key.secret_string())).expect("key file");
    let db = DbConfig {
        database_url: Some(app.database_url.clone()),
        db_pool: 4,
        data_dir: app.data_dir.clone(),
        master_key: None,
    };
    oo_api::cli::rotate_keys(&oo_api::cli::RotateArgs {
        db,
        new_key: file.clone(),
        batch: 2,
    })
    .await
    .expect("rotated");

    // A server still running with the old key refuses to wrap new keys under it.
    let r = app
        .send(
            Method::POST,
            "/auth/dev-login",
            None,
            Some(json!({"email": "after-rotation@example.org"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(registered, 1, "nobody was registered under the retired key");

    // The old master key no longer opens the vault.
    let mut old = oo_api::config::ServeConfig::for_database(&app.database_url, app.data_dir.clone());
    old.bind = "127.0.0.1:0".parse().expect("addr");
    assert!(
        oo_api::Application::build(old).await.is_err(),
        "the old master key unwraps nothing any more"
    );

    // Under the new one, the same email is the same user and their data opens.
    let rotated = spawn_at(&app.database_url, temp_dir("oo-data"), |c| {
        c.db.master_key = Some(file.display().to_string())
    })
    .await;
    let (token2, again) = rotated.login("rotate@example.org").await;
    assert_eq!(again, user_id, "the blind index still finds the user");
    let export = rotated.get("/me/export", &token2).await;
    assert!(export.body.to_string().contains("Survives rotation"));
    assert_eq!(rotated.get("/me", &token2).await.body["email"], "rotate@example.org");
}

#[tokio::test]
async fn answers_with_a_persons_data_or_a_session_are_never_cached() {
    let app = spawn_app().await;
    let r = app
        .send(
            reqwest::Method::POST,
            "/auth/dev-login",
            None,
            Some(serde_json::json!({"email": "no-store@example.org"})),
        )
        .await;
    assert_eq!(
        r.headers.get("cache-control").map(|v| v.to_str().unwrap_or("")),
        Some("no-store")
    );
    let token = r.body["token"].as_str().expect("token").to_owned();
    for path in ["/me", "/me/export"] {
        let r = app.get(path, &token).await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{path}");
        assert_eq!(
            r.headers.get("cache-control").map(|v| v.to_str().unwrap_or("")),
            Some("no-store"),
            "{path}"
        );
    }
    let r = app
        .send(reqwest::Method::GET, "/auth/callback?code=x&state=y", None, None)
        .await;
    assert_eq!(
        r.headers.get("cache-control").map(|v| v.to_str().unwrap_or("")),
        Some("no-store"),
        "the callback, even when it refuses"
    );
}
