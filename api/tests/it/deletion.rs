//! Deleting an account by crypto-shredding: the key and every lookup row go, projections purge
//! the user, nothing personal is left readable, other users are untouched, and a deletion that a
//! crash interrupted completes when the server starts.

use crate::common::*;
use chrono::Utc;
use oo_commands::aggregate::Meta;
use oo_commands::vault::MasterKey;
use oo_domain::user::UserCommand;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

async fn count(app: &TestApp, sql: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// The user's rows in every table of every projection that holds rows per user.
async fn projection_rows(app: &TestApp, user: Uuid) -> i64 {
    let mut n = 0;
    for p in oo_projections::all() {
        for t in p.user_tables() {
            n += count(app, &format!("SELECT count(*) FROM {t} WHERE user_id = $1"), user).await;
        }
    }
    n
}

#[tokio::test]
async fn deleting_an_account_shreds_it_and_leaves_other_users_untouched() {
    let nats = PrivateNats::start();
    let url = nats.url.clone();
    let app = spawn_with(move |c| c.nats_url = Some(url)).await;
    let email = "shred-me-91c2@example.org";
    let (token, user_id) = app.login(email).await;
    let (other, _) = app.login("keep-me-91c2@example.org").await;
    let uid: Uuid = user_id.parse().expect("uuid");
    let secrets = [
        email,
        "Ask Dr Quill about the results 91c2",
        "anxious about Tuesday 91c2",
    ];
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("a", "t1", secrets[1], 4, false), mood("b", -1, secrets[2])]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            "/signals",
            &other,
            json!({"signals": [task("a", "t1", "Keep this task 91c2", 4, false)]}),
        )
        .await;
    let other_position = r.body["position"].as_str().expect("position").to_owned();
    for t in [&token, &other] {
        let tip = app.tip(t).await;
        app.post(
            "/feedback",
            t,
            json!({"tip_id": tip["tip"]["id"], "reaction": "helpful"}),
        )
        .await;
    }
    let _ = app
        .post("/recommend", &token, json!({"min_position": other_position}))
        .await;
    assert!(projection_rows(&app, uid).await > 0);
    let events_before = count(&app, "SELECT count(*) FROM events WHERE user_id = $1", uid).await;

    let r = app.send(Method::DELETE, "/me", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["complete"], true);

    assert_eq!(
        app.get("/me", &token).await.status,
        StatusCode::UNAUTHORIZED,
        "the session ended"
    );
    assert_eq!(
        app.send(Method::POST, "/recommend", Some(&token), None).await.status,
        StatusCode::UNAUTHORIZED,
        "the session ended for /recommend too"
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM key_vault WHERE user_id = $1", uid).await,
        0,
        "the key is destroyed"
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM user_lookup WHERE user_id = $1", uid).await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM sessions WHERE user_id = $1", uid).await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM ingested_signals WHERE user_id = $1", uid).await,
        0
    );
    assert_eq!(projection_rows(&app, uid).await, 0, "every projection purged the user");
    // Even a session row written while the deletion ran (a sign-in racing it) opens nothing.
    sqlx::query("INSERT INTO sessions (token_hash, session_id, user_id, expires_at) VALUES ($1, $2, $3, now() + interval '1 hour')")
        .bind(oo_commands::identity::hash_token("oo_raced"))
        .bind(Uuid::new_v4())
        .bind(uid)
        .execute(&app.pool)
        .await
        .expect("session row");
    assert_eq!(app.get("/me", "oo_raced").await.status, StatusCode::UNAUTHORIZED);
    let events_after = count(&app, "SELECT count(*) FROM events WHERE user_id = $1", uid).await;
    assert_eq!(
        events_after,
        events_before + 2,
        "the log keeps its events, plus the deletion's two"
    );
    let sealed = count(
        &app,
        "SELECT count(*) FROM events WHERE user_id = $1 AND sealed IS NOT NULL",
        uid,
    )
    .await;
    assert!(sealed >= 3, "sealed envelopes remain, now without a key to open them");

    let out = std::process::Command::new("pg_dump")
        .arg(&app.database_url)
        .output()
        .expect("pg_dump runs");
    let dump = String::from_utf8_lossy(&out.stdout);
    for s in secrets {
        assert!(!dump.contains(s), "{s:?} is readable in the database");
    }
    // …nor in the NATS stream, once the relay has carried everything, deletion included.
    let head = oo_commands::store::head(&app.pool).await.expect("head");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (tx, position): (String, i64) =
            sqlx::query_as("SELECT tx_id::text, position FROM checkpoints WHERE name = 'nats_relay'")
                .fetch_one(&app.pool)
                .await
                .expect("relay");
        let relayed = oo_commands::cursor::Cursor {
            tx_id: tx.parse().unwrap_or(0),
            position,
        };
        if relayed >= head {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let client = async_nats::connect(nats.url.as_str()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("OO_EVENTS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    assert!(last >= events_after as u64, "the stream holds the user's events");
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let text = String::from_utf8_lossy(&m.payload);
        for s in secrets {
            assert!(!text.contains(s), "{s:?} is readable in the stream");
        }
    }

    // The other user is untouched and still reads their own sealed data.
    assert_eq!(app.get("/me", &other).await.body["email"], "keep-me-91c2@example.org");
    let mut title_seen = false;
    for _ in 0..400 {
        let r = app.post("/recommend", &other, json!({})).await;
        if r.status == StatusCode::OK && r.body["tip"]["kind"] == "todo" {
            assert_eq!(r.body["tip"]["title"], "Keep this task 91c2");
            title_seen = true;
            break;
        }
    }
    assert!(title_seen, "the other user's todo was never drawn");

    // Signing in again makes a new user, linked to nothing.
    let (_, again) = app.login(email).await;
    assert_ne!(again, user_id);

    // A rebuild purges the deleted user again and equals the live projections.
    wait_caught_up(&app.pool).await;
    let status = oo_projections::status::Status::default();
    let before = projection_tables(&app.pool).await;
    for p in oo_projections::all() {
        oo_projections::rebuild::rebuild(&app.pool, p.as_ref(), &status, |_, _| {})
            .await
            .expect("rebuild");
    }
    let after = projection_tables(&app.pool).await;
    assert_eq!(after, before);
    assert_eq!(projection_rows(&app, uid).await, 0);
}

#[tokio::test]
async fn a_deletion_interrupted_by_a_crash_completes_when_the_server_starts() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("half-deleted@example.org").await;
    app.post("/signals", &token, json!({"signals": [mood("a", 1, "note")]}))
        .await;
    let uid: Uuid = user_id.parse().expect("uuid");

    // The process died right after recording the request: nothing else happened.
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    let users = write_side_with(&app.pool, master).await.users;
    users
        .execute(
            &user_id,
            UserCommand::RequestDeletion { at: Utc::now() },
            Meta::new(Utc::now()),
        )
        .await
        .expect("requested");
    assert_eq!(
        count(&app, "SELECT count(*) FROM key_vault WHERE user_id = $1", uid).await,
        1
    );

    let restarted = spawn_at(&app.database_url, app.data_dir.clone(), |_| {}).await;
    assert_eq!(
        count(&restarted, "SELECT count(*) FROM key_vault WHERE user_id = $1", uid).await,
        0
    );
    assert_eq!(
        count(
            &restarted,
            "SELECT count(*) FROM events WHERE user_id = $1 AND event_type = 'UserShredded'",
            uid
        )
        .await,
        1
    );
    assert_eq!(restarted.get("/me", &token).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_process_drops_a_deleted_users_cached_key() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("cached-elsewhere@example.org").await;
    let user = oo_domain::ids::UserId::from_uuid(user_id.parse().expect("uuid"));
    // "Another process": its own vault over the same database, with the key cached.
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("master key");
    let vault = write_side_with(&app.pool, master).await.vault;
    assert!(vault.key_for(user).await.expect("key").is_some());
    let from = oo_commands::store::head(&app.pool).await.expect("head");
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let follower = tokio::spawn(oo_commands::vault::follow_shredding(
        vault.clone(),
        notify,
        from,
        tokio_util::sync::CancellationToken::new(),
    ));
    let r = app.send(Method::DELETE, "/me", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while vault.key_for(user).await.expect("lookup").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the other process still holds the destroyed key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    follower.abort();
}

#[tokio::test]
async fn events_after_a_deletion_bring_none_of_the_person_back_live_or_rebuilt() {
    use oo_domain::ids::{SignalId, UserId};
    use oo_domain::signal::{MoodScore, SignalData};
    use oo_domain::tip::TipCommand;
    let app = spawn_app().await;
    let (token, user_id) = app.login("late-events@example.org").await;
    let (other, _) = app.login("stays@example.org").await;
    let uid: Uuid = user_id.parse().expect("uuid");
    for t in [&token, &other] {
        let r = app
            .post(
                "/signals",
                t,
                json!({"signals": [task("a", "t1", "A task", 3, false), mood("m", 1, "fine")]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // An open tip of the person's, which the reward join will settle after the deletion.
    let open = loop {
        let r = app.post("/recommend", &token, json!({})).await;
        if r.status == StatusCode::OK {
            break r.body["tip"]["id"].as_str().expect("tip id").to_owned();
        }
    };
    app.tip(&other).await;
    wait_caught_up(&app.pool).await;
    let r = app.send(Method::DELETE, "/me", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    wait_caught_up(&app.pool).await;
    assert_eq!(projection_rows(&app, uid).await, 0, "purged at the deletion");
    let others_before = projection_tables(&app.pool).await;

    // After `UserShredded`, through the store: a signal without personal fields (a request that
    // passed its session check just before), and the reward join settling the open tip.
    let write = write_side_with(&app.pool, MasterKey::load(None, &app.data_dir).expect("the dev key").0).await;
    let user = UserId::from_uuid(uid);
    let late = oo_domain::signals::SignalsEvent::SignalRecorded {
        user_id: user,
        signal_id: SignalId::parse("late-mood").expect("id"),
        occurred_at: Utc::now(),
        data: SignalData::Mood {
            score: MoodScore::parse(-2).expect("score"),
            note: None,
        },
    };
    let event = oo_commands::aggregate::prepare_event(&late, user, Utc::now(), None, None, &Meta::new(Utc::now()))
        .expect("prepared");
    let last: i64 =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = 'signals' AND aggregate_id = $1")
            .bind(user.to_string())
            .fetch_one(&app.pool)
            .await
            .expect("the stream");
    let appended = write
        .store
        .append(oo_commands::store::AppendRequest {
            aggregate_type: "signals",
            aggregate_id: user.to_string(),
            expected: oo_commands::store::Expected::Any(last),
            events: vec![event],
        })
        .await
        .expect("appended");
    assert_eq!(
        appended.written.len(),
        1,
        "the store takes it: it holds nothing personal"
    );
    let settled = write
        .tips
        .execute(
            &open,
            TipCommand::SettleTimeout {
                at: Utc::now() + chrono::Duration::hours(25),
            },
            Meta::new(Utc::now()),
        )
        .await
        .expect("settled");
    assert_eq!(settled.written.len(), 1, "a TipRewarded after the deletion");
    wait_caught_up(&app.pool).await;
    assert_eq!(
        projection_rows(&app, uid).await,
        0,
        "the live projector brings nothing back"
    );

    // Nor does a rebuild of every projection, which replays the same order.
    let status = oo_projections::status::Status::default();
    for p in oo_projections::all() {
        oo_projections::rebuild::rebuild(&app.pool, p.as_ref(), &status, |_, _| {})
            .await
            .expect("rebuilt");
    }
    assert_eq!(projection_rows(&app, uid).await, 0, "a rebuild brings nothing back");
    assert_eq!(
        projection_tables(&app.pool).await,
        others_before,
        "everyone else's rows are as they were"
    );
}

#[tokio::test]
async fn a_deletion_interrupted_at_any_step_completes_within_a_sweep_period_without_a_restart() {
    let app = spawn_with(|c| c.deletion_sweep_secs = 1).await;
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    let users = write_side_with(&app.pool, master).await.users;
    for step in ["after the request", "after the key was destroyed"] {
        let (token, user_id) = app.login(&format!("interrupted-{}@example.org", step.len())).await;
        app.post("/signals", &token, json!({"signals": [mood("a", 1, "note")]}))
            .await;
        let uid: Uuid = user_id.parse().expect("uuid");
        wait_caught_up(&app.pool).await;
        users
            .execute(
                &user_id,
                UserCommand::RequestDeletion { at: Utc::now() },
                Meta::new(Utc::now()),
            )
            .await
            .expect("requested");
        if step == "after the key was destroyed" {
            // The final append was refused (the database went away) after the key was gone.
            for sql in [
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM key_vault WHERE user_id = $1",
                "DELETE FROM user_lookup WHERE user_id = $1",
            ] {
                count_rows_deleted(&app, sql, uid).await;
            }
        }
        let shredded = "SELECT count(*) FROM events WHERE user_id = $1 AND event_type = 'UserShredded'";
        let mut done = false;
        for _ in 0..50 {
            if count(&app, shredded, uid).await == 1 {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(done, "{step}: the sweep completed the deletion");
        wait_caught_up(&app.pool).await;
        assert_eq!(
            count(&app, "SELECT count(*) FROM key_vault WHERE user_id = $1", uid).await,
            0,
            "{step}"
        );
        assert_eq!(projection_rows(&app, uid).await, 0, "{step}: projections purged");
        assert_eq!(app.get("/me", &token).await.status, StatusCode::UNAUTHORIZED, "{step}");
    }
}

async fn count_rows_deleted(app: &TestApp, sql: &str, user: Uuid) {
    sqlx::query(sql).bind(user).execute(&app.pool).await.expect("deleted");
}
