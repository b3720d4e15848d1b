//! Synthetic logged decisions for tests and benchmarks: seeded uniform numbers, a softmax
//! logging policy and its draw, and a decision with only what the estimators need.

use crate::logged::{Candidate, LoggedDecision};
use oo_domain::policy::mix;

/// A uniform number in [0, 1) from a state, advancing it.
pub fn unit(state: &mut u64) -> f64 {
    *state = mix(*state);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// The softmax of `scores`, and the index the uniform number `u` draws from it.
pub fn softmax_draw(scores: &[f64], u: f64) -> (Vec<f64>, usize) {
    let total: f64 = scores.iter().map(|x| x.exp()).sum();
    let distribution: Vec<f64> = scores.iter().map(|x| x.exp() / total).collect();
    let mut acc = 0.0;
    let chosen = distribution
        .iter()
        .position(|p| {
            acc += p;
            u < acc
        })
        .unwrap_or(scores.len().saturating_sub(1));
    (distribution, chosen)
}

/// Candidates `a0`, `a1`, … each with `features` seeded features.
pub fn candidates(k: usize, features: usize, state: &mut u64) -> Vec<Candidate> {
    (0..k)
        .map(|a| Candidate {
            id: format!("a{a}"),
            kind: None,
            features: (0..features).map(|_| unit(state)).collect(),
        })
        .collect()
}

/// A decision with its logging distribution and reward, and nothing optional.
pub fn decision(
    id: String,
    context: Vec<f64>,
    candidates: Vec<Candidate>,
    distribution: Vec<f64>,
    chosen: usize,
    reward: f64,
) -> LoggedDecision {
    LoggedDecision {
        id,
        timestamp: None,
        user: None,
        context,
        chosen: candidates[chosen].id.clone(),
        candidates,
        propensity: distribution[chosen],
        distribution: Some(distribution),
        reward: Some(reward),
        settled_by: None,
        slot: None,
        policy: None,
        policy_version: None,
        policy_params: Default::default(),
        feature_version: None,
        shadows: vec![],
    }
}
