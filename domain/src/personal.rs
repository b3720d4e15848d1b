//! Personal fields: the markers that stand in their place when they travel without their key,
//! and the JSON pointers (into an event's serde serialisation) where each one lives. Every crate
//! names them from here; the store seals what these pointers name.

/// What a personal field holds in a public payload (the log, the relay, exports): its value
/// travels sealed beside it.
pub const SEALED: &str = "[sealed]";
/// What a personal field reads as once its key is destroyed (or its envelope cannot be opened).
pub const REDACTED: &str = "[redacted]";

/// Whether `s` is one of the two markers.
pub fn is_marker(s: &str) -> bool {
    s == SEALED || s == REDACTED
}

/// `UserRegistered`'s email.
pub const USER_EMAIL: &str = "/UserRegistered/email";
/// A task signal's title.
pub const TASK_TITLE: &str = "/SignalRecorded/data/title";
/// A task signal's project.
pub const TASK_PROJECT: &str = "/SignalRecorded/data/project";
/// A habit signal's name.
pub const HABIT_NAME: &str = "/SignalRecorded/data/name";
/// A calendar signal's title.
pub const CALENDAR_TITLE: &str = "/SignalRecorded/data/title";
/// A mood signal's note.
pub const MOOD_NOTE: &str = "/SignalRecorded/data/note";
/// A context signal's activity.
pub const CONTEXT_ACTIVITY: &str = "/SignalRecorded/data/activity";
/// The text a served tip showed (a todo's title is the person's own).
pub const TIP_TITLE: &str = "/TipServed/title";
/// The body a served tip showed (a todo's project).
pub const TIP_BODY: &str = "/TipServed/body";
