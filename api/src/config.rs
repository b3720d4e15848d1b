//! Typed configuration: CLI flags with `OO_*` environment variables behind them, each with a
//! safe default. Secrets are never printed (`hide_env_values`), except the admin token that
//! `--dev` generates, which it prints once so that a developer can use it.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What every subcommand that touches the database needs.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// Postgres connection URL (default: `postgres:///oo`, the local socket, database `oo`, the
    /// current OS user; with `--dev`, when nothing answers there, a private cluster under the
    /// data directory).
    #[arg(long, env = "OO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in the pool (default: four per core, at least 8). Three are held for good by
    /// the two writers and the projector.
    #[arg(long, env = "OO_DB_POOL", default_value_t = default_db_pool())]
    pub db_pool: u32,
    /// Where development mode keeps what it generates (the dev master key).
    #[arg(long, env = "OO_DATA_DIR", default_value = ".oo")]
    pub data_dir: PathBuf,
    /// The master key: an age identity (`AGE-SECRET-KEY-1…`) or a file holding one. Without it a
    /// development key is generated into the data directory, with a warning.
    #[arg(long, env = "OO_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

/// The database URL when none is configured.
pub const DEFAULT_DATABASE_URL: &str = "postgres:///oo";

impl DbConfig {
    /// The configured database URL, or the default.
    pub fn url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    /// Connects, creating the database if it is missing, and runs the migrations.
    pub async fn connect(&self) -> anyhow::Result<sqlx::PgPool> {
        oo_commands::db::connect_and_migrate(self.url(), self.db_pool)
            .await
            .map_err(|e| {
                let why = explain_connect_error(self.url(), &e);
                anyhow::Error::new(e).context(why)
            })
    }

    /// Loads the master key, warning loudly when it is a development key.
    pub fn master_key(&self) -> anyhow::Result<oo_commands::vault::MasterKey> {
        use anyhow::Context;
        use oo_commands::vault::{MasterKey, MasterKeySource};
        let (key, source) = MasterKey::load(self.master_key.as_deref(), &self.data_dir).with_context(|| match self
            .master_key
            .as_deref()
        {
            Some(c) if c.trim_start().starts_with("AGE-SECRET-KEY-") => {
                "cannot load the master key: OO_MASTER_KEY is not a valid age identity".to_owned()
            }
            Some(c) => format!(
                "cannot load the master key from OO_MASTER_KEY: it is neither an age identity \
                     (AGE-SECRET-KEY-1…) nor a readable file holding one ({c}). `age-keygen -o master.key` makes \
                     one (Debian/Ubuntu: `sudo apt-get install age`; macOS: `brew install age`)"
            ),
            None => format!(
                "cannot load the development master key {}: make the data directory readable and \
                     writable, or choose another with --data-dir (OO_DATA_DIR)",
                self.data_dir.join("master.key").display()
            ),
        })?;
        if let MasterKeySource::DataDir(path) = source {
            tracing::warn!(
                path = %path.display(),
                "OO_MASTER_KEY is not set: using a DEVELOPMENT master key kept next to the data. Anyone who can read \
                 that file can read every user's personal data. Set OO_MASTER_KEY in production."
            );
        }
        Ok(key)
    }
}

