//! `oo-bench`: benchmarks that print figures (never pass/fail), run as
//! `cargo run --release -p oo-bench -- <benchmark> …`. Each one builds its own database
//! on the Postgres server given by `--server` (created fresh, dropped afterwards), runs the real
//! server in-process on a loopback port where HTTP is involved, and prints a table.
//!
//! - `appends`: durable appends per second through `POST /signals` (1 signal per request, and
//!   batches of 100) at several client counts, beside pgbench's single-row INSERT rate at the same
//!   concurrency on the same server.
//! - `recommend`: `POST /recommend` latency at a fixed offered load (open loop: requests are sent
//!   on schedule whether or not earlier ones have answered, latency counted from the scheduled
//!   time), and the maximum throughput of closed-loop clients. Beside the open loop's latency it
//!   prints the machine's CPU, how late 1 ms sleeps ran on an OS thread and on the runtime, and
//!   the server's own histograms (`/recommend`, appends, the writer's batches), so that a tail can
//!   be traced to the machine, the runtime or the durable commit.
//! - `snapshot`: the time of one command on a `Signals` stream after 10 and after 50,000 events.
//! - `rebuild`: projection rebuild speed on a log of N events, beside the time to read the log.

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use oo_api::config::ServeConfig;
use oo_commands::WriteSide;
use oo_commands::aggregate::{Meta, Repository};
use oo_commands::store::{EventStore, WriterConfig};
use oo_commands::vault::{MasterKey, Vault};
use oo_domain::ids::{SignalId, UserId};
use oo_domain::signal::{ExternalId, MoodScore, Priority, SignalData, TaskSource, Text};
use oo_domain::signals::{NewSignal, Signals};
use oo_domain::user::Email;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

// The server runs in-process: the same allocator as the `oo` binary, so that its figures hold
// for `oo serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "oo-bench",
    about = "oO's benchmarks: figures beside a reference, never pass/fail"
)]
pub struct BenchArgs {
    /// The Postgres server to benchmark on (a database is created on it and dropped afterwards).
    #[arg(
        long,
        env = "OO_BENCH_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432",
        global = true
    )]
    pub server: String,
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Which {
    /// Durable appends per second through POST /signals, beside pgbench.
    Appends {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Give every signal a personal field (a mood note), sealed under the user's key.
        #[arg(long)]
        personal: bool,
    },
    /// Relay throughput on a backlog, end-to-end relay latency under append load, beside a
    /// trivial JetStream publisher. Starts a private `nats-server` (Debian's) of its own.
    Relay {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The cost of sealing and opening one event's personal fields, and of unwrapping a key.
    Crypto {
        #[arg(long, default_value_t = 100_000)]
        iterations: u32,
    },
    /// POST /recommend latency at a fixed offered load, and maximum throughput.
    Recommend {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        /// Open todos per user (candidates = todos + fitting advices + not now).
        #[arg(long, default_value_t = 10)]
        todos: usize,
        /// The serving policy (a spec as in OO_POLICY).
        #[arg(long, default_value = "linucb")]
        policy: String,
        /// Shadow policies (`;`-separated specs, as in OO_SHADOW_POLICIES).
        #[arg(long, default_value = "")]
        shadows: String,
        /// Decisions each user gets and reacts to before the measurement, so that their models
        /// are not empty.
        #[arg(long, default_value_t = 5)]
        history: usize,
    },
    /// One command's time on a Signals stream after 10 and after 50,000 events.
    Snapshot {
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Rebuild speed on a log of N events, beside the time to read the log alone.
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
}

struct BenchDb {
    server: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn create(server: &str) -> anyhow::Result<(Self, PgPool)> {
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

    async fn drop_db(self, pool: PgPool) {
        pool.close().await;
        if let Ok(admin) = PgPool::connect(&format!("{}/postgres", self.server)).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&admin)
                .await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(BenchArgs::parse()).await
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Appends {
            clients,
            seconds,
            personal,
        } => appends(&args.server, &clients, seconds, personal).await,
        Which::Relay {
            events,
            clients,
            seconds,
        } => relay(&args.server, events, clients, seconds).await,
        Which::Crypto { iterations } => {
            crypto(iterations);
            Ok(())
        }
        Which::Recommend {
            rate,
            seconds,
            clients,
            users,
            todos,
            policy,
            shadows,
            history,
        } => {
            let load = Load {
                rate,
                seconds,
                clients,
                users,
                todos,
                history,
            };
            recommend(&args.server, &load, &policy, &shadows).await
        }
        Which::Snapshot { events } => snapshot(&args.server, events).await,
        Which::Rebuild { events } => rebuild(&args.server, events).await,
    }
}

/// Starts the real server on a loopback port against `url`, with limits that do not throttle a
/// benchmark.
async fn start_server(url: &str) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    start_server_with(url, |c| c.policy = "random".into()).await
}

async fn start_server_with(
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

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(256).build()?)
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let r: serde_json::Value = client
        .post(format!("{base}/auth/dev-login"))
        .json(&json!({ "email": email }))
        .send()
        .await?
        .json()
        .await?;
    r["token"].as_str().map(str::to_owned).context("no token")
}

