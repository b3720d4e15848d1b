//! Logged bandit feedback: one decision a record, in the format of DESIGN section 12 — what
//! `oo export decisions` writes and `oo replay` reads, from oO's log or from another system.
//! Only ids and numbers: no personal field has a place in it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// The decision's id (oO: the tip id).
    pub id: String,
    /// When it was made (oO: when the tip was served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Who it was for, as a random id (oO: the user id), so that per-person policies can be
    /// replayed; absent in data that has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The context's features, shared by every candidate.
    pub context: Vec<f64>,
    pub candidates: Vec<Candidate>,
    /// The id of the chosen candidate.
    pub chosen: String,
    /// The logging policy's probability of the chosen candidate.
    pub propensity: f64,
    /// The logging policy's probability of every candidate, in order (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Vec<f64>>,
    /// The settled reward; `null` while the decision is unsettled.
    pub reward: Option<f64>,
    /// What settled it: `reaction`, `completion`, `timeout` or `not_now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_by: Option<String>,
    /// A position for data logged with several slots (unused by oO, kept as read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// The serving (logging) policy, its version and parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy_params: BTreeMap<String, f64>,
    /// The version of the feature schema the features follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_version: Option<u32>,
    /// The shadow policies' picks on the same candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<Shadow>,
}

/// A candidate of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    /// `todo`, `advice` or `not_now` in oO's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub features: Vec<f64>,
}

/// A shadow policy's pick, logged and not served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    pub policy: String,
    pub policy_version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, f64>,
    /// The id of the candidate it picked.
    pub chosen: String,
    /// Its probability of that candidate.
    pub propensity: f64,
    /// Its probability of every candidate, in order (absent in decisions logged before oO
    /// recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Vec<f64>>,
}

/// Why a record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRecord {
    #[error("line {line}: not a decision: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: {what}")]
    Shape { line: usize, what: String },
    #[error("cannot read the input")]
    Io(#[from] std::io::Error),
}

impl LoggedDecision {
    /// The index of the chosen candidate.
    pub fn chosen_index(&self) -> Option<usize> {
        self.candidates.iter().position(|c| c.id == self.chosen)
    }

    /// Checks what every estimator relies on: candidates, a chosen one among them, a
    /// propensity in (0, 1], a distribution (if any) of one probability per candidate.
    pub fn check(&self, line: usize) -> Result<(), InvalidRecord> {
        let bad = |what: String| InvalidRecord::Shape { line, what };
        if self.candidates.is_empty() {
            return Err(bad("no candidates".into()));
        }
        let chosen = self
            .chosen_index()
            .ok_or_else(|| bad(format!("chosen {:?} is not one of the candidates", self.chosen)))?;
        if !(self.propensity > 0.0 && self.propensity <= 1.0) {
            return Err(bad(format!("propensity {} is not in (0, 1]", self.propensity)));
        }
        if let Some(d) = &self.distribution {
            if d.len() != self.candidates.len() {
                return Err(bad(format!(
                    "{} probabilities for {} candidates",
                    d.len(),
                    self.candidates.len()
                )));
            }
            if (d[chosen] - self.propensity).abs() > 1e-9 {
                return Err(bad("the distribution disagrees with the propensity".into()));
            }
        }
        if self.reward.is_some_and(|r| !r.is_finite()) {
            return Err(bad("the reward is not a number".into()));
        }
        Ok(())
    }
}

/// Reads JSON lines, one decision a line (blank lines skipped), each checked.
pub fn read_jsonl(input: impl BufRead) -> impl Iterator<Item = Result<LoggedDecision, InvalidRecord>> {
    input.lines().enumerate().filter_map(|(i, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(InvalidRecord::Io(e))),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(
            serde_json::from_str::<LoggedDecision>(&line)
                .map_err(|source| InvalidRecord::Json { line: i + 1, source })
                .and_then(|d| d.check(i + 1).map(|()| d)),
        )
    })
}
