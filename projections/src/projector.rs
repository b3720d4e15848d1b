//! The projector: one loop feeding every projection ([`run_group`]). Each round reads the log
//! once, in the safe global order, from the furthest-behind checkpoint, and applies to each
//! projection the part after its own checkpoint, together with that checkpoint, in the round's
//! one transaction — so a crash anywhere neither loses nor double-applies an event. Rounds
//! coalesce commits under load and start at once when a reader waits for a position
//! ([`wait_for`]). [`step`] applies one projection alone (rebuilds).

use crate::status::Status;
use crate::{ApplyError, Projection};
use oo_commands::cursor::Cursor;
use oo_commands::store::{EventStore, StoreError, StoredEvent, cursor_of, held_connection, read_after_filtered};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgPool, Postgres, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Events per transaction.
pub const BATCH: i64 = 500;
/// How long an idle projector waits for a notification before it looks again (events from other
/// processes, or held back behind a transaction still in flight).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a caught-up projector lets events accumulate before its next round, unless a reader
/// waits for a position ([`Status::hurry`], rung by [`wait_for`]): under load a round then
/// carries tens of events instead of a few, and costs its dozen statements that much less often,
/// while read-your-writes does not wait for it.
const COALESCE: Duration = Duration::from_millis(20);

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub name: String,
    pub cursor: Cursor,
    pub events_applied: i64,
    pub status: String,
    pub last_error: Option<String>,
    /// When it last moved (or its status changed).
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Checkpoint {
    /// Whether this is a rebuild's checkpoint (`<projection>#rebuild`) that moved within
    /// [`REBUILD_STALE_AFTER`]: a rebuild is running somewhere (this process or another). One
    /// whose process died goes stale and stops counting.
    pub fn is_running_rebuild_of(&self, projection: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.name.strip_suffix("#rebuild") == Some(projection)
            && now - self.updated_at < chrono::Duration::from_std(REBUILD_STALE_AFTER).unwrap_or(chrono::Duration::MAX)
    }
}

