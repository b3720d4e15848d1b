//! The promotion gate (DESIGN section 12): a shadow policy may serve only if, on the last N
//! settled decisions the serving policy made, the lower bounds of its 95% intervals under SNIPS
//! and DR are at least the serving policy's own on-policy value there (the mean reward it
//! earned). The shadow is evaluated from the distribution it logged beside each decision, so the
//! estimates are exact for the policy that ran, with the state it had.
//!
//! [`window`] reads the decisions, [`assess`] weighs them into the [`Evidence`] a promotion
//! logs, and [`recent`] summarises each policy of a line-up for `GET /admin/policies`.

use crate::evaluate::{Options, Target, evaluate};
use crate::export::{ExportError, latest_settled};
use crate::logged::{LoggedDecision, Shadow};
use crate::ope::{Estimator, Weighted, estimate};
use oo_domain::policy::spec_of;
use oo_domain::promotion::{Evidence, Interval, Lineup};
use sqlx::PgPool;

/// How the gate weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateOptions {
    /// N: the latest settled decisions it reads.
    pub window: usize,
    /// Fewer decisions than this and it refuses, whatever they say.
    pub min_decisions: usize,
    /// Bootstrap resamples of the intervals, and their seed.
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for GateOptions {
    fn default() -> Self {
        Self {
            window: 2_000,
            min_decisions: 200,
            bootstrap: 1_000,
            seed: 1,
        }
    }
}

/// The decision's serving policy, by canonical spec.
fn served_by(d: &LoggedDecision) -> Option<String> {
    d.policy.as_deref().map(|p| spec_of(p, &d.policy_params))
}

/// The shadow of `spec` logged beside `d` with its whole distribution.
fn shadow<'a>(d: &'a LoggedDecision, spec: &str) -> Option<&'a Shadow> {
    d.shadows.iter().find(|s| {
        spec_of(&s.policy, &s.params) == spec && s.distribution.as_ref().is_some_and(|p| p.len() == d.candidates.len())
    })
}

/// The decisions the gate weighs a promotion of `candidate` on: the latest `window` settled ones
/// that `serving` served with `candidate`'s whole distribution logged beside them, oldest first.
pub async fn window(
    pool: &PgPool,
    serving: &str,
    candidate: &str,
    window: usize,
) -> Result<Vec<LoggedDecision>, ExportError> {
    latest_settled(pool, window, |d| {
        served_by(d).as_deref() == Some(serving) && shadow(d, candidate).is_some()
    })
    .await
}

/// The evidence for promoting `candidate` over `serving` on `decisions` (as [`window`] reads
/// them; others are left out).
pub fn assess(decisions: &[LoggedDecision], serving: &str, candidate: &str, options: &GateOptions) -> Evidence {
    // Each decision with the candidate as its only shadow, so that the evaluation's
    // `shadow:NAME` target can only be this one (two shadows may share a name).
    let kept: Vec<LoggedDecision> = decisions
        .iter()
        .filter(|d| d.reward.is_some() && served_by(d).as_deref() == Some(serving))
        .filter_map(|d| {
            let s = shadow(d, candidate)?.clone();
            Some(LoggedDecision {
                shadows: vec![s],
                ..d.clone()
            })
        })
        .collect();
    let name = kept.first().map_or_else(String::new, |d| d.shadows[0].policy.clone());
    let report = evaluate(
        &kept,
        &[(candidate.to_owned(), Target::Shadow(name))],
        &Options {
            estimators: vec![Estimator::Snips, Estimator::Dr],
            bootstrap: options.bootstrap,
            seed: options.seed,
            ..Options::default()
        },
    );
    let estimate = |name: &str| {
        report
            .policies
            .first()
            .and_then(|p| p.estimates.get(name).copied().flatten())
            .map(|e| Interval {
                value: e.value,
                ci_low: e.ci_low,
                ci_high: e.ci_high,
            })
    };
    let (snips, dr) = (estimate("snips"), estimate("dr").filter(|_| report.reward_model));
    let serving_value = report.logged_value;
    let mut refusals = Vec::new();
    if kept.len() < options.min_decisions {
        refusals.push(format!(
            "only {} settled decisions served by {serving} logged {candidate}'s distribution; the gate needs at least {}",
            kept.len(),
            options.min_decisions
        ));
    }
    for (estimator, interval) in [("SNIPS", snips), ("DR", dr)] {
        match interval {
            None => refusals.push(format!("{estimator} cannot be estimated on these decisions")),
            Some(i) if i.ci_low < serving_value => refusals.push(format!(
                "{estimator}'s lower 95% bound {:.4} is below the serving policy's value {serving_value:.4}",
                i.ci_low
            )),
            Some(_) => {}
        }
    }
    Evidence {
        window: options.window as u64,
        decisions: kept.len() as u64,
        min_decisions: options.min_decisions as u64,
        first_served_at: kept.first().and_then(|d| d.timestamp),
        last_served_at: kept.last().and_then(|d| d.timestamp),
        serving_value,
        snips,
        dr,
        bootstrap: options.bootstrap as u64,
        seed: options.seed,
        refusals,
    }
}

/// One policy of the line-up over the latest settled decisions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recent {
    pub spec: String,
    /// `serving` or `shadow`.
    pub role: &'static str,
    /// The decisions it is judged on: those it served, or those that logged its distribution.
    pub decisions: usize,
    /// Its mean reward on them: the rewards it earned (serving), or its SNIPS estimate (a
    /// shadow). `None` without decisions.
    pub mean_reward: Option<f64>,
}

