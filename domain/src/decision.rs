//! The pure decision behind `POST /recommend` and the simulator: what is known of a person
//! becomes their context and candidates ([`Prepared::new`]), the serving policy draws one with a
//! seed and the shadow policies make their picks ([`Policies::decide`]), and the outcome becomes
//! the record `TipServed` logs ([`Decided::into_decision`]). Reading what is known is the
//! projections' work; appending `TipServed` is the command side's.

use crate::advice::{self, Advice};
use crate::bandit::LinearModel;
use crate::features::{CandidateSource, FEATURE_VERSION, UserContext, candidate_vector, joint};
use crate::ids::{TipId, UserId, fnv1a};
use crate::policy::{Inputs, Policy, PolicySpecError, Scored, draw, from_spec, mix};
use crate::signal::{MoodScore, Place, Priority};
use crate::tip::{CandidateKind, Decision, LoggedCandidate, ShadowPick};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// The most todos considered per decision.
pub const MAX_TODOS: usize = 50;

/// Where a todo's personal text is kept: the sealed envelope of the event that set it, opened
/// only when that todo is served.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedText {
    pub event_id: Uuid,
    pub envelope: Option<Vec<u8>>,
}

/// An open todo as a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Todo {
    pub external_id: String,
    pub source: String,
    pub priority: Priority,
    pub due: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    pub text: SealedText,
}

/// One thing a decision can choose.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    Todo(Todo),
    Advice(&'static Advice),
    /// Showing nothing now (the null action, reward 0).
    NotNow,
}

impl Candidate {
    /// How it is named in the log (no personal text: a todo by its source's id, an advice by
    /// its slug), its kind, and what its features are computed from.
    fn logged_as(&self) -> (String, CandidateKind, CandidateSource<'_>) {
        match self {
            Candidate::Todo(t) => (
                format!("todo:{}", t.external_id),
                CandidateKind::Todo,
                CandidateSource::Todo {
                    priority: t.priority,
                    due: t.due,
                    first_seen_at: t.first_seen_at,
                },
            ),
            Candidate::Advice(a) => (
                format!("advice:{}", a.id),
                CandidateKind::Advice,
                CandidateSource::Advice(a),
            ),
            Candidate::NotNow => ("not_now".to_owned(), CandidateKind::NotNow, CandidateSource::NotNow),
        }
    }
}

/// What the client says about the moment; overrides what oO has learned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub place: Option<Place>,
    pub mood: Option<MoodScore>,
    pub time_zone: Option<chrono_tz::Tz>,
}

/// An IANA time zone name, if this build knows it.
pub fn parse_time_zone(s: &str) -> Option<chrono_tz::Tz> {
    s.parse::<chrono_tz::Tz>().ok()
}

/// What the projections know of a person at the moment of a decision.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The latest mood score and when it was reported.
    pub mood: Option<(i8, DateTime<Utc>)>,
    /// The latest place, as stored.
    pub place: Option<String>,
    /// The latest time zone, as stored.
    pub time_zone: Option<String>,
    /// Signal counts by UTC hour of day.
    pub activity_by_hour: Vec<i64>,
    /// When the latest tips that showed something were served, newest first.
    pub served: Vec<DateTime<Utc>>,
    /// Their settled rewards, in the same order (`None` while unsettled).
    pub rewards: Vec<Option<f64>>,
    /// Open todos, best first (priority, then due date, then age), at most [`MAX_TODOS`].
    pub todos: Vec<Todo>,
}

impl Known {
    /// The person's context at `now`: the client's overrides first, then what was learned; the
    /// local time in their time zone (UTC until one is known), today's tips counted from local
    /// midnight.
    pub fn context(&self, overrides: Overrides, now: DateTime<Utc>) -> UserContext {
        let tz = overrides
            .time_zone
            .or_else(|| self.time_zone.as_deref().and_then(parse_time_zone));
        let local_time: DateTime<FixedOffset> = match tz {
            Some(tz) => now.with_timezone(&tz).fixed_offset(),
            None => now.fixed_offset(),
        };
        let midnight = local_time
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|m| local_time.offset().from_local_datetime(&m).single())
            .map(|m| m.with_timezone(&Utc))
            .unwrap_or(now);
        let tips_today = self.served.iter().filter(|at| **at >= midnight && **at <= now).count() as u32;
        let rewards: Vec<f64> = self.rewards.iter().flatten().copied().collect();
        UserContext {
            local_time,
            now,
            mood: overrides
                .mood
                .map(|m| m.get())
                .or_else(|| UserContext::fresh_mood(self.mood, now)),
            place: overrides
                .place
                .or_else(|| self.place.as_deref().and_then(|p| Place::parse(p).ok())),
            activity_now: UserContext::activity_share(&self.activity_by_hour, now),
            reaction_mix: UserContext::mix_of(&rewards),
            tips_today,
        }
    }
}

