//! Feature vectors: a candidate's features joined with the person's context, in a fixed,
//! versioned order. `TipServed` logs the vector of every candidate with [`FEATURE_VERSION`].

use crate::advice::{Advice, DayPart};
use crate::signal::{Place, Priority};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};

/// Bump when the meaning or order of the features changes.
pub const FEATURE_VERSION: u32 = 1;

/// The names of the features, in order (for replay tools and docs).
pub const FEATURE_NAMES: [&str; 14] = [
    "bias",
    "is_todo",
    "is_advice",
    "is_not_now",
    "priority",
    "overdue",
    "due_within_24h",
    "age_days",
    "hour_sin",
    "hour_cos",
    "weekend",
    "mood",
    "advice_fits_mood",
    "advice_fits_place",
];

/// The person's context at decision time.
#[derive(Debug, Clone, PartialEq)]
pub struct UserContext {
    /// The local time of the person (UTC until a time zone is known).
    pub local_time: DateTime<chrono::FixedOffset>,
    pub now: DateTime<Utc>,
    /// Latest mood score, -2..=2, if any recent one is known.
    pub mood: Option<i8>,
    pub place: Option<Place>,
}

impl UserContext {
    pub fn day_part(&self) -> DayPart {
        DayPart::of_hour(self.local_time.hour())
    }
    pub fn is_weekend(&self) -> bool {
        matches!(self.local_time.weekday(), Weekday::Sat | Weekday::Sun)
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

/// The feature vector of one candidate in one context.
pub fn features(candidate: &CandidateSource<'_>, ctx: &UserContext) -> Vec<f64> {
    let hour = f64::from(ctx.local_time.hour()) + f64::from(ctx.local_time.minute()) / 60.0;
    let angle = hour / 24.0 * std::f64::consts::TAU;
    let mood = ctx.mood.map_or(0.0, |m| f64::from(m) / 2.0);
    let weekend = if ctx.is_weekend() { 1.0 } else { 0.0 };
    let (is_todo, is_advice, is_not_now) = match candidate {
        CandidateSource::Todo { .. } => (1.0, 0.0, 0.0),
        CandidateSource::Advice(_) => (0.0, 1.0, 0.0),
        CandidateSource::NotNow => (0.0, 0.0, 1.0),
    };
    let (priority, overdue, due_soon, age) = match candidate {
        CandidateSource::Todo {
            priority,
            due,
            first_seen_at,
        } => {
            let overdue = due.is_some_and(|d| d < ctx.now);
            let soon = due.is_some_and(|d| d >= ctx.now && d - ctx.now <= Duration::hours(24));
            let age_days = (ctx.now - *first_seen_at).num_minutes().max(0) as f64 / 1440.0;
            (
                f64::from(priority.get()) / 4.0,
                f64::from(u8::from(overdue)),
                f64::from(u8::from(soon)),
                (age_days / 30.0).min(1.0),
            )
        }
        _ => (0.0, 0.0, 0.0, 0.0),
    };
    let (fits_mood, fits_place) = match candidate {
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
            (
                f64::from(u8::from(mood_tag.is_some_and(|t| a.has(t)))),
                f64::from(u8::from(place_tag.is_some_and(|t| a.has(t)))),
            )
        }
        _ => (0.0, 0.0),
    };
    vec![
        1.0,
        is_todo,
        is_advice,
        is_not_now,
        priority,
        overdue,
        due_soon,
        age,
        angle.sin(),
        angle.cos(),
        weekend,
        mood,
        fits_mood,
        fits_place,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(hour: u32) -> UserContext {
        let now = DateTime::from_timestamp(1_700_000_000, 0)
            .expect("valid")
            .with_hour(hour)
            .expect("valid hour");
        UserContext {
            local_time: now.fixed_offset(),
            now,
            mood: Some(-2),
            place: Some(Place::Home),
        }
    }

    #[test]
    fn a_todo_s_features_say_what_it_is() {
        let c = ctx(9);
        let todo = CandidateSource::Todo {
            priority: Priority::parse(4).expect("valid"),
            due: Some(c.now - Duration::hours(1)),
            first_seen_at: c.now - Duration::days(3),
        };
        let f = features(&todo, &c);
        assert_eq!(f.len(), FEATURE_NAMES.len());
        assert_eq!(&f[..8], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.1]);
        assert_eq!(f[11], -1.0);
    }

    #[test]
    fn advice_features_match_mood_and_place() {
        let a = Advice {
            id: "x".into(),
            title: "t".into(),
            body: "b".into(),
            tags: vec!["morning".into(), "low_mood".into(), "rest".into()],
        };
        let f = features(&CandidateSource::Advice(&a), &ctx(9));
        assert_eq!((f[2], f[12], f[13]), (1.0, 1.0, 0.0));
        let n = features(&CandidateSource::NotNow, &ctx(9));
        assert_eq!(n[3], 1.0);
    }
}
