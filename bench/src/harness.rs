//! What every benchmark shares: a fresh database per run, the real server in-process, a
//! client that signs in, pgbench as the reference, and quick ways to fill the log.

use anyhow::Context;
use chrono::Utc;
use oo_api::config::ServeConfig;
use oo_commands::WriteSide;
use oo_commands::aggregate::{Meta, Repository};
use oo_commands::store::{EventStore, WriterConfig};
use oo_commands::vault::{MasterKey, Vault};
use oo_domain::ids::{SignalId, UserId};
use oo_domain::signal::{MoodScore, SignalData};
use oo_domain::signals::{NewSignal, Signals};
use oo_domain::user::Email;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

pub(crate) struct BenchDb {
    pub(crate) server: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl BenchDb {
    pub(crate) async fn create(server: &str) -> anyhow::Result<(Self, PgPool)> {
        let name = format!("oo_bench_{}", Uuid::new_v4().simple());
        let url = format!("{server}/{name}");
        let pool = oo_commands::db::connect_and_migrate(&url, 30).await?;
        Ok((
            Self {
                server: server.to_owned(),
                name,
                url,
            },
            pool,
        ))
    }

    pub(crate) async fn drop_db(self, pool: PgPool) {
        pool.close().await;
        if let Ok(admin) = PgPool::connect(&format!("{}/postgres", self.server)).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&admin)
                .await;
        }
    }
}

/// Starts the real server on a loopback port against `url`, with limits that do not throttle a
/// benchmark.
pub(crate) async fn start_server(url: &str) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    start_server_with(url, |c| c.policy = "random".into()).await
}

pub(crate) async fn start_server_with(
    url: &str,
    adjust: impl FnOnce(&mut ServeConfig),
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let mut config = ServeConfig::for_database(
        url,
        std::env::temp_dir().join(format!("oo-bench-{}", Uuid::new_v4().simple())),
    );
    config.dev = true;
    // The pool `oo serve` gets by default on this machine.
    config.db.db_pool = oo_api::config::default_db_pool();
    config.rate_limit = oo_api::config::RateLimit {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    adjust(&mut config);
    let app = oo_api::Application::build(config).await?;
    let base = format!("http://{}", app.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Ok((base, tx))
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(256).build()?)
}

pub(crate) async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let r: serde_json::Value = client
        .post(format!("{base}/auth/dev-login"))
        .json(&json!({ "email": email }))
        .send()
        .await?
        .json()
        .await?;
    r["token"].as_str().map(str::to_owned).context("no token")
}

pub(crate) fn pgbench_insert_tps(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("oo-pgbench-{}.sql", Uuid::new_v4().simple()));
    std::fs::write(&script, "INSERT INTO bench_insert (v) VALUES (1);\n")?;
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-f"])
        .arg(&script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
        ])
        .arg(url)
        .output()
        .context("pgbench (Debian's postgresql-contrib / postgresql client) must be installed")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

pub(crate) async fn wait_for_projections(pool: &PgPool) -> anyhow::Result<()> {
    let status = oo_projections::status::Status::default();
    oo_projections::projector::wait_for_head(pool, &status, Duration::from_secs(600)).await?;
    Ok(())
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn mood_signal(id: String) -> NewSignal {
    NewSignal {
        id: SignalId::parse(&id).expect("bench signal ids are valid"),
        occurred_at: Utc::now(),
        data: SignalData::Mood {
            score: MoodScore::parse(1).expect("1 is a valid mood score"),
            note: None,
        },
    }
}

pub(crate) async fn repo(pool: &PgPool) -> anyhow::Result<(EventStore, Vault, Repository<Signals>)> {
    let write = WriteSide::start(pool.clone(), MasterKey::generate(), WriterConfig::default()).await?;
    Ok((write.store, write.vault, write.signals))
}

pub(crate) async fn user(store: &EventStore, vault: &Vault, email: &str) -> anyhow::Result<UserId> {
    let email = Email::parse(email)?;
    Ok(
        oo_commands::identity::find_or_register(store, vault, &email, Meta::new(Utc::now()))
            .await?
            .0,
    )
}

/// Records `signals` for `user` through the real command path.
pub(crate) async fn record(repo: &Repository<Signals>, user: UserId, signals: Vec<NewSignal>) -> anyhow::Result<()> {
    repo.record(user, signals, Meta::new(Utc::now())).await?;
    Ok(())
}

pub(crate) fn bytes_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Writes `events` signals through the command path, spread over `users`, in commands of 1,000,
/// one task per user; `make(user index, signal index)` builds each signal.
pub(crate) async fn fill_log(
    repo: &Repository<Signals>,
    users: &[UserId],
    events: usize,
    make: fn(usize, usize) -> NewSignal,
) -> anyhow::Result<()> {
    let per_user = events.div_ceil(users.len().max(1));
    let mut tasks = vec![];
    for (u, id) in users.iter().copied().enumerate() {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while k < per_user {
                let n = (per_user - k).min(1000);
                let signals = (k..k + n).map(|i| make(u, i)).collect();
                record(&repo, id, signals).await?;
                k += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