fn pgbench_insert_tps(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
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

async fn appends(server: &str, clients: &[usize], seconds: u64, personal: bool) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    sqlx::query("CREATE TABLE bench_insert (id bigserial PRIMARY KEY, v int)")
        .execute(&pool)
        .await?;
    let (base, stop) = start_server(&db.url).await?;
    let http = client()?;
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    let mut tokens = vec![];
    for i in 0..max_clients {
        tokens.push(login(&http, &base, &format!("bench{i}@example.org")).await?);
    }
    println!(
        "durable appends through POST /signals ({seconds} s per row; {}; each client its own user; every answer after commit)",
        if personal {
            "every signal with a sealed personal field"
        } else {
            "no personal field"
        }
    );
    println!(
        "{:>8} {:>14} {:>16} {:>18} {:>16}",
        "clients", "1/request ev/s", "100/request ev/s", "pgbench INSERT/s", "1/request vs pg"
    );
    let counter = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    for (round, &n) in clients.iter().enumerate() {
        let mut rates = vec![];
        for batch in [1usize, 100] {
            counter.store(0, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = vec![];
            for (c, token) in tokens.iter().take(n).enumerate() {
                let (http, base, token, counter, failures) = (
                    http.clone(),
                    base.clone(),
                    token.clone(),
                    counter.clone(),
                    failures.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut k = 0u64;
                    while Instant::now() < deadline {
                        let signals: Vec<_> = (0..batch)
.map(|j| {
                                let data = if personal {
                                    json!({"score": 1, "note": "slept badly, long day ahead"})
                                } else {
                                    json!({"score": 1})
                                };
                                json!({"id": format!("r{round}-b{batch}-c{c}-{k}-{j}"), "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": data})
                            })
                            .collect();
                        k += 1;
                        let r = http.post(format!("{base}/signals")).bearer_auth(&token).json(&json!({ "signals": signals })).send().await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                counter.fetch_add(batch as u64, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(status = %r.status(), "append failed");
                            }
                            Err(e) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(error = %e, "append failed");
                            }
                        }
                    }
                }));
            }
            let started = Instant::now();
            for t in tasks {
                let _ = t.await;
            }
            rates.push(counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
            // Let the projectors catch up so that one row's backlog does not slow the next.
            let caught_up = Instant::now();
            wait_for_projections(&pool).await?;
            let lagged = caught_up.elapsed().as_secs_f64();
            if lagged > 0.5 {
                eprintln!("  (projectors needed {lagged:.1} s to catch up after {n} clients x {batch}/request)");
            }
        }
        let pg = pgbench_insert_tps(&db.url, n, seconds)?;
        let failed = failures.swap(0, Ordering::Relaxed);
        if failed > 0 {
            eprintln!("  ({failed} requests failed at {n} clients; OO_LOG=debug shows why)");
        }
        println!(
            "{:>8} {:>14.0} {:>16.0} {:>18.0} {:>15.2}x",
            n,
            rates[0],
            rates[1],
            pg,
            rates[0] / pg
        );
    }
    let _ = stop.send(());
    db.drop_db(pool).await;
    Ok(())
}

