//! The event store: appends (through a group-committing writer) and the catch-up reader every
//! other part of the system reads the log through.
//!
//! # Appends
//! Commands send [`AppendRequest`]s to a queue. A writer task drains the queue and writes every
//! waiting request in **one** transaction (one multi-row insert, one durable commit), then
//! answers each request. Optimistic concurrency still holds per aggregate: a request that
//! expects an exact last sequence fails with [`StoreError::Conflict`] if anything else was
//! written to its stream; order-independent streams (`Expected::Any`) are numbered by the
//! writer. If the shared transaction fails on a constraint (another process wrote), the batch is
//! rolled back and each request is retried alone, so one conflict never fails its neighbours.
//! Idempotent ingestion is a unique index (`ingested_signals`) checked in the same transaction.
//!
//! # Reading
//! [`read_after`] returns events in the global order `(tx_id, position)`, only from
//! transactions older than the oldest one still in flight, so an event whose transaction commits
//! late is never skipped (docs/adr/0002-global-order.md).

use crate::cursor::Cursor;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgDatabaseError;
use sqlx::{Acquire, PgConnection, PgPool, Postgres, Row, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

/// One event ready to be written. Its personal fields are already sealed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub schema_version: i32,
    pub user_id: Uuid,
    /// The public payload, already serialised (JSON text): the writer only copies it.
    pub payload: String,
    pub sealed: Option<Vec<u8>>,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// A client's signal id: the event is written only if `(user_id, dedup_key)` is new.
    pub dedup_key: Option<String>,
}

/// What the command saw of its stream: the last sequence it loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The stream's last sequence must still be this one.
    Exact(i64),
    /// The events do not depend on each other's order: the writer numbers them after whatever
    /// is there (the value is what the command saw, a lower bound).
    Any(i64),
}

#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub expected: Expected,
    pub events: Vec<NewEvent>,
}

/// The outcome of an append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Appended {
    /// The position of the last event written; `None` when nothing was written.
    pub cursor: Option<Cursor>,
    /// Ids of the events written, in order (duplicates left out), with their sequences.
    pub written: Vec<(Uuid, i64)>,
    /// Events not written because their signal id was seen before.
    pub duplicates: usize,
}

/// Why an append or a read of the log failed: a conflict to retry, the database out of reach,
/// or anything else. Cheap to clone (one batch's failure answers each of its requests); the
/// cause is kept as the error's source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the stream changed since it was read")]
    Conflict,
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    #[error("unexpected store error")]
    Unexpected(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

/// A failure of the store itself, with no deeper cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Broken(&'static str);

impl StoreError {
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        if is_unique_violation(&e, "events_stream_sequence") {
            return Self::Conflict;
        }
        // Two writers' batches touching the same streams in opposite orders can deadlock: one is
        // aborted, and like a conflict its requests are retried (alone, then by their commands).
        if let sqlx::Error::Database(d) = &e
            && d.code().is_some_and(|c| c == "40P01" || c == "40001")
        {
            return Self::Conflict;
        }
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                Self::Unavailable(Arc::new(e))
            }
            sqlx::Error::Database(ref d) if d.code().is_some_and(|c| c.starts_with("57") || c.starts_with("08")) => {
                Self::Unavailable(Arc::new(e))
            }
            other => Self::Unexpected(Arc::new(other)),
        }
    }

    fn broken(what: &'static str) -> Self {
        Self::Unexpected(Arc::new(Broken(what)))
    }
}

fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| pg.code() == "23505" && pg.constraint() == Some(constraint)),
        _ => false,
    }
}

/// Counters and histograms the API exports as metrics.
#[derive(Debug)]
pub struct StoreMetrics {
    pub events_appended: AtomicU64,
    pub append_requests: AtomicU64,
    pub commits: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    /// How long each append waited, from the queue to the durable commit.
    pub append_seconds: Histogram,
    /// How long each of the writer's batches took on the database (insert and commit).
    pub commit_seconds: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            events_appended: AtomicU64::new(0),
            append_requests: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            append_seconds: latency_histogram(),
            commit_seconds: latency_histogram(),
        }
    }
}

