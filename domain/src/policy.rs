//! Policies: given the candidates' feature vectors and what has been learned about the person, a
//! probability for each candidate. The draw itself is a pure function of the distribution and a
//! seed, so a decision can be reproduced from its log, and every candidate keeps a probability of
//! at least `epsilon / K` (K candidates), which bounds importance weights offline by `K / epsilon`.

use crate::bandit::LinearModel;
use std::collections::BTreeMap;

/// What a policy decides from.
pub struct Inputs<'a> {
    /// One joint feature vector per candidate ("not now" included).
    pub candidates: &'a [Vec<f64>],
    /// The person's model (a fresh one for a new user).
    pub model: &'a LinearModel,
    /// The population's weights, the person's prior.
    pub prior: &'a [f64],
    /// The decision's seed (policies that sample derive their randomness from it).
    pub seed: u64,
}

/// A policy's answer: one score and one probability per candidate (probabilities sum to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub scores: Vec<f64>,
    pub probabilities: Vec<f64>,
}

/// A policy, registered by name and version, with its hyper-parameters logged on every decision.
pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn params(&self) -> BTreeMap<String, f64>;
    fn distribution(&self, inputs: &Inputs<'_>) -> Scored;
    /// Whether the distribution depends on the person's model and the prior (callers may skip
    /// reading them when no policy does).
    fn uses_model(&self) -> bool {
        true
    }
}

/// Uniformly random over the candidates, "not now" included: the logging policy whose data
/// every estimator can use.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomPolicy;

impl Policy for RandomPolicy {
    fn name(&self) -> &'static str {
        "random"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    fn uses_model(&self) -> bool {
        false
    }
    fn distribution(&self, inputs: &Inputs<'_>) -> Scored {
        let n = inputs.candidates.len();
        Scored {
            scores: vec![0.0; n],
            probabilities: vec![1.0 / n as f64; n],
        }
    }
}

/// Softmax over `scores / temperature` (argmax with ties shared when the temperature is 0),
/// mixed with the uniform distribution: `p = (1 − ε) softmax + ε / K`. Every probability is at
/// least `ε / K` and they sum to 1.
pub fn explore(scores: &[f64], temperature: f64, epsilon: f64) -> Vec<f64> {
    let k = scores.len();
    if k == 0 {
        return vec![];
    }
    let epsilon = epsilon.clamp(0.0, 1.0);
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let soft: Vec<f64> = if temperature > 0.0 {
        let e: Vec<f64> = scores.iter().map(|s| ((s - max) / temperature).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    } else {
        let ties = scores.iter().filter(|s| **s == max).count() as f64;
        scores
            .iter()
            .map(|s| if *s == max { 1.0 / ties } else { 0.0 })
            .collect()
    };
    soft.iter().map(|p| (1.0 - epsilon) * p + epsilon / k as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// LinUCB (Li et al. 2010) on the person's ridge model with the population prior:
/// `score = θᵀx + α √(xᵀA⁻¹x)`, served through [`explore`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinUcb {
    pub alpha: f64,
    pub temperature: f64,
    pub epsilon: f64,
}

impl Default for LinUcb {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            temperature: 0.05,
            epsilon: 0.1,
        }
    }
}

impl Policy for LinUcb {
    fn name(&self) -> &'static str {
        "linucb"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("alpha".to_owned(), self.alpha),
            ("temperature".to_owned(), self.temperature),
            ("epsilon".to_owned(), self.epsilon),
            ("ridge".to_owned(), crate::bandit::RIDGE),
        ])
    }
    fn distribution(&self, inputs: &Inputs<'_>) -> Scored {
        let theta = inputs.model.theta(inputs.prior);
        let scores: Vec<f64> = inputs
            .candidates
            .iter()
            .map(|x| dot(&theta, x) + self.alpha * inputs.model.variance(x).sqrt())
            .collect();
        let probabilities = explore(&scores, self.temperature, self.epsilon);
        Scored { scores, probabilities }
    }
}

