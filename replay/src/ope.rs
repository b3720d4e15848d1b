//! Off-policy estimators: what a target policy would have earned on logged decisions, from the
//! logging policy's propensities. Each estimator sees, per settled decision `i`, the importance
//! weight `wᵢ = π(aᵢ|xᵢ) / pᵢ` of the logged action, the reward `rᵢ`, the reward model's
//! prediction for the logged action `q̂ᵢ` and its value under the target, `Σₐ π(a|xᵢ) q̂(xᵢ, a)`:
//!
//! - `replay` (Li et al. 2011): the mean reward of the decisions where the target, drawing with
//!   the decision's seed, picks the logged action. Unbiased only for uniformly logged data.
//! - `ips`: `mean(w r)`; `ips_clipped`: `mean(min(w, M) r)`; `snips`: `Σ w r / Σ w`.
//! - `dr`: `mean(Σₐ π q̂ + w (r − q̂ᵢ))`; `sndr`: the same with `w / mean(w)`.
//!
//! Every estimate comes with a seeded bootstrap interval (2.5 and 97.5 percentiles of the
//! resampled estimates) and a standard error for the normal approximation.

use serde::Serialize;
use std::collections::BTreeMap;

/// One settled decision, as the estimators see it under one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weighted {
    /// `π(aᵢ|xᵢ) / pᵢ`.
    pub w: f64,
    /// The reward.
    pub r: f64,
    /// The reward model's prediction for the logged action (0 without a model).
    pub q_logged: f64,
    /// `Σₐ π(a|xᵢ) q̂(xᵢ, a)` (0 without a model).
    pub q_target: f64,
    /// Whether the target's own draw picked the logged action (for `replay`).
    pub matched: bool,
    /// Whether the logging propensity is below `1 / (10 K)`.
    pub low_propensity: bool,
}

/// The estimators, by name as the JSON names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Estimator {
    Replay,
    Ips,
    IpsClipped,
    Snips,
    Dr,
    Sndr,
}

impl Estimator {
    pub const ALL: [Estimator; 6] = [
        Self::Replay,
        Self::Ips,
        Self::IpsClipped,
        Self::Snips,
        Self::Dr,
        Self::Sndr,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Ips => "ips",
            Self::IpsClipped => "ips_clipped",
            Self::Snips => "snips",
            Self::Dr => "dr",
            Self::Sndr => "sndr",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// The sums every estimator is a function of, over rows each counted `count` times (a bootstrap
/// resample is a count per row): one pass gives them all.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: f64,
    /// Σ w·r, Σ min(w, M)·r, Σ w.
    wr: f64,
    clipped: f64,
    w: f64,
    /// Σ q̂ under the target, Σ w·(r − q̂ of the logged action).
    q_target: f64,
    correction: f64,
    /// Σ r and how many, over the rows where the target's draw matched the logged action.
    matched_r: f64,
    matched: f64,
}

impl Sums {
    fn add(&mut self, x: &Weighted, count: f64, clip: f64) {
        self.n += count;
        self.wr += count * x.w * x.r;
        self.clipped += count * x.w.min(clip) * x.r;
        self.w += count * x.w;
        self.q_target += count * x.q_target;
        self.correction += count * x.w * (x.r - x.q_logged);
        let matched = if x.matched { count } else { 0.0 };
        self.matched_r += matched * x.r;
        self.matched += matched;
    }

    fn of(rows: &[Weighted], clip: f64) -> Self {
        let mut sums = Self::default();
        for x in rows {
            sums.add(x, 1.0, clip);
        }
        sums
    }