/// How long a rebuild's checkpoint may stand still before it counts as abandoned.
pub const REBUILD_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn ensure_checkpoint(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, tx_id::text AS tx, position, events_applied, status, last_error, updated_at FROM checkpoints \
         ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let tx: String = r.try_get("tx")?;
            Ok(Checkpoint {
                name: r.try_get("name")?,
                cursor: cursor_of(&tx, r.try_get("position")?)?,
                events_applied: r.try_get("events_applied")?,
                status: r.try_get("status")?,
                last_error: r.try_get("last_error")?,
                updated_at: r.try_get("updated_at")?,
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
    let mut cursor = cursor_of(&tx_text, row.try_get("position")?)?;
    let events = read_after_filtered(conn, cursor, limit, projection.payloads_of()).await?;
    crate::apply_batch(projection, &mut *conn, &events).await?;
    if let Some(last) = events.last() {
        cursor = last.cursor;
    }
    if !events.is_empty() {
        let mut moved = Moved::default();
        moved.push(checkpoint, cursor, events.len());
        moved.apply(conn).await?;
    }
    Ok((events.len(), cursor))
}

/// Checkpoints to move in one statement: each to where its projection now stands, with the
/// events it applied; a `failed` one is `live` again.
#[derive(Default)]
struct Moved<'a> {
    names: Vec<&'a str>,
    tx_ids: Vec<String>,
    positions: Vec<i64>,
    applied: Vec<i64>,
}

impl<'a> Moved<'a> {
    fn push(&mut self, name: &'a str, to: Cursor, applied: usize) {
        self.names.push(name);
        self.tx_ids.push(to.tx_id.to_string());
        self.positions.push(to.position);
        self.applied.push(applied as i64);
    }

    async fn apply(self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if self.names.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE public.checkpoints c SET tx_id = m.tx::xid8, position = m.position, \
               events_applied = c.events_applied + m.n, \
               status = CASE WHEN c.status = 'failed' THEN 'live' ELSE c.status END, last_error = NULL, updated_at = now() \
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS m(name, tx, position, n) WHERE c.name = m.name",
        )
        .bind(&self.names)
        .bind(&self.tx_ids)
        .bind(&self.positions)
        .bind(&self.applied)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Runs every projection in one loop until `shutdown` is cancelled (see [`run_group`]).
pub async fn spawn_all(
    store: &EventStore,
    projections: Vec<Arc<dyn Projection>>,
    status: Status,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, sqlx::Error> {
    let pool = store.pool().clone();
    for p in &projections {
        ensure_checkpoint(&pool, p.name()).await?;
    }
    let appended = store.appended();
    Ok(vec![tokio::spawn(run_group(
        pool,
        projections,
        appended,
        status,
        shutdown,
    ))])
}

/// One loop feeding several projections. Each round, in one transaction on a connection the
/// loop keeps (sqlx pings a connection each time it goes back to the pool):
/// - locks the checkpoints of the projections due this round, in name order;
/// - reads the log once, from the furthest-behind checkpoint, with the payloads any of them
///   decodes (a projection far ahead of that read reads on its own);
/// - applies to each projection the part of the batch after its own checkpoint;
/// - moves the checkpoints of those that applied something, in one statement, and commits
///   (without waiting for the flush: a lost round is read again from the checkpoints it left);
/// - waits for new events, and lets [`COALESCE`] more commits land unless a reader hurries it.
///
/// It stops when `shutdown` is cancelled, between rounds (a round under way commits or rolls
/// back first).
///
/// A projection that fails (a poisoned event) rolls the round back; it is reported `failed` and
/// retried with its own backoff, and the round runs again at once without it, so the others go
/// on. (Savepoints would isolate it without the second run, at two round trips per projection
/// on every round; failures are rare and rounds are many.)
pub async fn run_group(
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    appended: Arc<Notify>,
    status: Status,
    shutdown: CancellationToken,
) {
    let mut retry: Vec<Option<(tokio::time::Instant, Duration)>> = vec![None; projections.len()];
    // Whether each projection's position has been reported once: after that, only moves are.
    let mut reported = vec![false; projections.len()];
    let mut backoff = Duration::from_millis(100);
    let mut held = Held::default();
    let hurry = status.hurried();
    while !shutdown.is_cancelled() {
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = tokio::time::Instant::now();
        let due: Vec<usize> = (0..projections.len())
            .filter(|i| retry[*i].is_none_or(|(at, _)| at <= now))
            .collect();
        let outcomes = match round(&pool, &mut held.0, &projections, &due).await {
            Ok(outcomes) => outcomes,
            Err(RoundError::Projection { index, message }) => {
                let name = projections[index].name();
                tracing::error!(projection = name, error = %message, "projection failed; retrying");
                let _ = sqlx::query(
                    "UPDATE checkpoints SET status = 'failed', last_error = $2, updated_at = now() WHERE name = $1",
                )
                .bind(name)
                .bind(message)
                .execute(&pool)
                .await;
                let wait = retry[index].map_or(Duration::from_millis(100), |(_, w)| {
                    (w * 2).min(Duration::from_secs(10))
                });
                retry[index] = Some((tokio::time::Instant::now() + wait, wait));
                continue;
            }
            Err(RoundError::Db(e)) => {
                held.0 = None;
                tracing::error!(error = %e, "the projector's round failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut most = 0usize;
        for (i, n, cursor) in outcomes {
            retry[i] = None;
            most = most.max(n);
            // Waiters wake only when something moved.
            if n > 0 || !reported[i] {
                reported[i] = true;
                status.advanced(projections[i].name(), cursor);
            }
        }
        if (most as i64) < BATCH {
            // Caught up: wait for new events, then let a few more commits land so that one
            // round carries several of them.
            if most == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = notified => {}
                    _ = hurry.notified() => continue,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tokio::time::sleep(COALESCE) => {}
                _ = hurry.notified() => {}
            }
        }
    }
}

/// The connection the projector keeps between rounds. When the loop's future is dropped (the
/// task aborted, say) in the middle of a round, sqlx 0.8 would hand the connection back to the
/// pool still inside the round's transaction, where it holds back every reader of the cluster
/// until the server's idle timeout ends it. Dropped, this closes the connection instead, so the
/// server rolls the round back at once, as it would after a crash.
#[derive(Default)]
struct Held(Option<PoolConnection<Postgres>>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Why a round of [`run_group`] was rolled back.
enum RoundError {
    /// The database failed (the connection is given up).
    Db(sqlx::Error),
    /// `projections[index]` could not apply its part of the batch.
    Projection { index: usize, message: String },
}

impl From<sqlx::Error> for RoundError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// One round of [`run_group`] for the projections `due` (indices into `projections`): for each,
/// its index, how many events it applied and where its checkpoint stands.
async fn round(
    pool: &PgPool,
    held: &mut Option<PoolConnection<Postgres>>,
    projections: &[Arc<dyn Projection>],
    due: &[usize],
) -> Result<Vec<(usize, usize, Cursor)>, RoundError> {
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let conn = held_connection(pool, held).await?;
    // Projections are derived from the log, and the checkpoints commit with them: if a crash
    // loses the last commits, rows and checkpoints roll back together and the events are
    // applied again. So the commit need not wait for the disk (atomic and ordered, not durable).
    let mut tx = conn.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
    let names: Vec<&str> = due.iter().map(|i| projections[*i].name()).collect();
    // Locking the checkpoints serialises each projection's writers (a rebuild's swap included).
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT name, tx_id::text, position FROM public.checkpoints WHERE name = ANY($1) ORDER BY name FOR UPDATE",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    let mut at: Vec<Cursor> = Vec::with_capacity(due.len());
    for name in &names {
        let (_, tx_id, position) = rows
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| sqlx::Error::Protocol(format!("no checkpoint named {name}")))?;
        at.push(cursor_of(tx_id, *position)?);
    }
    let from = at.iter().copied().min().unwrap_or(Cursor::START);
    let payloads = union_of_payloads(due.iter().map(|i| projections[*i].payloads_of()));
    let shared = read_after_filtered(&mut tx, from, BATCH, payloads.as_deref()).await?;
    let shared_end = shared.last().map(|e| e.cursor);
    // Who among the round's people was shredded: read once for every projection of the round.
    let shredded = crate::shredded_in(&mut tx, &shared).await?;

    let mut outcomes = Vec::with_capacity(due.len());
    let mut moved = Moved::default();
    for (k, i) in due.iter().copied().enumerate() {
        let p = projections[i].as_ref();
        // A full read that ends before this projection's checkpoint tells nothing of what
        // follows it: this one reads on its own.
        let own;
        let read_alone = shared.len() as i64 == BATCH && shared_end.is_some_and(|end| end <= at[k]);
        let events: &[StoredEvent] = if read_alone {
            own = read_after_filtered(&mut tx, at[k], BATCH, p.payloads_of()).await?;
            &own
        } else {
            &shared[shared.partition_point(|e| e.cursor <= at[k])..]
        };
        let Some(last) = events.last().map(|e| e.cursor) else {
            outcomes.push((i, 0, at[k]));
            continue;
        };
        // Events read on their own lie past the shared read: their people are looked up anew.
        let applied = if read_alone {
            crate::apply_batch(p, &mut tx, events).await
        } else {
            crate::apply_batch_with(p, &mut tx, events, &shredded).await
        };
        if let Err(e) = applied {
            tx.rollback().await?;
            return Err(RoundError::Projection {
                index: i,
                message: e.to_string(),
            });
        }
        moved.push(p.name(), last, events.len());
        outcomes.push((i, events.len(), last));
    }
    moved.apply(&mut tx).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The event types whose payloads any of the projections decodes (`None`: all).
fn union_of_payloads<'a>(each: impl Iterator<Item = Option<&'a [&'static str]>>) -> Option<Vec<&'static str>> {
    let mut all: Vec<&'static str> = Vec::new();
    for types in each {
        for t in types? {
            if !all.contains(t) {
                all.push(t);
            }
        }
    }
    Some(all)
}

/// Waits until every projection of this build has passed the head of the log as it is now (or
/// `timeout`); returns whether they did.
pub async fn wait_for_head(pool: &PgPool, status: &Status, timeout: Duration) -> Result<bool, StoreError> {
    let head = oo_commands::store::head(pool).await?;
    wait_for(pool, status, &crate::names(), head, timeout)
        .await
        .map_err(StoreError::from_sqlx)
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
        status.hurry();
        if ask_database {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT tx_id::text, position FROM checkpoints WHERE name = ANY($1)")
                    .bind(names)
                    .fetch_all(pool)
                    .await?;
            let mut passed = rows.len() == names.len();
            for (tx, position) in &rows {
                passed &= cursor_of(tx, *position)? >= target;
            }
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
