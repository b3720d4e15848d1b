//! Black-box and store-level tests against real Postgres: each test gets a fresh database (or a
//! private cluster when it must hold transactions open).

mod admin;
mod architecture;
mod common;
mod deletion;
mod embedded;
mod export;
mod faults;
mod flow;
mod oidc;
mod ope;
mod ordering;
mod policies;
mod privacy;
mod projections;
mod quotas;
mod recommender;
mod relay;
mod store;
mod todoist;
mod todoist_fake;
mod validation;
mod vault;
mod web;
