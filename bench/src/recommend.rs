//! `recommend`: `POST /recommend` latency at a fixed offered load (open loop) and the maximum
//! throughput of closed-loop clients, with what the machine, the runtime and Postgres did meanwhile.

use crate::harness::*;
use crate::probes::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shape of a `/recommend` benchmark.
pub(crate) struct Load {
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) clients: usize,
    pub(crate) users: usize,
    pub(crate) todos: usize,
    pub(crate) history: usize,
}

pub(crate) async fn recommend(server: &str, load: &Load, policy: &str, shadows: &str) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    let (base, stop) = start_server_with(&db.url, |c| {
        c.policy = policy.to_owned();
        c.shadow_policies = shadows.to_owned();
    })
    .await?;
    let http = client()?;
    let tokens = populate(&http, &base, load).await?;
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
    open_loop(&http, &base, &tokens, load.rate, 2).await;

    let cpu_before = machine_cpu();
    let io_before = io_pressure();
    let pg_before = PgWrites::read(&pool).await?;
    let scraped_before = scrape(&http, &base).await?;
    let probe = StallProbe::start();
    let measured = open_loop(&http, &base, &tokens, load.rate, load.seconds).await;
    let stalls = probe.stop().await;
    let pg_after = PgWrites::read(&pool).await?;
    let scraped_after = scrape(&http, &base).await?;
    let cpu = machine_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    let io = io_pressure().zip(io_before).map(|((some, full), (some0, full0))| {
        let span = load.seconds as f64 * 1e6;
        (
            some.saturating_sub(some0) as f64 / span,
            full.saturating_sub(full0) as f64 / span,
        )
    });
    wait_for_projections(&pool).await?;
    let candidates: f64 = sqlx::query_scalar("SELECT avg(candidates)::float8 FROM tip_log")
        .fetch_one(&pool)
        .await?;
    let Load {
        rate,
        seconds,
        clients,
        users,
        todos,
        ..
    } = *load;
    let total = rate * seconds;
    let shadow_note = if shadows.is_empty() { "none" } else { shadows };
    println!(
        "POST /recommend, policy {policy}, shadows {shadow_note}, {users} users with {todos} open todos each \
         ({candidates:.1} candidates on average: todos + fitting advices + not now), {learned} learned models \
         ({served_before} decisions before the measurement)"
    );
    let l = &measured.latencies;
    println!(
        "open loop at {rate} req/s for {seconds} s: {} answered, {} errors, achieved {:.0} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        measured.errors,
        measured.achieved,
        percentile(l, 50.0),
        percentile(l, 90.0),
        percentile(l, 99.0),
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
    println!(
        "server side during the open loop (bucket bounds of /metrics): {}",
        server_side(&scraped_before, &scraped_after)
    );
    let throughput = closed_loop(&http, &base, &tokens, clients, seconds).await;
    println!("closed loop, {clients} clients: {throughput:.0} req/s");
    let _ = stop.send(());
    db.drop_db(pool).await;
    Ok(())
}

/// Signs the users in, gives each their open todos, waits until the projections have them, and
/// lets every user get and react to `history` tips, so that every model has been updated (and
/// is read as a row). Returns their session tokens.
async fn populate(http: &reqwest::Client, base: &str, load: &Load) -> anyhow::Result<Vec<String>> {
    let mut tokens = vec![];
    let mut last_position = String::new();
    for u in 0..load.users {
        let t = login(http, base, &format!("rec{u}@example.org")).await?;
        let signals: Vec<_> = (0..load.todos)
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
    for token in &tokens {
        for k in 0..load.history {
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
    Ok(tokens)
}

/// What an open loop measured.
struct OpenLoop {
    /// Each successful request's latency from its scheduled time, in ms, sorted.
    latencies: Vec<f64>,
    errors: u64,
    /// Requests per second actually sent.
    achieved: f64,
}

/// `POST /recommend` at `rate` per second for `seconds`, on schedule whether or not earlier
/// requests have answered, the users taking turns; latency counts from the scheduled time.
async fn open_loop(http: &reqwest::Client, base: &str, tokens: &[String], rate: u64, seconds: u64) -> OpenLoop {
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = rate * seconds;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (http, base, token, latencies, errors) = (
            http.clone(),
            base.to_owned(),
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
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_by(|a, b| a.total_cmp(b));
    OpenLoop {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        achieved,
    }
}

/// The server's own histograms over the open loop: `/recommend`, its appends, the writer's
/// batches.
fn server_side(before: &str, after: &str) -> String {
    [
        (
            "/recommend in the server",
            "oo_http_request_duration_seconds",
            &[r#"path="/recommend""#][..],
        ),
        ("its durable appends", "oo_append_duration_seconds", &[]),
        ("the writer's batches", "oo_append_commit_duration_seconds", &[]),
    ]
    .map(|(what, name, labels)| {
        let h = Buckets::of(after, name, labels).since(&Buckets::of(before, name, labels));
        format!(
            "{what}: {} with p99 ≤ {:.1} ms and {} over 8 ms",
            h.count(),
            h.quantile_bound(0.99) * 1e3,
            h.over(0.008)
        )
    })
    .join("; ")
}

/// Maximum throughput: `clients` clients sending `POST /recommend` back to back for `seconds`;
/// successful requests per second.
async fn closed_loop(http: &reqwest::Client, base: &str, tokens: &[String], clients: usize, seconds: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for c in 0..clients {
        let (http, base, token, count) = (
            http.clone(),
            base.to_owned(),
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
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