async fn wait_for_projections(pool: &PgPool) -> anyhow::Result<()> {
    let status = oo_projections::status::Status::default();
    oo_projections::projector::wait_for_head(pool, &status, Duration::from_secs(600)).await?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The shape of a `/recommend` benchmark.
struct Load {
    rate: u64,
    seconds: u64,
    clients: usize,
    users: usize,
    todos: usize,
    history: usize,
}

async fn recommend(server: &str, load: &Load, policy: &str, shadows: &str) -> anyhow::Result<()> {
    let &Load {
        rate,
        seconds,
        clients,
        users,
        todos,
        history,
    } = load;
    let (db, pool) = BenchDb::create(server).await?;
    let (base, stop) = start_server_with(&db.url, |c| {
        c.policy = policy.to_owned();
        c.shadow_policies = shadows.to_owned();
    })
    .await?;
    let http = client()?;
    let mut tokens = vec![];
    let mut last_position = String::new();
    for u in 0..users {
        let t = login(&http, &base, &format!("rec{u}@example.org")).await?;
        let signals: Vec<_> = (0..todos)
            .map(|i| json!({"id": format!("t{i}"), "kind": "task", "occurred_at": "2026-01-05T09:00:00Z",
                "data": {"source": "todoist", "external_id": format!("task-{i}"), "title": format!("Task number {i}"), "priority": 1 + i % 4, "completed": false}}))
            .collect();
        let r: serde_json::Value = http
            .post(format!("{base}/signals"))
            .bearer_auth(&t)
            .json(&json!({ "signals": signals }))
            .send()
            .await?
            .json()
            .await?;
        last_position = r["position"].as_str().unwrap_or_default().to_owned();
        tokens.push(t);
    }
    // Wait until the projections have the todos.
    let _ = http
        .post(format!("{base}/recommend"))
        .bearer_auth(&tokens[0])
        .json(&json!({"min_position": last_position}))
        .send()
        .await?;
    // A little history per user, so that every model has been updated (and is read as a row).
    for token in &tokens {
        for k in 0..history {
            let r = http.post(format!("{base}/recommend")).bearer_auth(token).send().await?;
            if r.status() != reqwest::StatusCode::OK {
                continue;
            }
            let tip: serde_json::Value = r.json().await?;
            let reaction = ["done", "helpful", "not_helpful", "dismiss"][k % 4];
            http.post(format!("{base}/feedback"))
                .bearer_auth(token)
                .json(&json!({"tip_id": tip["tip"]["id"], "reaction": reaction}))
                .send()
                .await?;
        }
    }
    wait_for_projections(&pool).await?;
    let learned: i64 = sqlx::query_scalar("SELECT count(*) FROM bandit_users")
        .fetch_one(&pool)
        .await?;
    let served_before: i64 = sqlx::query_scalar("SELECT count(*) FROM tip_log")
        .fetch_one(&pool)
        .await?;

    // Steady state first: a checkpoint now (so that the one CREATE DATABASE asked for does not
    // land inside the measurement) and two seconds of warm-up at the same rate, not counted.
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let warm_start = tokio::time::Instant::now();
    let mut warm = vec![];
    for i in 0..(2 * rate) {
        tokio::time::sleep_until(warm_start + interval * i as u32).await;
        let (http, base, token) = (http.clone(), base.clone(), tokens[i as usize % tokens.len()].clone());
        warm.push(tokio::spawn(async move {
            http.post(format!("{base}/recommend"))
                .bearer_auth(&token)
                .send()
                .await
                .is_ok()
        }));
    }
    for w in warm {
        let _ = w.await;
    }

    // Open loop at a fixed rate.
    let total = rate * seconds;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = machine_cpu();
    let io_before = io_pressure();
    let pg_before = PgWrites::read(&pool).await?;
    let scraped_before = scrape(&http, &base).await?;
    let probe = StallProbe::start();
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (http, base, token, latencies, errors) = (
            http.clone(),
            base.clone(),
            tokens[i as usize % tokens.len()].clone(),
            latencies.clone(),
            errors.clone(),
        );
        handles.push(tokio::spawn(async move {
            let r = http.post(format!("{base}/recommend")).bearer_auth(&token).send().await;
            let ok = r.is_ok_and(|r| r.status().is_success());
            let ms = (tokio::time::Instant::now() - scheduled).as_secs_f64() * 1e3;
            if ok {
                if let Ok(mut l) = latencies.lock() {
                    l.push(ms);
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let stalls = probe.stop().await;
    let pg_after = PgWrites::read(&pool).await?;
    let scraped_after = scrape(&http, &base).await?;
    let cpu = machine_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    let io = io_pressure().zip(io_before).map(|((some, full), (some0, full0))| {
        let span = seconds as f64 * 1e6;
        (
            some.saturating_sub(some0) as f64 / span,
            full.saturating_sub(full0) as f64 / span,
        )
    });
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    wait_for_projections(&pool).await?;
    let candidates: f64 = sqlx::query_scalar("SELECT avg(candidates)::float8 FROM tip_log")
        .fetch_one(&pool)
        .await?;
    let shadow_note = if shadows.is_empty() { "none" } else { shadows };
    println!(
        "POST /recommend, policy {policy}, shadows {shadow_note}, {users} users with {todos} open todos each \
         ({candidates:.1} candidates on average: todos + fitting advices + not now), {learned} learned models \
         ({served_before} decisions before the measurement)"
    );
    println!(
        "open loop at {rate} req/s for {seconds} s: {} answered, {} errors, achieved {:.0} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        errors.load(Ordering::Relaxed),
        achieved,
        percentile(&l, 50.0),
        percentile(&l, 90.0),
        percentile(&l, 99.0),
        l.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(cpu) = cpu {
        println!(
            "machine CPU during the open loop (server, load generator, projector and Postgres): {:.0} % busy of {} cores \
             ({:.1} % stolen by the hypervisor besides), {:.2} ms of CPU per request",
            cpu.busy_share * 100.0,
            cpu.cores,
            cpu.stolen_share * 100.0,
            cpu.busy_seconds * 1e3 / total as f64
        );
    }
    println!("{stalls}");
    println!("{}", pg_after.report_since(&pg_before, total));
    if let Some((some, full)) = io {
        println!(
            "I/O pressure during the open loop (/proc/pressure/io): some task waiting on I/O {:.1} % of the time, every task {:.1} %",
            some * 100.0,
            full * 100.0
        );
    }
    let server_side = [
        (
            "/recommend in the server",
            "oo_http_request_duration_seconds",
            &[r#"path="/recommend""#][..],
        ),
        ("its durable appends", "oo_append_duration_seconds", &[]),
        ("the writer's batches", "oo_append_commit_duration_seconds", &[]),
    ]
    .map(|(what, name, labels)| {
        let h = Buckets::of(&scraped_after, name, labels).since(&Buckets::of(&scraped_before, name, labels));
        format!(
            "{what}: {} with p99 ≤ {:.1} ms and {} over 8 ms",
            h.count(),
            h.quantile_bound(0.99) * 1e3,
            h.over(0.008)
        )
    });
    println!(
        "server side during the open loop (bucket bounds of /metrics): {}",
        server_side.join("; ")
    );

    // Closed loop: maximum throughput.
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for c in 0..clients {
        let (http, base, token, count) = (
            http.clone(),
            base.clone(),
            tokens[c % tokens.len()].clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if http
                    .post(format!("{base}/recommend"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "closed loop, {clients} clients: {:.0} req/s",
        count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    );
    let _ = stop.send(());
    db.drop_db(pool).await;
    Ok(())
}

async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http.get(format!("{base}/metrics")).send().await?.text().await?)
}

/// One histogram's cumulative buckets, read from the Prometheus text format.
struct Buckets(Vec<(f64, u64)>);

impl Buckets {
    /// The `<name>_bucket` lines of the series whose other labels include `labels` (as written,
    /// e.g. `path="/recommend"`).
    fn of(text: &str, name: &str, labels: &[&str]) -> Buckets {
        let prefix = format!("{name}_bucket{{");
        Buckets(
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix.as_str()))
                .filter_map(|rest| {
                    let (set, value) = rest.split_once("} ")?;
                    let pairs: Vec<&str> = set.split(',').collect();
                    if !labels.iter().all(|l| pairs.contains(l)) {
                        return None;
                    }
                    let le = pairs.iter().find_map(|p| p.strip_prefix("le=\""))?.strip_suffix('"')?;
                    let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                    Some((bound, value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, n)| {
                    let earlier = before.0.iter().find(|(b, _)| b == le).map_or(0, |(_, m)| *m);
                    (*le, n.saturating_sub(earlier))
                })
                .collect(),
        )
    }

    fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// The smallest bound under which at least `q` of the observations fall.
    fn quantile_bound(&self, q: f64) -> f64 {
        let want = (self.count() as f64 * q).ceil() as u64;
        self.0.iter().find(|(_, n)| *n >= want).map_or(f64::NAN, |(le, _)| *le)
    }

    fn over(&self, bound: f64) -> u64 {
        let under = self.0.iter().find(|(le, _)| *le == bound).map_or(0, |(_, n)| *n);
        self.count().saturating_sub(under)
    }
}

/// Lateness of 1 ms sleeps during a measurement, seen by an OS thread of its own (what the
/// machine does to any thread: other processes, the hypervisor) and by a task on the server's
/// runtime (that, plus anything holding a worker thread). A tail that both see is the machine's;
/// one that only the runtime sees is ours.
struct StallProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Lateness>,
    task: tokio::task::JoinHandle<Lateness>,
}

#[derive(Default)]
struct Lateness {
    samples: u64,
    over_5ms: u64,
    max_ms: f64,
}

impl Lateness {
    fn add(&mut self, late: Duration) {
        let ms = late.as_secs_f64() * 1e3;
        self.samples += 1;
        self.over_5ms += u64::from(ms > 5.0);
        self.max_ms = self.max_ms.max(ms);
    }
}

struct Stalls {
    thread: Lateness,
    runtime: Lateness,
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lateness of 1 ms sleeps: an OS thread max {:.2} ms ({} of {} over 5 ms), a runtime task max {:.2} ms ({} of {} over 5 ms)",
            self.thread.max_ms,
            self.thread.over_5ms,
            self.thread.samples,
            self.runtime.max_ms,
            self.runtime.over_5ms,
            self.runtime.samples
        )
    }
}

impl StallProbe {
    const TICK: Duration = Duration::from_millis(1);

    fn start() -> StallProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut l = Lateness::default();
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(Self::TICK);
                l.add(t.elapsed().saturating_sub(Self::TICK));
            }
            l
        });
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut l = Lateness::default();
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Self::TICK).await;
                // The timer wheel rounds up to its 1 ms resolution: up to a further 1 ms is its
                // own, not a stall.
                l.add(t.elapsed().saturating_sub(Self::TICK * 2));
            }
            l
        });
        StallProbe { stop, thread, task }
    }

    async fn stop(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let runtime = self.task.await.unwrap_or_default();
        let thread = tokio::task::spawn_blocking(move || self.thread.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        Stalls { thread, runtime }
    }
}