/// The buckets of every latency histogram oO exports: 0.5 ms doubling to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Writer tasks (each commits one batch at a time; more overlap commits with batching).
    pub writers: usize,
    /// Most events in one transaction.
    pub max_batch_events: usize,
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            writers: 2,
            max_batch_events: 5_000,
            queue: 10_000,
        }
    }
}

type StreamKey = (&'static str, String);

/// The store's handle: cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    /// One queue per writer task; a stream always goes to the same one.
    queues: Arc<Vec<mpsc::Sender<Job>>>,
    appended: Arc<Notify>,
    pub metrics: Arc<StoreMetrics>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStore(..)")
    }
}

struct Writer {
    pool: PgPool,
    queue: mpsc::Receiver<Job>,
    /// The last sequence this writer wrote to the streams it wrote recently, so that commands
    /// on one order-independent stream that saw the same state do not collide, and a command
    /// that saw a stale state fails alone, before its batch. Every stream is written by one
    /// writer only (queues are chosen by stream), so this is exact for this process.
    last_seq: Mutex<RecentSequences>,
    appended: Arc<Notify>,
    metrics: Arc<StoreMetrics>,
    max_batch_events: usize,
}

/// How many streams a generation of [`RecentSequences`] holds.
const LAST_SEQ_GENERATION: usize = 16_384;

/// The last sequence written to each recently written stream, in two generations: when the
/// current one is full it becomes the previous one, and the previous one is emptied to take the
/// next streams (both tables are allocated once, at full size). So the memory is bounded (a tip is a stream of its own: hundreds of new streams a second) and the
/// streams written in the last [`LAST_SEQ_GENERATION`] or more are always remembered. Forgetting
/// an older one costs at most a retry, never a wrong number: an append numbered from a stale
/// view fails on the unique sequence (a batch is then retried request by request), and its
/// command retries from the store.
struct RecentSequences {
    current: HashMap<StreamKey, i64>,
    previous: HashMap<StreamKey, i64>,
    generation: usize,
}

impl RecentSequences {
    fn new(generation: usize) -> Self {
        Self {
            current: HashMap::with_capacity(generation),
            previous: HashMap::with_capacity(generation),
            generation,
        }
    }

    fn get(&self, key: &StreamKey) -> Option<i64> {
        self.current.get(key).or_else(|| self.previous.get(key)).copied()
    }

    /// Records that `seq` was written to `key` (a lower one than already known changes nothing).
    fn record(&mut self, key: StreamKey, seq: i64) {
        let seq = self.previous.remove(&key).map_or(seq, |s| s.max(seq));
        if let Some(s) = self.current.get_mut(&key) {
            *s = (*s).max(seq);
            return;
        }
        if self.current.len() >= self.generation {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(key, seq);
    }

    fn forget(&mut self, key: &StreamKey) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The known sequences of the streams `jobs` write to.
    fn subset(&self, jobs: &[Job]) -> HashMap<StreamKey, i64> {
        jobs.iter()
            .filter_map(|j| {
                let k = (j.request.aggregate_type, j.request.aggregate_id.clone());
                self.get(&k).map(|v| (k, v))
            })
            .collect()
    }
}

impl EventStore {
    /// Starts the writer tasks. They end when every handle is dropped.
    pub fn start(pool: PgPool, config: WriterConfig) -> Self {
        let appended = Arc::new(Notify::new());
        let metrics = Arc::new(StoreMetrics::default());
        let writers = config.writers.max(1);
        let mut queues = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (tx, rx) = mpsc::channel(config.queue.div_ceil(writers));
            queues.push(tx);
            let w = Writer {
                pool: pool.clone(),
                queue: rx,
                last_seq: Mutex::new(RecentSequences::new(LAST_SEQ_GENERATION)),
                appended: appended.clone(),
                metrics: metrics.clone(),
                max_batch_events: config.max_batch_events,
            };
            tokio::spawn(w.run());
        }
        Self {
            pool,
            queues: Arc::new(queues),
            appended,
            metrics,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Notified after every commit of new events (in this process).
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Appends through the group-committing writer; answers once the events are durable.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        if request.events.is_empty() {
            return Ok(Appended::default());
        }
        let asked = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        // The same stream always goes to the same writer: two writers never race on one stream.
        let h = oo_domain::ids::fnv1a(request.aggregate_type.bytes().chain(request.aggregate_id.bytes()));
        let queue = &self.queues[(h % self.queues.len() as u64) as usize];
        queue
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::broken("the writer stopped"))?;
        let answered = answer
            .await
            .map_err(|_| StoreError::broken("the writer dropped a request"))?;
        self.metrics.append_seconds.observe(asked.elapsed().as_secs_f64());
        answered
    }

