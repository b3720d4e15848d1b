//! Policies: given the candidates' feature vectors, a probability for each. The draw itself is
//! a pure function of the distribution and a seed, so a decision can be reproduced from its log.

/// A policy, registered by name and version.
pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// One score per candidate and the probability of serving each (sums to 1, each > 0).
    fn distribution(&self, candidates: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>);
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
    fn distribution(&self, candidates: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        let n = candidates.len();
        (vec![0.0; n], vec![1.0 / n as f64; n])
    }
}

/// The policies this build knows, by name.
pub fn by_name(name: &str) -> Option<Box<dyn Policy>> {
    match name {
        "random" => Some(Box::new(RandomPolicy)),
        _ => None,
    }
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
    fn the_random_policy_is_uniform_and_sums_to_one() {
        let (_, p) = RandomPolicy.distribution(&[vec![1.0], vec![2.0], vec![3.0], vec![4.0]]);
        assert_eq!(p, vec![0.25; 4]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
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
