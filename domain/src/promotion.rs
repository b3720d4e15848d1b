//! The `Policy` aggregate: which policy serves `/recommend` and which run beside it as shadows.
//! The line-up changes only by a promotion, which makes a shadow the serving policy on the
//! strength of its offline evidence (DESIGN sections 3 and 12), and the log keeps that evidence.
//!
//! There is one stream, [`STREAM`], and it belongs to no person: its events carry
//! [`UserId::SYSTEM`] as their user id and no personal field (specs and numbers only), so
//! deletion never touches them and they need no key. Before the first promotion the stream is
//! empty and the line-up is the one the server was configured with (`OO_POLICY`,
//! `OO_SHADOW_POLICIES`); after it, the log's line-up wins.
//!
//! The gate itself (reading the last settled decisions and estimating) is the caller's: a
//! promotion carries the [`Evidence`], and [`Policy::decide`] refuses an unforced promotion whose
//! evidence does not pass, so the log can never hold one.

use crate::event::{Aggregate, Event};
use crate::ids::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The id of the one stream of the `policy` aggregate type.
pub const STREAM: &str = "serving";

/// The serving policy and the shadows, each by its canonical spec
/// ([`crate::policy::canonical`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineup {
    pub serving: String,
    pub shadows: Vec<String>,
}

impl Lineup {
    /// The line-up once `spec` (one of the shadows) serves: the policy it replaces takes its
    /// place among the shadows, so that it keeps being evaluated and can be promoted back.
    pub fn promoting(&self, spec: &str) -> Lineup {
        Lineup {
            serving: spec.to_owned(),
            shadows: self
                .shadows
                .iter()
                .map(|s| if s == spec { self.serving.clone() } else { s.clone() })
                .collect(),
        }
    }
}

/// An estimate with its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// What the offline gate saw: the candidate's estimates on the last settled decisions the
/// serving policy made, beside the serving policy's own (on-policy) value on the same decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// How many of the latest settled decisions the gate asked for (N).
    pub window: u64,
    /// How many it found: settled, served by the serving policy, with the candidate's whole
    /// distribution logged, and of a person not deleted.
    pub decisions: u64,
    /// The fewest decisions the gate accepts.
    pub min_decisions: u64,
    /// When the first and the last of them were served.
    pub first_served_at: Option<DateTime<Utc>>,
    pub last_served_at: Option<DateTime<Utc>>,
    /// The serving policy's mean settled reward on those decisions.
    pub serving_value: f64,
    /// The candidate's self-normalised IPS and doubly robust estimates (`None`: not computable).
    pub snips: Option<Interval>,
    pub dr: Option<Interval>,
    /// Bootstrap resamples and seed of the intervals.
    pub bootstrap: u64,
    pub seed: u64,
    /// Why the gate refuses; empty when it passes.
    pub refusals: Vec<String>,
}

impl Evidence {
    /// Whether the candidate passes: both lower bounds at least the serving policy's value, on
    /// enough decisions.
    pub fn passes(&self) -> bool {
        self.refusals.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyCommand {
    /// Make `spec` (canonical, one of the shadows of `current`) the serving policy.
    Promote {
        spec: String,
        /// The line-up the caller evaluated against: the log's, or before any promotion the
        /// configured one. A promotion decided against another line-up is refused.
        current: Lineup,
        evidence: Evidence,
        force: bool,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PolicyEvent {
    PolicyPromoted {
        /// The new serving policy.
        serving: String,
        /// The serving policy it replaced (now a shadow).
        replaced: String,
        /// The shadows from now on.
        shadows: Vec<String>,
        evidence: Evidence,
        /// Promoted by `--force` whatever the evidence said.
        forced: bool,
        promoted_at: DateTime<Utc>,
    },
}

impl Event for PolicyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::PolicyPromoted { .. } => "PolicyPromoted",
        }
    }
}

impl PolicyEvent {
    /// The line-up the event leaves.
    pub fn lineup(&self) -> Lineup {
        let Self::PolicyPromoted { serving, shadows, .. } = self;
        Lineup {
            serving: serving.clone(),
            shadows: shadows.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    #[error("{0} already serves")]
    AlreadyServing(String),
    #[error("{spec} is not a shadow policy (the shadows: {shadows})")]
    NotAShadow { spec: String, shadows: String },
    #[error("the line-up changed since it was evaluated: {0} serves now")]
    LineupChanged(String),
    #[error("the offline gate refuses: {0}")]
    Refused(String),
}

/// The line-up as the log left it (`None`: never promoted, the configuration's holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub lineup: Option<Lineup>,
    pub promotions: u64,
}

impl Aggregate for Policy {
    const TYPE: &'static str = "policy";
    type Command = PolicyCommand;
    type Event = PolicyEvent;
    type Error = PromotionError;