    /// Appends inside the caller's transaction (for commands that must write other rows
    /// atomically with their events, such as registration). Call [`EventStore::committed`] after
    /// the commit.
    pub async fn append_in_tx(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        let mut out = write_jobs(tx, &[&request], &HashMap::new()).await?;
        out.pop().ok_or_else(|| StoreError::broken("no outcome"))?
    }

    pub fn committed(&self, appended: &Appended) {
        if appended.cursor.is_some() {
            self.metrics
                .events_appended
                .fetch_add(appended.written.len() as u64, Ordering::Relaxed);
            self.appended.notify_waiters();
        }
    }

    /// The position of the latest committed event, or the start of the log.
    pub async fn head(&self) -> Result<Cursor, StoreError> {
        head(&self.pool).await
    }
}

/// The latest event below the safe horizon: every event after it is either committed later or
/// still in flight, so a reader that starts here misses none of them — not even one whose
/// transaction took its position earlier and commits late (`head` would skip it).
pub async fn safe_head(pool: &PgPool) -> Result<Cursor, StoreError> {
    last_event(pool, "WHERE e.tx_id < oo_log_horizon()").await
}

pub async fn head(pool: &PgPool) -> Result<Cursor, StoreError> {
    last_event(pool, "").await
}

/// The last event in the global order among those `filter` (a `WHERE` clause or nothing) keeps.
async fn last_event(pool: &PgPool, filter: &str) -> Result<Cursor, StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(&format!(
        // The text form under another name: `ORDER BY tx_id` must sort the xid8, not its text.
        "SELECT e.tx_id::text AS tx, e.position FROM events e {filter} ORDER BY e.tx_id DESC, e.position DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    match row {
        Some((tx, position)) => cursor_of(&tx, position).map_err(StoreError::from_sqlx),
        None => Ok(Cursor::START),
    }
}

impl Writer {
    async fn run(mut self) {
        // The writer keeps one connection between batches: sqlx pings a connection each time it
        // goes back to the pool, a round trip per commit that a held connection does not pay.
        let mut conn: Option<PoolConnection<Postgres>> = None;
        loop {
            let jobs = {
                let rx = &mut self.queue;
                let Some(first) = rx.recv().await else { return };
                let mut events = first.request.events.len();
                let mut jobs = vec![first];
                while events < self.max_batch_events {
                    match rx.try_recv() {
                        Ok(j) => {
                            events += j.request.events.len();
                            jobs.push(j);
                        }
                        Err(_) => break,
                    }
                }
                jobs
            };
            self.write_batch(&mut conn, jobs).await;
        }
    }

    /// Runs `requests` in one transaction on the held connection. After an error the connection
    /// is given back (the pool discards it if it is broken) and the next batch takes another.
    async fn transact(
        &self,
        held: &mut Option<PoolConnection<Postgres>>,
        requests: &[&AppendRequest],
        reserved: &HashMap<StreamKey, i64>,
        alone_check: bool,
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        // Without signal ids to claim, a batch is one INSERT: atomic on its own, so it commits
        // without BEGIN and COMMIT (two round trips fewer per commit). That is safe because the
        // held connection starts clean ([`held_connection`]) and only this writer uses it.
        let one_statement = !alone_check && requests.iter().all(|r| r.events.iter().all(|e| e.dedup_key.is_none()));
        let result = async {
            let conn = held_connection(&self.pool, held).await.map_err(StoreError::from_sqlx)?;
            if one_statement {
                return write_jobs(conn, requests, reserved).await;
            }
            let mut tx = conn.begin().await.map_err(StoreError::from_sqlx)?;
            let results = if alone_check {
                alone(&mut tx, requests[0]).await?
            } else {
                write_jobs(&mut tx, requests, reserved).await?
            };
            tx.commit().await.map_err(StoreError::from_sqlx)?;
            Ok(results)
        }
        .await;
        if result.is_err() {
            *held = None;
        }
        result
    }

