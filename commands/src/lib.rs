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
//!
//! Invariant: only this crate appends events.

pub mod aggregate;
pub mod cursor;
pub mod identity;
pub mod reward_join;
pub mod sealing;
pub mod store;
pub mod vault;

/// The migrations of every table (event store, operational tables, projections).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