/// The machine's CPU counters (`/proc/stat`, Linux): busy and total time over all cores.
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    busy_ticks: u64,
    stolen_ticks: u64,
    total_ticks: u64,
    cores: usize,
}

/// How busy the machine was between two readings.
struct CpuUse {
    busy_share: f64,
    /// The share of the time the hypervisor ran something else on our virtual cores.
    stolen_share: f64,
    busy_seconds: f64,
    cores: usize,
}

impl MachineCpu {
    fn since(&self, before: &MachineCpu) -> CpuUse {
        let busy = self.busy_ticks.saturating_sub(before.busy_ticks) as f64;
        let total = self.total_ticks.saturating_sub(before.total_ticks).max(1) as f64;
        // The kernel counts in USER_HZ, 100 per second on Linux.
        CpuUse {
            busy_share: busy / total,
            stolen_share: self.stolen_ticks.saturating_sub(before.stolen_ticks) as f64 / total,
            busy_seconds: busy / 100.0,
            cores: self.cores,
        }
    }
}

fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...; busy is ours, steal is not.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let stolen = ticks.get(7).copied().unwrap_or(0);
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    Some(MachineCpu {
        busy_ticks: total - idle - stolen,
        stolen_ticks: stolen,
        total_ticks: total,
        cores,
    })
}