    async fn write_batch(&self, held: &mut Option<PoolConnection<Postgres>>, jobs: Vec<Job>) {
        self.metrics
            .append_requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // Reserve sequences for order-independent streams after what this process already has.
        let reserved: HashMap<StreamKey, i64> = self.last_seq.lock().map(|m| m.subset(&jobs)).unwrap_or_default();
        let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();
        let started = std::time::Instant::now();
        let outcome = self.transact(held, &requests, &reserved, false).await;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(results) => {
                self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                self.finish(jobs, results);
            }
            Err(StoreError::Conflict) if jobs.len() > 1 => {
                // Another process wrote to one of these streams: retry each request alone so a
                // conflict fails only its own request.
                self.forget(&jobs);
                for job in jobs {
                    let result = match self.transact(held, &[&job.request], &HashMap::new(), true).await {
                        Ok(mut r) => r.pop().unwrap_or_else(|| Err(StoreError::broken("no outcome"))),
                        Err(e) => Err(e),
                    };
                    if result.is_ok() {
                        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    self.finish(vec![job], vec![result]);
                }
            }
            Err(e) => {
                self.forget(&jobs);
                if matches!(e, StoreError::Conflict) {
                    self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn finish(&self, jobs: Vec<Job>, results: Vec<Result<Appended, StoreError>>) {
        let mut any = false;
        if let Ok(mut recent) = self.last_seq.lock() {
            for (job, result) in jobs.iter().zip(&results) {
                let key = (job.request.aggregate_type, job.request.aggregate_id.clone());
                match result {
                    Ok(a) => {
                        if let Some((_, seq)) = a.written.last() {
                            recent.record(key, *seq);
                        }
                    }
                    Err(_) => recent.forget(&key),
                }
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            if let Ok(a) = &result {
                any |= a.cursor.is_some();
                self.metrics
                    .events_appended
                    .fetch_add(a.written.len() as u64, Ordering::Relaxed);
                self.metrics
                    .duplicates
                    .fetch_add(a.duplicates as u64, Ordering::Relaxed);
            } else if matches!(result, Err(StoreError::Conflict)) {
                self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            let _ = job.reply.send(result);
        }
        if any {
            self.appended.notify_waiters();
        }
    }

    fn forget(&self, jobs: &[Job]) {
        if let Ok(mut recent) = self.last_seq.lock() {
            for j in jobs {
                recent.forget(&(j.request.aggregate_type, j.request.aggregate_id.clone()));
            }
        }
    }
}

/// Writes one request in its own transaction. An order-independent stream is numbered after what
/// the store holds now, not after what the command saw: another writer may have written since.
async fn alone(
    conn: &mut PgConnection,
    request: &AppendRequest,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut baseline = HashMap::new();
    if let Expected::Any(_) = request.expected {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(request.aggregate_type)
                .bind(&request.aggregate_id)
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::from_sqlx)?;
        baseline.insert((request.aggregate_type, request.aggregate_id.clone()), max.unwrap_or(0));
    }
    write_jobs(conn, &[request], &baseline).await
}

/// Writes several requests in the caller's transaction (with no signal ids to claim, in one
/// INSERT, which may run on its own). Returns one outcome per request: a
/// request whose exact expectation is already broken inside the batch gets `Conflict` and writes
/// nothing; a constraint violation from outside fails the whole call (the caller rolls back).
async fn write_jobs(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    reserved: &HashMap<StreamKey, i64>,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    // 1. Idempotency: claim every signal id of the batch; the first request naming one wins.
    let mut dedup_users = Vec::new();
    let mut dedup_ids = Vec::new();
    let mut claimed_in_batch = HashSet::new();
    for r in requests {
        for e in &r.events {
            if let Some(k) = &e.dedup_key
                && claimed_in_batch.insert((e.user_id, k.as_str()))
            {
                dedup_users.push(e.user_id);
                dedup_ids.push(k.clone());
            }
        }
    }
    let mut fresh: HashSet<(Uuid, String)> = HashSet::new();
    if !dedup_ids.is_empty() {
        let rows = sqlx::query(
            "INSERT INTO ingested_signals (user_id, signal_id) SELECT * FROM unnest($1::uuid[], $2::text[]) \
             ON CONFLICT DO NOTHING RETURNING user_id, signal_id",
        )
        .bind(&dedup_users)
        .bind(&dedup_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        for row in rows {
            fresh.insert((row.get(0), row.get(1)));
        }
    }

    // 2. Number the events and check exact expectations within the batch.
    let mut next_seq: HashMap<StreamKey, i64> = HashMap::new();
    let mut outcomes: Vec<Result<Appended, StoreError>> = Vec::with_capacity(requests.len());
    let mut cols = Columns::default();
    let mut owner: Vec<usize> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let key = (r.aggregate_type, r.aggregate_id.clone());
        let in_batch = next_seq.get(&key).copied();
        let base = match r.expected {
            Expected::Exact(s) => {
                if in_batch.is_some_and(|b| b != s) || reserved.get(&key).is_some_and(|b| *b > s) {
                    outcomes.push(Err(StoreError::Conflict));
                    continue;
                }
                s
            }
            Expected::Any(s) => s
                .max(in_batch.unwrap_or(0))
                .max(reserved.get(&key).copied().unwrap_or(0)),
        };
        let mut seq = base;
        let mut appended = Appended::default();
        for e in &r.events {
            if let Some(k) = &e.dedup_key
                && !fresh.remove(&(e.user_id, k.clone()))
            {
                appended.duplicates += 1;
                continue;
            }
            seq += 1;
            cols.push(r, e, seq);
            owner.push(i);
            appended.written.push((e.event_id, seq));
        }
        next_seq.insert(key, seq);
        outcomes.push(Ok(appended));
    }
    // `outcomes` has one entry per request in order; map request index -> outcome index.
    if cols.event_id.is_empty() {
        return Ok(outcomes);
    }

    // 3. One multi-row insert for the whole batch.
    let rows = sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, schema_version, user_id, \
           payload, sealed, occurred_at, correlation_id, causation_id) \
         SELECT e, at, ai, s, et, sv, u, p::json, se, o, c, ca FROM unnest($1::uuid[], $2::text[], $3::text[], \
           $4::int8[], $5::text[], $6::int4[], $7::uuid[], $8::text[], $9::bytea[], $10::timestamptz[], $11::uuid[], \
           $12::uuid[]) AS t(e, at, ai, s, et, sv, u, p, se, o, c, ca) \
         RETURNING event_id, tx_id::text, position",
    )
    .bind(&cols.event_id)
    .bind(&cols.aggregate_type)
    .bind(&cols.aggregate_id)
    .bind(&cols.sequence)
    .bind(&cols.event_type)
    .bind(&cols.schema_version)
    .bind(&cols.user_id)
    .bind(&cols.payload)
    .bind(&cols.sealed)
    .bind(&cols.occurred_at)
    .bind(&cols.correlation_id)
    .bind(&cols.causation_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    let mut positions: HashMap<Uuid, Cursor> = HashMap::with_capacity(rows.len());
    for row in rows {
        let tx: String = row.get(1);
        positions.insert(row.get(0), cursor_of(&tx, row.get(2)).map_err(StoreError::from_sqlx)?);
    }
    for a in outcomes.iter_mut().flatten() {
        a.cursor = a.written.iter().filter_map(|(id, _)| positions.get(id)).max().copied();
    }
    Ok(outcomes)
}

#[derive(Default)]
struct Columns {
    event_id: Vec<Uuid>,
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<&'static str>,
    schema_version: Vec<i32>,
    user_id: Vec<Uuid>,
    payload: Vec<String>,
    sealed: Vec<Option<Vec<u8>>>,
    occurred_at: Vec<DateTime<Utc>>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Option<Uuid>>,
}

impl Columns {
    fn push(&mut self, r: &AppendRequest, e: &NewEvent, seq: i64) {
        self.event_id.push(e.event_id);
        self.aggregate_type.push(r.aggregate_type);
        self.aggregate_id.push(r.aggregate_id.clone());
        self.sequence.push(seq);
        self.event_type.push(e.event_type);
        self.schema_version.push(e.schema_version);
        self.user_id.push(e.user_id);
        self.payload.push(e.payload.clone());
        self.sealed.push(e.sealed.clone());
        self.occurred_at.push(e.occurred_at);
        self.correlation_id.push(e.correlation_id);
        self.causation_id.push(e.causation_id);
    }
}

/// The connection a loop keeps between rounds (`held`), taken from the pool when it has none.
/// The loop sets `held` to `None` after an error, so a broken connection goes back to the pool
/// (which discards it) and the next round takes another.
///
/// A connection taken from the pool is first rolled back. sqlx 0.8 can return a connection to
/// the pool with the server still inside a transaction: a `begin` cancelled after its BEGIN was
/// sent leaves sqlx believing there is none (its rollback guard checks a depth not yet raised).
/// A statement run there in autocommit would never commit, and a writer would acknowledge it.
/// One `ROLLBACK` per connection taken (not per batch) makes the held connection clean; the
/// server warns "no transaction in progress" when there was none.
pub async fn held_connection<'c>(
    pool: &PgPool,
    held: &'c mut Option<PoolConnection<Postgres>>,
) -> Result<&'c mut PoolConnection<Postgres>, sqlx::Error> {
    let conn = match held.take() {
        Some(conn) => conn,
        None => {
            let mut conn = pool.acquire().await?;
            sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
            conn
        }
    };
    Ok(held.insert(conn))
}

/// An event as stored, with its place in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub cursor: Cursor,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub user_id: Uuid,
    /// The public payload as stored (JSON text): decoded only by those who need it.
    pub payload: String,
    pub sealed: Option<Vec<u8>>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// The payload decoded once by [`StoredEvent::decode_shared`], for the readers that follow.
    pub(crate) decoded: DecodedOnce,
}

/// A payload decoded once and shared by every reader of the same `StoredEvent` (the projector's
/// projections read the same batch). Equality and debug output ignore it: it is derived from
/// `payload`.
#[derive(Clone, Default)]
pub(crate) struct DecodedOnce(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl PartialEq for DecodedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for DecodedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecodedOnce")
    }
}