/// Thompson sampling on the same model: `θ̃ ~ N(θ, v² A⁻¹)`, the probability of each candidate
/// being the argmax estimated from `samples` draws (seeded by the decision), mixed with ε / K.
/// The logged distribution is exactly the one the candidate is drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thompson {
    pub v: f64,
    pub samples: u32,
    pub epsilon: f64,
}

impl Default for Thompson {
    fn default() -> Self {
        Self {
            v: 0.1,
            samples: 64,
            epsilon: 0.1,
        }
    }
}

impl Policy for Thompson {
    fn name(&self) -> &'static str {
        "thompson"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("v".to_owned(), self.v),
            ("samples".to_owned(), f64::from(self.samples)),
            ("epsilon".to_owned(), self.epsilon),
            ("ridge".to_owned(), crate::bandit::RIDGE),
        ])
    }
    fn distribution(&self, inputs: &Inputs<'_>) -> Scored {
        let model = inputs.model;
        let d = model.dim;
        let theta = model.theta(inputs.prior);
        let scores: Vec<f64> = inputs.candidates.iter().map(|x| dot(&theta, x)).collect();
        let k = scores.len();
        let l = crate::bandit::cholesky(&model.a_inv, d);
        let mut wins = vec![0.0; k];
        let mut rng = Normal::new(inputs.seed ^ 0x7468_6f6d_7073_6f6e);
        let samples = self.samples.max(1);
        for _ in 0..samples {
            let z: Vec<f64> = (0..d).map(|_| rng.next()).collect();
            let sampled: Vec<f64> = match &l {
                Some(l) => (0..d)
                    .map(|i| theta[i] + self.v * (0..=i).map(|j| l[i * d + j] * z[j]).sum::<f64>())
                    .collect(),
                None => theta.clone(),
            };
            let s: Vec<f64> = inputs.candidates.iter().map(|x| dot(&sampled, x)).collect();
            let best = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ties: Vec<usize> = (0..k).filter(|i| s[*i] == best).collect();
            for i in &ties {
                wins[*i] += 1.0 / ties.len() as f64;
            }
        }
        let epsilon = self.epsilon.clamp(0.0, 1.0);
        let probabilities = wins
            .iter()
            .map(|w| (1.0 - epsilon) * w / f64::from(samples) + epsilon / k as f64)
            .collect();
        Scored { scores, probabilities }
    }
}

/// Standard normal draws from a seed (SplitMix64 and Box–Muller).
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ((mix(self.state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        self.spare = Some(r * a.sin());
        r * a.cos()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicySpecError {
    #[error("unknown policy {0:?} (known: random, linucb, thompson)")]
    Unknown(String),
    #[error("{0}")]
    BadParam(String),
}

/// A policy from its spec: a name, optionally followed by `:key=value,key=value` to override
/// hyper-parameters, e.g. `linucb:alpha=0.5,epsilon=0.05`.
pub fn from_spec(spec: &str) -> Result<Box<dyn Policy>, PolicySpecError> {
    let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
    let mut kv: Vec<(String, f64)> = Vec::new();
    for part in params.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| PolicySpecError::BadParam(format!("{part:?} is not key=value")))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| PolicySpecError::BadParam(format!("{k}: {v:?} is not a number")))?;
        if !v.is_finite() || v < 0.0 {
            return Err(PolicySpecError::BadParam(format!("{k}: must be a finite number >= 0")));
        }
        kv.push((k.trim().to_owned(), v));
    }
    let unknown = |k: &str| PolicySpecError::BadParam(format!("{name} has no parameter {k:?}"));
    // The floor ε/K is what keeps every propensity above 0 (DESIGN section 6) and bounds the
    // importance weights of offline evaluation, so it cannot be switched off.
    let epsilon_ok = |e: f64| {
        if e <= 0.0 || e > 1.0 {
            Err(PolicySpecError::BadParam(
                "epsilon: must be above 0 and at most 1".into(),
            ))
        } else {
            Ok(e)
        }
    };
    match name {
        "random" => match kv.first() {
            Some((k, _)) => Err(unknown(k)),
            None => Ok(Box::new(RandomPolicy)),
        },
        "linucb" => {
            let mut p = LinUcb::default();
            for (k, v) in kv {
                match k.as_str() {
                    "alpha" => p.alpha = v,
                    "temperature" => p.temperature = v,
                    "epsilon" => p.epsilon = epsilon_ok(v)?,
                    _ => return Err(unknown(&k)),
                }
            }
            Ok(Box::new(p))
        }
        "thompson" => {
            let mut p = Thompson::default();
            for (k, v) in kv {
                match k.as_str() {
                    "v" => p.v = v,
                    "samples" => p.samples = (v as u32).clamp(1, 10_000),
                    "epsilon" => p.epsilon = epsilon_ok(v)?,
                    _ => return Err(unknown(&k)),
                }
            }
            Ok(Box::new(p))
        }
        other => Err(PolicySpecError::Unknown(other.to_owned())),
    }
}

