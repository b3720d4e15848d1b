//! The global order: an event whose transaction commits late is neither skipped nor applied
//! twice. Runs on a private cluster, because holding a transaction open holds back every reader
//! of the whole server.

use crate::common::*;
use chrono::Utc;
use futures::future::BoxFuture;
use oo_commands::aggregate::{Meta, prepare_event};
use oo_commands::store::{AppendRequest, EventStore, Expected, StoreError, StoredEvent, WriterConfig};
use oo_domain::ids::{SignalId, UserId};
use oo_domain::signal::{MoodScore, SignalData};
use oo_domain::signals::SignalsEvent;
use oo_projections::projector::{ensure_checkpoint, step};
use oo_projections::{ApplyError, Projection};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Records every event it applies under a primary key: a second application fails loudly.
struct Witness;

impl Projection for Witness {
    fn name(&self) -> &'static str {
        "witness"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["witness"]
    }
    fn user_tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            for event in events {
                sqlx::query("INSERT INTO witness (event_id, position) VALUES ($1, $2)")
                    .bind(event.event_id)
                    .bind(event.cursor.position)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }
}

fn request(user: UserId, n: i64) -> AppendRequest {
    let event = SignalsEvent::SignalRecorded {
        user_id: user,
        signal_id: SignalId::parse(&format!("s{n}")).expect("id"),
        occurred_at: Utc::now(),
        data: SignalData::Mood {
            score: MoodScore::parse(0).expect("score"),
            note: None,
        },
    };
    let new = prepare_event(&event, user, Utc::now(), None, None, &Meta::new(Utc::now())).expect("prepared");
    AppendRequest {
        aggregate_type: "signals",
        aggregate_id: user.to_string(),
        expected: Expected::Any(0),
        events: vec![new],
    }
}

/// A writer numbers an order-independent stream after what it remembers writing, and remembers
/// only the streams it wrote recently. An append to a stream written meanwhile by another
/// process (or one the writer has forgotten), from a stale view, conflicts on the store's unique
/// sequence and writes nothing, not even its signal's idempotency claim; retried from the
/// stream's current end, as a command retries, it lands right after. No sequence is used twice,
/// none is skipped.
#[tokio::test]
async fn a_stream_two_writers_take_turns_on_gets_contiguous_sequences() {
    let (_, pool, _db) = fresh_db(&server_url()).await;
    let writers = [
        EventStore::start(pool.clone(), WriterConfig::default()),
        EventStore::start(pool.clone(), WriterConfig::default()),
    ];
    let user = UserId::from_uuid(Uuid::new_v4());
    let stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT sequence FROM events WHERE aggregate_type = 'signals' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(user.to_string())
        .fetch_all(&pool)
        .await
        .expect("sequences")
    };
    let mut conflicts = 0;
    for n in 0..6 {
        let writer = &writers[(n % 2) as usize];
        // Decided on a view of the stream from before any append.
        let appended = match writer.append(request(user, n)).await {
            Ok(a) => a,
            Err(StoreError::Conflict) => {
                conflicts += 1;
                assert_eq!(stored().await.len() as i64, n, "a conflicting append writes nothing");
                let mut retry = request(user, n);
                retry.expected = Expected::Any(n);
                writer
                    .append(retry)
                    .await
                    .expect("the retry from the stream's end lands")
            }
            Err(e) => panic!("append {n}: {e}"),
        };
        let sequences: Vec<i64> = appended.written.iter().map(|(_, s)| *s).collect();
        assert_eq!(sequences, vec![n + 1], "append {n}");
    }
    assert_eq!(stored().await, (1..=6).collect::<Vec<i64>>());
    assert_eq!(
        conflicts, 5,
        "every turn after the first met a stream the other writer moved on"
    );
}

