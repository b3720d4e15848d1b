//! Reactions to a tip and the reward each one settles on (DESIGN section 6).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    Done,
    Helpful,
    Snooze,
    NotHelpful,
    Dismiss,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reaction must be one of done, helpful, snooze, not_helpful, dismiss")]
pub struct InvalidReaction;

impl Reaction {
    pub const ALL: [Reaction; 5] = [Self::Done, Self::Helpful, Self::Snooze, Self::NotHelpful, Self::Dismiss];

    pub fn parse(s: &str) -> Result<Self, InvalidReaction> {
        match s {
            "done" => Ok(Self::Done),
            "helpful" => Ok(Self::Helpful),
            "snooze" => Ok(Self::Snooze),
            "not_helpful" => Ok(Self::NotHelpful),
            "dismiss" => Ok(Self::Dismiss),
            _ => Err(InvalidReaction),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Helpful => "helpful",
            Self::Snooze => "snooze",
            Self::NotHelpful => "not_helpful",
            Self::Dismiss => "dismiss",
        }
    }

    /// The reward this reaction is worth when it settles a tip.
    pub fn reward(self) -> f64 {
        match self {
            Self::Done => 1.0,
            Self::Helpful => 0.5,
            Self::Snooze => 0.0,
            Self::NotHelpful => -0.5,
            Self::Dismiss => -1.0,
        }
    }

    /// A snooze is provisional: it does not settle the reward by itself.
    pub fn settles(self) -> bool {
        self != Self::Snooze
    }
}

/// What settled a tip's reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettledBy {
    Reaction,
    Completion,
    Timeout,
    /// "Not now" was served: the null action is worth 0 as soon as it is chosen.
    NotNow,
}

impl SettledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reaction => "reaction",
            Self::Completion => "completion",
            Self::Timeout => "timeout",
            Self::NotNow => "not_now",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_follow_the_design() {
        let r: Vec<f64> = Reaction::ALL.iter().map(|r| r.reward()).collect();
        assert_eq!(r, vec![1.0, 0.5, 0.0, -0.5, -1.0]);
        assert!(!Reaction::Snooze.settles());
        for r in Reaction::ALL {
            assert_eq!(Reaction::parse(r.as_str()), Ok(r));
        }
        assert!(Reaction::parse("meh").is_err());
    }
}
