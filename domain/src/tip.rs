//! The `Tip` aggregate: one decision of the recommender, the person's reactions to it, and the
//! reward it settled on (DESIGN sections 3 and 6).

use crate::event::{Aggregate, Event};
use crate::ids::{TipId, UserId};
use crate::reward::{Reaction, SettledBy};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long after serving a tip its reward waits for a reaction (or, after a snooze, for the
/// todo's completion) before settling.
pub const SETTLE_WINDOW: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    Todo,
    Advice,
    /// The null action: show nothing now (reward 0).
    NotNow,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::Advice => "advice",
            Self::NotNow => "not_now",
        }
    }
}

/// A candidate as logged: what it was and its own features (feature version 2: the candidate
/// features; the joint vector the policy saw is `features ⊗ Decision::context`, see
/// `features::joint`). No personal text: a todo is named by its source's id, an advice by its
/// slug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedCandidate {
    pub candidate_id: String,
    pub kind: CandidateKind,
    pub features: Vec<f64>,
}

/// A shadow policy's pick on the same candidates, logged and not served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPick {
    pub policy: String,
    pub policy_version: String,
    pub chosen: usize,
    pub propensity: f64,
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Its probability of every candidate, in order, so that it can be evaluated offline like
    /// the serving policy (empty in decisions logged before it was recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribution: Vec<f64>,
}

/// Everything a `TipServed` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub tip_id: TipId,
    pub user_id: UserId,
    pub served_at: DateTime<Utc>,
    pub candidates: Vec<LoggedCandidate>,
    pub chosen: usize,
    pub policy: String,
    pub policy_version: String,
    pub feature_version: u32,
    pub score: f64,
    /// The probability the serving policy gave the chosen candidate.
    pub propensity: f64,
    /// The serving policy's probability for every candidate, in order.
    pub distribution: Vec<f64>,
    pub seed: u64,
    pub shadow: Vec<ShadowPick>,
    /// The text shown (personal for todos: sealed in storage).
    pub title: String,
    pub body: String,
    /// The serving policy's hyper-parameters.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// The context's features (feature version 2), shared by every candidate.
    #[serde(default)]
    pub context: Vec<f64>,
    /// Which model state decided: the person's model had learned this many rewards (0: a fresh
    /// model), and the population's prior this many. Both states are folds of the log's
    /// rewards in order, so the decision can be recomputed from the log alone. `None` in
    /// decisions logged before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_rewards: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_rewards: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TipCommand {
    Serve(Box<Decision>),
    React {
        user_id: UserId,
        reaction: Reaction,
        at: DateTime<Utc>,
    },
    /// Settles a tip nobody reacted to (or only snoozed) once its window is over.
    SettleTimeout {
        at: DateTime<Utc>,
    },
    /// Settles a todo as done: it was completed within the window, and nobody reacted to the
    /// tip within it or the first reaction was a snooze.
    SettleCompletion {
        completed_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TipEvent {
    TipServed(Box<Decision>),
    TipReacted {
        tip_id: TipId,
        user_id: UserId,
        reaction: Reaction,
        reacted_at: DateTime<Utc>,
    },
    TipRewarded {
        tip_id: TipId,
        user_id: UserId,
        reward: f64,
        settled_by: SettledBy,
        settled_at: DateTime<Utc>,
    },
}

impl Event for TipEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::TipServed(_) => "TipServed",
            Self::TipReacted { .. } => "TipReacted",
            Self::TipRewarded { .. } => "TipRewarded",
        }
    }
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            Self::TipServed(_) => &TIP_SERVED_PERSONAL,
            _ => &[],
        }
    }
    /// `TipServed` carries every candidate's features: a JSON tree of it was a tenth of the CPU
    /// a decision costs the service, a copy is a fraction of that.
    fn redacted(&self, placeholder: &str) -> Option<(Self, Vec<(&'static str, serde_json::Value)>)> {
        let Self::TipServed(d) = self else { return None };
        let mut public = d.clone();
        let title = std::mem::replace(&mut public.title, placeholder.to_owned());
        let body = std::mem::replace(&mut public.body, placeholder.to_owned());
        let [title_at, body_at] = TIP_SERVED_PERSONAL;
        Some((
            Self::TipServed(public),
            vec![
                (title_at, serde_json::Value::String(title)),
                (body_at, serde_json::Value::String(body)),
            ],
        ))
    }
}