/// What a newcomer needs to know when the database cannot be opened: what was tried, why it
/// failed, and the command that fixes it.
pub fn explain_connect_error(url: &str, e: &oo_commands::db::ConnectError) -> String {
    use oo_commands::db::ConnectError;
    let shown = redact(url);
    let code = |e: &sqlx::Error| e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
    match e {
        ConnectError::BadUrl(_) => format!("{shown} is not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE)"),
        ConnectError::Unreachable(s) | ConnectError::Connect(s)
            if matches!(s, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) =>
        {
            format!(
                "cannot reach PostgreSQL at {shown}: nothing answers there. Start the server: on Debian/Ubuntu \
                 `sudo systemctl start postgresql` (installed by `sudo apt-get install postgresql`), on macOS \
                 `brew services start postgresql@16`. Or run `oo serve --dev` with no database URL: it then starts \
                 a private cluster of its own under the data directory"
            )
        }
        ConnectError::Unreachable(s) | ConnectError::Connect(s)
            if matches!(code(s).as_deref(), Some("28000" | "28P01")) =>
        {
            format!(
                "PostgreSQL at {shown} refuses the role: create it with the right to create databases \
                 (`sudo -u postgres createuser --createdb \"$USER\"`), or name another role in the URL"
            )
        }
        ConnectError::Create(s) if code(s).as_deref() == Some("42501") => format!(
            "the role of {shown} may not create the database: create it for that role \
             (`sudo -u postgres createdb -O \"$USER\" oo`), or let the role create databases \
             (`sudo -u postgres psql -c 'ALTER ROLE \"'$USER'\" CREATEDB'`)"
        ),
        ConnectError::Create(_) => format!("cannot create the database of {shown}"),
        ConnectError::Migrate(_) => format!("cannot migrate the database at {shown}"),
        ConnectError::Unreachable(_) | ConnectError::Connect(_) => format!("cannot connect to PostgreSQL at {shown}"),
    }
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Four connections per core, at least 8. More connections than that do not make Postgres
/// faster on a small machine: they let more backends compete for the same cores, and a request
/// preempted there holds everything behind it (on two cores, 30 connections gave `/recommend` a
/// p99 of 11–16 ms at 1,000 req/s where 8 gave 8–9 ms; docs/benchmarks.md).
pub fn default_db_pool() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    (4 * cores).max(8)
}

