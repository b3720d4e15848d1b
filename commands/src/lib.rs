//! The command side of oO and the event store it owns.
//!
//! # Layout
//! - [`store`]: the Postgres event store — group-committed appends with optimistic concurrency
//!   and idempotent ingestion, and the catch-up reader (safe global order) everyone else reads
//!   the log through.
//! - [`cursor`]: positions in the global order, opaque to clients.
//! - [`aggregate`]: executing commands (cqrs-es aggregate model, our repository and snapshots).
//! - [`sealing`]: AEAD sealing of personal fields; [`vault`]: per-user data keys wrapped with age.
//! - [`identity`]: registration, the blind index and sessions.
//! - [`reward_join`]: the process manager settling rewards by timeout or completion.
//! - [`connections`]: people's connections to providers (a process manager driven by requests
//!   and the log: connect, sync, close, disconnect, revoke); [`todoist`]: Todoist's HTTP API.
//! - [`serving`]: serving a tip (`TipServed`) and opening the text it shows.
//! - [`write_side`]: the store writer, the vault and the repositories, started as one value.
//! - [`db`]: the database connection, its migrations and session settings.
//!
//! Invariants: only this crate appends events; it serves no HTTP (it calls providers' APIs as a
//! client) and knows no projection table (what
//! the reward join settles comes in as [`reward_join::DueTip`]s).

pub mod aggregate;
pub mod connections;
pub mod cursor;
pub mod db;
pub mod identity;
pub mod reward_join;
pub mod sealing;
pub mod serving;
pub mod store;
pub mod todoist;
pub mod vault;
pub mod write_side;

pub use write_side::WriteSide;

/// The migrations of every table (event store, operational tables, projections).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
