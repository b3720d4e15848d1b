//! oO's HTTP API and the `oo` binary's building blocks.
//!
//! # Layout
//! - [`Application`]: builds everything `oo serve` runs — database (created and migrated),
//!   vault, event store writer, projectors, HTTP server — on its own listener (port 0 in tests).
//! - [`routes`]: the REST contract; [`auth`]: sessions and the admin token; [`error`]: problem
//!   bodies; [`json`]: body parsing; [`metrics`]; [`openapi`]; [`config`].
//! - [`cli`]: the other subcommands (`migrate`, `rebuild`, `bench`).
//!
//! Invariant: only this crate knows HTTP.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod json;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod recommender;
pub mod routes;
pub mod simulate;
pub mod state;

use anyhow::Context;
use config::{DbConfig, ServeConfig};
use governor::{Quota, RateLimiter};
use oo_commands::aggregate::Repository;
use oo_commands::store::{EventStore, WriterConfig};
use oo_commands::vault::{MasterKey, MasterKeySource, Vault};
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Connects to the database, creating it if missing, and runs the migrations.
pub async fn connect_and_migrate(db: &DbConfig) -> anyhow::Result<PgPool> {
    if !sqlx::Postgres::database_exists(&db.database_url)
        .await
        .context("cannot reach Postgres")?
    {
        sqlx::Postgres::create_database(&db.database_url)
            .await
            .context("cannot create the database")?;
        tracing::info!("created the database");
    }
    // sqlx pings a connection when it goes back to the pool (not configurable in 0.8), and by
    // default again when it is taken out: a round trip on each side of every query. The second
    // ping is dropped; a connection that broke while idle fails its next query, which the pool
    // then discards.
    let pool = PgPoolOptions::new()
        .max_connections(db.db_pool)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options(&db.database_url)?)
        .await
        .context("cannot connect to Postgres")?;
    oo_commands::MIGRATOR.run(&pool).await.context("migrations failed")?;
    Ok(pool)
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
pub fn connect_options(url: &str) -> anyhow::Result<sqlx::postgres::PgConnectOptions> {
    let options: sqlx::postgres::PgConnectOptions = url.parse().context("not a Postgres URL")?;
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

/// Loads the master key, warning loudly when it is a development key.
pub fn load_master_key(db: &DbConfig) -> anyhow::Result<MasterKey> {
    let (key, source) =
        MasterKey::load(db.master_key.as_deref(), &db.data_dir).context("cannot load the master key")?;
    if let MasterKeySource::DataDir(path) = source {
        tracing::warn!(
            path = %path.display(),
            "OO_MASTER_KEY is not set: using a DEVELOPMENT master key kept next to the data. Anyone who can read \
             that file can read every user's personal data. Set OO_MASTER_KEY in production."
        );
    }
    Ok(key)
}

/// Waits until every projection has passed the head of the log as it is now (or `timeout`);
/// returns whether they did.
pub async fn wait_for_head(
    pool: &PgPool,
    status: &oo_projections::status::Status,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let head = oo_commands::store::head(pool).await?;
    Ok(oo_projections::projector::wait_for(pool, status, &oo_projections::names(), head, timeout).await?)
}

/// One pass of the reward join that settled what was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinPass {
    /// The head of the log that `reward_pending` had passed when the pass read it.
    pub caught_up_to: oo_commands::cursor::Cursor,
    pub settled: oo_commands::reward_join::Settled,
}

/// What the reward join of this process last did, shown by `GET /admin/projections` as the
/// consumer `reward_join`.
#[derive(Debug, Clone, Default)]
pub struct JoinStatus {
    /// The head its last settling pass had caught up to (`None` before the first).
    pub position: Option<oo_commands::cursor::Cursor>,
    /// The last pass's error, cleared by the next pass that settles.
    pub last_error: Option<String>,
}

/// The name of the reward join in `GET /admin/projections`.
pub const REWARD_JOIN: &str = "reward_join";