/// What Postgres wrote during a measurement, from its cumulative statistics (`pg_stat_wal`,
/// `pg_stat_bgwriter`): server-wide, so only meaningful while the bench is all that runs.
#[derive(Debug, Clone, Copy)]
struct PgWrites {
    wal_bytes: f64,
    wal_records: i64,
    wal_fpi: i64,
    wal_syncs: i64,
    checkpoints: i64,
    buffers_checkpoint: i64,
    buffers_clean: i64,
    buffers_backend: i64,
}

impl PgWrites {
    async fn read(pool: &PgPool) -> anyhow::Result<PgWrites> {
        let (wal_bytes, wal_records, wal_fpi, wal_syncs): (f64, i64, i64, i64) =
            sqlx::query_as("SELECT wal_bytes::float8, wal_records, wal_fpi, wal_sync FROM pg_stat_wal")
                .fetch_one(pool)
                .await?;
        let (checkpoints, buffers_checkpoint, buffers_clean, buffers_backend): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend \
                 FROM pg_stat_bgwriter",
        )
        .fetch_one(pool)
        .await?;
        Ok(PgWrites {
            wal_bytes,
            wal_records,
            wal_fpi,
            wal_syncs,
            checkpoints,
            buffers_checkpoint,
            buffers_clean,
            buffers_backend,
        })
    }

    /// One line: per request, and the data pages written by whom.
    fn report_since(&self, before: &PgWrites, requests: u64) -> String {
        let per = |d: i64| d as f64 / requests.max(1) as f64;
        format!(
            "Postgres during the open loop (pg_stat_wal, pg_stat_bgwriter): {:.2} KB of WAL per request in {:.1} records \
             ({:.2} full-page images), {:.2} WAL flushes per request, {} checkpoints; data pages written by the \
             checkpointer {}, the background writer {}, backends {}",
            (self.wal_bytes - before.wal_bytes) / requests.max(1) as f64 / 1024.0,
            per(self.wal_records - before.wal_records),
            per(self.wal_fpi - before.wal_fpi),
            per(self.wal_syncs - before.wal_syncs),
            self.checkpoints - before.checkpoints,
            self.buffers_checkpoint - before.buffers_checkpoint,
            self.buffers_clean - before.buffers_clean,
            self.buffers_backend - before.buffers_backend,
        )
    }
}

