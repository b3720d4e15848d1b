//! `export`: `oo export decisions` on logs of growing size (100,000 and 1,000,000 decisions by
//! default), each size in both formats: its time and its peak memory. Each export runs in a
//! child process of its own (this binary, hidden subcommand `export-child`, calling the very
//! function behind `oo export decisions`), so that its peak resident memory is the export's
//! alone, not that of filling the log.

use crate::harness::*;
use chrono::{Duration, Utc};
use futures::StreamExt;
use oo_commands::WriteSide;
use oo_commands::aggregate::Meta;
use oo_commands::store::WriterConfig;
use oo_commands::vault::MasterKey;
use oo_domain::ids::{TipId, UserId};
use oo_domain::reward::Reaction;
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, TipCommand};
use std::time::Instant;
use uuid::Uuid;

/// Candidates per decision ("not now" last) and features per candidate, as in `replay`'s
/// large run.
const CANDIDATES: usize = 20;
const FEATURES: usize = 10;

/// One decision of `user`: the chosen candidate is drawn from `i`, not-now included.
fn decision(user: UserId, i: usize) -> Decision {
    let unit = |k: usize| (oo_domain::policy::mix((i * 31 + k) as u64) % 1000) as f64 / 1000.0;
    let p = 1.0 / CANDIDATES as f64;
    Decision {
        tip_id: TipId::from_uuid(Uuid::new_v4()),
        user_id: user,
        served_at: Utc::now() - Duration::days(2),
        candidates: (0..CANDIDATES)
            .map(|c| LoggedCandidate {
                candidate_id: if c + 1 == CANDIDATES {
                    "not_now".into()
                } else {
                    format!("advice:{c}")
                },
                kind: if c + 1 == CANDIDATES {
                    CandidateKind::NotNow
                } else {
                    CandidateKind::Advice
                },
                features: (0..FEATURES).map(|f| unit(c * FEATURES + f)).collect(),
            })
            .collect(),
        chosen: i % CANDIDATES,
        policy: "random".into(),
        policy_version: "1".into(),
        feature_version: 2,
        score: 0.0,
        propensity: p,
        distribution: vec![p; CANDIDATES],
        seed: i as u64,
        shadow: vec![],
        title: "an advice".into(),
        body: String::new(),
        params: Default::default(),
        context: (0..8).map(|k| unit(1000 + k)).collect(),
        model_rewards: Some(0),
        prior_rewards: Some(0),
    }
}

/// Appends decisions `from..to` (with a reaction to each one shown) over `users`.
async fn fill(write: &WriteSide, users: &[UserId], from: usize, to: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
        .map(|i| {
            let (write, user) = (write.clone(), users[i % users.len()]);
            async move {
                let d = decision(user, i);
                let (id, shown) = (d.tip_id.to_string(), d.chosen + 1 < CANDIDATES);
                write
                    .tips
                    .execute_new(&id, TipCommand::Serve(Box::new(d)), Meta::new(Utc::now()))
                    .await?;
                if shown {
                    let reaction = if i % 3 == 0 { Reaction::Done } else { Reaction::Dismiss };
                    let react = TipCommand::React {
                        user_id: user,
                        reaction,
                        at: Utc::now(),
                    };
                    write.tips.execute(&id, react, Meta::new(Utc::now())).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

pub(crate) async fn export(server: &str, sizes: &[usize]) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    let write = WriteSide::start(pool.clone(), MasterKey::generate(), WriterConfig::default()).await?;
    let mut users = Vec::new();
    for u in 0..100 {
        users.push(user(&write.store, &write.vault, &format!("x{u}@example.org")).await?);
    }
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let mut have = 0;
    println!(
        "oo export decisions ({CANDIDATES} candidates of {FEATURES} features a decision), each run in a process of its own"
    );
    println!(
        "{:>10} {:>8} {:>10} {:>12} {:>14}",
        "decisions", "format", "seconds", "decisions/s", "peak RSS (MiB)"
    );
    for size in sizes {
        let started = Instant::now();
        fill(&write, &users, have, size).await?;
        have = size;
        eprintln!(
            "log filled to {size} decisions in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        for format in ["jsonl", "parquet"] {
            let out = std::env::temp_dir().join(format!("oo-bench-export-{}.{format}", std::process::id()));
            let started = Instant::now();
            let child = std::process::Command::new(std::env::current_exe()?)
                .args(["export-child", "--database-url", &db.url, "--format", format, "--out"])
                .arg(&out)
                .output()?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
            let peak = String::from_utf8_lossy(&child.stdout)
                .trim()
                .parse::<f64>()
                .unwrap_or(f64::NAN);
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&out);
            println!(
                "{size:>10} {format:>8} {seconds:>10.1} {:>12.0} {peak:>14.0}   ({:.0} MiB written)",
                size as f64 / seconds,
                bytes as f64 / 1_048_576.0
            );
        }
    }
    drop(write);
    db.drop_db(pool).await;
    Ok(())
}

/// The child: `oo export decisions` itself, then its peak resident memory on stdout (MiB).
pub(crate) async fn child(database_url: &str, format: &str, out: &str) -> anyhow::Result<()> {
    use oo_api::cli::{ExportDecisionsArgs, ExportFormat};
    let mut db = oo_api::config::ServeConfig::for_database(database_url, std::env::temp_dir()).db;
    db.db_pool = 2;
    oo_api::cli::export_decisions(&ExportDecisionsArgs {
        db,
        since: None,
        until: None,
        format: if format == "parquet" {
            ExportFormat::Parquet
        } else {
            ExportFormat::Jsonl
        },
        out: out.to_owned(),
    })
    .await?;
    println!("{}", crate::replay::peak_mib().unwrap_or(f64::NAN));
    Ok(())
}
