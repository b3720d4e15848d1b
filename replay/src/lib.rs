//! Running oO's decisions offline: the log as logged bandit feedback ([`export`], in the
//! [`logged`] format of DESIGN section 12), and the simulator ([`simulate`]), which drives a
//! synthetic population through the real write side, the real projector and the real decision
//! path, once per policy, to show how much each one learns.
//!
//! # Layout
//! - [`logged`]: one decision a record (ids and numbers only), read from JSON lines.
//! - [`columnar`]: the same records as Parquet (one arrow schema for both formats).
//! - [`export`]: the store's decisions with their settled rewards, streamed in the log's order.
//! - [`evaluate`]: candidate policies run over logged decisions (the very code `/recommend`
//!   decides with) and the reward model; [`ope`]: the estimators, intervals and diagnostics.
//! - [`gate`]: the promotion gate — a shadow's offline evidence against the serving policy.
//! - [`synthetic`]: seeded logged decisions for tests and benchmarks.
//! - [`plot`]: the report as SVG (plotters).
//! - [`recompute`]: a logged decision's distributions computed again from the log alone.
//! - [`simulate`]: the driver (hours, sessions, the reward join at each boundary), the report
//!   and its table and plot.
//! - [`simulate::world`]: the synthetic population and its hidden preferences.
//!
//! Invariant: this crate knows no HTTP; it reads and writes through `commands` and
//! `projections` like the server does.

pub mod columnar;
pub mod evaluate;
pub mod export;
pub mod gate;
pub mod logged;
pub mod ope;
pub mod plot;
pub mod recompute;
pub mod simulate;
pub mod synthetic;
