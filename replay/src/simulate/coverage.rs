//! Whether the offline estimates tell the truth: over several seeds of `oo simulate --ope`, how
//! often each estimator's 95% interval holds the target's true value, and its mean absolute
//! error (docs/replay.md, "Truth in the simulator").

use super::OpeReport;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One estimator over every (target, seed) pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Coverage {
    pub estimator: &'static str,
    /// (target, seed) pairs with an estimate.
    pub pairs: usize,
    /// Of those, the ones whose interval holds the truth.
    pub covered: usize,
    /// Mean |estimate − truth|.
    pub mean_absolute_error: f64,
}

impl Coverage {
    pub fn share(&self) -> f64 {
        if self.pairs == 0 {
            0.0
        } else {
            self.covered as f64 / self.pairs as f64
        }
    }
}

/// Coverage and error of every estimator over `reports` (one per seed).
pub fn coverage(reports: &[OpeReport]) -> Vec<Coverage> {
    let mut by: BTreeMap<&'static str, (usize, usize, f64)> = BTreeMap::new();
    for report in reports {
        for target in report.targets.values() {
            for (estimator, e) in &target.estimates {
                let Some(e) = e else { continue };
                let entry = by.entry(estimator).or_default();
                entry.0 += 1;
                if e.ci_low <= target.truth && target.truth <= e.ci_high {
                    entry.1 += 1;
                }
                entry.2 += (e.value - target.truth).abs();
            }
        }
    }
    by.into_iter()
        .map(|(estimator, (pairs, covered, error))| Coverage {
            estimator,
            pairs,
            covered,
            mean_absolute_error: if pairs == 0 { 0.0 } else { error / pairs as f64 },
        })
        .collect()
}

/// The coverage as a Markdown table.
pub fn table(rows: &[Coverage]) -> String {
    let mut out = String::from(
        "| estimator | (target, seed) pairs | truth inside the 95% interval | mean absolute error |\n|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} ({:.0}%) | {:.4} |",
            r.estimator,
            r.pairs,
            r.covered,
            100.0 * r.share(),
            r.mean_absolute_error
        );
    }
    out
}
