//! `replay`: off-policy estimation speed. A synthetic file of logged decisions (80 candidates
//! each, logged by a softmax) is evaluated for the uniform target by oO's estimators and, side
//! by side on the same file and bootstrap size, by Open Bandit Pipeline's formulas in numpy
//! (`bench/reference/ope_numpy.py`); then oO alone on a large file, with its peak memory.

use oo_replay::evaluate::{Options, Target, evaluate};
use oo_replay::logged::LoggedDecision;
use oo_replay::ope::{Estimator, Weighted, estimate, with_intervals};
use oo_replay::synthetic::{candidates, decision, softmax_draw, unit};
use std::io::Write;
use std::time::Instant;

/// `n` decisions over `k` candidates of `features` features each, logged by a softmax.
fn synthetic(n: usize, k: usize, features: usize) -> Vec<LoggedDecision> {
    let mut s = 42u64;
    (0..n)
        .map(|i| {
            let candidates = candidates(k, features, &mut s);
            let scores: Vec<f64> = candidates.iter().map(|c| 2.0 * c.features[0]).collect();
            let (distribution, chosen) = softmax_draw(&scores, unit(&mut s));
            let reward = candidates[chosen].features[1] + unit(&mut s) - 0.5;
            decision(format!("d{i}"), vec![1.0], candidates, distribution, chosen, reward)
        })
        .collect()
}

/// The peak resident memory of this process so far, in MiB (Linux).
pub(crate) fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn replay(decisions: usize, samples: usize, large: usize) -> anyhow::Result<()> {
    let clip = 10.0;
    let logged = synthetic(decisions, 80, 10);
    let path = std::env::temp_dir().join(format!("oo-bench-replay-{}.jsonl", std::process::id()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for d in &logged {
            serde_json::to_writer(&mut file, d)?;
            file.write_all(b"\n")?;
        }
    }
    // oO: the same three estimators for the uniform target, on the same decisions.
    let rows: Vec<Weighted> = logged
        .iter()
        .map(|d| Weighted {
            w: 1.0 / (d.candidates.len() as f64 * d.propensity),
            r: d.reward.unwrap_or(0.0),
            q_logged: 0.0,
            q_target: 0.0,
            matched: false,
            low_propensity: false,
        })
        .collect();
    let started = Instant::now();
    let ips = estimate(Estimator::Ips, &rows, clip);
    let one = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let intervals = with_intervals(
        &rows,
        &[Estimator::Ips, Estimator::IpsClipped, Estimator::Snips],
        clip,
        samples,
        1,
    );
    let boot = started.elapsed().as_secs_f64();
    let reference = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/reference/ope_numpy.py"))
        .arg(&path)
        .arg(samples.to_string())
        .arg(clip.to_string())
        .output();
    let _ = std::fs::remove_file(&path);
    println!(
        "off-policy estimates for the uniform target, {decisions} decisions of 80 candidates, bootstrap of {samples} (ips, ips_clipped, snips):"
    );
    println!(
        "  oO:    one IPS {:.3} ms, bootstrap {:.3} s (value {:.6}, {} estimators)",
        one * 1e3,
        boot,
        ips.unwrap_or(f64::NAN),
        intervals.len()
    );
    match reference {
        Ok(out) if out.status.success() => {
            let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let (ref_one, ref_boot) = (
                r["one_ipw_seconds"].as_f64().unwrap_or(f64::NAN),
                r["bootstrap_seconds"].as_f64().unwrap_or(f64::NAN),
            );
            println!(
                "  numpy: one IPW {:.3} ms, bootstrap {:.3} s (value {:.6})",
                ref_one * 1e3,
                ref_boot,
                r["ipw"].as_f64().unwrap_or(f64::NAN)
            );
            println!(
                "  oO is {:.1}x the reference's speed on one estimate, {:.1}x on the bootstrap",
                ref_one / one,
                ref_boot / boot
            );
        }
        Ok(out) => println!(
            "  numpy reference failed (pip install numpy?): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        ),
        Err(e) => println!("  numpy reference not run: {e}"),
    }
    if large > 0 {
        let big = synthetic(large, 20, 10);
        let started = Instant::now();
        let report = evaluate(
            &big,
            &[("uniform".to_owned(), Target::Uniform)],
            &Options {
                bootstrap: samples,
                ..Options::default()
            },
        );
        println!(
            "oO alone, {large} decisions of 20 candidates with 10 features, every estimator and a bootstrap of {samples}, the reward model included: {:.1} s, peak memory {:.0} MiB (the decisions themselves included), {} estimates",
            started.elapsed().as_secs_f64(),
            peak_mib().unwrap_or(f64::NAN),
            report.policies[0].estimates.values().filter(|e| e.is_some()).count()
        );
    }
    Ok(())
}
