//! Feature vectors: a candidate's features joined with the person's context, in a fixed,
//! versioned order. `TipServed` logs, with [`FEATURE_VERSION`], every candidate's own features
//! and the context's once; [`joint`] rebuilds exactly the vector the policy saw.
//!
//! The joint vector is the outer product of the candidate's features ([`CANDIDATE_FEATURES`])
//! and the context's ([`CONTEXT_FEATURES`]), candidate-major: entry `i * CONTEXT_DIM + j` is
//! candidate feature `i` times context feature `j`. A linear model over it can therefore learn
//! "high-priority todos in the morning" or "restful advice when the mood is low" — interactions
//! a linear model over the two parts side by side could not express. Context feature 0 is a
//! constant 1, so the candidate's own features appear unchanged too.

use crate::advice::{Advice, DayPart};
use crate::signal::{Place, Priority};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};

/// Bump when the meaning or order of the features changes. Version 1 was a flat vector of 14.
pub const FEATURE_VERSION: u32 = 2;

/// What a candidate is, in numbers.
pub const CANDIDATE_FEATURES: [&str; 10] = [
    "is_todo",
    "is_advice",
    "is_not_now",
    "priority",
    "overdue",
    "due_within_24h",
    "age",
    "advice_fits_mood",
    "advice_fits_place",
    "advice_restful",
];

/// The person's moment, in numbers.
pub const CONTEXT_FEATURES: [&str; 8] = [
    "bias",
    "hour_sin",
    "hour_cos",
    "weekend",
    "mood",
    "activity_now",
    "reaction_mix",
    "tips_today",
];

pub const CANDIDATE_DIM: usize = CANDIDATE_FEATURES.len();
pub const CONTEXT_DIM: usize = CONTEXT_FEATURES.len();
/// The length of a joint feature vector.
pub const DIM: usize = CANDIDATE_DIM * CONTEXT_DIM;

/// The names of the joint features, in order (`candidate*context`), for replay tools and docs.
pub fn feature_names() -> Vec<String> {
    CANDIDATE_FEATURES
        .iter()
        .flat_map(|c| CONTEXT_FEATURES.iter().map(move |u| format!("{c}*{u}")))
        .collect()
}

/// How long a mood report counts as the person's current mood.
pub const MOOD_FRESH_FOR: Duration = Duration::hours(36);
/// How many of the latest settled tips make up the recent reaction mix.
pub const REACTION_MIX_WINDOW: usize = 20;

/// The person's context at decision time.
#[derive(Debug, Clone, PartialEq)]
pub struct UserContext {
    /// The local time of the person (UTC until a time zone is known).
    pub local_time: DateTime<chrono::FixedOffset>,
    pub now: DateTime<Utc>,
    /// The latest mood score, -2..=2, if one was reported within [`MOOD_FRESH_FOR`].
    pub mood: Option<i8>,
    pub place: Option<Place>,
    /// The share of the person's signals that fall in this hour of the day, relative to an
    /// even spread: 0 = never active now, 1 = three times the average hour or more.
    pub activity_now: f64,
    /// The recent reaction mix: (positive − negative) / settled, over the settled ones among
    /// the latest [`REACTION_MIX_WINDOW`] tips that showed something, in -1..=1 (0 without any).
    pub reaction_mix: f64,
    /// Tips served since local midnight, "not now" excluded.
    pub tips_today: u32,
}

