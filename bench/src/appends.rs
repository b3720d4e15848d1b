//! `appends`: durable appends per second through `POST /signals`, beside pgbench's single-row
//! INSERT rate at the same concurrency on the same server.

use crate::harness::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) async fn appends(server: &str, clients: &[usize], seconds: u64, personal: bool) -> anyhow::Result<()> {
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
