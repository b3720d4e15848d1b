//! The projector: one loop feeding every projection ([`run_group`]), each projection reading the
//! log in the safe global order in batches from its own checkpoint and applying a batch and that
//! checkpoint in the round's transaction — so a crash anywhere neither loses nor double-applies
//! an event.

use crate::status::Status;
use crate::{ApplyError, Projection};
use oo_commands::cursor::Cursor;
use oo_commands::store::read_after_filtered;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Events per transaction.
pub const BATCH: i64 = 500;
/// How long an idle projector waits for a notification before it looks again (events from other
/// processes, or held back behind a transaction still in flight).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a caught-up projector lets events accumulate before its next batch: the price, in
/// read-your-writes latency, of not paying a transaction per commit under load.
const COALESCE: Duration = Duration::from_millis(3);

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub name: String,
    pub cursor: Cursor,
    pub events_applied: i64,
    pub status: String,
    pub last_error: Option<String>,
}

pub async fn ensure_checkpoint(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, tx_id::text AS tx, position, events_applied, status, last_error FROM checkpoints ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let tx: String = r.try_get("tx")?;
            Ok(Checkpoint {
                name: r.try_get("name")?,
                cursor: Cursor {
                    tx_id: tx.parse().unwrap_or(0),
                    position: r.try_get("position")?,
                },
                events_applied: r.try_get("events_applied")?,
                status: r.try_get("status")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect()
}

/// Applies the next batch (at most `limit` events) of `projection` after checkpoint
/// `checkpoint`, into the tables of `schema` (the live ones when `None`). Returns how many
/// events were applied and where the checkpoint now stands.
pub async fn step(
    pool: &PgPool,
    projection: &dyn Projection,
    checkpoint: &str,
    schema: Option<&str>,
    limit: i64,
) -> Result<(usize, Cursor), ApplyError> {
    let mut tx = pool.begin().await?;
    let applied = step_in(&mut tx, projection, checkpoint, schema, limit).await?;
    tx.commit().await?;
    Ok(applied)
}

pub(crate) async fn step_in(
    conn: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    checkpoint: &str,
    schema: Option<&str>,
    limit: i64,
) -> Result<(usize, Cursor), ApplyError> {
    // Projections are derived from the log, and the checkpoint commits with them: if a crash
    // loses the last commits, rows and checkpoint roll back together and the events are applied
    // again. So their commits need not wait for the disk (atomic and ordered, just not durable).
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *conn)
        .await?;
    if let Some(s) = schema {
        sqlx::query(&format!("SET LOCAL search_path TO {s}, public"))
            .execute(&mut *conn)
            .await?;
    }
    // Locking the checkpoint serialises this projection's writers (a rebuild's swap included).
    let row = sqlx::query("SELECT tx_id::text AS tx, position FROM public.checkpoints WHERE name = $1 FOR UPDATE")
        .bind(checkpoint)
        .fetch_one(&mut *conn)
        .await?;
    let tx_text: String = row.try_get("tx")?;
    let mut cursor = Cursor {
        tx_id: tx_text.parse().unwrap_or(0),
        position: row.try_get("position")?,
    };
    let events = read_after_filtered(conn, cursor, limit, projection.payloads_of()).await?;
    crate::apply_batch(projection, &mut *conn, &events).await?;
    if let Some(last) = events.last() {
        cursor = last.cursor;
    }
    if !events.is_empty() {
        sqlx::query(
            "UPDATE public.checkpoints SET tx_id = $2::text::xid8, position = $3, events_applied = events_applied + $4, \
             status = CASE WHEN status = 'failed' THEN 'live' ELSE status END, last_error = NULL, updated_at = now() WHERE name = $1",
        )
        .bind(checkpoint)
        .bind(cursor.tx_id.to_string())
        .bind(cursor.position)
        .bind(events.len() as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok((events.len(), cursor))
}

/// Runs every projection in one loop until the handle is aborted (see [`run_group`]).
pub async fn spawn_all(
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    appended: Arc<Notify>,
    status: Status,
) -> Result<Vec<JoinHandle<()>>, sqlx::Error> {
    for p in &projections {
        ensure_checkpoint(&pool, p.name()).await?;
    }
    Ok(vec![tokio::spawn(run_group(pool, projections, appended, status))])
}

/// One loop feeding several projections: each round applies every projection's next batch, each
/// with its own checkpoint, in one transaction — one commit per round instead of one per
/// projection. Each projection runs inside a savepoint, so a projection that fails (a poisoned
/// event) is rolled back alone, reported `failed`, and retried with its own backoff while the
/// others go on.
pub async fn run_group(pool: PgPool, projections: Vec<Arc<dyn Projection>>, appended: Arc<Notify>, status: Status) {
    let mut retry: Vec<Option<(tokio::time::Instant, Duration)>> = vec![None; projections.len()];
    // Whether each projection's position has been reported once: after that, only moves are.
    let mut reported = vec![false; projections.len()];
    let mut backoff = Duration::from_millis(100);
    loop {
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = tokio::time::Instant::now();
        let round = async {
            let mut tx = pool.begin().await?;
            let mut outcomes = Vec::with_capacity(projections.len());
            for (i, p) in projections.iter().enumerate() {
                if retry[i].is_some_and(|(at, _)| at > now) {
                    continue;
                }
                let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
                match step_in(&mut savepoint, p.as_ref(), p.name(), None, BATCH).await {
                    Ok(done) => {
                        savepoint.commit().await?;
                        outcomes.push((i, Ok(done)));
                    }
                    Err(e) => {
                        savepoint.rollback().await?;
                        outcomes.push((i, Err(e.to_string())));
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(outcomes)
        };
        let mut most = 0usize;
        match round.await {
            Ok(outcomes) => {
                backoff = Duration::from_millis(100);
                for (i, outcome) in outcomes {
                    let name = projections[i].name();
                    match outcome {
                        Ok((n, cursor)) => {
                            retry[i] = None;
                            most = most.max(n);
                            // Waiters wake only when something moved.
                            if n > 0 || !reported[i] {
                                reported[i] = true;
                                status.advanced(name, cursor);
                            }
                        }
                        Err(msg) => {
                            tracing::error!(projection = name, error = %msg, "projection failed; retrying");
                            let _ = sqlx::query(
                                "UPDATE checkpoints SET status = 'failed', last_error = $2, updated_at = now() WHERE name = $1",
                            )
                            .bind(name)
                            .bind(msg)
                            .execute(&pool)
                            .await;
                            let wait = retry[i].map_or(Duration::from_millis(100), |(_, w)| {
                                (w * 2).min(Duration::from_secs(10))
                            });
                            retry[i] = Some((tokio::time::Instant::now() + wait, wait));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the projector's round failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        if (most as i64) < BATCH {
            // Caught up: wait for new events, then let a few more commits land so that one
            // round carries several of them.
            if most == 0 {
                let _ = tokio::time::timeout(IDLE_POLL, notified).await;
            }
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// Waits until every named checkpoint has passed `target`, or until `timeout`. Returns whether
/// they did. The projectors of this process are checked in memory on each of their commits; the
/// `checkpoints` table (the truth when projectors run elsewhere) at the start and on every idle
/// poll, so that many waiters do not query it on every commit.
pub async fn wait_for(
    pool: &PgPool,
    status: &Status,
    names: &[&str],
    target: Cursor,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ask_database = true;
    loop {
        let progress = status.progress();
        let notified = progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if status.passed(names, target) {
            return Ok(true);
        }
        if ask_database {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT tx_id::text, position FROM checkpoints WHERE name = ANY($1)")
                    .bind(names)
                    .fetch_all(pool)
                    .await?;
            let passed = rows.len() == names.len()
                && rows.iter().all(|(tx, pos)| {
                    Cursor {
                        tx_id: tx.parse().unwrap_or(0),
                        position: *pos,
                    } >= target
                });
            if passed {
                return Ok(true);
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // Woken by a commit of this process: memory says enough. Timed out: ask the table.
        ask_database = tokio::time::timeout((deadline - now).min(IDLE_POLL), notified)
            .await
            .is_err();
    }
}
