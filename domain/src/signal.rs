//! Signals: what people's apps tell oO. Every value here is valid by construction; request
//! bodies become these types through their `parse` functions at the edge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a signal field was refused. `field` names the offending field for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> InvalidField {
    InvalidField { field, message }
}

/// A short free text written by a person (a title, a note): trimmed, 1 to 500 characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    /// 1 to 500 characters as sent, none a control character, not all whitespace; kept
    /// without leading and trailing whitespace.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, InvalidField> {
        if s.chars().all(char::is_whitespace) {
            return Err(invalid(field, "must not be empty"));
        }
        if s.chars().count() > 500 {
            return Err(invalid(field, "must be at most 500 characters"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(invalid(field, "must not contain control characters"));
        }
        Ok(Self(s.trim().to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task's priority, 1 (lowest) to 4 (highest), as Todoist numbers them in its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    pub fn parse(p: i64) -> Result<Self, InvalidField> {
        if (1..=4).contains(&p) {
            Ok(Self(p as u8))
        } else {
            Err(invalid("priority", "must be an integer from 1 to 4"))
        }
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Priority {
    type Error = InvalidField;
    fn try_from(p: u8) -> Result<Self, Self::Error> {
        Self::parse(i64::from(p))
    }
}
impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

/// A mood score from -2 (very low) to 2 (very good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i8", into = "i8")]
pub struct MoodScore(i8);

impl MoodScore {
    pub fn parse(s: i64) -> Result<Self, InvalidField> {
        if (-2..=2).contains(&s) {
            Ok(Self(s as i8))
        } else {
            Err(invalid("score", "must be an integer from -2 to 2"))
        }
    }
    pub fn get(self) -> i8 {
        self.0
    }
}

impl TryFrom<i8> for MoodScore {
    type Error = InvalidField;
    fn try_from(s: i8) -> Result<Self, Self::Error> {
        Self::parse(i64::from(s))
    }
}
impl From<MoodScore> for i8 {
    fn from(s: MoodScore) -> i8 {
        s.0
    }
}

/// The longest external id, in characters: Google Calendar's event ids go up to 1024.
pub const MAX_EXTERNAL_ID_CHARS: usize = 1024;

/// An identifier given by the source app: 1 to [`MAX_EXTERNAL_ID_CHARS`] characters, none a
/// control character, kept exactly as sent (spaces included). What providers send fits: Todoist
/// task ids (alphanumeric), Google Calendar event ids (base32hex, up to 1024), iCalendar UIDs
/// (free text such as `20261203T0900-42@example.org`, spaces allowed), Microsoft Graph ids
/// (base64url with `=`). Stored in clear: it must identify a record, not describe a person, so a
/// connector for files sends a hash of the path, never the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        if s.is_empty() || s.chars().count() > MAX_EXTERNAL_ID_CHARS || s.chars().any(char::is_control) {
            return Err(invalid(
                "external_id",
                "must be 1 to 1024 characters, none of them a control character",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name as sent by a client, checked for shape (e.g. `Europe/Paris`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid(
                "time_zone",
                "must be an IANA time zone name such as Europe/Paris",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSource {
    Todoist,
    Manual,
}

impl TaskSource {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "todoist" => Ok(Self::Todoist),
            "manual" => Ok(Self::Manual),
            _ => Err(invalid("source", "must be \"todoist\" or \"manual\"")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todoist => "todoist",
            Self::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Home,
    Work,
    Commute,
    Elsewhere,
}

impl Place {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "home" => Ok(Self::Home),
            "work" => Ok(Self::Work),
            "commute" => Ok(Self::Commute),
            "elsewhere" => Ok(Self::Elsewhere),
            _ => Err(invalid("place", "must be one of home, work, commute, elsewhere")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Work => "work",
            Self::Commute => "commute",
            Self::Elsewhere => "elsewhere",
        }
    }
}

/// What a signal says, by kind. Fields holding a person's words (titles, names, notes,
/// activities) are personal and sealed in storage (see `SignalRecorded`'s personal fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalData {
    Task {
        source: TaskSource,
        external_id: ExternalId,
        title: Text,
        priority: Priority,
        due: Option<DateTime<Utc>>,
        completed: bool,
        project: Option<Text>,
    },
    Habit {
        name: Text,
        done: bool,
    },
    Calendar {
        title: Text,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    Mood {
        score: MoodScore,
        note: Option<Text>,
    },
    Context {
        place: Place,
        activity: Option<Text>,
        time_zone: Option<TimeZoneName>,
    },
}

impl SignalData {
    pub fn kind(&self) -> SignalKind {
        match self {
            Self::Task { .. } => SignalKind::Task,
            Self::Habit { .. } => SignalKind::Habit,
            Self::Calendar { .. } => SignalKind::Calendar,
            Self::Mood { .. } => SignalKind::Mood,
            Self::Context { .. } => SignalKind::Context,
        }
    }

    /// A calendar event must end after it starts.
    pub fn calendar(title: Text, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, InvalidField> {
        if end < start {
            return Err(invalid("end", "must not be before start"));
        }
        Ok(Self::Calendar { title, start, end })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Task,
    Habit,
    Calendar,
    Mood,
    Context,
}

impl SignalKind {
    pub const ALL: [SignalKind; 5] = [Self::Task, Self::Habit, Self::Calendar, Self::Mood, Self::Context];

    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "task" => Ok(Self::Task),
            "habit" => Ok(Self::Habit),
            "calendar" => Ok(Self::Calendar),
            "mood" => Ok(Self::Mood),
            "context" => Ok(Self::Context),
            _ => Err(invalid("kind", "must be one of task, habit, calendar, mood, context")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Habit => "habit",
            Self::Calendar => "calendar",
            Self::Mood => "mood",
            Self::Context => "context",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_take_what_providers_send_and_refuse_control_characters() {
        for ok in [
            "6X7rM8997g3RQmvh",
            "8ae4f3c2b1a0v9u8t7s6r5q4p3o2n1m0",
            "20261203T0900-42@example.org",
            "a UID with spaces",
            "AAMkAGI2TG93AAA=",
            "Événement-ünïcode",
        ] {
            assert!(ExternalId::parse(ok).is_ok(), "{ok:?}");
        }
        assert!(ExternalId::parse(&"v".repeat(MAX_EXTERNAL_ID_CHARS)).is_ok());
        assert!(
            ExternalId::parse(&"é".repeat(MAX_EXTERNAL_ID_CHARS)).is_ok(),
            "characters, not bytes"
        );
        for bad in [
            String::new(),
            "v".repeat(MAX_EXTERNAL_ID_CHARS + 1),
            "line\nbreak".into(),
            "tab\there".into(),
            "nul\0".into(),
            "c1\u{85}".into(),
        ] {
            let e = ExternalId::parse(&bad).expect_err("refused");
            assert_eq!(
                e.message,
                "must be 1 to 1024 characters, none of them a control character"
            );
        }
    }

    #[test]
    fn values_out_of_range_are_refused() {
        assert!(Priority::parse(0).is_err());
        assert!(Priority::parse(5).is_err());
        assert_eq!(Priority::parse(4).map(Priority::get), Ok(4));
        assert!(MoodScore::parse(3).is_err());
        assert!(MoodScore::parse(-3).is_err());
        assert!(Text::parse("title", "   ").is_err());
        assert!(Text::parse("title", &"a".repeat(501)).is_err());
        assert_eq!(
            Text::parse("title", "  buy milk ").map(|t| t.as_str().to_owned()),
            Ok("buy milk".into())
        );
        assert!(TimeZoneName::parse("Europe/Paris").is_ok());
        assert!(TimeZoneName::parse("../etc").is_err());
    }

    #[test]
    fn a_calendar_event_cannot_end_before_it_starts() {
        let t = Text::parse("title", "standup").expect("valid");
        let start = DateTime::from_timestamp(1_000, 0).expect("valid");
        let end = DateTime::from_timestamp(500, 0).expect("valid");
        assert!(SignalData::calendar(t, start, end).is_err());
    }

    #[test]
    fn deserialising_revalidates() {
        let bad = serde_json::json!({"kind": "mood", "score": 7, "note": null});
        assert!(serde_json::from_value::<SignalData>(bad).is_err());
    }
}
