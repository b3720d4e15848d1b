//! Truth in the simulator: off-policy estimates from a logging policy's decisions hold each
//! target's true value (DESIGN section 11, `oo simulate --ope`).

use crate::common::*;
use oo_replay::simulate::{SimulateArgs, coverage, logged_run};

fn args(url: &str, seed: u64, users: usize, days: u32) -> SimulateArgs {
    SimulateArgs {
        database_url: url.to_owned(),
        db_pool: 8,
        users,
        days,
        seed,
        policies: String::new(),
        plot: None,
        reset: true,
        concurrency: 32,
        ope: Some("random".into()),
    }
}

#[tokio::test]
async fn over_ten_seeds_the_95_percent_intervals_of_snips_and_dr_hold_the_truth_nine_times_in_ten() {
    let targets: Vec<String> = ["uniform", "linucb", "thompson", "linucb:alpha=1,epsilon=0.2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Three seeds at a time (each in its own database).
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
    let runs: Vec<_> = (1..=10u64)
        .map(|seed| {
            let (gate, targets) = (gate.clone(), targets.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("permit");
                let (url, _pool, _db) = fresh_db(&server_url()).await;
                logged_run(&args(&url, seed, 15, 7), "random", &targets)
                    .await
                    .expect("simulated")
            })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        let (logged, ope) = run.await.expect("the run");
        assert_eq!(ope.logged_by, "random");
        assert!(
            ope.decisions as u64 >= logged.decisions * 9 / 10,
            "{} settled",
            ope.decisions
        );
        assert_eq!(ope.targets.len(), targets.len());
        reports.push(ope);
    }
    let rows = coverage::coverage(&reports);
    eprintln!("{}", coverage::table(&rows));
    for estimator in ["snips", "dr"] {
        let row = rows.iter().find(|r| r.estimator == estimator).expect("estimated");
        assert_eq!(row.pairs, 40, "{estimator}: every (target, seed) pair");
        assert!(
            row.share() >= 0.9,
            "{estimator}: {} of {} covered",
            row.covered,
            row.pairs
        );
    }
}

#[tokio::test]
async fn oo_simulate_ope_prints_each_targets_truth_beside_its_estimates() {
    let (url, _pool, _db) = fresh_db(&server_url()).await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"))
        .args([
            "simulate", "--users", "6", "--days", "2", "--seed", "3", "--reset", "--json",
        ])
        .args([
            "--policies",
            "random,linucb",
            "--ope",
            "--ope-logging",
            "linucb:epsilon=0.5",
        ])
        .env("OO_DATABASE_URL", &url)
        .output()
        .await
        .expect("oo runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON object");
    let ope = &report["ope"];
    assert_eq!(ope["logged_by"], "linucb:epsilon=0.5");
    // The logging policy ran like the others; the targets are uniform and the other policies.
    assert!(report["policies"]["linucb:epsilon=0.5"]["decisions"].as_u64() > Some(0));
    let targets = ope["targets"].as_object().expect("targets");
    let names: Vec<&str> = targets.keys().map(String::as_str).collect();
    assert_eq!(names, ["linucb", "random", "uniform"]);
    for (name, t) in targets {
        assert!(t["truth"].is_f64(), "{name}: {t}");
        for estimator in ["ips", "snips", "dr", "sndr"] {
            let e = &t["estimates"][estimator];
            assert!(
                e["ci_low"].as_f64() <= e["value"].as_f64() && e["value"].as_f64() <= e["ci_high"].as_f64(),
                "{name} {estimator}: {e}"
            );
        }
        assert!(
            t["estimates"]["replay"].is_null(),
            "not logged uniformly: no replay estimate"
        );
    }
}
