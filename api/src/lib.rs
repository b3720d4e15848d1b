//! oO's HTTP API and the `oo` binary's building blocks.
//!
//! # Layout
//! - [`Application`]: builds everything `oo serve` runs — database (created and migrated), the
//!   write side, projectors, relay, background jobs, HTTP server — on its own listener (port 0 in
//!   tests), and stops it by cancellation.
//! - [`routes`]: the REST contract; [`auth`]: sessions and the admin token; [`oidc`]: sign-in;
//!   [`error`]: problem bodies; [`json`]: body parsing; [`metrics`]; [`openapi`]; [`config`].
//! - [`jobs`]: the background jobs (the reward join, the rate limiter's clean-up).
//! - [`web`]: the web app's embedded files and the security headers of every answer.
//! - [`cli`]: the other subcommands (`migrate`, `rebuild`, `keys rotate`, `tail`, `simulate`).
//!
//! Invariant: only this crate knows HTTP.

pub mod auth;
pub mod cli;
pub mod config;
pub mod embedded;
pub mod error;
pub mod heap;
pub mod jobs;
pub mod json;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod promotion;
pub mod rebuilds;
pub mod routes;
pub mod state;
pub mod web;

use anyhow::Context;
use config::ServeConfig;
use governor::{Quota, RateLimiter};
use oo_commands::WriteSide;
use oo_commands::store::WriterConfig;
use oo_domain::decision::Policies;
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the population's prior is kept before `/recommend` reads it again.
const PRIOR_MAX_AGE: Duration = Duration::from_secs(1);

/// How long shutdown waits for the background tasks to stop before it aborts them.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Cookies are `Secure` unless oO is reached over plain http on a loopback address (a
/// developer's machine): a browser would not send a `Secure` cookie there.
pub fn cookies_are_secure(public_url: Option<&str>, bind: SocketAddr) -> bool {
    let Some(url) = public_url else {
        return !bind.ip().is_loopback();
    };
    !(url.starts_with("http://") && on_loopback(url))
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// Refuses configurations that expose more than they should: a short admin token (in any mode),
/// and development mode (which signs anyone in by email) anywhere but on loopback — behind an
/// `https://` public URL, or beside a real OpenID provider (a mock provider on loopback is
/// fine: the sign-in tests use one).
fn check_exposure(config: &ServeConfig) -> anyhow::Result<()> {
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty())
        && token.chars().count() < MIN_ADMIN_TOKEN
    {
        anyhow::bail!(
            "OO_ADMIN_TOKEN is {} characters; it must have at least {MIN_ADMIN_TOKEN} (e.g. `openssl rand -hex 32`)",
            token.chars().count()
        );
    }
    if !config.dev {
        return Ok(());
    }
    if config
        .public_url
        .as_deref()
        .is_some_and(|u| u.trim_start().to_ascii_lowercase().starts_with("https://"))
    {
        anyhow::bail!("--dev refuses an https:// OO_PUBLIC_URL: development mode is for a developer's own machine");
    }
    if config.oidc_client_id.is_some() && !on_loopback(&config.oidc_issuer) {
        anyhow::bail!(
            "--dev refuses the OpenID provider {}: development mode signs anyone in by email, so it runs only beside a provider on loopback",
            config.oidc_issuer
        );
    }
    Ok(())
}