    fn decide(&self, command: &PolicyCommand) -> Result<Vec<PolicyEvent>, PromotionError> {
        let PolicyCommand::Promote {
            spec,
            current,
            evidence,
            force,
            at,
        } = command;
        if let Some(lineup) = &self.lineup
            && lineup != current
        {
            return Err(PromotionError::LineupChanged(lineup.serving.clone()));
        }
        if &current.serving == spec {
            return Err(PromotionError::AlreadyServing(spec.clone()));
        }
        if !current.shadows.contains(spec) {
            return Err(PromotionError::NotAShadow {
                spec: spec.clone(),
                shadows: current.shadows.join("; "),
            });
        }
        if !force && !evidence.passes() {
            return Err(PromotionError::Refused(evidence.refusals.join("; ")));
        }
        let next = current.promoting(spec);
        Ok(vec![PolicyEvent::PolicyPromoted {
            serving: next.serving,
            replaced: current.serving.clone(),
            shadows: next.shadows,
            evidence: evidence.clone(),
            forced: *force,
            promoted_at: *at,
        }])
    }

    fn apply(&mut self, event: &PolicyEvent) {
        self.lineup = Some(event.lineup());
        self.promotions += 1;
    }
}

/// The user id of every event of the `policy` stream.
pub fn user_of(_event: &PolicyEvent) -> UserId {
    UserId::SYSTEM
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineup() -> Lineup {
        Lineup {
            serving: "random".into(),
            shadows: vec!["thompson:epsilon=0.1".into(), "linucb:alpha=1".into()],
        }
    }

    fn evidence(refusals: &[&str]) -> Evidence {
        Evidence {
            window: 1000,
            decisions: 800,
            min_decisions: 100,
            first_served_at: None,
            last_served_at: None,
            serving_value: 0.3,
            snips: Some(Interval {
                value: 0.5,
                ci_low: 0.4,
                ci_high: 0.6,
            }),
            dr: None,
            bootstrap: 200,
            seed: 1,
            refusals: refusals.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn promote(spec: &str, current: Lineup, evidence: Evidence, force: bool) -> PolicyCommand {
        PolicyCommand::Promote {
            spec: spec.into(),
            current,
            evidence,
            force,
            at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_shadow_that_passes_serves_and_the_serving_policy_becomes_a_shadow() {
        let mut state = Policy::default();
        let events = state
            .decide(&promote("linucb:alpha=1", lineup(), evidence(&[]), false))
            .expect("promoted");
        let [
            PolicyEvent::PolicyPromoted {
                serving,
                replaced,
                shadows,
                forced,
                ..
            },
        ] = events.as_slice()
        else {
            panic!("one event: {events:?}")
        };
        assert_eq!(
            (serving.as_str(), replaced.as_str(), *forced),
            ("linucb:alpha=1", "random", false)
        );
        assert_eq!(shadows, &["thompson:epsilon=0.1".to_owned(), "random".to_owned()]);
        state.apply(&events[0]);
        assert_eq!(
            state.lineup.as_ref().map(|l| l.serving.as_str()),
            Some("linucb:alpha=1")
        );
        // Against the old line-up, a second promotion is refused: it was evaluated on a past.
        assert_eq!(
            state.decide(&promote("thompson:epsilon=0.1", lineup(), evidence(&[]), false)),
            Err(PromotionError::LineupChanged("linucb:alpha=1".into()))
        );
    }

    #[test]
    fn a_refused_promotion_is_logged_only_when_forced() {
        let state = Policy::default();
        let refused = evidence(&["SNIPS lower bound 0.2 < 0.3"]);
        assert!(matches!(
            state.decide(&promote("linucb:alpha=1", lineup(), refused.clone(), false)),
            Err(PromotionError::Refused(_))
        ));
        let forced = state
            .decide(&promote("linucb:alpha=1", lineup(), refused, true))
            .expect("forced");
        assert!(matches!(forced[0], PolicyEvent::PolicyPromoted { forced: true, .. }));
    }

    #[test]
    fn only_a_shadow_can_be_promoted() {
        let state = Policy::default();
        assert!(matches!(
            state.decide(&promote("random", lineup(), evidence(&[]), true)),
            Err(PromotionError::AlreadyServing(_))
        ));
        assert!(matches!(
            state.decide(&promote("linucb:alpha=2", lineup(), evidence(&[]), true)),
            Err(PromotionError::NotAShadow { .. })
        ));
    }
}
