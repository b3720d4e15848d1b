//! oO's domain: what the system knows and decides, with no I/O.
//!
//! # Layout
//! - [`ids`]: identifiers (user, tip, signal, event) as newtypes.
//! - [`signal`]: the shapes of the signals people's apps send, parsed into valid values.
//! - [`event`]: the [`event::Event`] trait every stored fact implements (type name, schema version,
//!   personal fields) and the [`event::Aggregate`] trait (pure `decide` + `apply`).
//! - [`user`], [`signals`], [`tip`]: the aggregates, their commands, events and rules.
//! - [`reward`]: reactions and the reward each one is worth.
//! - [`advice`]: the built-in advice library shipped as data.
//! - [`personal`]: the sealed/redacted markers and where each personal field lives.
//! - [`features`]: the feature vector of a candidate in a user's context.
//! - [`policy`]: the policy trait and the policies' math.
//! - [`promotion`]: the `Policy` aggregate — the serving line-up and the promotions that change
//!   it, each with its offline evidence (a system stream: no person's).
//! - [`decision`]: the pure decision — a person's candidates and context, the serving policy's
//!   draw and the shadows' picks, the record `TipServed` logs.
//!
//! Invariant: this crate knows no SQL, HTTP, protobuf, clock, randomness source or async runtime.
//! Time, ids and random seeds come in with the commands.

pub mod advice;
pub mod bandit;
pub mod connection;
pub mod decision;
pub mod event;
pub mod features;
pub mod ids;
pub mod personal;
pub mod policy;
pub mod promotion;
pub mod reward;
pub mod signal;
pub mod signals;
pub mod tip;
pub mod user;