/// The machine's I/O pressure stall counters (Linux PSI): microseconds in which some task, and in
/// which every non-idle task, waited on I/O.
fn io_pressure() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/pressure/io").ok()?;
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((total("some")?, total("full")?))
}

fn mood_signal(id: String) -> NewSignal {
    NewSignal {
        id: SignalId::parse(&id).expect("bench signal ids are valid"),
        occurred_at: Utc::now(),
        data: SignalData::Mood {
            score: MoodScore::parse(1).expect("1 is a valid mood score"),
            note: None,
        },
    }
}

async fn repo(pool: &PgPool) -> anyhow::Result<(EventStore, Vault, Repository<Signals>)> {
    let write = WriteSide::start(pool.clone(), MasterKey::generate(), WriterConfig::default()).await?;
    Ok((write.store, write.vault, write.signals))
}

async fn user(store: &EventStore, vault: &Vault, email: &str) -> anyhow::Result<UserId> {
    let email = Email::parse(email)?;
    Ok(
        oo_commands::identity::find_or_register(store, vault, &email, Meta::new(Utc::now()))
            .await?
            .0,
    )
}

/// Records `signals` for `user` through the real command path.
async fn record(repo: &Repository<Signals>, user: UserId, signals: Vec<NewSignal>) -> anyhow::Result<()> {
    repo.record(user, signals, Meta::new(Utc::now())).await?;
    Ok(())
}

/// Times `n` one-signal commands. `cold`: each on a new repository (no cached state: the
/// stream is loaded from its snapshot and the events after it).
async fn time_commands(
    store: &EventStore,
    vault: &Vault,
    user: UserId,
    label: &str,
    n: usize,
    cold: bool,
) -> anyhow::Result<Vec<f64>> {
    let warm: Repository<Signals> = Repository::new(store.clone(), vault.clone());
    let mut out = vec![];
    for k in 0..n {
        let repo = if cold {
            Repository::new(store.clone(), vault.clone())
        } else {
            warm.clone()
        };
        let started = Instant::now();
        record(&repo, user, vec![mood_signal(format!("{label}-{k}"))]).await?;
        out.push(started.elapsed().as_secs_f64() * 1e3);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

async fn snapshot(server: &str, events: usize) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    let (store, vault, repo) = repo(&pool).await?;
    let small = user(&store, &vault, "small@example.org").await?;
    let big = user(&store, &vault, "big@example.org").await?;
    for k in 0..10 {
        record(&repo, small, vec![mood_signal(format!("s{k}"))]).await?;
    }
    let mut written = 0;
    while written < events {
        let n = (events - written).min(1000);
        let signals = (0..n).map(|k| mood_signal(format!("g{}", written + k))).collect();
        record(&repo, big, signals).await?;
        written += n;
    }
    let mut rows = vec![];
    for (who, id, n) in [("10", small, 10usize), ("many", big, events)] {
        let cold = time_commands(&store, &vault, id, &format!("cold-{who}"), 200, true).await?;
        let warm = time_commands(&store, &vault, id, &format!("warm-{who}"), 200, false).await?;
        rows.push((n, cold, warm));
    }
    let started = Instant::now();
    let replayed = oo_commands::store::read_stream(&pool, "signals", &big.to_string(), 0)
        .await?
        .len();
    let replay_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("one Signals command (decide, seal, durable append), 200 commands per row:");
    println!(
        "{:>16} {:>28} {:>28}",
        "events in stream", "cold: snapshot + tail (p50/p99)", "cached state (p50/p99)"
    );
    for (n, cold, warm) in rows {
        println!(
            "{:>16} {:>18.2} / {:>6.2} ms {:>18.2} / {:>6.2} ms",
            n,
            percentile(&cold, 50.0),
            percentile(&cold, 99.0),
            percentile(&warm, 50.0),
            percentile(&warm, 99.0)
        );
    }
    println!("(without a snapshot, reading the long stream alone takes {replay_ms:.1} ms for {replayed} events)");
    drop(store);
    db.drop_db(pool).await;
    Ok(())
}

async fn rebuild(server: &str, events: usize) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    let (store, vault, repo) = repo(&pool).await?;
    let users = 100;
    let mut ids = vec![];
    for u in 0..users {
        ids.push(user(&store, &vault, &format!("r{u}@example.org")).await?);
    }
    let started = Instant::now();
    fill_log(&repo, &ids, events, rebuild_signal).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    eprintln!(
        "wrote {total} events through the command path in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT * FROM events ORDER BY tx_id, position) e")
        .fetch_one(&pool)
        .await?;
    let raw = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut cursor = oo_commands::cursor::Cursor::START;
    let mut read = 0usize;
    let mut conn = pool.acquire().await?;
    loop {
        let batch = oo_commands::store::read_after(&mut conn, cursor, 5000).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.cursor;
        read += batch.len();
    }
    drop(conn);
    let reader = started.elapsed().as_secs_f64();
    println!("log of {total} events");
    println!(
        "  Postgres reading them alone (SELECT * … ORDER BY tx_id, position): {raw:.2} s ({:.0} events/s, {rows} rows)",
        rows as f64 / raw
    );
    println!(
        "  the store's reader, batches of 5000 decoded into rows:            {reader:.2} s ({:.0} events/s)",
        read as f64 / reader
    );
    let status = oo_projections::status::Status::default();
    for p in oo_projections::all() {
        let r = oo_projections::rebuild::rebuild(&pool, p.as_ref(), &status, |_, _| {}).await?;
        println!(
            "  rebuild {:<10} {:>9} events in {:>7.2} s = {:>8.0} events/s",
            p.name(),
            r.events_applied,
            r.seconds,
            r.events_per_second()
        );
    }
    drop(store);
    db.drop_db(pool).await;
    Ok(())
}