    /// `estimator`'s value (`None` where it is undefined: no row, no weight, no match).
    fn estimate(&self, estimator: Estimator) -> Option<f64> {
        if self.n == 0.0 {
            return None;
        }
        match estimator {
            Estimator::Replay => (self.matched > 0.0).then(|| self.matched_r / self.matched),
            Estimator::Ips => Some(self.wr / self.n),
            Estimator::IpsClipped => Some(self.clipped / self.n),
            Estimator::Snips => (self.w > 0.0).then(|| self.wr / self.w),
            Estimator::Dr => Some((self.q_target + self.correction) / self.n),
            Estimator::Sndr => {
                let mean_w = self.w / self.n;
                (mean_w > 0.0).then(|| (self.q_target + self.correction / mean_w) / self.n)
            }
        }
    }
}

/// The point estimate of `estimator` on `rows` (`None` where it is undefined: no row, no
/// weight, no match).
pub fn estimate(estimator: Estimator, rows: &[Weighted], clip: f64) -> Option<f64> {
    Sums::of(rows, clip).estimate(estimator)
}

/// The standard error of `estimator` for the normal approximation.
pub fn standard_error(estimator: Estimator, rows: &[Weighted], clip: f64) -> Option<f64> {
    let value = estimate(estimator, rows, clip)?;
    let n = rows.len() as f64;
    let mean_w = rows.iter().map(|x| x.w).sum::<f64>() / n;
    let terms: Vec<f64> = match estimator {
        Estimator::Replay => rows.iter().filter(|x| x.matched).map(|x| x.r).collect(),
        Estimator::Ips => rows.iter().map(|x| x.w * x.r).collect(),
        Estimator::IpsClipped => rows.iter().map(|x| x.w.min(clip) * x.r).collect(),
        // Delta method: the ratio's influence function.
        Estimator::Snips => rows.iter().map(|x| x.w * (x.r - value) / mean_w).collect(),
        Estimator::Dr => rows.iter().map(|x| x.q_target + x.w * (x.r - x.q_logged)).collect(),
        Estimator::Sndr => rows
            .iter()
            .map(|x| x.q_target + x.w / mean_w * (x.r - x.q_logged))
            .collect(),
    };
    let m = terms.len() as f64;
    if m < 2.0 {
        return None;
    }
    let mean = terms.iter().sum::<f64>() / m;
    let variance = terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (m - 1.0);
    Some((variance / m).sqrt())
}

/// An estimate with its intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    /// The bootstrap's 2.5 and 97.5 percentiles.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The standard error (normal approximation: `value ± 1.96 se`).
    pub se: Option<f64>,
}

/// How far the weights say the estimate can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Diagnostics {
    /// `(Σ w)² / Σ w²`: how many decisions the estimate is worth.
    pub effective_sample_size: f64,
    /// About 1 when the logged propensities are right.
    pub mean_weight: f64,
    pub max_weight: f64,
    /// The share of decisions whose logging propensity is below `1 / (10 K)`.
    pub low_propensity_share: f64,
}

impl Diagnostics {
    pub fn of(rows: &[Weighted]) -> Self {
        let n = rows.len().max(1) as f64;
        let (sum, squares, max, low) = rows.iter().fold((0.0, 0.0, 0.0f64, 0usize), |(s, q, m, l), x| {
            (s + x.w, q + x.w * x.w, m.max(x.w), l + usize::from(x.low_propensity))
        });
        Self {
            effective_sample_size: if squares > 0.0 { sum * sum / squares } else { 0.0 },
            mean_weight: sum / n,
            max_weight: max,
            low_propensity_share: low as f64 / n,
        }
    }

    /// Why the estimates are not to be trusted, if the weights say so.
    pub fn warnings(&self, decisions: usize) -> Vec<String> {
        let mut out = vec![];
        if self.effective_sample_size < (decisions as f64 / 100.0).max(30.0).min(decisions as f64) {
            out.push(format!(
                "an effective sample of {:.0} of {decisions} decisions: the target is far from the logging policy",
                self.effective_sample_size
            ));
        }
        if (self.mean_weight - 1.0).abs() > 0.1 {
            out.push(format!(
                "a mean weight of {:.3} (about 1 expected): the logged propensities may be wrong, or the target leaves the logged support",
                self.mean_weight
            ));
        }
        if self.low_propensity_share > 0.05 {
            out.push(format!(
                "{:.1} % of decisions were logged with a propensity below 1/(10 K): weights there are large",
                self.low_propensity_share * 100.0
            ));
        }
        out
    }
}

/// The point estimates and their bootstrap intervals, from `samples` resamples drawn with
/// `seed` (on every core). `estimators` that are undefined on the data are left out.
pub fn with_intervals(
    rows: &[Weighted],
    estimators: &[Estimator],
    clip: f64,
    samples: usize,
    seed: u64,
) -> BTreeMap<Estimator, Estimate> {
    let points: Vec<(Estimator, f64)> = estimators
        .iter()
        .filter_map(|e| estimate(*e, rows, clip).map(|v| (*e, v)))
        .collect();
    let resampled = bootstrap(rows, &points, clip, samples, seed);
    points
        .iter()
        .zip(resampled)
        .map(|((e, value), mut draws)| {
            draws.sort_by(f64::total_cmp);
            let (ci_low, ci_high) = if draws.is_empty() {
                (*value, *value)
            } else {
                (percentile(&draws, 0.025), percentile(&draws, 0.975))
            };
            (
                *e,
                Estimate {
                    value: *value,
                    ci_low,
                    ci_high,
                    se: standard_error(*e, rows, clip),
                },
            )
        })
        .collect()
}

