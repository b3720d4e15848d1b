//! The learning state of the linear bandits and its math: a per-user ridge regression kept as
//! `A⁻¹` (Sherman–Morrison updates) and `b`, and the population's pooled sums it shrinks towards.
//!
//! Per user, with the ridge `λ` ([`RIDGE`]) and the population's weights `θ₀` as the prior mean:
//! `A = λI + Σ x xᵀ`, `b = Σ r x`, and `θ = A⁻¹ (b + λ θ₀)` — a new user has `θ = θ₀`, and every
//! reward moves the person's weights away from the population's as far as their data warrants.
//!
//! The population's model is kept as integer sums (`Σ x xᵀ`, `Σ r x` in fixed point, 2⁻²⁰), so
//! that it does not depend on the order in which users' rewards reach it: a rebuild, or two
//! simulator runs that append in different interleavings, give the same bits.

/// The ridge of every linear model: the prior's weight, in observations.
pub const RIDGE: f64 = 1.0;
/// Fixed-point scale of the population's sums.
const SCALE: f64 = (1u64 << 20) as f64;

/// One user's model: `A⁻¹` (row-major, symmetric), `b`, and how many rewards it has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub dim: usize,
    pub a_inv: Vec<f64>,
    pub b: Vec<f64>,
    pub n: u64,
}

impl LinearModel {
    /// The model before any reward: `A = λI`.
    pub fn new(dim: usize) -> Self {
        let mut a_inv = vec![0.0; dim * dim];
        for i in 0..dim {
            a_inv[i * dim + i] = 1.0 / RIDGE;
        }
        Self {
            dim,
            a_inv,
            b: vec![0.0; dim],
            n: 0,
        }
    }

    /// `A⁻¹ x`, as `Σⱼ xⱼ A⁻¹[j]` (A⁻¹ is symmetric), skipping the zeros of `x`: joint
    /// feature vectors are mostly zeros.
    pub fn a_inv_times(&self, x: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let mut out = vec![0.0; d];
        for (j, xj) in x.iter().enumerate().take(d) {
            if *xj == 0.0 {
                continue;
            }
            let row = &self.a_inv[j * d..(j + 1) * d];
            for (o, a) in out.iter_mut().zip(row) {
                *o += a * xj;
            }
        }
        out
    }

    /// Learns one reward: `A ← A + x xᵀ` through Sherman–Morrison on `A⁻¹`, `b ← b + r x`.
    pub fn update(&mut self, x: &[f64], reward: f64) {
        let d = self.dim;
        if x.len() != d {
            return;
        }
        let u = self.a_inv_times(x);
        let denom = 1.0 + x.iter().zip(&u).map(|(x, u)| x * u).sum::<f64>();
        // `(uᵢ uⱼ) / denom` is the same number for (i, j) and (j, i): A⁻¹ stays exactly
        // symmetric, so that storing its upper triangle loses nothing.
        for i in 0..d {
            for j in i..d {
                let v = self.a_inv[i * d + j] - u[i] * u[j] / denom;
                self.a_inv[i * d + j] = v;
                self.a_inv[j * d + i] = v;
            }
        }
        for (b, x) in self.b.iter_mut().zip(x) {
            *b += reward * x;
        }
        self.n += 1;
    }

    /// The weights: `A⁻¹ (b + λ θ₀)`.
    pub fn theta(&self, prior: &[f64]) -> Vec<f64> {
        let v: Vec<f64> = (0..self.dim)
            .map(|i| self.b[i] + RIDGE * prior.get(i).copied().unwrap_or(0.0))
            .collect();
        self.a_inv_times(&v)
    }

    /// `xᵀ A⁻¹ x`: how uncertain the model is about `x` (in reward² per unit noise).
    pub fn variance(&self, x: &[f64]) -> f64 {
        self.a_inv_times(x)
            .iter()
            .zip(x)
            .map(|(u, x)| u * x)
            .sum::<f64>()
            .max(0.0)
    }
}

/// The population's model as order-independent fixed-point sums.
#[derive(Debug, Clone, PartialEq)]
pub struct PooledSums {
    pub dim: usize,
    /// `Σ x xᵀ`, row-major, in units of 2⁻²⁰.
    pub xx: Vec<i64>,
    /// `Σ r x`, in units of 2⁻²⁰.
    pub xr: Vec<i64>,
    pub n: i64,
}