/// Sealing and opening one event's personal fields (the work every append and every read of a
/// personal field adds), and unwrapping a data key with age (once per user per process).
fn crypto(iterations: u32) {
    use oo_commands::sealing::{DataKey, Sealed, open, seal, split};
    let key = DataKey::generate();
    let event_id = Uuid::now_v7();
    let mut payload = json!({"SignalRecorded": {"data": {"kind": "task", "title": "Call the dentist about the crown", "project": "Health"}}});
    let fields = split(
        &mut payload,
        &[oo_domain::personal::TASK_TITLE, oo_domain::personal::TASK_PROJECT],
    );
    let started = Instant::now();
    let mut bytes = vec![];
    for _ in 0..iterations {
        bytes = seal(&key, event_id, &fields).map(|s| s.to_bytes()).unwrap_or_default();
    }
    let seal_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let started = Instant::now();
    let mut opened = 0usize;
    for _ in 0..iterations {
        if let Ok(s) = Sealed::from_bytes(&bytes) {
            opened += open(&key, event_id, &s).map(|m| m.len()).unwrap_or(0);
        }
    }
    let open_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let master = MasterKey::generate();
    let rounds = (iterations / 100).max(10);
    let started = Instant::now();
    let mut wrapped = vec![];
    for _ in 0..rounds {
        wrapped = master.wrap_key(&key).unwrap_or_default();
    }
    let wrap_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = master.unwrap_key(&wrapped);
    }
    let unwrap_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let _ = opened;
    println!("sealing two personal fields of one event (XChaCha20-Poly1305, {iterations} times):");
    println!(
        "  seal {seal_us:.2} µs, open {open_us:.2} µs, envelope {} bytes for {} bytes of fields",
        bytes.len(),
        serde_json::to_vec(&fields).map(|v| v.len()).unwrap_or(0)
    );
    println!(
        "a data key with age x25519 ({rounds} times): wrap {wrap_us:.0} µs, unwrap {unwrap_us:.0} µs ({} bytes wrapped)",
        wrapped.len()
    );
}

/// A private nats-server for a benchmark, killed on drop.
struct BenchNats {
    child: std::process::Child,
    url: String,
    dir: std::path::PathBuf,
}