/// Each estimator's value on `samples` resamples of `rows` (with replacement). Resample `s`
/// is drawn from its own seed, so the result does not depend on how many threads share the
/// work.
fn bootstrap(rows: &[Weighted], points: &[(Estimator, f64)], clip: f64, samples: usize, seed: u64) -> Vec<Vec<f64>> {
    let n = rows.len();
    if n == 0 || samples == 0 {
        return vec![vec![]; points.len()];
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(samples);
    let per_thread: Vec<Vec<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut out = vec![Vec::new(); points.len()];
                    // A resample is how many times each row was drawn; every estimator is then
                    // one pass of sums over the rows.
                    let mut counts = vec![0u32; n];
                    for s in (t..samples).step_by(threads) {
                        let mut state = oo_domain::policy::mix(seed ^ (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        counts.fill(0);
                        for _ in 0..n {
                            state = oo_domain::policy::mix(state);
                            counts[(state % n as u64) as usize] += 1;
                        }
                        // Without a branch on the count: a third of the rows are not drawn, at
                        // random, which a branch would mispredict.
                        let mut sums = Sums::default();
                        for (x, c) in rows.iter().zip(&counts) {
                            sums.add(x, f64::from(*c), clip);
                        }
                        for (slot, (e, _)) in out.iter_mut().zip(points) {
                            if let Some(v) = sums.estimate(*e) {
                                slot.push(v);
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| vec![Vec::new(); points.len()]))
            .collect()
    });
    let mut merged = vec![Vec::with_capacity(samples); points.len()];
    for part in per_thread {
        for (m, p) in merged.iter_mut().zip(part) {
            m.extend(p);
        }
    }
    merged
}

/// The `q` quantile of sorted values, interpolated linearly between ranks.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: f64, r: f64) -> Weighted {
        Weighted {
            w,
            r,
            q_logged: 0.0,
            q_target: 0.0,
            matched: w > 0.0,
            low_propensity: false,
        }
    }

    #[test]
    fn the_estimators_follow_their_formulas() {
        let rows = [row(2.0, 1.0), row(0.5, 0.0), row(0.0, 1.0), row(1.5, -1.0)];
        let e = |x| estimate(x, &rows, 1.0).expect("defined");
        assert_eq!(e(Estimator::Ips), (2.0 - 1.5) / 4.0);
        assert_eq!(e(Estimator::IpsClipped), (1.0 - 1.0) / 4.0);
        assert_eq!(e(Estimator::Snips), 0.5 / 4.0);
        assert_eq!(e(Estimator::Replay), 0.0);
        // Without a reward model, DR is IPS and SNDR is SNIPS.
        assert_eq!(e(Estimator::Dr), e(Estimator::Ips));
        assert_eq!(e(Estimator::Sndr), e(Estimator::Snips));
    }

    #[test]
    fn a_perfect_reward_model_makes_dr_exact_whatever_the_weights() {
        let rows: Vec<Weighted> = (0..50)
            .map(|i| Weighted {
                w: (i % 7) as f64 * 0.4,
                r: 0.25,
                q_logged: 0.25,
                q_target: 0.25,
                matched: false,
                low_propensity: false,
            })
            .collect();
        assert_eq!(estimate(Estimator::Dr, &rows, 10.0), Some(0.25));
        assert_eq!(
            estimate(Estimator::Replay, &rows, 10.0),
            None,
            "no match, no replay estimate"
        );
    }

    #[test]
    fn intervals_hold_the_estimate_and_reproduce_from_the_seed() {
        let rows: Vec<Weighted> = (0..400)
            .map(|i| row(1.0 + (i % 3) as f64 * 0.5, (i % 5) as f64 / 4.0))
            .collect();
        let all = [Estimator::Ips, Estimator::Snips];
        let a = with_intervals(&rows, &all, 100.0, 300, 7);
        let b = with_intervals(&rows, &all, 100.0, 300, 7);
        assert_eq!(a, b);
        for (e, est) in &a {
            assert!(est.ci_low <= est.value && est.value <= est.ci_high, "{e:?}: {est:?}");
            let se = est.se.expect("se");
            // The bootstrap and the normal approximation agree on the width, roughly.
            let width = est.ci_high - est.ci_low;
            assert!((width / (2.0 * 1.96 * se) - 1.0).abs() < 0.3, "{e:?}: {width} vs {se}");
        }
        let d = Diagnostics::of(&rows);
        assert!(d.effective_sample_size > 300.0 && d.effective_sample_size <= 400.0);
        assert_eq!(d.max_weight, 2.0);
    }
}
