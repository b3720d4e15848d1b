//! `oo replay`: what candidate policies would have earned on logged decisions. Each target is
//! run over the decisions in order; a learning policy (`linucb`, `thompson`, any spec
//! `/recommend` accepts) decides with the very code `/recommend` decides with — the same
//! feature vectors, `Policy::distribution`, the person's `LinearModel` and the population's
//! `PooledSums` prior — and learns each settled reward right after its decision, as the live
//! bandit does once the reward settles. Its probability of the logged action is taken before
//! that row's reward is seen. The estimators are in [`crate::ope`]; the reward model behind DR
//! is a ridge regression fitted with smartcore, cross-fitted on two halves of the decisions so
//! that no decision's reward trains the model that predicts it.

use crate::logged::LoggedDecision;
use crate::ope::{Diagnostics, Estimate, Estimator, Weighted, with_intervals};
use oo_domain::bandit::{LinearModel, PooledSums};
use oo_domain::features::joint;
use oo_domain::ids::fnv1a;
use oo_domain::policy::{Inputs, Policy, PolicySpecError, draw, from_spec, mix};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The largest joint vector (context × candidate features) a learning policy uses; beyond it
/// (data logged by other systems), context and candidate features are concatenated instead.
pub const MAX_JOINT: usize = 512;

/// A policy to evaluate.
pub enum Target {
    /// Every candidate equally likely.
    Uniform,
    /// The logging policy itself (its logged distribution).
    Logged,
    /// A shadow policy, from the distribution it logged beside each decision (`shadow:NAME`).
    Shadow(String),
    /// A policy spec as `/recommend` takes it.
    Policy(Box<dyn Policy>),
}

impl Target {
    pub fn parse(spec: &str) -> Result<Self, PolicySpecError> {
        Ok(match spec {
            "uniform" => Self::Uniform,
            "logged" => Self::Logged,
            other => match other.strip_prefix("shadow:") {
                Some(name) => Self::Shadow(name.to_owned()),
                None => Self::Policy(from_spec(other)?),
            },
        })
    }
}

/// Splits `--policies`: `;` separates specs when any holds a comma, else `,` does (a `key=value`
/// token then continues the spec before it).
pub fn split_specs(list: &str) -> Vec<String> {
    if list.contains(';') {
        return list
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let mut specs: Vec<String> = Vec::new();
    for token in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match specs.last_mut() {
            Some(last) if token.contains('=') && !token.contains(':') => {
                last.push(',');
                last.push_str(token);
            }
            _ => specs.push(token.to_owned()),
        }
    }
    specs
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct Options {
    pub estimators: Vec<Estimator>,
    /// `M` of `ips_clipped`.
    pub clip: f64,
    /// Bootstrap resamples.
    pub bootstrap: usize,
    pub seed: u64,
    /// How many settled decisions between two solves of the population's prior.
    pub prior_every: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            estimators: Estimator::ALL.to_vec(),
            clip: 10.0,
            bootstrap: 1_000,
            seed: 1,
            prior_every: 1_000,
        }
    }
}

/// One target's estimates.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// The spec as given.
    pub policy: String,
    /// By estimator name; `null` where the estimator does not apply (`replay` on data that was
    /// not logged uniformly).
    pub estimates: BTreeMap<&'static str, Option<Estimate>>,
    pub diagnostics: Diagnostics,
    /// Why the estimates may not be trusted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// SNIPS over the first `n` settled decisions, at about a hundred points of the log (for
    /// the plot: where the estimate settles).
    #[serde(skip)]
    pub cumulative: Vec<(usize, f64)>,
    /// The target's true value on the settled decisions when the expected rewards are known (the
    /// simulator's): the mean of `Σₐ π(a|xᵢ)·E[r|xᵢ,a]`, `π` as the target decided at each one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<f64>,
}

/// What `oo replay` reports (DESIGN section 12).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settled decisions, the ones every estimate is over.
    pub decisions: usize,
    /// Decisions left out because their reward was not settled.
    pub unsettled: usize,
    /// The logging policy's own value: the mean settled reward.
    pub logged_value: f64,
    /// Whether every decision was logged uniformly (the replay estimator needs it).
    pub uniform_logging: bool,
    /// Whether DR and SNDR had a reward model (without one they equal IPS and SNIPS).
    pub reward_model: bool,
    pub policies: Vec<PolicyReport>,
}

/// Evaluates each of `targets` (spec as given, target) on `decisions`.
pub fn evaluate(decisions: &[LoggedDecision], targets: &[(String, Target)], options: &Options) -> Report {
    evaluate_inner(decisions, targets, options, None)
}