const SELECT_EVENTS: &str = "SELECT tx_id::text AS tx, position, event_id, aggregate_type, aggregate_id, sequence, \
    event_type, schema_version, user_id, payload::text AS payload, sealed, occurred_at, recorded_at, correlation_id, causation_id FROM events";

/// A position as queries return it: `tx_id::text` (an `xid8`, which sqlx does not decode) and
/// `position`. Every cursor read back from the database goes through here: one that does not
/// parse is an error, never the start of the log.
pub fn cursor_of(tx: &str, position: i64) -> Result<Cursor, sqlx::Error> {
    Ok(Cursor {
        tx_id: tx.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        position,
    })
}

fn stored_event(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    let tx: String = row.try_get("tx")?;
    Ok(StoredEvent {
        cursor: cursor_of(&tx, row.try_get("position")?)?,
        event_id: row.try_get("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        user_id: row.try_get("user_id")?,
        payload: row.try_get("payload")?,
        sealed: row.try_get("sealed")?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        decoded: DecodedOnce::default(),
    })
}

/// Up to `limit` events after `after` in the global order, from committed transactions older
/// than every transaction still in flight — so nothing that commits later can land behind the
/// returned cursor.
pub async fn read_after(conn: &mut PgConnection, after: Cursor, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    read_after_filtered(conn, after, limit, None).await
}

/// The events after the cursor `($1, $2)`, at most `$3`, from transactions older than every
/// transaction still in flight, in the global order (see [`read_after`]).
const AFTER_IN_SAFE_ORDER: &str = "(tx_id, position) > ($1::text::xid8, $2) \
    AND tx_id < oo_log_horizon() ORDER BY tx_id, position LIMIT $3";

/// The events of the types `types` after `after`, at most `limit`, in the safe global order
/// (see [`read_after`]): an export of one kind of event reads nothing else.
pub async fn read_of_types_after(
    conn: &mut PgConnection,
    after: Cursor,
    limit: i64,
    types: &[&str],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("{SELECT_EVENTS} WHERE event_type = ANY($4) AND {AFTER_IN_SAFE_ORDER}");
    let rows = sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .bind(types)
        .fetch_all(conn)
        .await?;
    rows.iter().map(stored_event).collect()
}

/// The latest events of type `event_type` before `before` (all of them with `None`), newest
/// first, at most `limit`: for reading the tail of the log backwards (the promotion gate's
/// window). Only committed events are visible; no order guarantee holds against transactions
/// still in flight, which a window of the latest decisions does not need.
pub async fn read_latest_of_type(
    conn: &mut PgConnection,
    event_type: &str,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let before = before.unwrap_or(Cursor {
        tx_id: u64::MAX,
        position: i64::MAX,
    });
    let sql = format!(
        "{SELECT_EVENTS} WHERE event_type = $1 AND (tx_id, position) < ($2::text::xid8, $3) \
         ORDER BY tx_id DESC, position DESC LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(event_type)
        .bind(before.tx_id.to_string())
        .bind(before.position)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(stored_event).collect()
}

/// The latest `limit` committed events, newest first: the tail of the log as an operator reads
/// it (no order guarantee holds against transactions still in flight).
pub async fn read_latest(conn: &mut PgConnection, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("{SELECT_EVENTS} ORDER BY tx_id DESC, position DESC LIMIT $1");
    let rows = sqlx::query(&sql).bind(limit).fetch_all(conn).await?;
    rows.iter().map(stored_event).collect()
}

/// The events of type `event_type` in the streams `aggregate_ids` of `aggregate_type`, each
/// stream in its order (for joining what later events said of many streams at once).
pub async fn read_in_streams(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_ids: &[String],
    event_type: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND event_type = $3 \
         ORDER BY aggregate_id, sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_ids)
        .bind(event_type)
        .fetch_all(conn)
        .await?;
    rows.iter().map(stored_event).collect()
}

/// Like [`read_after`], but fetches payloads only for the event types in `payloads_of` (the
/// others come with an empty `payload`): a consumer that ignores large events need not pay for
/// reading them.
pub async fn read_after_filtered(
    conn: &mut PgConnection,
    after: Cursor,
    limit: i64,
    payloads_of: Option<&[&str]>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let payload = match payloads_of {
        Some(_) => "CASE WHEN event_type = ANY($4) THEN payload::text ELSE '' END AS payload",
        None => "payload::text AS payload",
    };
    let sql = format!(
        "SELECT tx_id::text AS tx, position, event_id, aggregate_type, aggregate_id, sequence, event_type, schema_version, \
         user_id, {payload}, sealed, occurred_at, recorded_at, correlation_id, causation_id FROM events \
         WHERE {AFTER_IN_SAFE_ORDER}"
    );
    let mut query = sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit);
    if let Some(types) = payloads_of {
        query = query.bind(types);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(stored_event).collect()
}

/// The `UserShredded` events after `after` (their positions and users), up to `limit`, from
/// committed transactions older than every transaction still in flight (as [`read_after`]), so
/// that a consumer can move its cursor to the last one without skipping a later deletion.
pub async fn read_shredded_after(
    conn: &mut PgConnection,
    after: Cursor,
    limit: i64,
) -> Result<Vec<(Cursor, Uuid)>, sqlx::Error> {
    let sql = format!(
        "SELECT tx_id::text AS tx, position, user_id FROM events WHERE event_type = 'UserShredded' AND {AFTER_IN_SAFE_ORDER}"
    );
    let rows: Vec<(String, i64, Uuid)> = sqlx::query_as(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|(tx, position, user)| Ok((cursor_of(&tx, position)?, user)))
        .collect()
}

/// Which of `users` the log has shredded, each with where its (first) committed `UserShredded`
/// stands in the global order.
pub async fn shredded_among(
    conn: &mut PgConnection,
    users: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Cursor>, sqlx::Error> {
    if users.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (e.user_id) e.user_id, e.tx_id::text AS tx, e.position FROM events e \
         WHERE e.event_type = 'UserShredded' AND e.user_id = ANY($1) ORDER BY e.user_id, e.tx_id, e.position",
    )
    .bind(users)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(user, tx, position)| Ok((user, cursor_of(&tx, position)?)))
        .collect()
}