/// Everything a decision is made from.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub user_id: UserId,
    pub now: DateTime<Utc>,
    pub context: UserContext,
    /// The open todos, then the advices that fit the moment, then "not now".
    pub candidates: Vec<Candidate>,
    pub logged: Vec<LoggedCandidate>,
    /// One joint feature vector per candidate.
    pub vectors: Vec<Vec<f64>>,
    /// The context's own features, logged once for all candidates.
    pub context_vector: Vec<f64>,
    pub model: Arc<LinearModel>,
}

impl Prepared {
    /// The candidates of the moment for a person, with their features.
    pub fn new(
        user_id: UserId,
        known: Known,
        overrides: Overrides,
        now: DateTime<Utc>,
        model: Arc<LinearModel>,
    ) -> Self {
        let context = known.context(overrides, now);
        let mut candidates: Vec<Candidate> = Vec::with_capacity(known.todos.len() + 20);
        candidates.extend(known.todos.into_iter().map(Candidate::Todo));
        let (part, weekend) = (context.day_part(), context.is_weekend());
        candidates.extend(
            advice::library()
                .iter()
                .filter(|a| a.fits(part, weekend))
                .map(Candidate::Advice),
        );
        candidates.push(Candidate::NotNow);
        let logged: Vec<LoggedCandidate> = candidates
            .iter()
            .map(|c| {
                let (candidate_id, kind, source) = c.logged_as();
                LoggedCandidate {
                    candidate_id,
                    kind,
                    features: candidate_vector(&source, &context).to_vec(),
                }
            })
            .collect();
        let context_vector = context.vector().to_vec();
        let vectors = logged.iter().map(|c| joint(&c.features, &context_vector)).collect();
        Self {
            user_id,
            now,
            context,
            candidates,
            logged,
            vectors,
            context_vector,
            model,
        }
    }

    /// What `policy` makes of the candidates.
    fn score(&self, policy: &dyn Policy, prior: &[f64], seed: u64) -> Scored {
        policy.distribution(&Inputs {
            candidates: &self.vectors,
            model: &self.model,
            prior,
            seed,
        })
    }
}

/// The population's weights a decision starts every person from, and how many rewards they
/// were learned from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    pub theta: Vec<f64>,
    pub rewards: u64,
}

/// Who served a decision, as the log names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedBy {
    pub policy: String,
    pub version: String,
    pub params: BTreeMap<String, f64>,
}

impl ServedBy {
    pub fn of(policy: &dyn Policy) -> Self {
        Self {
            policy: policy.name().to_owned(),
            version: policy.version().to_owned(),
            params: policy.params(),
        }
    }
}

/// A decision: the served candidate drawn from a distribution with a seed, and the shadow
/// policies' picks on the same candidates.
#[derive(Debug, Clone)]
pub struct Decided {
    pub served_by: ServedBy,
    /// How many rewards the prior it used was learned from.
    pub prior_rewards: u64,
    pub scored: Scored,
    pub chosen: usize,
    pub seed: u64,
    pub shadow: Vec<ShadowPick>,
}

impl Decided {
    /// The record `TipServed` logs, with the text shown (`title`, `body`).
    pub fn into_decision(self, tip_id: TipId, prepared: Prepared, title: String, body: String) -> Decision {
        let Decided {
            served_by,
            prior_rewards,
            scored,
            chosen,
            seed,
            shadow,
        } = self;
        Decision {
            tip_id,
            user_id: prepared.user_id,
            served_at: prepared.now,
            candidates: prepared.logged,
            chosen,
            policy: served_by.policy,
            policy_version: served_by.version,
            feature_version: FEATURE_VERSION,
            score: scored.scores[chosen],
            propensity: scored.probabilities[chosen],
            distribution: scored.probabilities,
            seed,
            shadow,
            title,
            body,
            params: served_by.params,
            context: prepared.context_vector,
            model_rewards: Some(prepared.model.n),
            prior_rewards: Some(prior_rewards),
        }
    }
}