/// [`evaluate`], and each target's true value from `expected`: the expected reward of every
/// candidate of each decision, in the decision's order, by decision id (known in a simulation).
pub fn evaluate_with_truth(
    decisions: &[LoggedDecision],
    targets: &[(String, Target)],
    options: &Options,
    expected: &HashMap<String, Vec<f64>>,
) -> Report {
    evaluate_inner(decisions, targets, options, Some(expected))
}

fn evaluate_inner(
    decisions: &[LoggedDecision],
    targets: &[(String, Target)],
    options: &Options,
    expected: Option<&HashMap<String, Vec<f64>>>,
) -> Report {
    let settled: Vec<&LoggedDecision> = decisions.iter().filter(|d| d.reward.is_some()).collect();
    let uniform_logging = settled.iter().all(|d| logged_uniformly(d));
    let representation = Representation::of(decisions);
    let model = RewardModel::fit(&settled, &representation, options.seed);
    let logged_value = if settled.is_empty() {
        0.0
    } else {
        settled.iter().filter_map(|d| d.reward).sum::<f64>() / settled.len() as f64
    };
    let policies = targets
        .iter()
        .map(|(spec, target)| {
            let (rows, truth) = weighted(decisions, target, &representation, model.as_ref(), options, expected);
            let mut estimators = options.estimators.clone();
            if !uniform_logging {
                estimators.retain(|e| *e != Estimator::Replay);
            }
            let computed = with_intervals(&rows, &estimators, options.clip, options.bootstrap, options.seed);
            let estimates = options
                .estimators
                .iter()
                .map(|e| (e.name(), computed.get(e).copied()))
                .collect();
            let diagnostics = Diagnostics::of(&rows);
            PolicyReport {
                policy: spec.clone(),
                estimates,
                warnings: diagnostics.warnings(rows.len()),
                diagnostics,
                cumulative: cumulative_snips(&rows),
                truth,
            }
        })
        .collect();
    Report {
        decisions: settled.len(),
        unsettled: decisions.len() - settled.len(),
        logged_value,
        uniform_logging,
        reward_model: model.is_some(),
        policies,
    }
}

/// SNIPS over growing prefixes of `rows`, at about a hundred points.
fn cumulative_snips(rows: &[Weighted]) -> Vec<(usize, f64)> {
    let step = (rows.len() / 100).max(1);
    let (mut weighted, mut weights) = (0.0, 0.0);
    let mut out = Vec::new();
    for (i, x) in rows.iter().enumerate() {
        weighted += x.w * x.r;
        weights += x.w;
        if ((i + 1) % step == 0 || i + 1 == rows.len()) && weights > 0.0 {
            out.push((i + 1, weighted / weights));
        }
    }
    out
}

/// Whether the decision's logging distribution was uniform over its candidates.
fn logged_uniformly(d: &LoggedDecision) -> bool {
    let k = d.candidates.len() as f64;
    let even = |p: f64| (p * k - 1.0).abs() < 1e-9;
    match &d.distribution {
        Some(dist) => dist.iter().all(|p| even(*p)),
        None => even(d.propensity),
    }
}

/// How a decision's candidates become the vectors a policy and the reward model see: the joint
/// vector of `/recommend` (candidate features ⊗ context) when it is small enough, else the
/// concatenation of context and candidate features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    Joint,
    Concatenated,
}

impl Representation {
    fn of(decisions: &[LoggedDecision]) -> Self {
        let largest = decisions
            .iter()
            .map(|d| d.context.len() * d.candidates.first().map_or(0, |c| c.features.len()))
            .max()
            .unwrap_or(0);
        if largest <= MAX_JOINT {
            Self::Joint
        } else {
            Self::Concatenated
        }
    }

    /// Every candidate's vector.
    fn vectors(self, d: &LoggedDecision) -> Vec<Vec<f64>> {
        d.candidates
            .iter()
            .map(|c| match self {
                Self::Joint => joint(&c.features, &d.context),
                Self::Concatenated => d.context.iter().chain(&c.features).copied().collect(),
            })
            .collect()
    }
}

