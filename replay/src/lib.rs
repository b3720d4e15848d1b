//! Running oO's decisions offline: today, the simulator ([`simulate`]), which drives a
//! synthetic population through the real write side, the real projector and the real decision
//! path, once per policy, to show how much each one learns.
//!
//! # Layout
//! - [`simulate`]: the driver (hours, sessions, the reward join at each boundary), the report
//!   and its table and plot.
//! - [`simulate::world`]: the synthetic population and its hidden preferences.
//!
//! Invariant: this crate knows no HTTP; it reads and writes through `commands` and
//! `projections` like the server does.

pub mod simulate;
