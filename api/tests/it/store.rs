//! The event store: idempotent ingestion under concurrent retries, group commit on one stream,
//! snapshots equal to replays, nothing personal in clear.

use crate::common::*;
use chrono::Utc;
use oo_commands::aggregate::{Meta, Repository};
use oo_domain::event::Aggregate;
use oo_domain::ids::SignalId;
use oo_domain::signal::{MoodScore, SignalData, Text};
use oo_domain::signals::{NewSignal, RecordSignals, Signals, SignalsEvent};
use oo_domain::user::Email;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn concurrent_retries_of_one_batch_store_each_signal_once() {
    let app = spawn_app().await;
    let (token, _) = app.login("retry@example.org").await;
    let batch: Vec<_> = (0..50).map(|i| mood(&format!("sig-{i}"), 1, "same")).collect();
    let body = json!({ "signals": batch });
    let mut handles = vec![];
    for _ in 0..10 {
        let (client, base, token, body) = (app.client.clone(), app.base.clone(), token.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/signals"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.expect("json")
        }));
    }
    let mut accepted = 0;
    for h in handles {
        let r = h.await.expect("task");
        accepted += r["accepted"].as_u64().expect("accepted");
        assert_eq!(
            r["accepted"].as_u64().expect("a") + r["duplicates"].as_u64().expect("d"),
            50
        );
    }
    assert_eq!(accepted, 50, "exactly one request stored each id");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SignalRecorded'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 50);
}