/// The settled decisions under one target, in order.
fn weighted(
    decisions: &[LoggedDecision],
    target: &Target,
    representation: &Representation,
    model: Option<&RewardModel>,
    options: &Options,
    expected: Option<&HashMap<String, Vec<f64>>>,
) -> (Vec<Weighted>, Option<f64>) {
    let mut learner = match target {
        Target::Policy(p) if p.uses_model() => Some(Learner::new()),
        _ => None,
    };
    let mut rows = Vec::new();
    let mut truth = (0.0, 0usize);
    for d in decisions {
        let Some(chosen) = d.chosen_index() else { continue };
        let k = d.candidates.len();
        let seed = mix(options.seed ^ fnv1a(d.id.bytes()));
        let needs_vectors = matches!(target, Target::Policy(_)) || model.is_some();
        let vectors = if needs_vectors {
            representation.vectors(d)
        } else {
            Vec::new()
        };
        let distribution = match target {
            Target::Uniform => vec![1.0 / k as f64; k],
            Target::Logged => d.distribution.clone().unwrap_or_else(|| {
                let mut one = vec![0.0; k];
                one[chosen] = 1.0;
                one
            }),
            Target::Shadow(name) => match d.shadows.iter().find(|s| &s.policy == name) {
                Some(s) => match &s.distribution {
                    Some(dist) if dist.len() == k => dist.clone(),
                    _ => continue,
                },
                None => continue,
            },
            Target::Policy(policy) => {
                let dim = vectors.first().map_or(0, Vec::len);
                let unlearned = LinearModel::new(0);
                let (person, prior) = match learner.as_mut() {
                    Some(l) => l.state(d.user.as_deref(), dim, options.prior_every),
                    None => (&unlearned, &[][..]),
                };
                policy
                    .distribution(&Inputs {
                        candidates: &vectors,
                        model: person,
                        prior,
                        seed,
                    })
                    .probabilities
            }
        };
        let Some(reward) = d.reward else { continue };
        let (q_logged, q_target) = match model {
            Some(m) => {
                let q: Vec<f64> = vectors.iter().map(|x| m.predict(&d.id, x)).collect();
                (q[chosen], q.iter().zip(&distribution).map(|(q, p)| q * p).sum())
            }
            None => (0.0, 0.0),
        };
        if let Some(e) = expected.and_then(|e| e.get(&d.id)).filter(|e| e.len() == k) {
            truth.0 += e.iter().zip(&distribution).map(|(r, p)| r * p).sum::<f64>();
            truth.1 += 1;
        }
        rows.push(Weighted {
            w: distribution[chosen] / d.propensity,
            r: reward,
            q_logged,
            q_target,
            matched: draw(&distribution, seed) == chosen,
            low_propensity: d.propensity < 1.0 / (10.0 * k as f64),
        });
        if let Some(l) = learner.as_mut() {
            l.learn(d.user.as_deref(), &vectors[chosen], reward);
        }
    }
    // Known only if every settled decision's expected rewards are.
    let truth = (expected.is_some() && truth.1 == rows.len() && !rows.is_empty()).then(|| truth.0 / truth.1 as f64);
    (rows, truth)
}

/// What a learning policy has learned so far: each person's model and the population's sums,
/// with the prior solved again every `prior_every` rewards.
struct Learner {
    people: HashMap<String, LinearModel>,
    population: Option<PooledSums>,
    prior: Vec<f64>,
    since_prior: usize,
    /// The model of someone who has not been rewarded yet.
    fresh: LinearModel,
}

impl Learner {
    fn new() -> Self {
        Self {
            people: HashMap::new(),
            population: None,
            prior: Vec::new(),
            since_prior: 0,
            fresh: LinearModel::new(0),
        }
    }

    /// The person's model (fresh for someone new) and the prior, for vectors of `dim`.
    fn state(&mut self, user: Option<&str>, dim: usize, prior_every: usize) -> (&LinearModel, &[f64]) {
        let population = self.population.get_or_insert_with(|| PooledSums::new(dim));
        if self.prior.len() != dim || self.since_prior >= prior_every {
            self.prior = population.theta();
            self.since_prior = 0;
        }
        if self.fresh.dim != dim {
            self.fresh = LinearModel::new(dim);
        }
        let person = self.people.get(user.unwrap_or_default()).unwrap_or(&self.fresh);
        (person, &self.prior)
    }

    fn learn(&mut self, user: Option<&str>, x: &[f64], reward: f64) {
        let dim = x.len();
        self.people
            .entry(user.unwrap_or_default().to_owned())
            .or_insert_with(|| LinearModel::new(dim))
            .update(x, reward);
        if let Some(p) = self.population.as_mut() {
            p.add(x, reward);
        }
        self.since_prior += 1;
    }
}