/// Up to `limit` events of one user after `after` (from the start if `None`), in the global
/// order: a page of an export (committed events only; `events_user_order` serves it).
pub async fn read_user_events_after(
    conn: &mut PgConnection,
    user_id: Uuid,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let after = after.unwrap_or(Cursor { tx_id: 0, position: -1 });
    let sql = format!(
        "{SELECT_EVENTS} WHERE user_id = $1 AND (tx_id, position) > ($2::text::xid8, $3) \
         ORDER BY tx_id, position LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(stored_event).collect()
}

/// One event of a stream, by its sequence.
pub async fn read_event(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    let sql = format!("{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3");
    let row = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(stored_event).transpose()
}

/// The events of one stream after `sequence`, in order (used to load aggregates).
pub async fn read_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    after_sequence: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql =
        format!("{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence");
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after_sequence)
        .fetch_all(pool)
        .await?;
    rows.iter().map(stored_event).collect()
}

impl StoredEvent {
    /// The public payload decoded into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The public payload decoded into `T` once: later calls for the same `T` share the first
    /// decoding (a call for another type decodes anew).
    pub fn decode_shared<T>(&self) -> Result<std::sync::Arc<T>, serde_json::Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(done) = self.decoded.0.get() {
            if let Ok(t) = done.clone().downcast::<T>() {
                return Ok(t);
            }
            return self.decode().map(std::sync::Arc::new);
        }
        let t = std::sync::Arc::new(self.decode::<T>()?);
        let _ = self.decoded.0.set(t.clone());
        Ok(t)
    }
}