/// Whether a URL's host is a loopback address or `localhost`.
fn on_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Everything `oo serve` runs.
pub struct Application {
    listener: TcpListener,
    state: state::AppState,
    background: Vec<JoinHandle<()>>,
    /// Cancelled when the server stops: every background task ends at its next safe point.
    shutdown: CancellationToken,
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
        check_exposure(&config)?;
        let policies = Policies::from_specs(&config.policy, &config.shadow_policies).with_context(|| {
            format!(
                "OO_POLICY {:?}, OO_SHADOW_POLICIES {:?}",
                config.policy, config.shadow_policies
            )
        })?;
        let pool = config.db.connect().await?;
        let serving = Arc::new(promotion::Serving::at_start(&pool, policies, PRIOR_MAX_AGE).await?);
        let write = WriteSide::start(
            pool.clone(),
            config.db.master_key()?,
            WriterConfig {
                writers: config.writers,
                ..WriterConfig::default()
            },
        )
        .await
        .context("cannot open the key vault")?;
        let shutdown = CancellationToken::new();
        let status = oo_projections::status::Status::default();
        let mut background =
            oo_projections::projector::spawn_all(&write.store, oo_projections::all(), status.clone(), shutdown.clone())
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
                write.store.appended(),
                status.clone(),
                shutdown.clone(),
            )));
        }
        // From the safe horizon, not the head: a deletion whose transaction commits late must
        // still drop its key from this process's cache.
        let horizon = oo_commands::store::safe_head(&pool).await?;
        background.push(tokio::spawn(oo_commands::vault::follow_shredding(
            write.vault.clone(),
            write.store.appended(),
            horizon,
            shutdown.clone(),
        )));
        // The connectors: background syncs, tasks closed at the provider from `done`, and the
        // revocation of disconnected tokens.
        let todoist = match (&config.todoist_client_id, &config.todoist_client_secret) {
            (Some(id), Some(secret)) if !id.is_empty() => Some(
                oo_commands::todoist::Todoist::new(oo_commands::todoist::TodoistConfig {
                    client_id: id.clone(),
                    client_secret: SecretString::from(secret.clone()),
                    auth_url: config.todoist_auth_url.clone(),
                    api_url: config.todoist_api_url.clone(),
                    timeout: Duration::from_millis(config.todoist_timeout_ms.max(1)),
                })
                .context("cannot make an HTTP client for Todoist")?,
            ),
            (Some(id), None) if !id.is_empty() => {
                anyhow::bail!("OO_TODOIST_CLIENT_ID is set without OO_TODOIST_CLIENT_SECRET: set both, or neither")
            }
            _ => None,
        };
        let locks = oo_commands::db::connect_lazy(
            config.db.url(),
            config.todoist_parallel_syncs.max(1) as u32 + 2,
            Duration::from_secs(60),
        )?;
        let connectors = oo_commands::connections::Connectors::new(
            write.clone(),
            locks,
            todoist,
            oo_commands::connections::ConnectorSettings {
                sync_interval: Duration::from_secs(config.todoist_sync_secs.max(1)),
                parallel_syncs: config.todoist_parallel_syncs.max(1),
                poll: Duration::from_millis(config.connector_poll_ms.max(10)),
            },
        );
        if connectors.todoist().is_some() {
            background.push(tokio::spawn(connectors.clone().run_syncs(shutdown.clone())));
            background.push(tokio::spawn(connectors.clone().run_closer(shutdown.clone())));
            background.push(tokio::spawn(connectors.clone().run_revoker(shutdown.clone())));
        }
        // The reward join: settles timeouts and completions of todos off the request path.
        let reward_join = Arc::new(std::sync::Mutex::new(jobs::JoinStatus::default()));
        background.push(tokio::spawn(jobs::run_reward_join(
            pool.clone(),
            status.clone(),
            write.tips.clone(),
            Duration::from_secs(config.settle_interval_secs.max(1)),
            reward_join.clone(),
            shutdown.clone(),
        )));
        let per_second = NonZeroU32::new(config.rate_limit.per_second).context("rate limit must be positive")?;
        let burst = NonZeroU32::new(config.rate_limit.burst).context("burst must be positive")?;
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)));
        let anon = config.anon_rate_limit;
        let anon_limiter = Arc::new(RateLimiter::keyed(
            Quota::per_second(NonZeroU32::new(anon.per_second).context("rate limit must be positive")?)
                .allow_burst(NonZeroU32::new(anon.burst).context("burst must be positive")?),
        ));
        // Promotions made by another process switch this one when its projection reads them.
        background.push(tokio::spawn(promotion::follow(
            serving.clone(),
            pool.clone(),
            shutdown.clone(),
        )));
        let cookie_secure = cookies_are_secure(config.public_url.as_deref(), config.bind);
        let listener = TcpListener::bind(config.bind).await.map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "cannot listen on {}: something else listens there (another oO?). Stop it, or choose \
                     another address with --bind (OO_BIND), e.g. --bind 127.0.0.1:8081, or port 0 for any free one",
                    config.bind
                )
            } else {
                format!("cannot listen on {}", config.bind)
            };
            anyhow::Error::new(e).context(why)
        })?;
        let metrics = Arc::new(metrics::Metrics::new(write.store.metrics.clone()));
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let max_in_flight = config.max_in_flight.max(1);
        let rebuilds = Arc::new(rebuilds::Rebuilds::new(config.db.url())?);
        let state = state::AppState {
            pool,
            write,
            status,
            config: Arc::new(config),
            admin_token,
            limiter,
            anon_limiter,
            admin_failures: Arc::default(),
            health: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            metrics,
            serving: serving.clone(),
            rebuilds,
            connectors,
            reward_join,
            cookie_secure,
            oidc: Arc::default(),
            public_url,
        };
        background.push(tokio::spawn(jobs::clean_rate_limiters(state.clone(), shutdown.clone())));
        // A deletion interrupted by a crash is completed before anything else is served, and
        // one interrupted otherwise within a sweep period.
        jobs::complete_deletions(&state.write, &state.pool)
            .await
            .context("cannot complete an interrupted deletion")?;
        background.push(tokio::spawn(jobs::sweep_deletions(
            state.write.clone(),
            state.pool.clone(),
            Duration::from_secs(state.config.deletion_sweep_secs.max(1)),
            shutdown.clone(),
        )));
        Ok(Self {
            listener,
            state,
            background,
            shutdown,
            generated_admin_token,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn pool(&self) -> PgPool {
        self.state.pool.clone()
    }

    /// Serves until `shutdown` completes, then cancels the background tasks and waits for them
    /// to stop (those still running after [`STOP_GRACE`] are aborted).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = routes::router(self.state.clone());
        let header_timeout = Duration::from_secs(self.state.config.header_timeout_secs.max(1));
        let result = serve(self.listener, router, header_timeout, shutdown).await;
        self.shutdown.cancel();
        for mut task in self.background {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                tracing::warn!("a background task did not stop within {STOP_GRACE:?}; aborting it");
                task.abort();
            }
        }
        result.context("the HTTP server failed")
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish (for up to [`STOP_GRACE`]). axum's own `serve` sets no deadline for reading a request's
/// headers, so a client that sends half a header holds its connection for ever; here hyper closes
/// it after `header_timeout`.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The peer's address, for the limits kept per client address.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {STOP_GRACE:?}; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cookies_are_secure;

    #[test]
    fn dev_mode_and_short_admin_tokens_are_refused_where_they_expose_too_much() {
        use super::check_exposure;
        use crate::config::ServeConfig;
        let base = || {
            let mut c = ServeConfig::for_database("postgres:///x", std::env::temp_dir());
            c.dev = true;
            c
        };
        assert!(check_exposure(&base()).is_ok(), "--dev with the defaults");
        let mut short = base();
        short.admin_token = Some("too-short".into());
        assert!(check_exposure(&short).is_err());
        short.dev = false;
        assert!(check_exposure(&short).is_err(), "in every mode");
        let mut https = base();
        https.public_url = Some("https://oo.example.org".into());
        assert!(check_exposure(&https).is_err());
        let mut google = base();
        google.oidc_client_id = Some("id".into());
        assert!(check_exposure(&google).is_err(), "a real provider");
        google.oidc_issuer = "http://127.0.0.1:8000/oidc".into();
        assert!(check_exposure(&google).is_ok(), "a mock provider on loopback");
        google.dev = false;
        google.oidc_issuer = "https://accounts.google.com".into();
        assert!(check_exposure(&google).is_ok(), "production mode with a real provider");
    }

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
