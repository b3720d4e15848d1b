//! What every stored fact and every aggregate has in common.
//!
//! Events are serialised as serde's externally tagged enums (`{"SignalRecorded": {...}}`), the
//! layout cqrs-es uses. Personal fields are named by JSON pointers into that layout so that the
//! store can seal exactly them and leave everything else readable without keys.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A stored fact.
pub trait Event: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync {
    /// The variant's name, e.g. `SignalRecorded`.
    fn event_type(&self) -> &'static str;
    /// The schema version of this event type's payload.
    fn schema_version(&self) -> u32 {
        1
    }
    /// JSON pointers (into the externally tagged serialisation) of the personal fields this
    /// event holds. They are sealed under the user's key before storage.
    fn personal_fields(&self) -> &'static [&'static str] {
        &[]
    }
    /// This event with each of its [`personal_fields`](Event::personal_fields) set to
    /// `placeholder`, and the values taken out, by pointer (those present and not null). Storage
    /// serialises the copy directly. `None`, the default, makes storage take the same fields out
    /// of a JSON tree of the event instead: the same result, and the slower path for an event
    /// with a large public part.
    fn redacted(&self, _placeholder: &str) -> Option<(Self, Vec<(&'static str, serde_json::Value)>)>
    where
        Self: Sized,
    {
        None
    }
}

/// An aggregate: its state is rebuilt by `apply`ing its events, and `decide` turns a command into
/// new events without any I/O, clock or randomness.
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + Sync {
    /// The aggregate type stored with each event.
    const TYPE: &'static str;
    type Command;
    type Event: Event;
    type Error: std::error::Error + Send + Sync + 'static;

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    fn apply(&mut self, event: &Self::Event);
}
