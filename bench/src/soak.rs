//! `soak`: mixed traffic at a fixed offered rate for a long time against `oo serve` running as a
//! process of its own (so that its memory is its own), printing per interval the requests,
//! errors and p50/p99 per route, the server's resident memory and the heap it holds (its
//! `oo_heap_live_bytes` metric: live data, without what the allocator keeps), the WAL the
//! cluster wrote and the database's size, then a summary: errors in all, and the memory
//! (resident, held) at the end of warm-up beside the memory at the end.
//!
//! The mix, per request: 30% `POST /signals` (1 to 5 signals: tasks, moods, habits), 40%
//! `POST /recommend`, 15% `POST /feedback` on a tip served earlier and not reacted to yet (`GET
//! /me` when the person has none), 14.9% `GET /me`, 0.1% `GET /me/export` (a whole history: its
//! cost grows with the run, as a person's does with the years). An error is a transport failure
//! or any status but 200, 202 and (for `/recommend`) 204. The load is open-loop: requests start
//! on schedule whether or not earlier ones have finished, so a slow server shows as latency, not
//! as a lower rate.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shape of a soak run.
pub(crate) struct Soak {
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) users: usize,
    pub(crate) interval: u64,
    pub(crate) warmup: u64,
}

const ROUTES: [&str; 5] = ["signals", "recommend", "feedback", "me", "export"];

#[derive(Default)]
struct Window {
    latencies: BTreeMap<&'static str, Vec<u32>>,
    errors: BTreeMap<String, u64>,
}

