//! The coverage table of docs/replay.md ("Truth in the simulator"): `oo simulate --ope` over
//! several seeds, then how often each estimator's 95% interval held each target's true value,
//! and its mean absolute error.
//!
//! ```sh
//! cargo run --release -p oo-replay --example ope_coverage -- \
//!     postgres://postgres@127.0.0.1:5432/oo_coverage SEEDS USERS DAYS [LOGGING] [TARGETS]
//! ```
//! TARGETS is `;`-separated (default `uniform;linucb;thompson;linucb:alpha=1,epsilon=0.2`);
//! LOGGING defaults to `random`. Each seed runs in its own databases (`<database>_s<seed>_sim_…`).

use oo_replay::simulate::{SimulateArgs, coverage, logged_run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ope_coverage DATABASE_URL SEEDS USERS DAYS [LOGGING] [TARGETS]";
    let [url, seeds, users, days, rest @ ..] = args.as_slice() else {
        anyhow::bail!(usage);
    };
    let (seeds, users, days): (u64, usize, u32) = (seeds.parse()?, users.parse()?, days.parse()?);
    let logging = rest.first().map_or("random", String::as_str);
    let targets: Vec<String> = rest
        .get(1)
        .map_or("uniform;linucb;thompson;linucb:alpha=1,epsilon=0.2", String::as_str)
        .split(';')
        .map(str::to_owned)
        .collect();
    let mut reports = Vec::new();
    for seed in 1..=seeds {
        let started = std::time::Instant::now();
        let (_, ope) = logged_run(
            &SimulateArgs {
                database_url: format!("{url}_s{seed}"),
                db_pool: 16,
                users,
                days,
                seed,
                policies: String::new(),
                plot: None,
                reset: true,
                concurrency: 64,
                ope: Some(logging.to_owned()),
            },
            logging,
            &targets,
        )
        .await?;
        eprintln!(
            "seed {seed}: {} decisions in {:.0} s",
            ope.decisions,
            started.elapsed().as_secs_f64()
        );
        for (name, t) in &ope.targets {
            let snips = t.estimates.get("snips").copied().flatten();
            let dr = t.estimates.get("dr").copied().flatten();
            eprintln!(
                "  {name}: truth {:.4}, snips {:?}, dr {:?}",
                t.truth,
                snips.map(|e| (e.value, e.ci_low, e.ci_high)),
                dr.map(|e| (e.value, e.ci_low, e.ci_high))
            );
        }
        reports.push(ope);
    }
    println!(
        "{} seeds, {users} people × {days} days, logged by {logging}, targets {}",
        seeds,
        targets.join("; ")
    );
    print!("{}", coverage::table(&coverage::coverage(&reports)));
    Ok(())
}