impl PooledSums {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            xx: vec![0; dim * dim],
            xr: vec![0; dim],
            n: 0,
        }
    }

    fn fixed(v: f64) -> i64 {
        (v * SCALE).round() as i64
    }

    pub fn add(&mut self, x: &[f64], reward: f64) {
        let d = self.dim;
        if x.len() != d {
            return;
        }
        for i in 0..d {
            if x[i] == 0.0 {
                continue;
            }
            for j in 0..d {
                self.xx[i * d + j] += Self::fixed(x[i] * x[j]);
            }
            self.xr[i] += Self::fixed(reward * x[i]);
        }
        self.n += 1;
    }

    /// Adds another set of sums (a batch folded apart).
    pub fn merge(&mut self, other: &PooledSums) {
        for (a, b) in self.xx.iter_mut().zip(&other.xx) {
            *a += b;
        }
        for (a, b) in self.xr.iter_mut().zip(&other.xr) {
            *a += b;
        }
        self.n += other.n;
    }

    /// The population's ridge weights: `(λI + Σ x xᵀ)⁻¹ Σ r x` (zeros before any reward).
    pub fn theta(&self) -> Vec<f64> {
        let d = self.dim;
        let mut a: Vec<f64> = self.xx.iter().map(|v| *v as f64 / SCALE).collect();
        for i in 0..d {
            a[i * d + i] += RIDGE;
        }
        let b: Vec<f64> = self.xr.iter().map(|v| *v as f64 / SCALE).collect();
        match cholesky(&a, d) {
            Some(l) => cholesky_solve(&l, d, &b),
            None => vec![0.0; d],
        }
    }
}

/// The upper triangle of a symmetric `d × d` matrix (row-major, `i ≤ j`): `d (d + 1) / 2`
/// values, how the bandit stores `A⁻¹` and `Σ x xᵀ`.
pub fn upper_triangle<T: Copy>(m: &[T], d: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(d * (d + 1) / 2);
    for i in 0..d {
        out.extend_from_slice(&m[i * d + i..(i + 1) * d]);
    }
    out
}

/// The symmetric `d × d` matrix whose upper triangle is `t`; `None` when `t` has another length.
pub fn from_upper_triangle<T: Copy + Default>(t: &[T], d: usize) -> Option<Vec<T>> {
    if t.len() != d * (d + 1) / 2 {
        return None;
    }
    let mut m = vec![T::default(); d * d];
    let mut k = 0;
    for i in 0..d {
        for j in i..d {
            m[i * d + j] = t[k];
            m[j * d + i] = t[k];
            k += 1;
        }
    }
    Some(m)
}