/// `oo serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub db: DbConfig,
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "OO_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Bearer token for /admin endpoints; without one they are closed (except in --dev).
    #[arg(long, env = "OO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// NATS server for the event relay; without it the relay is off.
    #[arg(long, env = "OO_NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream's de-duplication window for re-published events, in seconds.
    #[arg(long, env = "OO_NATS_DUPLICATE_WINDOW_SECS", default_value_t = 120)]
    pub nats_duplicate_window_secs: u64,
    /// How long the stream keeps events, in seconds (0: for ever; Postgres stays the source of truth).
    #[arg(long, env = "OO_NATS_MAX_AGE_SECS", default_value_t = 0)]
    pub nats_max_age_secs: u64,
    /// Development mode: loopback only, offers POST /auth/dev-login.
    #[arg(long, env = "OO_DEV", default_value_t = false)]
    pub dev: bool,
    /// Where PostgreSQL's server binaries are, for the private cluster of `--dev` (default:
    /// Debian's and Homebrew's directories, then PATH).
    #[arg(long, env = "OO_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// Per-user rate limit as `PER_SECOND/BURST`.
    #[arg(long, env = "OO_RATE_LIMIT", default_value = "100/200")]
    pub rate_limit: RateLimit,
    /// Per client address, for what needs neither a session nor the admin token (sign-in,
    /// dev-login, health, readiness, metrics, the OpenAPI document, the legal pages), as
    /// `PER_SECOND/BURST`.
    #[arg(long, env = "OO_ANON_RATE_LIMIT", default_value = "50/200")]
    pub anon_rate_limit: RateLimit,
    /// Signals one person may have accepted per UTC day (`POST /signals`); a batch that would
    /// pass it is refused whole with 429 and `Retry-After` until midnight UTC. Recommendations,
    /// reactions and connector syncs do not count.
    #[arg(long, env = "OO_SIGNAL_QUOTA", default_value_t = 50_000)]
    pub signal_quota: i64,
    /// Reverse proxies whose `X-Forwarded-For` is believed, comma-separated IP addresses: a
    /// request from one of them is counted against the address it forwarded for. Empty: the
    /// peer's address is the client's.
    #[arg(long, env = "OO_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How long a session lasts, in hours.
    #[arg(long, env = "OO_SESSION_TTL_HOURS", default_value_t = 720)]
    pub session_ttl_hours: i64,
    /// The serving policy: `random`, `linucb` or `thompson`, optionally with hyper-parameters,
    /// e.g. `linucb:alpha=0.3,temperature=0.05,epsilon=0.1` (epsilon: the share spread evenly
    /// over the candidates, so each keeps a probability of at least epsilon / K).
    #[arg(long, env = "OO_POLICY", default_value = "linucb")]
    pub policy: String,
    /// Shadow policies, `;`-separated specs: they score the same candidates on every request and
    /// their picks are logged in `TipServed`, never served. Empty: none.
    #[arg(long, env = "OO_SHADOW_POLICIES", default_value = "thompson")]
    pub shadow_policies: String,
    #[command(flatten)]
    pub gate: GateConfig,
    /// How often the reward join settles timed-out tips and completed snoozed todos, in seconds.
    #[arg(long, env = "OO_SETTLE_INTERVAL_SECS", default_value_t = 60)]
    pub settle_interval_secs: u64,
    /// How often unfinished account deletions are completed, in seconds.
    #[arg(long, env = "OO_DELETION_SWEEP_SECS", default_value_t = 60)]
    pub deletion_sweep_secs: u64,
    /// The public base URL (decides whether cookies are `Secure`); default: http://BIND.
    #[arg(long, env = "OO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// OpenID Connect issuer for sign-in.
    #[arg(long, env = "OO_OIDC_ISSUER", default_value = "https://accounts.google.com")]
    pub oidc_issuer: String,
    /// OpenID Connect client id; without it (and the secret) sign-in answers 503.
    #[arg(long, env = "OO_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// OpenID Connect client secret.
    #[arg(long, env = "OO_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Todoist's client id (an app registered at https://developer.todoist.com/appconsole.html);
    /// without it `/integrations/todoist/*` answers 503 `connector_not_configured`.
    #[arg(long, env = "OO_TODOIST_CLIENT_ID")]
    pub todoist_client_id: Option<String>,
    /// Todoist's client secret.
    #[arg(long, env = "OO_TODOIST_CLIENT_SECRET", hide_env_values = true)]
    pub todoist_client_secret: Option<String>,
    /// Where Todoist's OAuth pages are (`/oauth/authorize`, `/oauth/access_token`).
    #[arg(long, env = "OO_TODOIST_AUTH_URL", default_value = "https://todoist.com")]
    pub todoist_auth_url: String,
    /// Where Todoist's API is (`/api/v1/...`).
    #[arg(long, env = "OO_TODOIST_API_URL", default_value = "https://api.todoist.com")]
    pub todoist_api_url: String,
    /// How long one call to Todoist may take, in milliseconds.
    #[arg(long, env = "OO_TODOIST_TIMEOUT_MS", default_value_t = 20_000)]
    pub todoist_timeout_ms: u64,
    /// Between two background syncs of a connection, in seconds (jittered by ±20%).
    #[arg(long, env = "OO_TODOIST_SYNC_SECS", default_value_t = 300)]
    pub todoist_sync_secs: u64,
    /// Background syncs running at once, across people.
    #[arg(long, env = "OO_TODOIST_PARALLEL_SYNCS", default_value_t = 4)]
    pub todoist_parallel_syncs: usize,
    /// How often the connectors' background work (syncs due, tasks to close, tokens to revoke)
    /// is looked for, in milliseconds.
    #[arg(long, env = "OO_CONNECTOR_POLL_MS", default_value_t = 5000)]
    pub connector_poll_ms: u64,
    /// How long a client may take to send a request's headers, in seconds; then the connection
    /// is closed.
    #[arg(long, env = "OO_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Requests served at once (liveness, readiness and metrics aside); past it a request is
    /// answered 503 `unavailable` at once, with `Retry-After`, instead of queueing for a pooled
    /// connection until it times out (load shedding: the server stays at capacity). 512 absorbs
    /// a pause of about a second (a checkpoint's flush, a slow fsync) at 500 requests a second:
    /// 128 shed requests in such pauses while the server had capacity to spare
    /// (docs/benchmarks.md, the soak).
    #[arg(long, env = "OO_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// How long a request may take, body and answer included, in seconds; then 408.
    #[arg(long, env = "OO_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "OO_BODY_LIMIT", default_value_t = 1_048_576)]
    pub body_limit: usize,
    /// Group-commit writer tasks.
    #[arg(long, env = "OO_WRITERS", default_value_t = 2)]
    pub writers: usize,
}