#[tokio::test]
async fn an_event_committed_late_is_applied_exactly_once() {
    let cluster = PrivateCluster::start();
    let (_, pool, _db) = fresh_db(&cluster.url).await;
    sqlx::query("CREATE TABLE witness (event_id uuid PRIMARY KEY, position bigint NOT NULL)")
        .execute(&pool)
        .await
        .expect("witness table");
    ensure_checkpoint(&pool, "witness").await.expect("checkpoint");
    let store = write_side(&pool).await.store;

    // A writer takes a position first and holds its transaction open.
    let held_user = UserId::from_uuid(Uuid::new_v4());
    let mut held = pool.begin().await.expect("tx");
    let early = store
        .append_in_tx(&mut held, request(held_user, 0))
        .await
        .expect("appended in the open transaction");
    let early_position = early.cursor.expect("cursor").position;

    // Others commit events with later positions.
    for n in 1..=5 {
        let user = UserId::from_uuid(Uuid::new_v4());
        let a = store.append(request(user, n)).await.expect("committed");
        assert!(a.cursor.expect("cursor").position > early_position);
    }
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(committed, 5, "the held event is not visible yet");

    // The projector must not move past the open transaction.
    let (applied, _) = step(&pool, &Witness, "witness", None, 100).await.expect("step");
    assert_eq!(applied, 0, "nothing newer than the oldest open transaction is read");

    held.commit().await.expect("late commit");
    let mut total = 0;
    for _ in 0..10 {
        let (n, _) = step(&pool, &Witness, "witness", None, 100).await.expect("step");
        total += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(total, 6, "every event applied");
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM witness")
        .fetch_all(&pool)
        .await
        .expect("witness");
    let all: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM events")
        .fetch_all(&pool)
        .await
        .expect("events");
    assert_eq!(ids.len(), all.len());
    assert!(
        all.iter().all(|id| ids.contains(id)),
        "none skipped, including the late one"
    );

    // A reader that followed positions alone would have skipped it: the late event's position is
    // below positions it had already passed.
    let max_before_commit: i64 = sqlx::query_scalar("SELECT max(position) FROM events WHERE position <> $1")
        .bind(early_position)
        .fetch_one(&pool)
        .await
        .expect("max");
    assert!(early_position < max_before_commit);
}

#[tokio::test]
async fn transaction_ids_order_as_numbers_across_digit_boundaries() {
    let cluster = PrivateCluster::start();
    let (_, pool, _db) = fresh_db(&cluster.url).await;
    let store = write_side(&pool).await.store;
    let first = store
        .append(request(UserId::from_uuid(Uuid::new_v4()), 1))
        .await
        .expect("first")
        .cursor
        .expect("cursor");
    // Use up transaction ids until the next power of ten, so that the next one has one more digit
    // ("1000" sorts before "999" as text).
    let boundary = 10u64.pow(first.tx_id.to_string().len() as u32);
    sqlx::query(
        "CREATE PROCEDURE burn(n bigint) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
    )
    .execute(&pool)
    .await
    .expect("procedure");
    sqlx::query("CALL burn($1)")
        .bind((boundary - first.tx_id) as i64 + 1)
        .execute(&pool)
        .await
        .expect("burn");
    let second = store
        .append(request(UserId::from_uuid(Uuid::new_v4()), 2))
        .await
        .expect("second")
        .cursor
        .expect("cursor");
    assert!(second.tx_id >= boundary, "{} < {boundary}", second.tx_id);
    assert!(second > first);
    assert_eq!(
        store.head().await.expect("head"),
        second,
        "the head is the latest event, not the largest as text"
    );
    let mut conn = pool.acquire().await.expect("conn");
    let all = oo_commands::store::read_after(&mut conn, oo_commands::cursor::Cursor::START, 10)
        .await
        .expect("read");
    assert_eq!(all.iter().map(|e| e.cursor).collect::<Vec<_>>(), vec![first, second]);
    assert_eq!(oo_commands::store::count_after(&pool, first).await.expect("count"), 1);
}

#[tokio::test]
async fn after_a_logical_dump_and_restore_into_a_younger_cluster_new_events_come_after_the_old() {
    // The source: a log written by a cluster whose transaction counter is well ahead of a
    // fresh one's.
    let source = PrivateCluster::start();
    let source_url = format!("{}/oo_restore_source", source.url);
    let app = spawn_at(&source_url, temp_dir("oo-data"), |c| c.dev = true).await;
    sqlx::query(
        "CREATE PROCEDURE burn(n bigint) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
    )
    .execute(&app.pool)
    .await
    .expect("procedure");
    sqlx::query("CALL burn(5000)").execute(&app.pool).await.expect("burn");
    let (token, _) = app.login("restored@example.org").await;
    let r = app
        .post(
            "/signals",
            &token,
            serde_json::json!({"signals": [task("a", "before", "Written before the dump", 2, false)]}),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK);
    wait_caught_up(&app.pool).await;
    let data_dir = app.data_dir.clone();
    drop(app);

    // pg_dump, then restore into a fresh cluster, whose counter starts far lower.
    let dump = std::process::Command::new(pg_bin().join("pg_dump"))
        .args(["--no-owner", "--dbname", &source_url])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let target = PrivateCluster::start();
    let target_url = format!("{}/oo_restore_target", target.url);
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", target.url))
        .await
        .expect("target");
    sqlx::query("CREATE DATABASE oo_restore_target")
        .execute(&mut admin)
        .await
        .expect("createdb");
    let mut restore = std::process::Command::new(pg_bin().join("psql"))
        .args(["-q", "-v", "ON_ERROR_STOP=1", "--dbname", &target_url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    {
        use std::io::Write;
        restore
            .stdin
            .take()
            .expect("stdin")
            .write_all(&dump.stdout)
            .expect("restore fed");
    }
    assert!(restore.wait().expect("psql ends").success(), "restore");
    let (restored_max, target_xid): (String, String) =
        sqlx::query_as("SELECT max(tx_id)::text, pg_current_xact_id()::text FROM events")
            .fetch_one(&mut sqlx::PgConnection::connect(&target_url).await.expect("restored db"))
            .await
            .expect("figures");
    assert!(
        restored_max.parse::<u64>().expect("xid") > target_xid.parse::<u64>().expect("xid"),
        "the scenario: the restored log is ahead of the new cluster's counter"
    );

    // oO on the restored database: new events sort after the restored ones, and every reader
    // takes them.
    let restored = spawn_at(&target_url, data_dir, |c| c.dev = true).await;
    let (token, _) = restored.login("restored@example.org").await;
    let r = restored
        .post(
            "/signals",
            &token,
            serde_json::json!({"signals": [task("b", "after", "Written after the restore", 2, false)]}),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{:?}", r.body);
    wait_caught_up(&restored.pool).await;
    let open: Vec<String> = sqlx::query_scalar("SELECT external_id FROM open_tasks ORDER BY external_id")
        .fetch_all(&restored.pool)
        .await
        .expect("open tasks");
    assert_eq!(open, ["after", "before"], "the projector applied the new event");
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE event_type = 'SignalRecorded' ORDER BY tx_id, position",
    )
    .fetch_all(&restored.pool)
    .await
    .expect("order");
    assert_eq!(order.len(), 2);
    assert!(
        order[1].contains("after"),
        "the new event is last in the log: {order:?}"
    );
}