/// One pass of the reward join (`oo_commands::reward_join::settle_due`, at most `limit` tips),
/// on a `reward_pending` that has applied every event stored before the pass began: a snoozed
/// todo's completion that the projector has not applied yet would otherwise be settled as a
/// timeout. `None`: the projection did not catch up within `wait`, and nothing was settled.
pub async fn settle_rewards(
    pool: &PgPool,
    status: &oo_projections::status::Status,
    tips: &Repository<oo_domain::tip::Tip>,
    limit: i64,
    wait: Duration,
) -> anyhow::Result<Option<JoinPass>> {
    // `now` before the head: whatever was stored before `now` is at or below the head.
    let now = chrono::Utc::now();
    let head = oo_commands::store::head(pool).await?;
    if !oo_projections::projector::wait_for(pool, status, &["reward_pending"], head, wait).await? {
        return Ok(None);
    }
    let settled = oo_commands::reward_join::settle_due(pool, tips, now, limit).await?;
    Ok(Some(JoinPass {
        caught_up_to: head,
        settled,
    }))
}

/// Runs a pass of the reward join every `every`, and reports each pass in `report`.
async fn run_reward_join(
    pool: PgPool,
    status: oo_projections::status::Status,
    tips: Repository<oo_domain::tip::Tip>,
    every: Duration,
    report: Arc<std::sync::Mutex<JoinStatus>>,
) {
    loop {
        let pass = settle_rewards(&pool, &status, &tips, 1_000, Duration::from_secs(10)).await;
        // The lock is held by this block only, never across an `await`.
        {
            let mut report = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match pass {
                Ok(Some(JoinPass { caught_up_to, settled })) => {
                    if settled.completions + settled.timeouts > 0 {
                        tracing::info!(
                            completions = settled.completions,
                            timeouts = settled.timeouts,
                            "rewards settled"
                        );
                    }
                    *report = JoinStatus {
                        position: Some(caught_up_to),
                        last_error: None,
                    };
                }
                Ok(None) => tracing::warn!("reward_pending is behind the log; the reward join waits for it"),
                Err(e) => {
                    tracing::warn!(error = %e, "the reward join failed; retrying");
                    report.last_error = Some(e.to_string());
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The recommender for a serving policy spec and `;`-separated shadow specs.
pub fn recommender_of(policy: &str, shadows: &str) -> anyhow::Result<recommender::Recommender> {
    let serving = oo_domain::policy::from_spec(policy).with_context(|| format!("OO_POLICY {policy:?}"))?;
    let shadows = shadows
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            oo_domain::policy::from_spec(s)
                .map(Arc::from)
                .with_context(|| format!("OO_SHADOW_POLICIES {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(recommender::Recommender::new(
        Arc::from(serving),
        shadows,
        Duration::from_secs(1),
    ))
}

/// Cookies are `Secure` unless oO is reached over plain http on a loopback address (a
/// developer's machine): a browser would not send a `Secure` cookie there.
pub fn cookies_are_secure(public_url: Option<&str>, bind: SocketAddr) -> bool {
    let Some(url) = public_url else {
        return !bind.ip().is_loopback();
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// Everything `oo serve` runs.
pub struct Application {
    listener: TcpListener,
    state: state::AppState,
    background: Vec<JoinHandle<()>>,
    /// The admin token `--dev` generated (printed once at start).
    pub generated_admin_token: Option<String>,
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        if config.dev && !config.bind.ip().is_loopback() {
            anyhow::bail!(
                "--dev refuses to listen on {}: development mode is for loopback addresses only",
                config.bind
            );
        }
        let recommender = Arc::new(recommender_of(&config.policy, &config.shadow_policies)?);
        let pool = connect_and_migrate(&config.db).await?;
        let master = load_master_key(&config.db)?;
        let vault = Vault::open(pool.clone(), master)
            .await
            .context("cannot open the key vault")?;
        let store = EventStore::start(
            pool.clone(),
            WriterConfig {
                writers: config.writers,
                ..WriterConfig::default()
            },
        );
        let status = oo_projections::status::Status::default();
        let mut background =
            oo_projections::projector::spawn_all(pool.clone(), oo_projections::all(), store.appended(), status.clone())
                .await?;

        let mut generated_admin_token = None;
        let admin_token = match (&config.admin_token, config.dev) {
            (Some(t), _) if !t.is_empty() => Some(Arc::new(SecretString::from(t.clone()))),
            (_, true) => {
                let mut bytes = [0u8; 24];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let token = hex::encode(bytes);
                generated_admin_token = Some(token.clone());
                Some(Arc::new(SecretString::from(token)))
            }
            _ => None,
        };
        if let Some(url) = &config.nats_url {
            let mut relay = oo_projections::relay::RelayConfig::new(url);
            relay.duplicate_window = Duration::from_secs(config.nats_duplicate_window_secs);
            relay.max_age = Duration::from_secs(config.nats_max_age_secs);
            background.push(tokio::spawn(oo_projections::relay::run(
                pool.clone(),
                relay,
                store.appended(),
                status.clone(),
            )));
        }
        let head = store.head().await?;
        background.push(tokio::spawn(oo_commands::vault::follow_shredding(
            vault.clone(),
            store.appended(),
            head,
        )));
        // The reward join: settles timeouts and completions of snoozed todos off the request path.
        let reward_join = Arc::new(std::sync::Mutex::new(JoinStatus::default()));
        background.push(tokio::spawn(run_reward_join(
            pool.clone(),
            status.clone(),
            Repository::new(store.clone(), vault.clone()),
            Duration::from_secs(config.settle_interval_secs.max(1)),
            reward_join.clone(),
        )));
        let per_second = NonZeroU32::new(config.rate_limit.per_second).context("rate limit must be positive")?;
        let burst = NonZeroU32::new(config.rate_limit.burst).context("burst must be positive")?;
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)));
        let l = limiter.clone();
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                l.retain_recent();
            }
        }));
        let cookie_secure = cookies_are_secure(config.public_url.as_deref(), config.bind);
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        let metrics = Arc::new(metrics::Metrics::new(store.metrics.clone()));
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let state = state::AppState {
            users: Repository::new(store.clone(), vault.clone()),
            signals: Repository::new(store.clone(), vault.clone()),
            tips: Repository::new(store.clone(), vault.clone()),
            pool,
            store,
            vault,
            status,
            config: Arc::new(config),
            admin_token,
            limiter,
            metrics,
            recommender,
            rebuilding: Arc::default(),
            reward_join,
            cookie_secure,
            oidc: Arc::default(),
            public_url,
        };
        // A deletion interrupted by a crash is completed before anything else is served.
        for user_id in oo_commands::identity::interrupted_deletions(&state.pool).await? {
            let meta = oo_commands::aggregate::Meta::new(chrono::Utc::now());
            oo_commands::identity::delete_user(&state.users, &state.vault, &state.pool, user_id, meta)
                .await
                .map_err(|e| anyhow::anyhow!("cannot complete an interrupted deletion: {e}"))?;
            tracing::info!("completed an account deletion that was interrupted");
        }
        Ok(Self {
            listener,
            state,
            background,
            generated_admin_token,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn pool(&self) -> PgPool {
        self.state.pool.clone()
    }

    /// Serves until `shutdown` completes, then stops the background tasks.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = routes::router(self.state.clone());
        let result = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        for h in &self.background {
            h.abort();
        }
        result.context("the HTTP server failed")
    }
}

#[cfg(test)]
mod tests {
    use super::cookies_are_secure;

    #[test]
    fn cookies_are_secure_unless_plain_http_on_loopback() {
        let any = "0.0.0.0:8080".parse().expect("addr");
        let lo = "127.0.0.1:8080".parse().expect("addr");
        assert!(cookies_are_secure(Some("https://oo.example.org"), any));
        assert!(
            cookies_are_secure(Some("http://oo.example.org"), any),
            "plain http elsewhere is still Secure"
        );
        assert!(!cookies_are_secure(Some("http://127.0.0.1:8080"), lo));
        assert!(!cookies_are_secure(Some("http://localhost:8080/"), lo));
        assert!(!cookies_are_secure(Some("http://[::1]:8080"), lo));
        assert!(!cookies_are_secure(None, lo));
        assert!(cookies_are_secure(None, any));
    }
}
