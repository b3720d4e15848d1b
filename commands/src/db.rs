//! The database connection every process of oO opens: the database created if it is missing,
//! the migrations run, and the session settings our connections need ([`SESSION_SETTINGS`]).

use sqlx::PgPool;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("not a Postgres URL")]
    BadUrl(#[source] sqlx::Error),
    #[error("cannot reach Postgres")]
    Unreachable(#[source] sqlx::Error),
    #[error("cannot create the database")]
    Create(#[source] sqlx::Error),
    #[error("cannot connect to Postgres")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Connects to the database at `url` with a pool of `max_connections`, creating the database
/// if it is missing, and runs the migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    if !sqlx::Postgres::database_exists(url)
        .await
        .map_err(ConnectError::Unreachable)?
    {
        sqlx::Postgres::create_database(url)
            .await
            .map_err(ConnectError::Create)?;
        tracing::info!("created the database");
    }
    let pool = connect(url, max_connections).await?;
    crate::MIGRATOR.run(&pool).await.map_err(ConnectError::Migrate)?;
    realign_log_order(&pool).await.map_err(ConnectError::Migrate)?;
    Ok(pool)
}

/// After a logical restore into a cluster whose transaction counter is behind the log's largest
/// `tx_id`, raises the log's order shift (`log_order`, migration 0015) so that the next event
/// sorts after every restored one; returns by how much it was raised (0 almost always). Takes
/// the events table exclusively while it looks, so no append runs meanwhile.
pub async fn realign_log_order(pool: &PgPool) -> Result<u64, sqlx::migrate::MigrateError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let behind: Option<String> = sqlx::query_scalar(
        "SELECT (max(tx_id)::text::numeric - oo_log_now()::text::numeric + 1)::text FROM events \
         HAVING max(tx_id)::text::numeric >= oo_log_now()::text::numeric",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(behind) = behind else {
        tx.rollback().await?;
        return Ok(0);
    };
    let shift: String =
        sqlx::query_scalar("UPDATE log_order SET shift = shift + $1::numeric WHERE id = 1 RETURNING shift::text")
            .bind(&behind)
            .fetch_one(&mut *tx)
            .await?;
    // The shift written into the default: no function call per appended row. A number only
    // (checked), so it can be spliced into DDL, which takes no bind parameters.
    if !shift.bytes().all(|b| b.is_ascii_digit()) {
        return Err(sqlx::Error::Protocol(format!("unexpected log order shift {shift:?}")).into());
    }
    sqlx::query(&format!(
        "ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT ((pg_current_xact_id()::text::numeric + {shift})::text::xid8)"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let by = behind.parse().unwrap_or(u64::MAX);
    tracing::warn!(
        shift = by,
        "this cluster's transaction counter is behind the log (restored from a logical dump?): the log's order \
         was shifted so that new events sort after the restored ones"
    );
    Ok(by)
}

/// Connects to the existing database at `url` with a pool of `max_connections`, changing
/// nothing (for readers such as exports).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    // sqlx pings a connection when it goes back to the pool (not configurable in 0.8), and by
    // default again when it is taken out: a round trip on each side of every query. The second
    // ping is dropped; a connection that broke while idle fails its next query, which the pool
    // then discards.
    pool_options(max_connections)
        .connect_with(connect_options(url)?)
        .await
        .map_err(ConnectError::Connect)
}

/// A pool of at most `max_connections` to the existing database at `url` that opens none until
/// one is asked for and closes those left idle for `idle`: for work that comes now and then
/// and must not take its connections from the requests' pool (a server's rebuilds).
pub fn connect_lazy(url: &str, max_connections: u32, idle: Duration) -> Result<PgPool, ConnectError> {
    Ok(pool_options(max_connections)
        .min_connections(0)
        .idle_timeout(idle)
        .connect_lazy_with(connect_options(url)?))
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .after_release(|conn, _| Box::pin(leave_no_transaction_open(conn)))
        .acquire_timeout(Duration::from_secs(5))
}

/// Ends, as a connection goes back to the pool, a transaction the server still has open on it,
/// so that every connection taken from a pool starts outside one. A task cancelled while sqlx
/// 0.8 opens a transaction (after `BEGIN` was sent, before its answer) leaves sqlx believing
/// there is none: its rollback guard checks a depth not yet raised. The next borrower's
/// autocommit writes would then run inside that transaction, be acknowledged, and vanish when it
/// ends; meanwhile it holds back every reader of the log. One query tells: outside a transaction
/// block a statement's transaction starts with it (`now()` is its own start), inside one it
/// started earlier. `ROLLBACK` runs only then, so the server logs no "no transaction in
/// progress" warning for every release.
async fn leave_no_transaction_open(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    // One simple-protocol message: outside a transaction block, the statement's transaction
    // starts with that very message. (A prepared statement's Parse, Bind and Execute are messages
    // of their own, and under load the transaction's start and the latest message's receipt
    // differ: every release looked like a leak, and was rolled back for nothing.)
    // (sqlx sends a bare `&str` without arguments as a simple Query.)
    let row = sqlx::Executor::fetch_one(&mut *conn, "SELECT now() <> statement_timestamp()").await?;
    let open: bool = sqlx::Row::try_get(&row, 0)?;
    if open {
        sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
        tracing::warn!("a connection came back to the pool inside a transaction; rolled it back");
    }
    Ok(true)
}

/// The URL's options, plus the session settings of [`SESSION_SETTINGS`] that the URL does not
/// set itself:
/// - `backend_flush_after`: our connections write many data pages when they evict them from a
///   small `shared_buffers`, and left to itself the kernel writes those out in bursts every few
///   seconds, during which the WAL flush that every durable append waits on takes tens of
///   milliseconds. Asking for the writes early, every 256 kB, keeps that flush short
///   (docs/adr/0010-smooth-writeback.md).
/// - `idle_in_transaction_session_timeout`: a task cancelled while sqlx 0.8 is opening a
///   transaction (a client that hangs up, a projector stopped) can put a connection back in the
///   pool with the server still inside that transaction. Until the connection is used again it
///   holds back every reader of the log (which reads only below the oldest open transaction).
///   None of our transactions waits on anything but the database, so the server ends any that
///   sits idle this long.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, ConnectError> {
    let options: PgConnectOptions = url.parse().map_err(ConnectError::BadUrl)?;
    let ours: Vec<(&str, &str)> = SESSION_SETTINGS
        .iter()
        .copied()
        .filter(|(name, _)| !url.contains(name))
        .collect();
    Ok(if ours.is_empty() {
        options
    } else {
        options.options(ours)
    })
}

/// The session settings [`connect_options`] adds.
pub const SESSION_SETTINGS: [(&str, &str); 2] = [
    ("backend_flush_after", "256kB"),
    ("idle_in_transaction_session_timeout", "10s"),
];
