//! `snapshot`: one command's time on a `Signals` stream after 10 and after 50,000 events.

use crate::harness::*;
use oo_commands::aggregate::Repository;
use oo_commands::store::EventStore;
use oo_commands::vault::Vault;
use oo_domain::ids::UserId;
use oo_domain::signals::Signals;
use std::time::Instant;

/// Times `n` one-signal commands. `cold`: each on a new repository (no cached state: the
/// stream is loaded from its snapshot and the events after it).
pub(crate) async fn time_commands(
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

pub(crate) async fn snapshot(server: &str, events: usize) -> anyhow::Result<()> {
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