/// How many events the log holds before `c` (committed, any order).
pub async fn count_before(pool: &PgPool, c: Cursor) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE (tx_id, position) < ($1::text::xid8, $2)")
        .bind(c.tx_id.to_string())
        .bind(c.position)
        .fetch_one(pool)
        .await
}

/// How many events the log holds after `after` (committed, any order): projector lag.
pub async fn count_after(pool: &PgPool, after: Cursor) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)")
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> StreamKey {
        ("tip", format!("t{i}"))
    }

    #[test]
    fn recent_sequences_keep_the_latest_streams_in_bounded_memory() {
        let mut recent = RecentSequences::new(100);
        // Far more streams than two generations hold, as tips are served for hours.
        for i in 0..10_000 {
            recent.record(key(i), 1);
            assert!(recent.len() <= 200, "bounded after {i} streams: {}", recent.len());
        }
        // The last generation's worth is always remembered; the oldest are forgotten.
        for i in 9_900..10_000 {
            assert_eq!(recent.get(&key(i)), Some(1), "stream {i}");
        }
        assert_eq!(recent.get(&key(0)), None);
    }

    #[test]
    fn recent_sequences_keep_the_highest_sequence_across_generations() {
        let mut recent = RecentSequences::new(2);
        recent.record(key(0), 5);
        recent.record(key(1), 1);
        recent.record(key(2), 1); // stream 0 moves to the previous generation
        recent.record(key(0), 3); // an older answer arriving late lowers nothing
        assert_eq!(recent.get(&key(0)), Some(5));
        recent.record(key(0), 7);
        assert_eq!(recent.get(&key(0)), Some(7));
        recent.forget(&key(0));
        assert_eq!(recent.get(&key(0)), None, "a failed append forgets what was known");
    }
}