pub(crate) async fn soak(server: &str, soak: &Soak) -> anyhow::Result<()> {
    let oo = std::env::current_exe()?.with_file_name("oo");
    anyhow::ensure!(
        oo.exists(),
        "{} is missing: build it beside oo-bench first (cargo build --release -p oo-api --bin oo)",
        oo.display()
    );
    let (db, pool) = BenchDb::create(server).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = std::env::temp_dir().join(format!("oo-soak-{port}"));
    let mut child = tokio::process::Command::new(&oo)
        .args(["serve", "--dev", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(&data)
        .args([
            "--rate-limit",
            "1000000/1000000",
            "--anon-rate-limit",
            "1000000/1000000",
        ])
        .args(["--signal-quota", "1000000000"])
        .env("OO_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let base = format!("http://127.0.0.1:{port}");
    let http = client()?;
    let started = Instant::now();
    while http.get(format!("{base}/health")).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "oo serve did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut tokens = Vec::with_capacity(soak.users);
    for u in 0..soak.users {
        tokens.push(login(&http, &base, &format!("soak-{u}@example.org")).await?);
    }
    println!(
        "soak: {} req/s for {} s against oo serve (pid {pid}), {} people; warm-up {} s; every {} s:",
        soak.rate, soak.seconds, soak.users, soak.warmup, soak.interval
    );
    println!(
        "{:>6} {:>7} {:>6} {:>10} {:>11} {:>9} {:>8}  {}",
        "t (s)",
        "sent",
        "errors",
        "RSS (MiB)",
        "heap (MiB)",
        "WAL (MB)",
        "DB (MB)",
        ROUTES.map(|r| format!("{r} p50/p99 ms")).join("  ")
    );
    let mut wal_before = wal_bytes(&pool).await;

    let window = Arc::new(Mutex::new(Window::default()));
    let tips: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / soak.rate as f64);
    let begin = tokio::time::Instant::now();
    let mut next_report = soak.interval;
    let mut sent_in_window = 0u64;
    let (mut errors_total, mut sent_total) = (0u64, 0u64);
    let mut rss_after_warmup = None;
    let mut rss_max_after_warmup = 0u64;
    let mut heap_after_warmup = None;
    let mut seq = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let due = begin + period.mul_f64(seq as f64);
        tokio::time::sleep_until(due).await;
        let elapsed = begin.elapsed().as_secs();
        if elapsed >= next_report {
            let w = std::mem::take(&mut *window.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
            let errors: u64 = w.errors.values().sum();
            let rss = rss_mib(pid);
            let heap = heap_mib(&http, &base).await;
            let wal = wal_bytes(&pool).await;
            let wal_mb = (wal - wal_before) / 1e6;
            wal_before = wal;
            let db_mb = db_bytes(&pool).await / 1e6;
            let cols = ROUTES
                .map(|r| {
                    let mut l = w.latencies.get(r).cloned().unwrap_or_default();
                    l.sort_unstable();
                    format!("{:>6.1}/{:<7.1}", pct(&l, 0.50), pct(&l, 0.99))
                })
                .join("  ");
            println!(
                "{next_report:>6} {sent_in_window:>7} {errors:>6} {rss:>10} {heap:>11.1} {wal_mb:>9.0} {db_mb:>8.0}  {cols}"
            );
            for (what, n) in &w.errors {
                println!("         error: {what} ×{n}");
            }
            errors_total += errors;
            sent_total += sent_in_window;
            sent_in_window = 0;
            if next_report >= soak.warmup {
                rss_after_warmup.get_or_insert(rss);
                heap_after_warmup.get_or_insert(heap);
                rss_max_after_warmup = rss_max_after_warmup.max(rss);
            }
            next_report += soak.interval;
        }
        if elapsed >= soak.seconds {
            break;
        }
        seq += 1;
        sent_in_window += 1;
        // Independent draws for the route and the person (a product of `seq` with two odd
        // constants ties them: some people would never get a route).
        let pick = (splitmix(seq) % 1000) as u32;
        let user = (splitmix(seq ^ 0x9e37_79b9_7f4a_7c15) % tokens.len() as u64) as usize;
        let (http, base, token) = (http.clone(), base.clone(), tokens[user].clone());
        let (window, tips) = (window.clone(), tips.clone());
        in_flight.spawn(async move {
            let t = Instant::now();
            let (route, outcome) = one(&http, &base, &token, user, seq, pick, &tips).await;
            let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
            if let Ok(mut w) = window.lock() {
                w.latencies.entry(route).or_default().push(micros);
                if let Err(e) = outcome {
                    *w.errors.entry(format!("{route}: {e}")).or_default() += 1;
                }
            }
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    let rss_end = rss_mib(pid);
    let heap_end = heap_mib(&http, &base).await;
    println!(
        "soak: {sent_total} requests, {errors_total} errors; server RSS {} MiB after warm-up, {} MiB at most after it, \
         {rss_end} MiB at the end; heap held {:.1} MiB after warm-up, {heap_end:.1} MiB at the end",
        rss_after_warmup.unwrap_or(0),
        rss_max_after_warmup,
        heap_after_warmup.unwrap_or(f64::NAN)
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&data);
    db.drop_db(pool).await;
    Ok(())
}

/// One request of the mix; the route and whether it went as expected.
async fn one(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    user: usize,
    seq: u64,
    pick: u32,
    tips: &Mutex<Vec<(usize, String)>>,
) -> (&'static str, Result<(), String>) {
    let send = |req: reqwest::RequestBuilder| async move {
        match req.bearer_auth(token).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                Ok((status, body))
            }
            Err(e) => Err(if e.is_timeout() {
                "timeout".to_owned()
            } else {
                "transport".to_owned()
            }),
        }
    };
    let expect = |r: Result<(u16, Value), String>, ok: &[u16]| match r {
        Ok((s, b)) if ok.contains(&s) => Ok(b),
        Ok((s, b)) => Err(format!("{s} {}", b["code"].as_str().unwrap_or(""))),
        Err(e) => Err(e),
    };
    match pick {
        0..300 => {
            let n = 1 + (seq % 5) as usize;
            let signals: Vec<Value> = (0..n)
                .map(|i| {
                    let id = format!("s{seq}-{i}");
                    let at = chrono::Utc::now().to_rfc3339();
                    match (seq + i as u64) % 3 {
                        0 => json!({"id": id, "kind": "task", "occurred_at": at, "data": {"source": "manual",
                            "external_id": format!("t{}", seq % 40), "title": "Tidy the desk", "priority": 1 + (seq % 4),
                            "completed": seq.is_multiple_of(7)}}),
                        1 => json!({"id": id, "kind": "mood", "occurred_at": at, "data": {"score": (seq % 5) as i64 - 2}}),
                        _ => json!({"id": id, "kind": "habit", "occurred_at": at, "data": {"name": "Walk", "done": seq.is_multiple_of(2)}}),
                    }
                })
                .collect();
            let r = send(
                http.post(format!("{base}/signals"))
                    .json(&json!({ "signals": signals })),
            )
            .await;
            ("signals", expect(r, &[200]).map(|_| ()))
        }
        300..700 => {
            let r = send(http.post(format!("{base}/recommend")).json(&json!({}))).await;
            let r = expect(r, &[200, 204]);
            if let Ok(b) = &r
                && let Some(id) = b["tip"]["id"].as_str()
                && let Ok(mut t) = tips.lock()
            {
                t.push((user, id.to_owned()));
                if t.len() > 10_000 {
                    t.drain(..5_000);
                }
            }
            ("recommend", r.map(|_| ()))
        }
        700..850 => {
            let tip = tips.lock().ok().and_then(|mut t| {
                let i = t.iter().position(|(u, _)| *u == user)?;
                Some(t.swap_remove(i).1)
            });
            let Some(tip) = tip else {
                // Nothing of this person's to react to yet: read the profile instead.
                return (
                    "me",
                    expect(send(http.get(format!("{base}/me"))).await, &[200]).map(|_| ()),
                );
            };
            let reaction = ["done", "helpful", "snooze", "not_helpful", "dismiss"][(seq % 5) as usize];
            let r = send(
                http.post(format!("{base}/feedback"))
                    .json(&json!({"tip_id": tip, "reaction": reaction})),
            )
            .await;
            ("feedback", expect(r, &[202]).map(|_| ()))
        }
        850..999 => (
            "me",
            expect(send(http.get(format!("{base}/me"))).await, &[200]).map(|_| ()),
        ),
        _ => (
            "export",
            expect(send(http.get(format!("{base}/me/export"))).await, &[200]).map(|_| ()),
        ),
    }
}

/// The heap the server holds, in MiB, from its `oo_heap_live_bytes` metric (NaN if unreadable).
async fn heap_mib(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("oo_heap_live_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |b| b / (1024.0 * 1024.0))
}

/// SplitMix64: a well-spread 64-bit value from a counter.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pct(sorted_micros: &[u32], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let i = ((sorted_micros.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_micros[i.min(sorted_micros.len() - 1)]) / 1000.0
}

/// Where the cluster's WAL stands, in bytes (NaN if unreadable): the soak prints what each
/// interval wrote, which is mostly the server's (nothing else should run).
async fn wal_bytes(pool: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar::<_, f64>("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
        .fetch_one(pool)
        .await
        .unwrap_or(f64::NAN)
}

/// The bench database's size on disk, in bytes (NaN if unreadable): the log grows, and so
/// does any bloat vacuum does not keep up with.
async fn db_bytes(pool: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .map_or(f64::NAN, |b| b as f64)
}

/// The process's resident memory in MiB (Linux), 0 when unknown.
fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