/// The policy a decision logged by name and hyper-parameters (`ridge`, a constant of the
/// models, is not a parameter of the spec).
pub fn from_logged(name: &str, params: &BTreeMap<String, f64>) -> Result<Box<dyn Policy>, PolicySpecError> {
    from_spec(&spec_of(name, params))
}

/// The spec of a policy named `name` with `params`: the name, then every parameter but `ridge`
/// in key order (`linucb:alpha=1,epsilon=0.1,temperature=0.05`). A policy's spec names it
/// exactly: two specs that parse to the same policy have the same [`canonical`] form.
pub fn spec_of(name: &str, params: &BTreeMap<String, f64>) -> String {
    let params: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "ridge")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if params.is_empty() {
        name.to_owned()
    } else {
        format!("{name}:{}", params.join(","))
    }
}

/// `spec` with every parameter spelled out, defaults included (`thompson` →
/// `thompson:epsilon=0.1,samples=1,v=0.5`, say): the form promotions and the serving line-up
/// compare and log.
pub fn canonical(spec: &str) -> Result<String, PolicySpecError> {
    let p = from_spec(spec)?;
    Ok(spec_of(p.name(), &p.params()))
}

/// SplitMix64: a well-mixed 64-bit value from a seed.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws an index from `distribution` with the uniform number derived from `seed`.
pub fn draw(distribution: &[f64], seed: u64) -> usize {
    let u = (mix(seed) >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (i, p) in distribution.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    distribution.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_spec_names_every_parameter_and_parses_to_the_same_policy() {
        let spec = canonical("thompson").expect("a spec");
        assert!(spec.starts_with("thompson:") && spec.contains("epsilon="), "{spec}");
        assert_eq!(canonical(&spec).expect("its own canonical form"), spec);
        assert_eq!(canonical("random").expect("a spec"), "random");
        let p = from_spec("linucb:temperature=0.05,alpha=0.3").expect("a spec");
        assert_eq!(
            canonical("linucb:alpha=0.3,temperature=0.05").expect("a spec"),
            spec_of(p.name(), &p.params())
        );
        assert_ne!(
            canonical("linucb:alpha=0.7").expect("a spec"),
            canonical("linucb").expect("a spec")
        );
    }

    fn inputs<'a>(xs: &'a [Vec<f64>], model: &'a LinearModel, prior: &'a [f64], seed: u64) -> Inputs<'a> {
        Inputs {
            candidates: xs,
            model,
            prior,
            seed,
        }
    }

    #[test]
    fn the_random_policy_is_uniform_and_sums_to_one() {
        let xs = [vec![1.0], vec![2.0], vec![3.0], vec![4.0]];
        let m = LinearModel::new(1);
        let p = RandomPolicy.distribution(&inputs(&xs, &m, &[0.0], 1)).probabilities;
        assert_eq!(p, vec![0.25; 4]);
    }

    #[test]
    fn exploration_keeps_the_floor_and_sums_to_one() {
        for t in [0.0, 0.01, 0.5] {
            let p = explore(&[3.0, -10.0, 2.9, 0.0, 3.0], t, 0.1);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(p.iter().all(|p| *p >= 0.1 / 5.0 - 1e-15), "{p:?}");
        }
        let greedy = explore(&[1.0, 2.0, 2.0], 0.0, 0.0);
        assert_eq!(greedy, vec![0.0, 0.5, 0.5]);
    }

    /// Score and distribution against a direct computation of θ = A⁻¹(b + λθ₀) and the bonus.
    #[test]
    fn linucb_scores_are_the_ridge_estimate_plus_the_bonus() {
        let mut m = LinearModel::new(2);
        m.update(&[1.0, 0.0], 1.0);
        m.update(&[1.0, 0.0], 1.0);
        m.update(&[0.0, 1.0], -1.0);
        // A = diag(3, 2), b = (2, -1), prior (0.5, 0.5): θ = (2.5/3, -0.5/2).
        let prior = [0.5, 0.5];
        let xs = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        let p = LinUcb {
            alpha: 0.5,
            temperature: 0.1,
            epsilon: 0.2,
        };
        let s = p.distribution(&inputs(&xs, &m, &prior, 3));
        let want = [
            2.5 / 3.0 + 0.5 * (1.0f64 / 3.0).sqrt(),
            -0.25 + 0.5 * 0.5f64.sqrt(),
            2.5 / 3.0 - 0.25 + 0.5 * (1.0f64 / 3.0 + 0.5).sqrt(),
        ];
        for (g, w) in s.scores.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        assert_eq!(s.probabilities, explore(&s.scores, 0.1, 0.2));
        assert!((s.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn thompson_is_reproducible_sums_to_one_and_follows_the_model() {
        let mut m = LinearModel::new(2);
        for _ in 0..50 {
            m.update(&[1.0, 0.0], 1.0);
            m.update(&[0.0, 1.0], -1.0);
        }
        let xs = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let p = Thompson::default();
        let a = p.distribution(&inputs(&xs, &m, &[0.0, 0.0], 9));
        assert_eq!(a, p.distribution(&inputs(&xs, &m, &[0.0, 0.0], 9)));
        assert!((a.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(a.probabilities[0] > 0.9 && a.probabilities[1] >= 0.05 - 1e-12);
    }

    #[test]
    fn specs_parse_and_refuse_nonsense() {
        let p = from_spec("linucb:alpha=0.5,epsilon=0.05").expect("valid");
        assert_eq!(p.params()["alpha"], 0.5);
        assert_eq!(p.params()["epsilon"], 0.05);
        assert!(from_spec("thompson").is_ok());
        assert!(from_spec("random").is_ok());
        assert!(from_spec("greedy").is_err());
        assert!(from_spec("linucb:beta=1").is_err());
        assert!(from_spec("linucb:epsilon=2").is_err());
        assert!(
            from_spec("linucb:epsilon=0").is_err(),
            "the floor cannot be switched off"
        );
        assert!(from_spec("thompson:epsilon=0").is_err());
        assert!(
            from_spec("linucb:temperature=0,epsilon=0.01").is_ok(),
            "argmax, with the floor"
        );
        assert!(from_spec("linucb:alpha=x").is_err());
    }

    #[test]
    fn draws_are_reproducible_and_follow_the_distribution() {
        let dist = [0.1, 0.6, 0.3];
        assert_eq!(draw(&dist, 7), draw(&dist, 7));
        let mut counts = [0usize; 3];
        for seed in 0..30_000 {
            counts[draw(&dist, seed)] += 1;
        }
        for (c, p) in counts.iter().zip(dist) {
            let freq = *c as f64 / 30_000.0;
            assert!((freq - p).abs() < 0.02, "{freq} vs {p}");
        }
    }
}