impl UserContext {
    /// A context with nothing learned yet about the person (tests, new users).
    pub fn bare(now: DateTime<Utc>, local_time: DateTime<chrono::FixedOffset>) -> Self {
        Self {
            local_time,
            now,
            mood: None,
            place: None,
            activity_now: 0.0,
            reaction_mix: 0.0,
            tips_today: 0,
        }
    }
    pub fn day_part(&self) -> DayPart {
        DayPart::of_hour(self.local_time.hour())
    }
    pub fn is_weekend(&self) -> bool {
        matches!(self.local_time.weekday(), Weekday::Sat | Weekday::Sun)
    }
    /// The latest mood if it is fresh at `now`.
    pub fn fresh_mood(latest: Option<(i8, DateTime<Utc>)>, now: DateTime<Utc>) -> Option<i8> {
        latest.filter(|(_, at)| now - *at <= MOOD_FRESH_FOR).map(|(m, _)| m)
    }
    /// [`UserContext::activity_now`] from signal counts by UTC hour of day.
    pub fn activity_share(activity_by_hour: &[i64], now: DateTime<Utc>) -> f64 {
        let total: i64 = activity_by_hour.iter().sum();
        let here = activity_by_hour.get(now.hour() as usize).copied().unwrap_or(0);
        if total <= 0 {
            return 0.0;
        }
        let ratio = here as f64 * 24.0 / total as f64;
        (ratio / 3.0).min(1.0)
    }
    /// [`UserContext::reaction_mix`] from the latest settled rewards of shown tips.
    pub fn mix_of(rewards: &[f64]) -> f64 {
        let recent = &rewards[..rewards.len().min(REACTION_MIX_WINDOW)];
        if recent.is_empty() {
            return 0.0;
        }
        let pos = recent.iter().filter(|r| **r > 0.0).count() as f64;
        let neg = recent.iter().filter(|r| **r < 0.0).count() as f64;
        (pos - neg) / recent.len() as f64
    }

    /// The context's own features, in [`CONTEXT_FEATURES`] order.
    pub fn vector(&self) -> [f64; CONTEXT_DIM] {
        let hour = f64::from(self.local_time.hour()) + f64::from(self.local_time.minute()) / 60.0;
        let angle = hour / 24.0 * std::f64::consts::TAU;
        [
            1.0,
            angle.sin(),
            angle.cos(),
            if self.is_weekend() { 1.0 } else { 0.0 },
            self.mood.map_or(0.0, |m| f64::from(m) / 2.0),
            self.activity_now.clamp(0.0, 1.0),
            self.reaction_mix.clamp(-1.0, 1.0),
            f64::from(self.tips_today.min(10)) / 10.0,
        ]
    }
}

/// What a candidate is, before features.
#[derive(Debug, Clone, PartialEq)]
pub enum CandidateSource<'a> {
    Todo {
        priority: Priority,
        due: Option<DateTime<Utc>>,
        first_seen_at: DateTime<Utc>,
    },
    Advice(&'a Advice),
    NotNow,
}

/// A candidate's own features, in [`CANDIDATE_FEATURES`] order.
pub fn candidate_vector(candidate: &CandidateSource<'_>, ctx: &UserContext) -> [f64; CANDIDATE_DIM] {
    let mut c = [0.0; CANDIDATE_DIM];
    match candidate {
        CandidateSource::Todo {
            priority,
            due,
            first_seen_at,
        } => {
            let overdue = due.is_some_and(|d| d < ctx.now);
            let soon = due.is_some_and(|d| d >= ctx.now && d - ctx.now <= Duration::hours(24));
            let age_days = (ctx.now - *first_seen_at).num_minutes().max(0) as f64 / 1440.0;
            c[0] = 1.0;
            c[3] = f64::from(priority.get()) / 4.0;
            c[4] = f64::from(u8::from(overdue));
            c[5] = f64::from(u8::from(soon));
            c[6] = (age_days / 30.0).min(1.0);
        }
        CandidateSource::Advice(a) => {
            let mood_tag = match ctx.mood {
                Some(m) if m < 0 => Some("low_mood"),
                Some(m) if m > 0 => Some("good_mood"),
                _ => None,
            };
            let place_tag = match ctx.place {
                Some(Place::Home) => Some("home"),
                Some(Place::Work) => Some("work"),
                Some(Place::Commute) => Some("commute"),
                _ => None,
            };
            c[1] = 1.0;
            c[7] = f64::from(u8::from(mood_tag.is_some_and(|t| a.has(t))));
            c[8] = f64::from(u8::from(place_tag.is_some_and(|t| a.has(t))));
            c[9] = f64::from(u8::from(a.has("rest") || a.has("reflection")));
        }
        CandidateSource::NotNow => c[2] = 1.0,
    }
    c
}