/// Each policy of `lineup` on `decisions` (the latest settled ones, whoever served them).
pub fn recent(decisions: &[LoggedDecision], lineup: &Lineup) -> Vec<Recent> {
    let settled = || decisions.iter().filter(|d| d.reward.is_some());
    let served: Vec<f64> = settled()
        .filter(|d| served_by(d).as_deref() == Some(lineup.serving.as_str()))
        .filter_map(|d| d.reward)
        .collect();
    let mean = |sum: f64, n: f64| (n > 0.0).then(|| sum / n);
    let mut out = vec![Recent {
        spec: lineup.serving.clone(),
        role: "serving",
        decisions: served.len(),
        mean_reward: mean(served.iter().sum(), served.len() as f64),
    }];
    for spec in &lineup.shadows {
        // The shadow's importance-weighted rows, estimated by SNIPS as `oo replay` does.
        let rows: Vec<Weighted> = settled()
            .filter_map(|d| {
                let (s, chosen, r) = (shadow(d, spec)?, d.chosen_index()?, d.reward?);
                let w = s.distribution.as_ref()?[chosen] / d.propensity;
                Some(Weighted {
                    w,
                    r,
                    q_logged: 0.0,
                    q_target: 0.0,
                    matched: false,
                    low_propensity: false,
                })
            })
            .collect();
        out.push(Recent {
            spec: spec.clone(),
            role: "shadow",
            decisions: rows.len(),
            mean_reward: estimate(Estimator::Snips, &rows, f64::INFINITY),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logged::Candidate;
    use std::collections::BTreeMap;

    /// A decision logged uniformly over three candidates, where candidate 0 earns 1 and the
    /// others 0, with a shadow that puts `p0` on candidate 0.
    fn decision(i: usize, p0: f64) -> LoggedDecision {
        let chosen = i % 3;
        let rest = (1.0 - p0) / 2.0;
        LoggedDecision {
            id: format!("d{i}"),
            timestamp: None,
            user: None,
            context: vec![1.0, (i % 7) as f64 / 7.0],
            candidates: (0..3)
                .map(|c| Candidate {
                    id: format!("c{c}"),
                    kind: None,
                    features: vec![f64::from(c == 0), f64::from(c == 1), 1.0],
                })
                .collect(),
            chosen: format!("c{chosen}"),
            propensity: 1.0 / 3.0,
            distribution: Some(vec![1.0 / 3.0; 3]),
            reward: Some(f64::from(chosen == 0)),
            settled_by: Some("reaction".into()),
            slot: None,
            policy: Some("random".into()),
            policy_version: Some("1".into()),
            policy_params: BTreeMap::new(),
            feature_version: Some(2),
            shadows: vec![Shadow {
                policy: "thompson".into(),
                policy_version: "1".into(),
                params: BTreeMap::from([("v".to_owned(), 0.5)]),
                chosen: "c0".into(),
                propensity: p0,
                distribution: Some(vec![p0, rest, rest]),
            }],
        }
    }

    #[test]
    fn a_better_shadow_passes_a_worse_one_is_refused_and_too_few_decisions_are_refused() {
        let options = GateOptions {
            window: 600,
            min_decisions: 100,
            bootstrap: 200,
            seed: 3,
        };
        let better: Vec<_> = (0..600).map(|i| decision(i, 0.8)).collect();
        let evidence = assess(&better, "random", "thompson:v=0.5", &options);
        assert!(evidence.passes(), "{evidence:?}");
        assert_eq!(evidence.decisions, 600);
        assert!((evidence.serving_value - 1.0 / 3.0).abs() < 1e-9);
        let snips = evidence.snips.expect("snips");
        assert!((snips.value - 0.8).abs() < 0.1, "{snips:?}");
        assert!(evidence.dr.is_some());

        let worse: Vec<_> = (0..600).map(|i| decision(i, 0.1)).collect();
        let evidence = assess(&worse, "random", "thompson:v=0.5", &options);
        assert!(!evidence.passes());
        assert!(
            evidence.refusals.iter().any(|r| r.starts_with("SNIPS")),
            "{:?}",
            evidence.refusals
        );

        let few = assess(&better[..30], "random", "thompson:v=0.5", &options);
        assert!(
            few.refusals.iter().any(|r| r.starts_with("only 30")),
            "{:?}",
            few.refusals
        );

        // Another spec of the same policy is another policy: nothing to weigh.
        let other = assess(&better, "random", "thompson:v=1", &options);
        assert_eq!(other.decisions, 0);
        assert!(!other.passes());
    }

    #[test]
    fn recent_gives_the_serving_policy_its_rewards_and_a_shadow_its_snips() {
        let decisions: Vec<_> = (0..300).map(|i| decision(i, 0.8)).collect();
        let lineup = Lineup {
            serving: "random".into(),
            shadows: vec!["thompson:v=0.5".into(), "linucb:alpha=1".into()],
        };
        let r = recent(&decisions, &lineup);
        assert_eq!((r[0].role, r[0].decisions), ("serving", 300));
        assert!((r[0].mean_reward.expect("mean") - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!((r[1].role, r[1].decisions), ("shadow", 300));
        assert!((r[1].mean_reward.expect("snips") - 0.8).abs() < 1e-9);
        assert_eq!((r[2].decisions, r[2].mean_reward), (0, None));
    }
}
