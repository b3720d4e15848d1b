//! The built-in advice library, shipped as data (`domain/data/advice.json`) and compiled into
//! the binary. Each advice is tagged by when it fits: part of the day, kind of day, mood, place.

use serde::Deserialize;
use std::sync::LazyLock;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advice {
    pub id: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
}

/// The part of the day, in the person's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayPart {
    Morning,
    Midday,
    Afternoon,
    Evening,
    Night,
}

impl DayPart {
    pub fn of_hour(hour: u32) -> Self {
        match hour {
            5..=10 => Self::Morning,
            11..=13 => Self::Midday,
            14..=17 => Self::Afternoon,
            18..=21 => Self::Evening,
            _ => Self::Night,
        }
    }
    pub fn tag(self) -> &'static str {
        match self {
            Self::Morning => "morning",
            Self::Midday => "midday",
            Self::Afternoon => "afternoon",
            Self::Evening => "evening",
            Self::Night => "night",
        }
    }
}

static LIBRARY: LazyLock<Vec<Advice>> = LazyLock::new(|| {
    // The file is part of the source tree and checked by a test, so a parse error is a build bug.
    #[allow(clippy::expect_used)]
    serde_json::from_str(include_str!("../data/advice.json")).expect("domain/data/advice.json is valid")
});

/// Every advice in the library.
pub fn library() -> &'static [Advice] {
    &LIBRARY
}

impl Advice {
    pub fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Whether this advice fits now: its part of the day matches, and if it names weekdays or
    /// weekends, the day matches too.
    pub fn fits(&self, part: DayPart, weekend: bool) -> bool {
        let day_ok = match (self.has("weekday"), self.has("weekend")) {
            (true, false) => !weekend,
            (false, true) => weekend,
            _ => true,
        };
        self.has(part.tag()) && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCABULARY: [&str; 20] = [
        "morning",
        "midday",
        "afternoon",
        "evening",
        "night",
        "weekday",
        "weekend",
        "low_mood",
        "good_mood",
        "home",
        "work",
        "commute",
        "focus",
        "rest",
        "health",
        "social",
        "planning",
        "reflection",
        "tidy",
        "learning",
    ];

    #[test]
    fn the_library_is_large_well_formed_and_covers_every_moment() {
        let lib = library();
        assert!(lib.len() >= 60, "at least 60 advices, got {}", lib.len());
        let mut ids = std::collections::HashSet::new();
        for a in lib {
            assert!(ids.insert(a.id.as_str()), "duplicate id {}", a.id);
            assert!(!a.title.is_empty() && a.title.chars().count() <= 60, "{}", a.id);
            assert!(a.body.chars().count() <= 220, "{}", a.id);
            assert!(a.tags.iter().all(|t| VOCABULARY.contains(&t.as_str())), "{}", a.id);
        }
        for hour in 0..24 {
            for weekend in [false, true] {
                let n = lib.iter().filter(|a| a.fits(DayPart::of_hour(hour), weekend)).count();
                assert!(n >= 5, "only {n} advices fit hour {hour} weekend={weekend}");
            }
        }
    }
}