impl ServeConfig {
    /// The OpenID client's id and secret, when both are configured: sign-in exists only then.
    pub fn oidc_credentials(&self) -> Option<(&str, &str)> {
        Some((self.oidc_client_id.as_deref()?, self.oidc_client_secret.as_deref()?))
    }

    /// Defaults for tests and tools: a database URL, port 0, dev mode off.
    pub fn for_database(database_url: &str, data_dir: PathBuf) -> Self {
        Self {
            db: DbConfig {
                database_url: Some(database_url.to_owned()),
                db_pool: 16,
                data_dir,
                master_key: None,
            },
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            nats_url: None,
            nats_duplicate_window_secs: 120,
            nats_max_age_secs: 0,
            dev: false,
            pg_bin: None,
            todoist_client_id: None,
            todoist_client_secret: None,
            todoist_auth_url: "https://todoist.com".into(),
            todoist_api_url: "https://api.todoist.com".into(),
            todoist_timeout_ms: 20_000,
            todoist_sync_secs: 300,
            todoist_parallel_syncs: 4,
            connector_poll_ms: 5000,
            rate_limit: RateLimit {
                per_second: 100,
                burst: 200,
            },
            anon_rate_limit: RateLimit {
                per_second: 50,
                burst: 200,
            },
            trusted_proxies: Vec::new(),
            signal_quota: 50_000,
            session_ttl_hours: 720,
            policy: "linucb".into(),
            shadow_policies: "thompson".into(),
            gate: GateConfig::default(),
            settle_interval_secs: 60,
            deletion_sweep_secs: 60,
            public_url: None,
            oidc_issuer: "https://accounts.google.com".into(),
            oidc_client_id: None,
            oidc_client_secret: None,
            body_limit: 1_048_576,
            header_timeout_secs: 10,
            max_in_flight: 512,
            request_timeout_secs: 30,
            writers: 2,
        }
    }
}

/// The promotion gate (`POST /admin/policies/promote`, `oo policy promote`; DESIGN section 12).
#[derive(Debug, Clone, Copy, Args)]
pub struct GateConfig {
    /// N: the promotion gate weighs a shadow on the latest N settled decisions of the serving
    /// policy (also the window of `GET /admin/policies`).
    #[arg(long = "promotion-window", env = "OO_PROMOTION_WINDOW", default_value_t = 2_000)]
    pub window: usize,
    /// The gate refuses on fewer settled decisions than this.
    #[arg(
        long = "promotion-min-decisions",
        env = "OO_PROMOTION_MIN_DECISIONS",
        default_value_t = 200
    )]
    pub min_decisions: usize,
    /// Bootstrap resamples of the gate's 95% intervals.
    #[arg(
        long = "promotion-bootstrap",
        env = "OO_PROMOTION_BOOTSTRAP",
        default_value_t = 1_000
    )]
    pub bootstrap: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        let d = oo_replay::gate::GateOptions::default();
        Self {
            window: d.window,
            min_decisions: d.min_decisions,
            bootstrap: d.bootstrap,
        }
    }
}

impl GateConfig {
    pub fn options(&self) -> oo_replay::gate::GateOptions {
        oo_replay::gate::GateOptions {
            window: self.window.max(1),
            min_decisions: self.min_decisions,
            bootstrap: self.bootstrap,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('/').unwrap_or((s, s));
        let per_second: u32 = a.trim().parse().map_err(|_| format!("{s:?} is not PER_SECOND/BURST"))?;
        let burst: u32 = b.trim().parse().map_err(|_| format!("{s:?} is not PER_SECOND/BURST"))?;
        if per_second == 0 || burst == 0 {
            return Err("rate limit values must be positive".into());
        }
        Ok(Self { per_second, burst })
    }
}