#[tokio::test]
async fn concurrent_commands_on_one_stream_get_contiguous_sequences() {
    let app = spawn_app().await;
    let (token, user_id) = app.login("busy@example.org").await;
    let mut handles = vec![];
    for i in 0..64 {
        let (client, base, token) = (app.client.clone(), app.base.clone(), token.clone());
        handles.push(tokio::spawn(async move {
            let body = json!({"signals": [mood(&format!("c{i}"), 0, "x")]});
            client
                .post(format!("{base}/signals"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent")
                .status()
        }));
    }
    for h in handles {
        assert_eq!(h.await.expect("task"), StatusCode::OK);
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'signals' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&user_id)
    .fetch_all(&app.pool)
    .await
    .expect("seqs");
    assert_eq!(seqs, (1..=64).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_snapshot_loaded_aggregate_equals_the_replayed_one() {
    let (_, pool, _db) = fresh_db(&server_url()).await;
    let WriteSide { store, vault, .. } = write_side(&pool).await;
    let meta = Meta::new(Utc::now());
    let (user_id, _) = oo_commands::identity::find_or_register(
        &store,
        &vault,
        &Email::parse("snap@example.org").expect("email"),
        meta,
    )
    .await
    .expect("user");
    let repo: Repository<Signals> = Repository::new(store.clone(), vault.clone());
    // Concurrent commands: the writer numbers their events after each other's, so a snapshot
    // taken from one command's own view would miss the others'.
    let mut commands = vec![];
    for batch in 0..10 {
        let signals: Vec<NewSignal> = (0..50)
            .map(|i| NewSignal {
                id: SignalId::parse(&format!("b{batch}-{i}")).expect("id"),
                occurred_at: Utc::now() - chrono::Duration::minutes(i),
                data: SignalData::Mood {
                    score: MoodScore::parse(i % 5 - 2).expect("score"),
                    note: Some(Text::parse("note", "n").expect("text")),
                },
            })
            .collect();
        let repo = repo.clone();
        commands.push(tokio::spawn(async move {
            repo.execute(
                &user_id.to_string(),
                RecordSignals {
                    user_id,
                    signals,
                    at: Utc::now(),
                },
                meta,
            )
            .await
            .expect("recorded");
        }));
    }
    for c in commands {
        c.await.expect("command");
    }
    // One more command after the others, so the last snapshot decision sees them all.
    let last = vec![NewSignal {
        id: SignalId::parse("last").expect("id"),
        occurred_at: Utc::now(),
        data: SignalData::Mood {
            score: MoodScore::parse(0).expect("score"),
            note: None,
        },
    }];
    repo.execute(
        &user_id.to_string(),
        RecordSignals {
            user_id,
            signals: last,
            at: Utc::now(),
        },
        meta,
    )
    .await
    .expect("recorded");
    let snap: i64 =
        sqlx::query_scalar("SELECT sequence FROM snapshots WHERE aggregate_type = 'signals' AND aggregate_id = $1")
            .bind(user_id.to_string())
            .fetch_one(&pool)
            .await
            .expect("a snapshot was taken");
    assert!(snap >= 200, "snapshot at {snap}");
    let loaded = repo.load_from_store(&user_id.to_string()).await.expect("loads");
    let cached = repo.load(&user_id.to_string()).await.expect("loads");
    assert_eq!(cached.state, loaded.state, "the cached state equals the stored one");
    assert_eq!(loaded.snapshot_sequence, snap);
    let mut replayed = Signals::default();
    for e in oo_commands::store::read_stream(&pool, "signals", &user_id.to_string(), 0)
        .await
        .expect("stream")
    {
        replayed.apply(&e.decode::<SignalsEvent>().expect("event"));
    }
    assert_eq!(loaded.state, replayed);
    assert_eq!(loaded.sequence, 501);
    assert_eq!(replayed.recorded, 501);
}

#[tokio::test]
async fn no_personal_field_is_stored_in_clear() {
    let app = spawn_app().await;
    let email = "plaintext-probe-7f3a@example.org";
    let (token, _) = app.login(email).await;
    let title = "Buy tulips for Grandma Odile 7f3a";
    let note = "feeling oddly specific 7f3a";
    app.post("/signals", &token, json!({"signals": [task("s1", "t1", title, 4, false), mood("s2", 1, note),
        {"id": "s3", "kind": "habit", "occurred_at": "2026-01-05T09:00:00Z", "data": {"name": "Juggling practice 7f3a", "done": true}},
        {"id": "s4", "kind": "context", "occurred_at": "2026-01-05T09:00:00Z", "data": {"place": "home", "activity": "Reading Proust 7f3a"}},
        {"id": "s5", "kind": "calendar", "occurred_at": "2026-01-05T09:00:00Z", "data": {"title": "Therapy with Dr Zed 7f3a", "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T11:00:00Z"}}]})).await;
    for _ in 0..20 {
        let r = app.post("/recommend", &token, json!({})).await;
        if r.status == StatusCode::OK && r.body["tip"]["kind"] == "todo" {
            break;
        }
    }
    let out = std::process::Command::new("pg_dump")
        .arg(&app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("SignalRecorded"), "the dump holds the log");
    for secret in [
        email,
        title,
        note,
        "Juggling practice 7f3a",
        "Reading Proust 7f3a",
        "Therapy with Dr Zed 7f3a",
    ] {
        assert!(!dump.contains(secret), "{secret:?} is stored in clear");
    }
}

#[tokio::test]
async fn concurrent_reactions_to_one_tip_conflict_retry_and_settle_once() {
    let app = spawn_app().await;
    let (token, _) = app.login("race@example.org").await;
    let tip = app.tip(&token).await;
    let tip_id = tip["tip"]["id"].as_str().expect("tip id").to_owned();
    let mut handles = vec![];
    for i in 0..12 {
        let (client, base, token, tip_id) = (app.client.clone(), app.base.clone(), token.clone(), tip_id.clone());
        // Half say "done", half say "dismiss": exactly one of the two may win.
        let reaction = if i % 2 == 0 { "done" } else { "dismiss" };
        handles.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/feedback"))
                .bearer_auth(token)
                .json(&json!({"tip_id": tip_id, "reaction": reaction}))
                .send()
                .await
                .expect("sent");
            (reaction, r.status())
        }));
    }
    let mut accepted = std::collections::HashSet::new();
    for h in handles {
        let (reaction, status) = h.await.expect("task");
        match status {
            StatusCode::ACCEPTED => {
                accepted.insert(reaction);
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other} for {reaction}"),
        }
    }
    assert_eq!(accepted.len(), 1, "only one reaction wins: {accepted:?}");
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'tip' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&tip_id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(
        events,
        vec!["TipServed", "TipReacted", "TipRewarded"],
        "one reaction, one reward"
    );
}

/// A pooled connection can come back still inside a server-side transaction that sqlx does not
/// know of (here a raw `BEGIN`; in practice a `begin` cancelled mid-flight). A held connection
/// (the writer's, the projector's) starts clean, so what it writes in autocommit is committed.
#[tokio::test]
async fn a_held_connection_starts_outside_any_transaction_left_open() {
    let (url, _, _db) = fresh_db(&server_url()).await;
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(oo_commands::db::connect_options(&url).expect("url"))
        .await
        .expect("pool");
    {
        let mut conn = one.acquire().await.expect("conn");
        sqlx::Executor::execute(&mut *conn, "BEGIN").await.expect("begin");
    }
    let mut held = None;
    let conn = oo_commands::store::held_connection(&one, &mut held)
        .await
        .expect("held");
    sqlx::Executor::execute(&mut **conn, "CREATE TABLE written_in_autocommit (x int)")
        .await
        .expect("create");
    drop(held);
    one.close().await;
    let other = sqlx::PgPool::connect(&url).await.expect("pool");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('written_in_autocommit') IS NOT NULL")
        .fetch_one(&other)
        .await
        .expect("query");
    assert!(exists, "the autocommit statement on the held connection was committed");
}

#[tokio::test]
async fn a_connection_back_in_the_pool_inside_a_transaction_leaves_no_write_to_vanish() {
    let (url, _, _db) = fresh_db(&server_url()).await;
    let one = oo_commands::db::connect(&url, 1).await.expect("pool");
    {
        // What a `begin` cancelled after its BEGIN was sent leaves: the server inside a
        // transaction, sqlx believing there is none.
        let mut conn = one.acquire().await.expect("conn");
        sqlx::Executor::execute(&mut *conn, "BEGIN").await.expect("begin");
    }
    // A logout's revocation, say: an autocommit write through the pool.
    sqlx::query("CREATE TABLE revoked_in_autocommit (x int)")
        .execute(&one)
        .await
        .expect("create");
    let other = sqlx::PgPool::connect(&url).await.expect("pool");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('revoked_in_autocommit') IS NOT NULL")
        .fetch_one(&other)
        .await
        .expect("query");
    assert!(exists, "the write was committed, not left inside a transaction");
    one.close().await;
}
