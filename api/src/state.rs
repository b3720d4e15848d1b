//! The application state every handler reads through `State`.

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use governor::DefaultKeyedRateLimiter;
use oo_commands::WriteSide;
use oo_projections::status::Status;
use secrecy::SecretString;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The store writer, the vault and the repositories.
    pub write: WriteSide,
    pub status: Status,
    pub config: Arc<ServeConfig>,
    pub admin_token: Option<Arc<SecretString>>,
    pub limiter: Arc<DefaultKeyedRateLimiter<Uuid>>,
    /// Per client address, for the routes that take neither a session nor the admin token.
    pub anon_limiter: Arc<DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Failed admin-token attempts per client address.
    pub admin_failures: Arc<crate::auth::AdminFailures>,
    /// Slots for requests served at once (`OO_MAX_IN_FLIGHT`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// `/ready`'s and `/metrics`' figures, computed at most once a second.
    pub health: Arc<crate::routes::health::HealthCache>,
    pub metrics: Arc<Metrics>,
    /// The serving and shadow policies, and what deciding reads (with the prior and models
    /// cached); swapped whole by a promotion.
    pub serving: Arc<crate::promotion::Serving>,
    /// The connectors (Todoist): connecting, syncs, closes and revocations.
    pub connectors: oo_commands::connections::Connectors,
    /// The rebuilds asked for over HTTP, run one at a time on connections of their own.
    pub rebuilds: Arc<crate::rebuilds::Rebuilds>,
    /// What the reward join last did (`GET /admin/projections`).
    pub reward_join: Arc<Mutex<crate::jobs::JoinStatus>>,
    pub cookie_secure: bool,
    pub oidc: Arc<crate::oidc::Oidc>,
    /// The base of every URL oO hands out (OO_PUBLIC_URL, or the address it listens on).
    pub public_url: String,
}