/// The serving policy and the shadow policies beside it.
#[derive(Clone)]
pub struct Policies {
    pub serving: Arc<dyn Policy>,
    pub shadows: Vec<Arc<dyn Policy>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("serving", &self.serving.name())
            .field("shadows", &self.shadows.iter().map(|p| p.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Policies {
    /// A serving policy spec and `;`-separated shadow specs (as in `OO_POLICY` and
    /// `OO_SHADOW_POLICIES`).
    pub fn from_specs(serving: &str, shadows: &str) -> Result<Self, PolicySpecError> {
        Ok(Self {
            serving: Arc::from(from_spec(serving)?),
            shadows: shadows
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| from_spec(s).map(Arc::from))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The policies of a line-up (each spec as [`crate::policy::canonical`] writes it).
    pub fn from_lineup(lineup: &crate::promotion::Lineup) -> Result<Self, PolicySpecError> {
        Self::from_specs(&lineup.serving, &lineup.shadows.join(";"))
    }

    /// The line-up these policies make, each by its canonical spec.
    pub fn lineup(&self) -> crate::promotion::Lineup {
        let spec = |p: &Arc<dyn Policy>| crate::policy::spec_of(p.name(), &p.params());
        crate::promotion::Lineup {
            serving: spec(&self.serving),
            shadows: self.shadows.iter().map(spec).collect(),
        }
    }

    /// Whether any of them reads the person's model and the population's prior.
    pub fn learn(&self) -> bool {
        std::iter::once(&self.serving)
            .chain(&self.shadows)
            .any(|p| p.uses_model())
    }

    /// The serving policy's distribution and draw, and each shadow's pick with a seed of its
    /// own derived from the decision's.
    pub fn decide(&self, prepared: &Prepared, prior: &Prior, seed: u64) -> Decided {
        let scored = prepared.score(self.serving.as_ref(), &prior.theta, seed);
        let chosen = draw(&scored.probabilities, seed);
        let shadow = self
            .shadows
            .iter()
            .map(|p| {
                let seed = mix(seed ^ fnv1a(p.name().bytes()));
                let s = prepared.score(p.as_ref(), &prior.theta, seed);
                let pick = draw(&s.probabilities, seed);
                ShadowPick {
                    policy: p.name().to_owned(),
                    policy_version: p.version().to_owned(),
                    chosen: pick,
                    propensity: s.probabilities[pick],
                    params: p.params(),
                    distribution: s.probabilities,
                }
            })
            .collect();
        Decided {
            served_by: ServedBy::of(self.serving.as_ref()),
            prior_rewards: prior.rewards,
            scored,
            chosen,
            seed,
            shadow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DIM;
    use chrono::TimeZone;

    fn todo(id: &str, priority: i64, due: Option<DateTime<Utc>>, seen: DateTime<Utc>) -> Todo {
        Todo {
            external_id: id.to_owned(),
            source: "manual".to_owned(),
            priority: Priority::parse(priority).expect("a priority"),
            due,
            first_seen_at: seen,
            text: SealedText {
                event_id: Uuid::nil(),
                envelope: None,
            },
        }
    }

    fn at(h: u32) -> DateTime<Utc> {
        // A Wednesday.
        Utc.with_ymd_and_hms(2026, 12, 2, h, 30, 0).single().expect("a time")
    }

    fn prepared(known: Known, overrides: Overrides, now: DateTime<Utc>) -> Prepared {
        Prepared::new(
            UserId::from_uuid(Uuid::nil()),
            known,
            overrides,
            now,
            Arc::new(LinearModel::new(DIM)),
        )
    }

    #[test]
    fn the_candidates_are_the_todos_in_order_then_the_advices_that_fit_then_not_now() {
        let now = at(9);
        let known = Known {
            todos: vec![todo("a", 4, None, now), todo("b", 1, Some(now), now)],
            ..Known::default()
        };
        let p = prepared(known, Overrides::default(), now);
        let ids: Vec<&str> = p.logged.iter().map(|c| c.candidate_id.as_str()).collect();
        assert_eq!(&ids[..2], ["todo:a", "todo:b"]);
        assert_eq!(ids.last(), Some(&"not_now"));
        let context = p.context.clone();
        for (candidate, logged) in p.candidates.iter().zip(&p.logged) {
            if let Candidate::Advice(a) = candidate {
                assert!(a.fits(context.day_part(), context.is_weekend()), "{}", a.id);
                assert_eq!(logged.kind, CandidateKind::Advice);
            }
        }
        assert!(ids.iter().any(|i| i.starts_with("advice:")), "a morning has advices");
        assert_eq!(p.vectors.len(), p.candidates.len());
        for (v, c) in p.vectors.iter().zip(&p.logged) {
            assert_eq!(
                *v,
                joint(&c.features, &p.context_vector),
                "the logged factors rebuild the vector"
            );
        }
    }

    #[test]
    fn the_context_takes_the_client_first_then_what_was_learned_and_counts_tips_from_local_midnight() {
        // 05:30 UTC is 21:30 the day before in Los Angeles.
        let now = at(5);
        let known = Known {
            mood: Some((-2, now - chrono::Duration::hours(1))),
            place: Some("work".to_owned()),
            time_zone: Some("America/Los_Angeles".to_owned()),
            // One tip at 01:00 UTC (17:00 local, today there), one the local day before.
            served: vec![now - chrono::Duration::hours(4), now - chrono::Duration::hours(30)],
            ..Known::default()
        };
        let learned = known.context(Overrides::default(), now);
        assert_eq!(learned.local_time.format("%H:%M").to_string(), "21:30");
        assert_eq!(
            (learned.mood, learned.place, learned.tips_today),
            (Some(-2), Some(Place::Work), 1)
        );
        let told = known.context(
            Overrides {
                place: Some(Place::Home),
                mood: Some(MoodScore::parse(1).expect("a mood")),
                time_zone: parse_time_zone("UTC"),
            },
            now,
        );
        assert_eq!(told.local_time.format("%H:%M").to_string(), "05:30");
        assert_eq!(
            (told.mood, told.place, told.tips_today),
            (Some(1), Some(Place::Home), 1)
        );
    }

    #[test]
    fn a_decision_reproduces_from_its_seed_and_logs_who_served_it() {
        let now = at(14);
        let known = Known {
            todos: vec![todo("a", 2, None, now), todo("b", 3, None, now)],
            ..Known::default()
        };
        let p = prepared(known, Overrides::default(), now);
        let policies = Policies::from_specs("linucb", "random; thompson").expect("specs");
        assert!(policies.learn());
        let prior = Prior {
            theta: vec![0.0; DIM],
            rewards: 0,
        };
        let (one, two) = (policies.decide(&p, &prior, 42), policies.decide(&p, &prior, 42));
        assert_eq!((one.chosen, &one.scored), (two.chosen, &two.scored));
        assert_eq!(one.shadow, two.shadow);
        assert_eq!(one.shadow.len(), 2);
        assert_eq!(one.served_by, ServedBy::of(policies.serving.as_ref()));
        let (chosen, propensity) = (one.chosen, one.scored.probabilities[one.chosen]);
        let decision = one.into_decision(TipId::from_uuid(Uuid::nil()), p, "t".into(), String::new());
        assert_eq!((decision.chosen, decision.propensity), (chosen, propensity));
        assert_eq!(decision.policy, "linucb");
        assert_eq!(decision.feature_version, FEATURE_VERSION);
        assert!((decision.distribution.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_bad_spec_is_refused() {
        let lineup = Policies::from_specs("linucb:alpha=0.5", "random; thompson")
            .expect("specs")
            .lineup();
        assert!(lineup.serving.starts_with("linucb:alpha=0.5,"), "{lineup:?}");
        assert_eq!(
            Policies::from_lineup(&lineup).expect("canonical specs parse").lineup(),
            lineup
        );
        assert!(Policies::from_specs("nope", "").is_err());
        assert!(Policies::from_specs("random", "linucb; nope").is_err());
        assert!(!Policies::from_specs("random", "").expect("random").learn());
    }
}