/// A ridge regression of the reward on a candidate's vector (plus an intercept), fitted with
/// smartcore on each half of the settled decisions; a decision's prediction comes from the
/// model of the other half.
pub struct RewardModel {
    /// The coefficients fitted on each half (intercept last).
    halves: [Vec<f64>; 2],
    /// The seed that splits the decisions into halves.
    seed: u64,
}

/// The most decisions each half trains on (a seeded sample beyond that).
const MAX_TRAINING: usize = 100_000;

impl RewardModel {
    fn half(seed: u64, i: usize) -> usize {
        (mix(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)) & 1) as usize
    }

    fn fit(settled: &[&LoggedDecision], representation: &Representation, seed: u64) -> Option<Self> {
        use smartcore::linalg::basic::arrays::Array;
        use smartcore::linalg::basic::matrix::DenseMatrix;
        use smartcore::linear::ridge_regression::{RidgeRegression, RidgeRegressionParameters};
        let mut halves: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for (h, out) in halves.iter_mut().enumerate() {
            let mut x: Vec<Vec<f64>> = Vec::new();
            let mut y: Vec<f64> = Vec::new();
            // A decision's half is decided by its id, here and in `predict` alike.
            for d in settled {
                let i = fnv1a(d.id.bytes()) as usize;
                if Self::half(seed, i) != h || x.len() >= MAX_TRAINING {
                    continue;
                }
                let chosen = d.chosen_index()?;
                let mut v = representation.vectors(d).swap_remove(chosen);
                v.push(1.0);
                x.push(v);
                y.push(d.reward?);
            }
            let p = x.first().map_or(0, Vec::len);
            if x.len() <= p {
                return None;
            }
            let matrix = DenseMatrix::from_2d_vec(&x).ok()?;
            let fitted: RidgeRegression<f64, f64, DenseMatrix<f64>, Vec<f64>> = RidgeRegression::fit(
                &matrix,
                &y,
                RidgeRegressionParameters::default()
                    .with_alpha(1.0)
                    .with_normalize(false),
            )
            .ok()?;
            let coefficients = fitted.coefficients();
            *out = (0..p).map(|j| *coefficients.get((j, 0))).collect();
        }
        Some(Self { halves, seed })
    }

    /// The prediction for the vector `x` of a candidate of the decision `id`, by the model of
    /// the half that did not train on it.
    fn predict(&self, id: &str, x: &[f64]) -> f64 {
        let h = Self::half(self.seed, fnv1a(id.bytes()) as usize);
        let beta = &self.halves[1 - h];
        let (intercept, weights) = beta.split_last().map_or((0.0, &beta[..]), |(b, w)| (*b, w));
        x.iter().zip(weights).map(|(a, b)| a * b).sum::<f64>() + intercept
    }
}

/// The report as a table for the terminal: one row per policy and estimator, with both
/// intervals and the diagnostics, then the warnings.
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} settled decisions ({} unsettled left out); the logging policy's own value: {:.4}",
        report.decisions, report.unsettled, report.logged_value
    );
    if !report.uniform_logging {
        out.push_str("replay (Li et al. 2011) needs uniformly logged data: not estimated\n");
    }
    if !report.reward_model {
        out.push_str("no reward model could be fitted: dr and sndr equal ips and snips\n");
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<12} {:>9} {:>21} {:>21}",
        "policy", "estimator", "value", "95% bootstrap", "95% normal (±1.96 se)"
    );
    for p in &report.policies {
        let in_order = Estimator::ALL
            .iter()
            .filter_map(|e| p.estimates.get(e.name()).map(|estimate| (e.name(), estimate)));
        for (name, estimate) in in_order {
            match estimate {
                Some(e) => {
                    let normal =
                        e.se.map(|se| format!("[{:.4}, {:.4}]", e.value - 1.96 * se, e.value + 1.96 * se))
                            .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{:<28} {:<12} {:>9.4} {:>21} {:>21}",
                        p.policy,
                        name,
                        e.value,
                        format!("[{:.4}, {:.4}]", e.ci_low, e.ci_high),
                        normal
                    );
                }
                None => {
                    let _ = writeln!(out, "{:<28} {:<12} {:>9}", p.policy, name, "-");
                }
            }
        }
        let d = &p.diagnostics;
        let _ = writeln!(
            out,
            "{:<28} effective sample {:.0}, mean weight {:.3}, largest weight {:.2}, propensity < 1/(10 K): {:.1} %",
            "",
            d.effective_sample_size,
            d.mean_weight,
            d.max_weight,
            d.low_propensity_share * 100.0
        );
        for w in &p.warnings {
            let _ = writeln!(out, "{:<28} warning: {w}", "");
        }
    }
    out
}
