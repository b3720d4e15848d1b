//! IPS and SNIPS against Open Bandit Pipeline's formulas: on a synthetic file this test makes,
//! `oo replay`'s estimates for the uniform target and for the logged policy equal the values
//! `reference/ips_snips.py` computed with numpy (OBP 0.5.7's `InverseProbabilityWeighting` and
//! `SelfNormalizedInverseProbabilityWeighting`, reproduced: OBP itself does not import on this
//! Python) on the same file, to a relative 1e-9.

use oo_domain::policy::mix;
use oo_replay::evaluate::{Options, Target, evaluate};
use oo_replay::logged::{LoggedDecision, read_jsonl};
use oo_replay::ope::Estimator;
use oo_replay::synthetic::{candidates, decision, softmax_draw, unit};
use std::io::Write;

/// `n` decisions logged by a softmax policy over 3 to 8 candidates, rewards in {-1, ..., 1}.
fn synthetic(n: usize) -> Vec<LoggedDecision> {
    let mut s = 20_261_203u64;
    (0..n)
        .map(|i| {
            let k = 3 + (mix(i as u64) % 6) as usize;
            let context: Vec<f64> = (0..3).map(|_| unit(&mut s)).collect();
            let candidates = candidates(k, 2, &mut s);
            let scores: Vec<f64> = (0..k).map(|_| 3.0 * unit(&mut s)).collect();
            let (distribution, chosen) = softmax_draw(&scores, unit(&mut s));
            let reward = [-1.0, -0.5, 0.0, 0.5, 1.0][(mix(s ^ chosen as u64) % 5) as usize];
            decision(format!("d{i}"), context, candidates, distribution, chosen, reward)
        })
        .collect()
}

#[test]
fn ips_and_snips_equal_open_bandit_pipelines_on_the_same_file() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ope-synthetic.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        for d in synthetic(5_000) {
            serde_json::to_writer(&mut file, &d).expect("json");
            file.write_all(b"\n").expect("line");
        }
    }
    let bytes = std::fs::read(&path).expect("read back");
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("reference/ips_snips.json")).expect("the reference");
    assert_eq!(
        reference["file_fnv1a"].as_u64(),
        Some(oo_domain::ids::fnv1a(bytes.iter().copied())),
        "the generator changed: run `python3 replay/tests/reference/ips_snips.py {}` and commit its output",
        path.display()
    );
    let decisions: Vec<LoggedDecision> = read_jsonl(std::io::BufReader::new(&bytes[..]))
        .collect::<Result<_, _>>()
        .expect("valid lines");
    let options = Options {
        estimators: vec![Estimator::Ips, Estimator::Snips],
        bootstrap: 10,
        ..Options::default()
    };
    let targets = vec![
        ("uniform".to_owned(), Target::Uniform),
        ("logged".to_owned(), Target::Logged),
    ];
    let report = evaluate(&decisions, &targets, &options);
    assert_eq!(report.decisions, 5_000);
    for p in &report.policies {
        for (estimator, expected) in [("ips", "ipw"), ("snips", "snipw")] {
            let ours = p.estimates[estimator].expect("estimated").value;
            let theirs = reference[&p.policy][expected].as_f64().expect("reference value");
            assert!(
                ((ours - theirs) / theirs).abs() < 1e-9,
                "{} {estimator}: {ours} vs OBP's formula {theirs}",
                p.policy
            );
        }
    }
}

/// On data whose expected rewards are known (linear in the candidate's features, so the reward
/// model can learn them), every estimator's interval holds the uniform target's true value, and
/// DR's error is no larger than IPS's.
#[test]
fn the_estimates_cover_a_known_true_value() {
    let mut s = 7u64;
    let weights = [0.6, -0.4];
    let expected = |f: &[f64]| weights[0] * f[0] + weights[1] * f[1];
    let mut truth = 0.0;
    let decisions: Vec<LoggedDecision> = (0..20_000)
        .map(|i| {
            let k = 4;
            let candidates = candidates(k, 2, &mut s);
            truth += candidates.iter().map(|c| expected(&c.features)).sum::<f64>() / k as f64;
            // Logged by a softmax leaning on the first feature: far from uniform.
            let scores: Vec<f64> = candidates.iter().map(|c| 2.0 * c.features[0]).collect();
            let (distribution, chosen) = softmax_draw(&scores, unit(&mut s));
            // The reward: the expected value plus noise of mean 0.
            let reward = expected(&candidates[chosen].features) + (unit(&mut s) - 0.5);
            decision(format!("d{i}"), vec![1.0], candidates, distribution, chosen, reward)
        })
        .collect();
    let truth = truth / decisions.len() as f64;
    let options = Options {
        bootstrap: 300,
        ..Options::default()
    };
    let report = evaluate(&decisions, &[("uniform".to_owned(), Target::Uniform)], &options);
    assert!(report.reward_model, "the reward model is fitted");
    let estimates = &report.policies[0].estimates;
    for name in ["ips", "snips", "dr", "sndr"] {
        let e = estimates[name].expect("estimated");
        assert!(
            e.ci_low <= truth && truth <= e.ci_high,
            "{name}: [{}, {}] misses the truth {truth}",
            e.ci_low,
            e.ci_high
        );
    }
    let error = |name: &str| (estimates[name].expect("estimated").value - truth).abs();
    let width = |name: &str| {
        let e = estimates[name].expect("estimated");
        e.ci_high - e.ci_low
    };
    assert!(width("dr") < width("ips"), "a right reward model narrows the interval");
    assert!(
        error("dr") <= error("ips") + 1e-3,
        "dr {} vs ips {}",
        error("dr"),
        error("ips")
    );
}