/// The lower-triangular `L` with `L Lᵀ = m` for a symmetric positive definite `m` (row-major),
/// or `None` when `m` is not positive definite.
pub fn cholesky(m: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = m[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b`.
pub fn cholesky_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * d + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct inverse by Gauss–Jordan elimination, to check Sherman–Morrison against.
    fn inverse(m: &[f64], d: usize) -> Vec<f64> {
        let mut a = m.to_vec();
        let mut inv = vec![0.0; d * d];
        for i in 0..d {
            inv[i * d + i] = 1.0;
        }
        for c in 0..d {
            let p = (c..d)
                .max_by(|x, y| a[x * d + c].abs().total_cmp(&a[y * d + c].abs()))
                .expect("rows");
            for k in 0..d {
                a.swap(c * d + k, p * d + k);
                inv.swap(c * d + k, p * d + k);
            }
            let pivot = a[c * d + c];
            for k in 0..d {
                a[c * d + k] /= pivot;
                inv[c * d + k] /= pivot;
            }
            for r in 0..d {
                if r != c {
                    let f = a[r * d + c];
                    for k in 0..d {
                        a[r * d + k] -= f * a[c * d + k];
                        inv[r * d + k] -= f * inv[c * d + k];
                    }
                }
            }
        }
        inv
    }

    fn sample(d: usize, n: usize) -> Vec<(Vec<f64>, f64)> {
        let mut s = 7u64;
        let mut next = || {
            s = crate::policy::mix(s);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        (0..n)
            .map(|_| {
                let x: Vec<f64> = (0..d).map(|_| next()).collect();
                let r = next();
                (x, r)
            })
            .collect()
    }

    #[test]
    fn sherman_morrison_matches_a_direct_inverse_and_theta_a_direct_solve() {
        let d = 6;
        let data = sample(d, 40);
        let prior: Vec<f64> = (0..d).map(|i| i as f64 / 10.0).collect();
        let mut m = LinearModel::new(d);
        let mut a = vec![0.0; d * d];
        let mut b = vec![0.0; d];
        for i in 0..d {
            a[i * d + i] = RIDGE;
        }
        for (x, r) in &data {
            m.update(x, *r);
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] += x[i] * x[j];
                }
                b[i] += r * x[i];
            }
        }
        let direct = inverse(&a, d);
        for (got, want) in m.a_inv.iter().zip(&direct) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        let rhs: Vec<f64> = (0..d).map(|i| b[i] + RIDGE * prior[i]).collect();
        let want: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| direct[i * d + j] * rhs[j]).sum())
            .collect();
        for (got, want) in m.theta(&prior).iter().zip(&want) {
            assert!((got - want).abs() < 1e-9);
        }
        let x = &data[0].0;
        let var: f64 = (0..d)
            .map(|i| (0..d).map(|j| x[i] * direct[i * d + j] * x[j]).sum::<f64>())
            .sum();
        assert!((m.variance(x) - var).abs() < 1e-9);
        assert_eq!(m.n, 40);
    }

    #[test]
    fn a_inverse_kept_by_sherman_morrison_is_exactly_symmetric_and_its_triangle_holds_it_all() {
        let d = 7;
        let mut m = LinearModel::new(d);
        for (x, r) in sample(d, 60) {
            m.update(&x, r);
        }
        for i in 0..d {
            for j in 0..d {
                assert_eq!(m.a_inv[i * d + j].to_bits(), m.a_inv[j * d + i].to_bits(), "({i}, {j})");
            }
        }
        let t = upper_triangle(&m.a_inv, d);
        assert_eq!(t.len(), d * (d + 1) / 2);
        assert_eq!(from_upper_triangle(&t, d), Some(m.a_inv.clone()));
        assert_eq!(from_upper_triangle(&t[1..], d), None);
    }

    #[test]
    fn pooled_sums_are_exactly_symmetric() {
        let d = 5;
        let mut p = PooledSums::new(d);
        for (x, r) in sample(d, 30) {
            p.add(&x, r);
        }
        assert_eq!(from_upper_triangle(&upper_triangle(&p.xx, d), d), Some(p.xx));
    }

    #[test]
    fn a_new_user_starts_from_the_prior() {
        let prior = vec![0.5, -0.25, 1.0];
        assert_eq!(LinearModel::new(3).theta(&prior), prior);
    }

    #[test]
    fn pooled_sums_do_not_depend_on_order_and_solve_the_ridge() {
        let d = 5;
        let data = sample(d, 200);
        let mut forward = PooledSums::new(d);
        data.iter().for_each(|(x, r)| forward.add(x, *r));
        let mut backward = PooledSums::new(d);
        data.iter().rev().for_each(|(x, r)| backward.add(x, *r));
        let (mut halves, mut second) = (PooledSums::new(d), PooledSums::new(d));
        data[..77].iter().for_each(|(x, r)| halves.add(x, *r));
        data[77..].iter().for_each(|(x, r)| second.add(x, *r));
        halves.merge(&second);
        assert_eq!(forward, backward);
        assert_eq!(forward, halves);
        // The same weights as a per-user model fed the same data with a zero prior.
        let mut m = LinearModel::new(d);
        data.iter().for_each(|(x, r)| m.update(x, *r));
        for (p, u) in forward.theta().iter().zip(m.theta(&vec![0.0; d])) {
            assert!((p - u).abs() < 1e-4, "{p} vs {u}");
        }
        assert_eq!(PooledSums::new(d).theta(), vec![0.0; d]);
    }

    #[test]
    fn cholesky_factors_and_solves() {
        let m = vec![4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let l = cholesky(&m, 3).expect("positive definite");
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - m[i * 3 + j]).abs() < 1e-12);
            }
        }
        let x = cholesky_solve(&l, 3, &[1.0, 2.0, 3.0]);
        for i in 0..3 {
            let v: f64 = (0..3).map(|k| m[i * 3 + k] * x[k]).sum();
            assert!((v - [1.0, 2.0, 3.0][i]).abs() < 1e-12);
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