/// Where `TipServed`'s personal fields are (the text shown: a todo's title is the person's).
const TIP_SERVED_PERSONAL: [&str; 2] = [crate::personal::TIP_TITLE, crate::personal::TIP_BODY];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TipError {
    /// Not served, not this user's, or never shown (the person cannot have seen it).
    #[error("no such tip")]
    NotFound,
    #[error("the tip was already served")]
    AlreadyServed,
    #[error("the tip already has the reaction {0:?}; a different one is refused")]
    ConflictingReaction(Reaction),
    #[error("the decision is inconsistent: {0}")]
    InvalidDecision(&'static str),
    #[error("the tip's settle window is not over")]
    NotDue,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tip {
    pub tip_id: Option<TipId>,
    pub user_id: Option<UserId>,
    pub chosen_kind: Option<CandidateKind>,
    #[serde(default)]
    pub served_at: Option<DateTime<Utc>>,
    pub reactions: Vec<Reaction>,
    /// When the first reaction came, if it was a snooze: a completion upgrades only a snooze
    /// made within the settle window. (Tips are never snapshotted: this is always rebuilt from
    /// the events.)
    #[serde(default)]
    pub snoozed_at: Option<DateTime<Utc>>,
    /// When the first reaction came, whatever it was.
    #[serde(default)]
    pub first_reacted_at: Option<DateTime<Utc>>,
    pub reward: Option<f64>,
}

impl Tip {
    fn react(&self, user_id: UserId, reaction: Reaction, at: DateTime<Utc>) -> Result<Vec<TipEvent>, TipError> {
        let (Some(tip_id), Some(owner)) = (self.tip_id, self.user_id) else {
            return Err(TipError::NotFound);
        };
        if owner != user_id || self.chosen_kind == Some(CandidateKind::NotNow) {
            return Err(TipError::NotFound);
        }
        match self.reactions.as_slice() {
            [] => {}
            // A snooze may be followed by one other reaction.
            [Reaction::Snooze] if reaction != Reaction::Snooze => {}
            [.., last] if *last == reaction => return Ok(vec![]),
            [.., last] => return Err(TipError::ConflictingReaction(*last)),
        }
        let mut events = vec![TipEvent::TipReacted {
            tip_id,
            user_id,
            reaction,
            reacted_at: at,
        }];
        // Past the window an unsettled tip belongs to the join (a timeout, or a completion after
        // a snooze made in time): the late reaction is recorded and settles nothing, so the
        // reward does not depend on when the join passes.
        if self.reward.is_none() && reaction.settles() && self.in_window(at) {
            events.push(TipEvent::TipRewarded {
                tip_id,
                user_id,
                reward: reaction.reward(),
                settled_by: SettledBy::Reaction,
                settled_at: at,
            });
        }
        Ok(events)
    }
}

impl Tip {
    /// Whether `at` falls before the end of the settle window of serving (when a timeout
    /// becomes due).
    fn in_window(&self, at: DateTime<Utc>) -> bool {
        self.served_at.is_some_and(|s| at < s + SETTLE_WINDOW)
    }
}

fn check(decision: &Decision) -> Result<(), TipError> {
    let n = decision.candidates.len();
    if n == 0 || decision.chosen >= n {
        return Err(TipError::InvalidDecision("chosen candidate out of range"));
    }
    if decision.distribution.len() != n {
        return Err(TipError::InvalidDecision("one probability per candidate"));
    }
    if !(decision.propensity > 0.0 && decision.propensity <= 1.0) {
        return Err(TipError::InvalidDecision("propensity must be in (0, 1]"));
    }
    let sum: f64 = decision.distribution.iter().sum();
    if (sum - 1.0).abs() > 1e-6 || decision.distribution.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(TipError::InvalidDecision("probabilities must sum to 1"));
    }
    for shadow in &decision.shadow {
        if shadow.chosen >= n {
            return Err(TipError::InvalidDecision("a shadow's pick out of range"));
        }
        let d = &shadow.distribution;
        if d.is_empty() {
            continue;
        }
        let sum: f64 = d.iter().sum();
        if d.len() != n || (sum - 1.0).abs() > 1e-6 || d[shadow.chosen] != shadow.propensity {
            return Err(TipError::InvalidDecision(
                "a shadow's distribution: one probability per candidate, summing to 1, its pick's the propensity",
            ));
        }
    }
    Ok(())
}

impl Aggregate for Tip {
    const TYPE: &'static str = "tip";
    type Command = TipCommand;
    type Event = TipEvent;
    type Error = TipError;

    fn decide(&self, command: &TipCommand) -> Result<Vec<TipEvent>, TipError> {
        match command {
            TipCommand::Serve(decision) => {
                if self.tip_id.is_some() {
                    return Err(TipError::AlreadyServed);
                }
                check(decision)?;
                let mut events = vec![TipEvent::TipServed(decision.clone())];
                // The null action's reward is known as it is chosen.
                if decision.candidates[decision.chosen].kind == CandidateKind::NotNow {
                    events.push(TipEvent::TipRewarded {
                        tip_id: decision.tip_id,
                        user_id: decision.user_id,
                        reward: 0.0,
                        settled_by: SettledBy::NotNow,
                        settled_at: decision.served_at,
                    });
                }
                Ok(events)
            }
            TipCommand::React { user_id, reaction, at } => self.react(*user_id, *reaction, *at),
            TipCommand::SettleTimeout { at } => match (self.tip_id, self.user_id, self.reward) {
                (Some(_), Some(_), None) if self.served_at.is_some_and(|s| *at < s + SETTLE_WINDOW) => {
                    Err(TipError::NotDue)
                }
                (Some(tip_id), Some(user_id), None) => Ok(vec![TipEvent::TipRewarded {
                    tip_id,
                    user_id,
                    reward: 0.0,
                    settled_by: SettledBy::Timeout,
                    settled_at: *at,
                }]),
                (None, ..) => Err(TipError::NotFound),
                _ => Ok(vec![]),
            },
            TipCommand::SettleCompletion { completed_at, at } => {
                let (Some(tip_id), Some(user_id)) = (self.tip_id, self.user_id) else {
                    return Err(TipError::NotFound);
                };
                let in_window = self
                    .served_at
                    .is_some_and(|s| *completed_at >= s && *completed_at <= s + SETTLE_WINDOW);
                // A todo the person acted on elsewhere: nobody reacted within the window, or
                // the first reaction within it was a snooze (a reaction after it that settled
                // nothing, a late one, does not take the upgrade away). Any other first
                // reaction in time has settled the tip already.
                let unanswered = self.first_reacted_at.is_none_or(|at| !self.in_window(at));
                let snoozed = self.snoozed_at.is_some_and(|at| self.in_window(at));
                let todo = self.chosen_kind == Some(CandidateKind::Todo);
                if self.reward.is_some() || !in_window || !todo || !(unanswered || snoozed) {
                    return Ok(vec![]);
                }
                Ok(vec![TipEvent::TipRewarded {
                    tip_id,
                    user_id,
                    reward: Reaction::Done.reward(),
                    settled_by: SettledBy::Completion,
                    settled_at: *at,
                }])
            }
        }
    }

    fn apply(&mut self, event: &TipEvent) {
        match event {
            TipEvent::TipServed(d) => {
                self.tip_id = Some(d.tip_id);
                self.user_id = Some(d.user_id);
                self.chosen_kind = d.candidates.get(d.chosen).map(|c| c.kind);
                self.served_at = Some(d.served_at);
            }
            TipEvent::TipReacted {
                reaction, reacted_at, ..
            } => {
                if self.reactions.is_empty() {
                    self.first_reacted_at = Some(*reacted_at);
                    if *reaction == Reaction::Snooze {
                        self.snoozed_at = Some(*reacted_at);
                    }
                }
                self.reactions.push(*reaction);
            }
            TipEvent::TipRewarded { reward, .. } => self.reward = Some(*reward),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }
    fn alice() -> UserId {
        UserId::from_uuid(Uuid::from_u128(1))
    }
    fn bob() -> UserId {
        UserId::from_uuid(Uuid::from_u128(2))
    }
    fn decision(chosen: usize) -> Decision {
        Decision {
            tip_id: TipId::from_uuid(Uuid::from_u128(9)),
            user_id: alice(),
            served_at: t(0),
            candidates: vec![
                LoggedCandidate {
                    candidate_id: "advice:walk".into(),
                    kind: CandidateKind::Advice,
                    features: vec![1.0],
                },
                LoggedCandidate {
                    candidate_id: "not_now".into(),
                    kind: CandidateKind::NotNow,
                    features: vec![0.0],
                },
            ],
            chosen,
            policy: "random".into(),
            policy_version: "1".into(),
            feature_version: 1,
            score: 0.0,
            propensity: 0.5,
            distribution: vec![0.5, 0.5],
            seed: 42,
            shadow: vec![],
            title: "Take a walk".into(),
            body: "".into(),
            params: BTreeMap::new(),
            context: vec![],
            model_rewards: None,
            prior_rewards: None,
        }
    }
    fn given(events: &[TipEvent]) -> Tip {
        let mut tip = Tip::default();
        events.iter().for_each(|e| tip.apply(e));
        tip
    }
    fn served() -> Vec<TipEvent> {
        vec![TipEvent::TipServed(Box::new(decision(0)))]
    }
    fn react(tip: &Tip, r: Reaction) -> Result<Vec<TipEvent>, TipError> {
        tip.decide(&TipCommand::React {
            user_id: alice(),
            reaction: r,
            at: t(10),
        })
    }
    fn then(history: &mut Vec<TipEvent>, r: Reaction) -> Result<usize, TipError> {
        let events = react(&given(history), r)?;
        let n = events.len();
        history.extend(events);
        Ok(n)
    }

    #[test]
    fn the_first_settling_reaction_settles_the_reward_in_the_same_command() {
        for r in [
            Reaction::Done,
            Reaction::Helpful,
            Reaction::NotHelpful,
            Reaction::Dismiss,
        ] {
            let events = react(&given(&served()), r).expect("accepted");
            assert_eq!(events.len(), 2);
            assert!(
                matches!(events[1], TipEvent::TipRewarded { reward, settled_by: SettledBy::Reaction, .. } if reward == r.reward())
            );
        }
    }

    #[test]
    fn a_snooze_is_provisional_and_may_be_followed_by_one_other_reaction() {
        let mut h = served();
        assert_eq!(then(&mut h, Reaction::Snooze), Ok(1));
        assert_eq!(
            then(&mut h, Reaction::Snooze),
            Ok(0),
            "the same snooze again is a no-op"
        );
        assert_eq!(then(&mut h, Reaction::Done), Ok(2), "done after snooze settles at +1");
        assert_eq!(given(&h).reward, Some(1.0));
        assert_eq!(then(&mut h, Reaction::Done), Ok(0), "retry accepted, nothing new");
        assert_eq!(
            then(&mut h, Reaction::Dismiss),
            Err(TipError::ConflictingReaction(Reaction::Done))
        );
        assert_eq!(
            then(&mut h, Reaction::Snooze),
            Err(TipError::ConflictingReaction(Reaction::Done))
        );
    }

    #[test]
    fn a_different_second_reaction_is_refused_and_the_same_one_is_a_no_op() {
        let mut h = served();
        assert_eq!(then(&mut h, Reaction::Helpful), Ok(2));
        assert_eq!(then(&mut h, Reaction::Helpful), Ok(0));
        assert_eq!(
            then(&mut h, Reaction::Snooze),
            Err(TipError::ConflictingReaction(Reaction::Helpful))
        );
    }

    #[test]
    fn a_reaction_after_settlement_is_recorded_and_changes_nothing() {
        let mut h = served();
        h.extend(
            given(&h)
                .decide(&TipCommand::SettleTimeout { at: t(90_000) })
                .expect("settles"),
        );
        assert_eq!(given(&h).reward, Some(0.0));
        let events = react(&given(&h), Reaction::Done).expect("recorded");
        assert_eq!(events.len(), 1, "only TipReacted, no second reward");
        assert_eq!(
            given(&h).decide(&TipCommand::SettleTimeout { at: t(90_001) }),
            Ok(vec![])
        );
    }

    #[test]
    fn nobody_else_can_react_and_an_unserved_or_unshown_tip_is_not_found() {
        let tip = given(&served());
        assert_eq!(
            tip.decide(&TipCommand::React {
                user_id: bob(),
                reaction: Reaction::Done,
                at: t(1)
            }),
            Err(TipError::NotFound)
        );
        assert_eq!(react(&Tip::default(), Reaction::Done), Err(TipError::NotFound));
        let not_now = given(&[TipEvent::TipServed(Box::new(decision(1)))]);
        assert_eq!(react(&not_now, Reaction::Done), Err(TipError::NotFound));
    }

    #[test]
    fn inconsistent_decisions_are_refused() {
        let mut d = decision(5);
        assert!(Tip::default().decide(&TipCommand::Serve(Box::new(d.clone()))).is_err());
        d.chosen = 0;
        d.distribution = vec![0.9, 0.9];
        assert!(Tip::default().decide(&TipCommand::Serve(Box::new(d.clone()))).is_err());
        d.distribution = vec![0.5, 0.5];
        d.propensity = 0.0;
        assert!(Tip::default().decide(&TipCommand::Serve(Box::new(d))).is_err());
        assert_eq!(
            given(&served()).decide(&TipCommand::Serve(Box::new(decision(0)))),
            Err(TipError::AlreadyServed)
        );
    }

    #[test]
    fn a_shadows_distribution_must_fit_the_candidates() {
        let mut d = decision(0);
        d.distribution = vec![0.5, 0.5];
        d.propensity = 0.5;
        let pick = |distribution: Vec<f64>, propensity| ShadowPick {
            policy: "thompson".into(),
            policy_version: "1".into(),
            chosen: 1,
            propensity,
            params: Default::default(),
            distribution,
        };
        for (distribution, propensity, ok) in [
            (vec![0.2, 0.8], 0.8, true),
            (vec![], 0.8, true),
            (vec![0.2, 0.8], 0.2, false),
            (vec![0.3, 0.8], 0.8, false),
            (vec![1.0], 1.0, false),
        ] {
            d.shadow = vec![pick(distribution.clone(), propensity)];
            let decided = Tip::default().decide(&TipCommand::Serve(Box::new(d.clone())));
            assert_eq!(decided.is_ok(), ok, "{distribution:?} with {propensity}");
        }
    }

    fn served_todo() -> Vec<TipEvent> {
        let mut d = decision(0);
        d.candidates[0] = LoggedCandidate {
            candidate_id: "todo:42".into(),
            kind: CandidateKind::Todo,
            features: vec![1.0],
        };
        vec![TipEvent::TipServed(Box::new(d))]
    }
    fn complete(h: &[TipEvent], completed_at: i64) -> Vec<TipEvent> {
        given(h)
            .decide(&TipCommand::SettleCompletion {
                completed_at: t(completed_at),
                at: t(completed_at + 5),
            })
            .expect("accepted")
    }

    #[test]
    fn not_now_settles_at_zero_as_it_is_served() {
        let events = Tip::default()
            .decide(&TipCommand::Serve(Box::new(decision(1))))
            .expect("served");
        assert!(matches!(
            events.as_slice(),
            [TipEvent::TipServed(_), TipEvent::TipRewarded { reward, settled_by: SettledBy::NotNow, .. }] if *reward == 0.0
        ));
        let tip = given(&events);
        assert_eq!(tip.decide(&TipCommand::SettleTimeout { at: t(90_000) }), Ok(vec![]));
    }

    #[test]
    fn a_timeout_settles_at_zero_only_once_the_window_is_over() {
        let h = served();
        assert_eq!(
            given(&h).decide(&TipCommand::SettleTimeout { at: t(3_600) }),
            Err(TipError::NotDue)
        );
        let events = given(&h)
            .decide(&TipCommand::SettleTimeout { at: t(86_400) })
            .expect("due");
        assert!(
            matches!(events.as_slice(), [TipEvent::TipRewarded { reward, settled_by: SettledBy::Timeout, .. }] if *reward == 0.0)
        );
    }

    #[test]
    fn completing_an_unanswered_todo_within_the_window_settles_it_as_done() {
        let h = served_todo();
        assert_eq!(complete(&h, 90_000), vec![], "completed after the window");
        let events = complete(&h, 100);
        assert!(
            matches!(events.as_slice(), [TipEvent::TipRewarded { reward, settled_by: SettledBy::Completion, .. }] if *reward == 1.0),
            "no reaction, the todo done elsewhere within 24 h: +1"
        );
        // A first reaction other than a snooze keeps its reward.
        let mut h = served_todo();
        assert_eq!(then(&mut h, Reaction::NotHelpful), Ok(2));
        assert_eq!(complete(&h, 100), vec![]);
        assert_eq!(given(&h).reward, Some(-0.5));
        // An advice has no task to complete.
        assert_eq!(complete(&served(), 100), vec![]);
    }

    #[test]
    fn completing_a_snoozed_todo_within_the_window_upgrades_it_to_done_once() {
        let mut h = served_todo();
        assert_eq!(then(&mut h, Reaction::Snooze), Ok(1));
        assert_eq!(complete(&h, 90_000), vec![], "completed after the window");
        let events = complete(&h, 3_600);
        assert!(
            matches!(events.as_slice(), [TipEvent::TipRewarded { reward, settled_by: SettledBy::Completion, .. }] if *reward == 1.0)
        );
        h.extend(events);
        assert_eq!(complete(&h, 3_700), vec![], "exactly once");
        assert_eq!(
            given(&h).decide(&TipCommand::SettleTimeout { at: t(90_000) }),
            Ok(vec![])
        );
        // An advice that was snoozed (never offered, but the rule is about todos) is not upgraded.
        let mut advice = served();
        then(&mut advice, Reaction::Snooze).expect("snoozed");
        assert_eq!(complete(&advice, 100), vec![]);
    }

    /// Reacts to the tip of `history` at `at` seconds after the epoch of `t`.
    fn then_at(history: &mut Vec<TipEvent>, r: Reaction, at: i64) -> Result<usize, TipError> {
        let events = given(history).decide(&TipCommand::React {
            user_id: alice(),
            reaction: r,
            at: t(at),
        })?;
        let n = events.len();
        history.extend(events);
        Ok(n)
    }

    #[test]
    fn a_reaction_after_the_window_is_recorded_and_leaves_the_tip_to_time_out_at_zero() {
        // Served at t(0); the window closes at t(86_400). Whether the join has passed yet or not,
        // a late reaction settles nothing, so the reward cannot depend on when it runs.
        let mut h = served();
        assert_eq!(then_at(&mut h, Reaction::Done, 86_400), Ok(1), "only TipReacted");
        assert_eq!(given(&h).reward, None);
        assert_eq!(
            then_at(&mut h, Reaction::Done, 86_500),
            Ok(0),
            "the same one again: nothing"
        );
        let events = given(&h)
            .decide(&TipCommand::SettleTimeout { at: t(86_600) })
            .expect("due");
        assert!(
            matches!(events.as_slice(), [TipEvent::TipRewarded { reward, settled_by: SettledBy::Timeout, .. }] if *reward == 0.0)
        );
        // Just inside the window, the same reaction settles at once.
        let mut h = served();
        assert_eq!(then_at(&mut h, Reaction::Done, 86_399), Ok(2));
        assert_eq!(given(&h).reward, Some(1.0));
    }

    #[test]
    fn a_snooze_in_time_keeps_its_upgrade_past_a_late_reaction_and_a_late_snooze_gets_none() {
        // Snoozed in time, completed in time, and a late "dismiss" before the join passed: the
        // completion still settles at +1.
        let mut h = served_todo();
        assert_eq!(then_at(&mut h, Reaction::Snooze, 600), Ok(1));
        assert_eq!(
            then_at(&mut h, Reaction::Dismiss, 90_000),
            Ok(1),
            "recorded, not settled"
        );
        let events = complete(&h, 3_600);
        assert!(
            matches!(events.as_slice(), [TipEvent::TipRewarded { reward, settled_by: SettledBy::Completion, .. }] if *reward == 1.0)
        );
        // No reaction within the window, the todo completed within it, then a late reaction:
        // the tip was unanswered for 24 h and its todo done, so the completion settles it at +1.
        let mut h = served_todo();
        assert_eq!(
            then_at(&mut h, Reaction::Dismiss, 90_000),
            Ok(1),
            "recorded, not settled"
        );
        let events = complete(&h, 3_600);
        assert!(matches!(events.as_slice(), [TipEvent::TipRewarded { reward, .. }] if *reward == 1.0));
        // Neither answered nor completed in time: 0.
        let mut h = served_todo();
        assert_eq!(then_at(&mut h, Reaction::Snooze, 90_000), Ok(1));
        assert_eq!(complete(&h, 90_050), vec![]);
        let events = given(&h)
            .decide(&TipCommand::SettleTimeout { at: t(90_100) })
            .expect("due");
        assert!(matches!(events.as_slice(), [TipEvent::TipRewarded { reward, .. }] if *reward == 0.0));
    }
}