/// The joint feature vector of one candidate in one context (length [`DIM`]).
pub fn features(candidate: &CandidateSource<'_>, ctx: &UserContext) -> Vec<f64> {
    joint(&candidate_vector(candidate, ctx), &ctx.vector())
}

/// The joint vector from its two factors: `TipServed` logs each candidate's own features and
/// the context's once, and this rebuilds exactly the vector the policy saw.
pub fn joint(candidate: &[f64], context: &[f64]) -> Vec<f64> {
    // Sized once: `flat_map` gives `collect` no length, and growing the vector by doubling was a
    // visible share of a decision's CPU (one joint vector per candidate).
    let mut out = Vec::with_capacity(candidate.len() * context.len());
    for ci in candidate {
        out.extend(context.iter().map(|uj| ci * uj));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(hour: u32) -> UserContext {
        let now = DateTime::from_timestamp(1_700_000_000, 0)
            .expect("valid")
            .with_hour(hour)
            .expect("valid hour")
            .with_minute(0)
            .expect("valid minute");
        UserContext {
            mood: Some(-2),
            place: Some(Place::Home),
            tips_today: 3,
            ..UserContext::bare(now, now.fixed_offset())
        }
    }

    #[test]
    fn a_todo_s_features_say_what_it_is() {
        let c = ctx(6);
        let todo = CandidateSource::Todo {
            priority: Priority::parse(4).expect("valid"),
            due: Some(c.now - Duration::hours(1)),
            first_seen_at: c.now - Duration::days(3),
        };
        let cv = candidate_vector(&todo, &c);
        assert_eq!(cv, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 0.0, 0.0, 0.0]);
        let u = c.vector();
        assert!((u[1] - 1.0).abs() < 1e-12, "06:00 is the top of the sine");
        assert_eq!((u[4], u[7]), (-1.0, 0.3));
        let f = features(&todo, &c);
        assert_eq!(f.len(), DIM);
        assert_eq!(feature_names().len(), DIM);
        // Outer product, candidate-major.
        for i in 0..CANDIDATE_DIM {
            for j in 0..CONTEXT_DIM {
                assert_eq!(f[i * CONTEXT_DIM + j], cv[i] * u[j]);
            }
        }
        assert_eq!(feature_names()[3 * CONTEXT_DIM + 1], "priority*hour_sin");
    }

    #[test]
    fn advice_features_match_mood_place_and_rest() {
        let a = Advice {
            id: "x".into(),
            title: "t".into(),
            body: "b".into(),
            tags: vec!["morning".into(), "low_mood".into(), "rest".into()],
        };
        let cv = candidate_vector(&CandidateSource::Advice(&a), &ctx(9));
        assert_eq!((cv[1], cv[7], cv[8], cv[9]), (1.0, 1.0, 0.0, 1.0));
        let n = candidate_vector(&CandidateSource::NotNow, &ctx(9));
        assert_eq!(n, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn context_inputs_are_scaled_and_bounded() {
        let now = ctx(9).now;
        let mut hours = [0i64; 24];
        assert_eq!(UserContext::activity_share(&hours, now), 0.0);
        hours[9] = 10;
        hours[20] = 10;
        assert_eq!(
            UserContext::activity_share(&hours, now),
            1.0,
            "12x the average hour, capped"
        );
        hours[20] = 230;
        assert!((UserContext::activity_share(&hours, now) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(UserContext::mix_of(&[]), 0.0);
        assert_eq!(UserContext::mix_of(&[1.0, 0.5, -1.0, 0.0]), 0.25);
        assert_eq!(UserContext::mix_of(&[-1.0; 30]), -1.0);
        let fresh = Some((2, now - Duration::hours(2)));
        let stale = Some((2, now - Duration::hours(40)));
        assert_eq!(UserContext::fresh_mood(fresh, now), Some(2));
        assert_eq!(UserContext::fresh_mood(stale, now), None);
    }
}
