//! The per-user `Signals` aggregate: one stream per user holding every signal they sent.
//!
//! Idempotency by signal id is not kept here (the set of seen ids would grow forever): the
//! store checks a unique index in the append transaction. The state stays small and constant in
//! size, which is what makes its snapshots cheap.

use crate::event::{Aggregate, Event};
use crate::ids::{SignalId, UserId};
use crate::personal;
use crate::signal::{SignalData, SignalKind};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most signals one command may carry.
pub const MAX_SIGNALS_PER_COMMAND: usize = 1000;
/// How far in the future a signal may claim to have happened (clock skew between devices).
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

#[derive(Debug, Clone, PartialEq)]
pub struct NewSignal {
    pub id: SignalId,
    pub occurred_at: DateTime<Utc>,
    pub data: SignalData,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordSignals {
    pub user_id: UserId,
    pub signals: Vec<NewSignal>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SignalsEvent {
    SignalRecorded {
        user_id: UserId,
        signal_id: SignalId,
        occurred_at: DateTime<Utc>,
        data: SignalData,
    },
}

impl Event for SignalsEvent {
    fn event_type(&self) -> &'static str {
        "SignalRecorded"
    }
    fn personal_fields(&self) -> &'static [&'static str] {
        let SignalsEvent::SignalRecorded { data, .. } = self;
        match data {
            SignalData::Task { .. } => &[personal::TASK_TITLE, personal::TASK_PROJECT],
            SignalData::Habit { .. } => &[personal::HABIT_NAME],
            SignalData::Calendar { .. } => &[personal::CALENDAR_TITLE],
            SignalData::Mood { .. } => &[personal::MOOD_NOTE],
            SignalData::Context { .. } => &[personal::CONTEXT_ACTIVITY],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalsError {
    #[error("at most {MAX_SIGNALS_PER_COMMAND} signals per request")]
    TooMany,
    #[error("signal {0} claims to have happened more than 24 hours in the future")]
    InTheFuture(SignalId),
    #[error("signal {0} belongs to another user's stream")]
    WrongUser(SignalId),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub user_id: Option<UserId>,
    pub recorded: u64,
    pub by_kind: BTreeMap<SignalKind, u64>,
    pub last_occurred_at: Option<DateTime<Utc>>,
}

impl Aggregate for Signals {
    const TYPE: &'static str = "signals";
    type Command = RecordSignals;
    type Event = SignalsEvent;
    type Error = SignalsError;

    /// Validates the batch as a whole: if one signal is refused, none is recorded. Repeated ids
    /// inside one command are recorded once (the first wins), like repeats across commands.
    fn decide(&self, cmd: &RecordSignals) -> Result<Vec<SignalsEvent>, SignalsError> {
        if cmd.signals.len() > MAX_SIGNALS_PER_COMMAND {
            return Err(SignalsError::TooMany);
        }
        let mut seen = std::collections::HashSet::new();
        let mut events = Vec::with_capacity(cmd.signals.len());
        for s in &cmd.signals {
            if self.user_id.is_some_and(|u| u != cmd.user_id) {
                return Err(SignalsError::WrongUser(s.id.clone()));
            }
            if s.occurred_at > cmd.at + MAX_FUTURE_SKEW {
                return Err(SignalsError::InTheFuture(s.id.clone()));
            }
            if seen.insert(&s.id) {
                events.push(SignalsEvent::SignalRecorded {
                    user_id: cmd.user_id,
                    signal_id: s.id.clone(),
                    occurred_at: s.occurred_at,
                    data: s.data.clone(),
                });
            }
        }
        Ok(events)
    }

    fn apply(&mut self, event: &SignalsEvent) {
        let SignalsEvent::SignalRecorded {
            user_id,
            occurred_at,
            data,
            ..
        } = event;
        self.user_id = Some(*user_id);
        self.recorded += 1;
        *self.by_kind.entry(data.kind()).or_default() += 1;
        if self.last_occurred_at.is_none_or(|t| *occurred_at > t) {
            self.last_occurred_at = Some(*occurred_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{MoodScore, Text};
    use uuid::Uuid;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }
    fn mood(id: &str, at: DateTime<Utc>) -> NewSignal {
        NewSignal {
            id: SignalId::parse(id).expect("valid"),
            occurred_at: at,
            data: SignalData::Mood {
                score: MoodScore::parse(1).expect("valid"),
                note: Some(Text::parse("note", "fine").expect("valid")),
            },
        }
    }
    fn user() -> UserId {
        UserId::from_uuid(Uuid::from_u128(7))
    }

    #[test]
    fn signals_are_recorded_and_repeats_within_a_command_count_once() {
        let cmd = RecordSignals {
            user_id: user(),
            signals: vec![mood("a", t(0)), mood("b", t(1)), mood("a", t(2))],
            at: t(10),
        };
        let events = Signals::default().decide(&cmd).expect("records");
        assert_eq!(events.len(), 2);
        let mut state = Signals::default();
        events.iter().for_each(|e| state.apply(e));
        assert_eq!(state.recorded, 2);
        assert_eq!(state.by_kind.get(&SignalKind::Mood), Some(&2));
        assert_eq!(state.last_occurred_at, Some(t(1)));
    }

    #[test]
    fn a_signal_from_the_far_future_refuses_the_whole_batch() {
        let cmd = RecordSignals {
            user_id: user(),
            signals: vec![mood("a", t(0)), mood("b", t(90_000))],
            at: t(0),
        };
        assert!(matches!(
            Signals::default().decide(&cmd),
            Err(SignalsError::InTheFuture(_))
        ));
    }

    #[test]
    fn too_many_signals_are_refused() {
        let signals = (0..=MAX_SIGNALS_PER_COMMAND)
            .map(|i| mood(&format!("s{i}"), t(0)))
            .collect();
        let cmd = RecordSignals {
            user_id: user(),
            signals,
            at: t(0),
        };
        assert_eq!(Signals::default().decide(&cmd), Err(SignalsError::TooMany));
    }

    #[test]
    fn personal_fields_depend_on_the_kind() {
        let cmd = RecordSignals {
            user_id: user(),
            signals: vec![mood("a", t(0))],
            at: t(0),
        };
        let events = Signals::default().decide(&cmd).expect("records");
        assert_eq!(events[0].personal_fields(), &["/SignalRecorded/data/note"]);
        let json = serde_json::to_value(&events[0]).expect("serialises");
        assert_eq!(
            json.pointer("/SignalRecorded/data/note"),
            Some(&serde_json::json!("fine"))
        );
    }
}