impl BenchNats {
    fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("oo-bench-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("nats-server (Debian's package) must be installed")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        })
    }
}

impl Drop for BenchNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn relay(server: &str, events: usize, clients: usize, seconds: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    use oo_projections::relay::{CHECKPOINT, RelayConfig};
    let nats = BenchNats::start()?;

    // 1. A trivial publisher: the ceiling.
    let client = async_nats::connect(nats.url.as_str()).await?;
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await?;
    let body = bytes_of(600);
    let raw_n = 200_000usize;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(500);
    for i in 0..raw_n {
        acks.push(js.publish(format!("raw.{}", i % 64), body.clone().into()).await?);
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks.drain(..) {
        a.await?;
    }
    let raw_rate = raw_n as f64 / started.elapsed().as_secs_f64();

    // 2. The relay on a backlog.
    let (db, pool) = BenchDb::create(server).await?;
    let (store, vault, repo) = repo(&pool).await?;
    let mut ids = vec![];
    for u in 0..100 {
        ids.push(user(&store, &vault, &format!("n{u}@example.org")).await?);
    }
    fill_log(&repo, &ids, events, |u, i| mood_signal(format!("u{u}-{i}"))).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let status = oo_projections::status::Status::default();
    let started = Instant::now();
    let relay = tokio::spawn(oo_projections::relay::run(
        pool.clone(),
        RelayConfig::new(&nats.url),
        store.appended(),
        status.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    loop {
        let applied: Option<i64> = sqlx::query_scalar("SELECT events_applied FROM checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(&pool)
            .await?;
        if applied == Some(total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backlog_rate = total as f64 / started.elapsed().as_secs_f64();
    relay.abort();
    drop(store);
    db.drop_db(pool).await;

    // 3. End to end under append load: the real server with its relay, 64 clients appending one
    // signal per request; a subscriber timestamps each event's arrival.
    let (db, pool) = BenchDb::create(server).await?;
    let (base, stop) = start_server_with(&db.url, |c| {
        c.policy = "random".into();
        c.nats_url = Some(nats.url.clone());
    })
    .await?;
    let http = self::client()?;
    let mut tokens = vec![];
    for c in 0..clients {
        tokens.push(login(&http, &base, &format!("e2e{c}@example.org")).await?);
    }
    let mut sub = client.subscribe("oo.events.v1.signals.>").await?;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let collector = {
        let latencies = latencies.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let now = Utc::now().timestamp_micros();
                if let Ok(env) = oo_proto::decode_envelope(m.payload.as_ref())
                    && let Ok(mut l) = latencies.lock()
                {
                    l.push((now - env.recorded_at_us) as f64 / 1000.0);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for (c, token) in tokens.into_iter().enumerate() {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while Instant::now() < deadline {
                k += 1;
                let body = json!({"signals": [{"id": format!("e{c}-{k}"), "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": 1}}]});
                let _ = http.post(format!("{base}/signals")).bearer_auth(&token).json(&body).send().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    collector.abort();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    let _ = stop.send(());
    db.drop_db(pool).await;

    println!("NATS JetStream (Debian's nats-server 2.9, private instance, file storage)");
    println!("  trivial publisher, 600-byte messages, pipelined by 500: {raw_rate:.0} msgs/s");
    println!(
        "  relay on a backlog of {total} events (protobuf envelopes, msg-id, ordered):  {backlog_rate:.0} events/s"
    );
    println!(
        "  end to end under {clients} appending clients for {seconds} s ({} events): transaction start → message delivered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len(),
        percentile(&l, 50.0),
        percentile(&l, 99.0),
        l.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

fn bytes_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Writes `events` signals through the command path, spread over `users`, in commands of 1,000,
/// one task per user; `make(user index, signal index)` builds each signal.
async fn fill_log(
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

/// A third task signals (on 50 tasks per user, some completed), the rest moods.
fn rebuild_signal(u: usize, i: usize) -> NewSignal {
    let data = if i.is_multiple_of(3) {
        SignalData::Task {
            source: TaskSource::Todoist,
            external_id: ExternalId::parse(&format!("t{}", i % 50)).expect("valid id"),
            title: Text::parse("title", "A task").expect("valid text"),
            priority: Priority::parse(1 + (i % 4) as i64).expect("valid priority"),
            due: None,
            completed: i.is_multiple_of(7),
            project: None,
        }
    } else {
        SignalData::Mood {
            score: MoodScore::parse((i % 5) as i64 - 2).expect("valid score"),
            note: None,
        }
    };
    NewSignal {
        id: SignalId::parse(&format!("u{u}-{i}")).expect("valid id"),
        occurred_at: Utc::now(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::Buckets;

    #[test]
    fn buckets_are_read_from_the_text_format_by_labels_and_subtracted() {
        let before = "x_bucket{le=\"0.001\",path=\"/a\"} 1\nx_bucket{le=\"0.008\",path=\"/a\"} 2\nx_bucket{le=\"+Inf\",path=\"/a\"} 2\nx_bucket{le=\"0.001\",path=\"/b\"} 7\n";
        let after = "x_bucket{le=\"0.001\",path=\"/a\"} 50\nx_bucket{le=\"0.008\",path=\"/a\"} 100\nx_bucket{le=\"+Inf\",path=\"/a\"} 102\nx_bucket{le=\"0.001\",path=\"/b\"} 9\nx_sum{path=\"/a\"} 3\n";
        let a = [r#"path="/a""#];
        let h = Buckets::of(after, "x", &a).since(&Buckets::of(before, "x", &a));
        assert_eq!(h.0, vec![(0.001, 49), (0.008, 98), (f64::INFINITY, 100)]);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_bound(0.49), 0.001);
        assert_eq!(h.quantile_bound(0.98), 0.008);
        assert_eq!(h.quantile_bound(0.99), f64::INFINITY);
        assert_eq!(h.over(0.008), 2);
    }
}
