//! oO's wire and export schema: the protobuf messages of every event (`oo/events/v1/*.proto`,
//! the schema of record) and the conversions between them and the domain's events.
//!
//! Invariant: this is the only crate that knows protobuf. Domain types are never wire types:
//! every event is mapped by hand, domain → proto with `From` (which cannot fail) and proto →
//! domain with `TryFrom`, which re-parses every value through the domain's own constructors, so
//! a decoded event is valid by construction and a bad message is a [`DecodeError`], never a
//! panic.
//!
//! # Layout
//! - [`pb`]: the types prost-build generates from the `.proto` files (see `build.rs`).
//! - [`DomainEvent`], [`payload_of`], [`event_from_payload`], [`event_from_envelope`]: any event
//!   to and from the payload of an [`pb::EventEnvelope`].
//! - [`Envelope`], [`encode_envelope`], [`decode_envelope`]: a stored event's envelope as bytes
//!   on the wire, and back.
//! - [`DecodeError`]: why a message is not a valid event.
//!
//! # Wire conventions
//! Ids are UUIDs in text form; times are `int64` microseconds since the Unix epoch (anything finer
//! than a microsecond is dropped when encoding); absent values are proto3 `optional` fields;
//! enums start with an `*_UNSPECIFIED` zero value, which never decodes.
//!
//! # Sealed fields
//! In exported and relayed envelopes the payload's personal fields hold [`oo_domain::personal::SEALED`]
//! and their real values travel only inside [`pb::EventEnvelope::sealed`]. Decode a payload into
//! a domain event only after putting the real values back: the placeholder is a valid [`Text`]
//! but not a valid [`Email`], so a still-sealed `UserRegistered` is refused.

use chrono::{DateTime, Utc};
use oo_domain::connection::{CloseOutcome, ConnectionEvent, DisconnectReason, Provider, RevokeOutcome, SyncOutcome};
use oo_domain::ids::{InvalidSignalId, SessionId, SignalId, TipId, UserId};
use oo_domain::promotion::{Evidence, Interval, PolicyEvent};
use oo_domain::reward::{Reaction, SettledBy};
use oo_domain::signal::{
    ExternalId, InvalidField, MoodScore, Place, Priority, SignalData, TaskSource, Text, TimeZoneName,
};
use oo_domain::signals::SignalsEvent;
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, ShadowPick, TipEvent};
use oo_domain::user::{Email, InvalidEmail, UserEvent};
use uuid::Uuid;

/// The generated protobuf types of package `oo.events.v1`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/oo.events.v1.rs"));
}

use pb::event_envelope::Payload;
use pb::signal_recorded::Data;

/// Any event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    User(UserEvent),
    Signals(SignalsEvent),
    Tip(TipEvent),
    Policy(PolicyEvent),
    Connection(ConnectionEvent),
}

impl From<ConnectionEvent> for DomainEvent {
    fn from(event: ConnectionEvent) -> Self {
        Self::Connection(event)
    }
}

impl From<UserEvent> for DomainEvent {
    fn from(event: UserEvent) -> Self {
        Self::User(event)
    }
}

impl From<SignalsEvent> for DomainEvent {
    fn from(event: SignalsEvent) -> Self {
        Self::Signals(event)
    }
}

impl From<TipEvent> for DomainEvent {
    fn from(event: TipEvent) -> Self {
        Self::Tip(event)
    }
}

impl From<PolicyEvent> for DomainEvent {
    fn from(event: PolicyEvent) -> Self {
        Self::Policy(event)
    }
}

/// Why a protobuf message is not a valid domain event. Field names are the proto's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} is missing")]
    MissingField(&'static str),
    #[error("{field} is not a UUID")]
    BadUuid {
        field: &'static str,
        #[source]
        source: uuid::Error,
    },
    #[error("{field} has no known value {value}")]
    BadEnum { field: &'static str, value: i32 },
    #[error("{field} is out of range: {value}")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("{field} is not a representable time: {value} microseconds")]
    BadTime { field: &'static str, value: i64 },
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("signal_id: {0}")]
    InvalidSignalId(#[from] InvalidSignalId),
    #[error("email: {0}")]
    InvalidEmail(#[from] InvalidEmail),
    #[error("not a protobuf event envelope")]
    Wire(#[source] prost::DecodeError),
}

/// A stored event's envelope fields, as [`encode_envelope`] puts them on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    pub event_id: Uuid,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    /// The opaque position in the log's global order.
    pub position: String,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub user_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
}

/// An event's sealed personal fields, as they travel: the key they are sealed under, the nonce
/// and the ciphertext, untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedFields {
    pub key_id: Uuid,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The protobuf bytes of an event's envelope: its fields, its public payload (`None` for an
/// event this build cannot decode, which still travels without one) and its sealed fields.
pub fn encode_envelope(envelope: &Envelope<'_>, event: Option<&DomainEvent>, sealed: Option<SealedFields>) -> Vec<u8> {
    use prost::Message;
    pb::EventEnvelope {
        event_id: envelope.event_id.to_string(),
        aggregate_type: envelope.aggregate_type.to_owned(),
        aggregate_id: envelope.aggregate_id.to_owned(),
        sequence: envelope.sequence as u64,
        position: envelope.position.clone(),
        event_type: envelope.event_type.to_owned(),
        schema_version: envelope.schema_version as u32,
        user_id: envelope.user_id.to_string(),
        occurred_at_us: envelope.occurred_at.timestamp_micros(),
        recorded_at_us: envelope.recorded_at.timestamp_micros(),
        correlation_id: envelope.correlation_id.to_string(),
        causation_id: envelope.causation_id.map(|c| c.to_string()).unwrap_or_default(),
        sealed: sealed.map(|s| pb::Sealed {
            key_id: s.key_id.to_string(),
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        }),
        payload: event.map(payload_of),
    }
    .encode_to_vec()
}

/// An envelope from its protobuf bytes (its payload still to be decoded with
/// [`event_from_envelope`]).
pub fn decode_envelope(bytes: &[u8]) -> Result<pb::EventEnvelope, DecodeError> {
    use prost::Message;
    pb::EventEnvelope::decode(bytes).map_err(DecodeError::Wire)
}

/// The envelope payload of an event.
pub fn payload_of(event: &DomainEvent) -> Payload {
    Payload::from(event)
}

/// The event an envelope payload holds, re-validated.
pub fn event_from_payload(payload: Payload) -> Result<DomainEvent, DecodeError> {
    DomainEvent::try_from(payload)
}

/// The event an envelope holds; an envelope without a payload is refused.
pub fn event_from_envelope(envelope: pb::EventEnvelope) -> Result<DomainEvent, DecodeError> {
    let payload = envelope.payload.ok_or(DecodeError::MissingField("payload"))?;
    event_from_payload(payload)
}

impl From<&DomainEvent> for Payload {
    fn from(event: &DomainEvent) -> Self {
        match event {
            DomainEvent::User(e) => e.into(),
            DomainEvent::Signals(e) => e.into(),
            DomainEvent::Tip(e) => e.into(),
            DomainEvent::Policy(e) => e.into(),
            DomainEvent::Connection(e) => e.into(),
        }
    }
}

impl TryFrom<Payload> for DomainEvent {
    type Error = DecodeError;
    fn try_from(payload: Payload) -> Result<Self, DecodeError> {
        Ok(match payload {
            Payload::UserRegistered(m) => Self::User(m.try_into()?),
            Payload::SessionStarted(m) => Self::User(m.try_into()?),
            Payload::SessionRevoked(m) => Self::User(m.try_into()?),
            Payload::UserDeletionRequested(m) => Self::User(m.try_into()?),
            Payload::UserShredded(m) => Self::User(m.try_into()?),
            Payload::ConsentGiven(m) => Self::User(m.try_into()?),
            Payload::SignalRecorded(m) => Self::Signals(m.try_into()?),
            Payload::TipServed(m) => Self::Tip((*m).try_into()?),
            Payload::TipReacted(m) => Self::Tip(m.try_into()?),
            Payload::TipRewarded(m) => Self::Tip(m.try_into()?),
            Payload::PolicyPromoted(m) => Self::Policy(m.try_into()?),
            Payload::IntegrationConnected(m) => Self::Connection(m.try_into()?),
            Payload::IntegrationSynced(m) => Self::Connection(m.try_into()?),
            Payload::IntegrationTaskClosed(m) => Self::Connection(m.try_into()?),
            Payload::IntegrationDisconnected(m) => Self::Connection(m.try_into()?),
            Payload::IntegrationTokenRevoked(m) => Self::Connection(m.try_into()?),
        })
    }
}

// --- Scalars ---------------------------------------------------------------------------------

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(field: &'static str, value: i64) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_micros(value).ok_or(DecodeError::BadTime { field, value })
}

fn optional_time(field: &'static str, value: Option<i64>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    value.map(|us| time(field, us)).transpose()
}

fn uuid(field: &'static str, s: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(s).map_err(|source| DecodeError::BadUuid { field, source })
}

fn user_id(s: &str) -> Result<UserId, DecodeError> {
    uuid("user_id", s).map(UserId::from_uuid)
}

fn session_id(s: &str) -> Result<SessionId, DecodeError> {
    uuid("session_id", s).map(SessionId::from_uuid)
}

fn tip_id(s: &str) -> Result<TipId, DecodeError> {
    uuid("tip_id", s).map(TipId::from_uuid)
}

fn optional_text(field: &'static str, s: Option<&str>) -> Result<Option<Text>, DecodeError> {
    Ok(s.map(|s| Text::parse(field, s)).transpose()?)
}

/// Indexes are `usize` in the domain and `uint64` on the wire.
fn wire_index(i: usize) -> u64 {
    u64::try_from(i).unwrap_or(u64::MAX)
}

fn index(field: &'static str, value: u64) -> Result<usize, DecodeError> {
    usize::try_from(value).map_err(|_| DecodeError::OutOfRange { field, value })
}

// --- Enums -----------------------------------------------------------------------------------

impl From<TaskSource> for pb::TaskSource {
    fn from(s: TaskSource) -> Self {
        match s {
            TaskSource::Todoist => Self::Todoist,
            TaskSource::Manual => Self::Manual,
        }
    }
}

fn task_source(value: i32) -> Result<TaskSource, DecodeError> {
    match pb::TaskSource::try_from(value) {
        Ok(pb::TaskSource::Todoist) => Ok(TaskSource::Todoist),
        Ok(pb::TaskSource::Manual) => Ok(TaskSource::Manual),
        Ok(pb::TaskSource::Unspecified) | Err(_) => Err(DecodeError::BadEnum { field: "source", value }),
    }
}

impl From<Place> for pb::Place {
    fn from(p: Place) -> Self {
        match p {
            Place::Home => Self::Home,
            Place::Work => Self::Work,
            Place::Commute => Self::Commute,
            Place::Elsewhere => Self::Elsewhere,
        }
    }
}

fn place(value: i32) -> Result<Place, DecodeError> {
    match pb::Place::try_from(value) {
        Ok(pb::Place::Home) => Ok(Place::Home),
        Ok(pb::Place::Work) => Ok(Place::Work),
        Ok(pb::Place::Commute) => Ok(Place::Commute),
        Ok(pb::Place::Elsewhere) => Ok(Place::Elsewhere),
        Ok(pb::Place::Unspecified) | Err(_) => Err(DecodeError::BadEnum { field: "place", value }),
    }
}

impl From<CandidateKind> for pb::CandidateKind {
    fn from(k: CandidateKind) -> Self {
        match k {
            CandidateKind::Todo => Self::Todo,
            CandidateKind::Advice => Self::Advice,
            CandidateKind::NotNow => Self::NotNow,
        }
    }
}

fn candidate_kind(value: i32) -> Result<CandidateKind, DecodeError> {
    match pb::CandidateKind::try_from(value) {
        Ok(pb::CandidateKind::Todo) => Ok(CandidateKind::Todo),
        Ok(pb::CandidateKind::Advice) => Ok(CandidateKind::Advice),
        Ok(pb::CandidateKind::NotNow) => Ok(CandidateKind::NotNow),
        Ok(pb::CandidateKind::Unspecified) | Err(_) => Err(DecodeError::BadEnum { field: "kind", value }),
    }
}

impl From<Reaction> for pb::Reaction {
    fn from(r: Reaction) -> Self {
        match r {
            Reaction::Done => Self::Done,
            Reaction::Helpful => Self::Helpful,
            Reaction::Snooze => Self::Snooze,
            Reaction::NotHelpful => Self::NotHelpful,
            Reaction::Dismiss => Self::Dismiss,
        }
    }
}

fn reaction(value: i32) -> Result<Reaction, DecodeError> {
    match pb::Reaction::try_from(value) {
        Ok(pb::Reaction::Done) => Ok(Reaction::Done),
        Ok(pb::Reaction::Helpful) => Ok(Reaction::Helpful),
        Ok(pb::Reaction::Snooze) => Ok(Reaction::Snooze),
        Ok(pb::Reaction::NotHelpful) => Ok(Reaction::NotHelpful),
        Ok(pb::Reaction::Dismiss) => Ok(Reaction::Dismiss),
        Ok(pb::Reaction::Unspecified) | Err(_) => Err(DecodeError::BadEnum {
            field: "reaction",
            value,
        }),
    }
}

impl From<SettledBy> for pb::SettledBy {
    fn from(s: SettledBy) -> Self {
        match s {
            SettledBy::Reaction => Self::Reaction,
            SettledBy::Completion => Self::Completion,
            SettledBy::Timeout => Self::Timeout,
            SettledBy::NotNow => Self::NotNow,
        }
    }
}

fn settled_by(value: i32) -> Result<SettledBy, DecodeError> {
    match pb::SettledBy::try_from(value) {
        Ok(pb::SettledBy::Reaction) => Ok(SettledBy::Reaction),
        Ok(pb::SettledBy::Completion) => Ok(SettledBy::Completion),
        Ok(pb::SettledBy::Timeout) => Ok(SettledBy::Timeout),
        Ok(pb::SettledBy::NotNow) => Ok(SettledBy::NotNow),
        Ok(pb::SettledBy::Unspecified) | Err(_) => Err(DecodeError::BadEnum {
            field: "settled_by",
            value,
        }),
    }
}

// --- User --------------------------------------------------------------------------------------

impl From<&UserEvent> for Payload {
    fn from(event: &UserEvent) -> Self {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                registered_at,
            } => Self::UserRegistered(pb::UserRegistered {
                user_id: user_id.to_string(),
                email: email.as_str().to_owned(),
                registered_at_us: micros(registered_at),
            }),
            UserEvent::SessionStarted {
                user_id,
                session_id,
                started_at,
                expires_at,
            } => Self::SessionStarted(pb::SessionStarted {
                user_id: user_id.to_string(),
                session_id: session_id.to_string(),
                started_at_us: micros(started_at),
                expires_at_us: micros(expires_at),
            }),
            UserEvent::SessionRevoked {
                user_id,
                session_id,
                revoked_at,
            } => Self::SessionRevoked(pb::SessionRevoked {
                user_id: user_id.to_string(),
                session_id: session_id.to_string(),
                revoked_at_us: micros(revoked_at),
            }),
            UserEvent::UserDeletionRequested { user_id, requested_at } => {
                Self::UserDeletionRequested(pb::UserDeletionRequested {
                    user_id: user_id.to_string(),
                    requested_at_us: micros(requested_at),
                })
            }
            UserEvent::ConsentGiven {
                user_id,
                terms_hash,
                privacy_hash,
                given_at,
            } => Self::ConsentGiven(pb::ConsentGiven {
                user_id: user_id.to_string(),
                terms_hash: terms_hash.clone(),
                privacy_hash: privacy_hash.clone(),
                given_at_us: micros(given_at),
            }),
            UserEvent::UserShredded { user_id, shredded_at } => Self::UserShredded(pb::UserShredded {
                user_id: user_id.to_string(),
                shredded_at_us: micros(shredded_at),
            }),
        }
    }
}

impl TryFrom<pb::UserRegistered> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::UserRegistered) -> Result<Self, DecodeError> {
        Ok(Self::UserRegistered {
            user_id: user_id(&m.user_id)?,
            email: match Email::withheld(&m.email) {
                Some(withheld) => withheld,
                None => Email::parse(&m.email)?,
            },
            registered_at: time("registered_at_us", m.registered_at_us)?,
        })
    }
}

impl TryFrom<pb::SessionStarted> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::SessionStarted) -> Result<Self, DecodeError> {
        Ok(Self::SessionStarted {
            user_id: user_id(&m.user_id)?,
            session_id: session_id(&m.session_id)?,
            started_at: time("started_at_us", m.started_at_us)?,
            expires_at: time("expires_at_us", m.expires_at_us)?,
        })
    }
}

impl TryFrom<pb::SessionRevoked> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::SessionRevoked) -> Result<Self, DecodeError> {
        Ok(Self::SessionRevoked {
            user_id: user_id(&m.user_id)?,
            session_id: session_id(&m.session_id)?,
            revoked_at: time("revoked_at_us", m.revoked_at_us)?,
        })
    }
}

impl TryFrom<pb::UserDeletionRequested> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::UserDeletionRequested) -> Result<Self, DecodeError> {
        Ok(Self::UserDeletionRequested {
            user_id: user_id(&m.user_id)?,
            requested_at: time("requested_at_us", m.requested_at_us)?,
        })
    }
}

impl TryFrom<pb::ConsentGiven> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::ConsentGiven) -> Result<Self, DecodeError> {
        Ok(Self::ConsentGiven {
            user_id: user_id(&m.user_id)?,
            terms_hash: m.terms_hash,
            privacy_hash: m.privacy_hash,
            given_at: time("given_at_us", m.given_at_us)?,
        })
    }
}

impl TryFrom<pb::UserShredded> for UserEvent {
    type Error = DecodeError;
    fn try_from(m: pb::UserShredded) -> Result<Self, DecodeError> {
        Ok(Self::UserShredded {
            user_id: user_id(&m.user_id)?,
            shredded_at: time("shredded_at_us", m.shredded_at_us)?,
        })
    }
}

// --- Signals -----------------------------------------------------------------------------------

impl From<&SignalsEvent> for pb::SignalRecorded {
    fn from(event: &SignalsEvent) -> Self {
        let SignalsEvent::SignalRecorded {
            user_id,
            signal_id,
            occurred_at,
            data,
        } = event;
        Self {
            user_id: user_id.to_string(),
            signal_id: signal_id.as_str().to_owned(),
            occurred_at_us: micros(occurred_at),
            data: Some(data.into()),
        }
    }
}

impl From<&SignalsEvent> for Payload {
    fn from(event: &SignalsEvent) -> Self {
        Self::SignalRecorded(event.into())
    }
}

impl TryFrom<pb::SignalRecorded> for SignalsEvent {
    type Error = DecodeError;
    fn try_from(m: pb::SignalRecorded) -> Result<Self, DecodeError> {
        Ok(Self::SignalRecorded {
            user_id: user_id(&m.user_id)?,
            signal_id: SignalId::parse(&m.signal_id)?,
            occurred_at: time("occurred_at_us", m.occurred_at_us)?,
            data: m.data.ok_or(DecodeError::MissingField("data"))?.try_into()?,
        })
    }
}

impl From<&SignalData> for Data {
    fn from(data: &SignalData) -> Self {
        match data {
            SignalData::Task {
                source,
                external_id,
                title,
                priority,
                due,
                completed,
                project,
            } => Self::Task(pb::TaskSignal {
                source: pb::TaskSource::from(*source).into(),
                external_id: external_id.as_str().to_owned(),
                title: title.as_str().to_owned(),
                priority: i32::from(priority.get()),
                due_us: due.as_ref().map(micros),
                completed: *completed,
                project: project.as_ref().map(|p| p.as_str().to_owned()),
            }),
            SignalData::Habit { name, done } => Self::Habit(pb::HabitSignal {
                name: name.as_str().to_owned(),
                done: *done,
            }),
            SignalData::Calendar { title, start, end } => Self::Calendar(pb::CalendarSignal {
                title: title.as_str().to_owned(),
                start_us: micros(start),
                end_us: micros(end),
            }),
            SignalData::Mood { score, note } => Self::Mood(pb::MoodSignal {
                score: i32::from(score.get()),
                note: note.as_ref().map(|n| n.as_str().to_owned()),
            }),
            SignalData::Context {
                place,
                activity,
                time_zone,
            } => Self::Context(pb::ContextSignal {
                place: pb::Place::from(*place).into(),
                activity: activity.as_ref().map(|a| a.as_str().to_owned()),
                time_zone: time_zone.as_ref().map(|z| z.as_str().to_owned()),
            }),
        }
    }
}

impl TryFrom<Data> for SignalData {
    type Error = DecodeError;
    fn try_from(data: Data) -> Result<Self, DecodeError> {
        Ok(match data {
            Data::Task(m) => Self::Task {
                source: task_source(m.source)?,
                external_id: ExternalId::parse(&m.external_id)?,
                title: Text::parse("title", &m.title)?,
                priority: Priority::parse(i64::from(m.priority))?,
                due: optional_time("due_us", m.due_us)?,
                completed: m.completed,
                project: optional_text("project", m.project.as_deref())?,
            },
            Data::Habit(m) => Self::Habit {
                name: Text::parse("name", &m.name)?,
                done: m.done,
            },
            Data::Calendar(m) => SignalData::calendar(
                Text::parse("title", &m.title)?,
                time("start_us", m.start_us)?,
                time("end_us", m.end_us)?,
            )?,
            Data::Mood(m) => Self::Mood {
                score: MoodScore::parse(i64::from(m.score))?,
                note: optional_text("note", m.note.as_deref())?,
            },
            Data::Context(m) => Self::Context {
                place: place(m.place)?,
                activity: optional_text("activity", m.activity.as_deref())?,
                time_zone: m.time_zone.as_deref().map(TimeZoneName::parse).transpose()?,
            },
        })
    }
}

// --- Tip ---------------------------------------------------------------------------------------

impl From<&LoggedCandidate> for pb::LoggedCandidate {
    fn from(c: &LoggedCandidate) -> Self {
        Self {
            candidate_id: c.candidate_id.clone(),
            kind: pb::CandidateKind::from(c.kind).into(),
            features: c.features.clone(),
        }
    }
}

impl TryFrom<pb::LoggedCandidate> for LoggedCandidate {
    type Error = DecodeError;
    fn try_from(m: pb::LoggedCandidate) -> Result<Self, DecodeError> {
        Ok(Self {
            candidate_id: m.candidate_id,
            kind: candidate_kind(m.kind)?,
            features: m.features,
        })
    }
}

impl From<&ShadowPick> for pb::ShadowPick {
    fn from(s: &ShadowPick) -> Self {
        Self {
            policy: s.policy.clone(),
            policy_version: s.policy_version.clone(),
            chosen: wire_index(s.chosen),
            propensity: s.propensity,
            params: s.params.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            distribution: s.distribution.clone(),
        }
    }
}

impl TryFrom<pb::ShadowPick> for ShadowPick {
    type Error = DecodeError;
    fn try_from(m: pb::ShadowPick) -> Result<Self, DecodeError> {
        Ok(Self {
            policy: m.policy,
            policy_version: m.policy_version,
            chosen: index("chosen", m.chosen)?,
            propensity: m.propensity,
            params: m.params.into_iter().collect(),
            distribution: m.distribution,
        })
    }
}

impl From<&Decision> for pb::TipServed {
    fn from(d: &Decision) -> Self {
        Self {
            tip_id: d.tip_id.to_string(),
            user_id: d.user_id.to_string(),
            served_at_us: micros(&d.served_at),
            candidates: d.candidates.iter().map(Into::into).collect(),
            chosen: wire_index(d.chosen),
            policy: d.policy.clone(),
            policy_version: d.policy_version.clone(),
            feature_version: d.feature_version,
            score: d.score,
            propensity: d.propensity,
            distribution: d.distribution.clone(),
            seed: d.seed,
            shadow: d.shadow.iter().map(Into::into).collect(),
            title: d.title.clone(),
            body: d.body.clone(),
            params: d.params.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            context: d.context.clone(),
            model_rewards: d.model_rewards,
            prior_rewards: d.prior_rewards,
        }
    }
}

/// Decoding keeps the decision as it was logged: the consistency checks belong to the `Tip`
/// aggregate's `decide`, and a stored event must always decode.
impl TryFrom<pb::TipServed> for Decision {
    type Error = DecodeError;
    fn try_from(m: pb::TipServed) -> Result<Self, DecodeError> {
        Ok(Self {
            tip_id: tip_id(&m.tip_id)?,
            user_id: user_id(&m.user_id)?,
            served_at: time("served_at_us", m.served_at_us)?,
            candidates: m
                .candidates
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            chosen: index("chosen", m.chosen)?,
            policy: m.policy,
            policy_version: m.policy_version,
            feature_version: m.feature_version,
            score: m.score,
            propensity: m.propensity,
            distribution: m.distribution,
            seed: m.seed,
            shadow: m.shadow.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            title: m.title,
            body: m.body,
            params: m.params.into_iter().collect(),
            context: m.context,
            model_rewards: m.model_rewards,
            prior_rewards: m.prior_rewards,
        })
    }
}

impl From<&TipEvent> for Payload {
    fn from(event: &TipEvent) -> Self {
        match event {
            TipEvent::TipServed(decision) => Self::TipServed(Box::new(pb::TipServed::from(decision.as_ref()))),
            TipEvent::TipReacted {
                tip_id,
                user_id,
                reaction,
                reacted_at,
            } => Self::TipReacted(pb::TipReacted {
                tip_id: tip_id.to_string(),
                user_id: user_id.to_string(),
                reaction: pb::Reaction::from(*reaction).into(),
                reacted_at_us: micros(reacted_at),
            }),
            TipEvent::TipRewarded {
                tip_id,
                user_id,
                reward,
                settled_by,
                settled_at,
            } => Self::TipRewarded(pb::TipRewarded {
                tip_id: tip_id.to_string(),
                user_id: user_id.to_string(),
                reward: *reward,
                settled_by: pb::SettledBy::from(*settled_by).into(),
                settled_at_us: micros(settled_at),
            }),
        }
    }
}

impl TryFrom<pb::TipServed> for TipEvent {
    type Error = DecodeError;
    fn try_from(m: pb::TipServed) -> Result<Self, DecodeError> {
        Ok(Self::TipServed(Box::new(m.try_into()?)))
    }
}

impl TryFrom<pb::TipReacted> for TipEvent {
    type Error = DecodeError;
    fn try_from(m: pb::TipReacted) -> Result<Self, DecodeError> {
        Ok(Self::TipReacted {
            tip_id: tip_id(&m.tip_id)?,
            user_id: user_id(&m.user_id)?,
            reaction: reaction(m.reaction)?,
            reacted_at: time("reacted_at_us", m.reacted_at_us)?,
        })
    }
}

impl TryFrom<pb::TipRewarded> for TipEvent {
    type Error = DecodeError;
    fn try_from(m: pb::TipRewarded) -> Result<Self, DecodeError> {
        Ok(Self::TipRewarded {
            tip_id: tip_id(&m.tip_id)?,
            user_id: user_id(&m.user_id)?,
            reward: m.reward,
            settled_by: settled_by(m.settled_by)?,
            settled_at: time("settled_at_us", m.settled_at_us)?,
        })
    }
}

// --- Policy --------------------------------------------------------------------------------

impl From<&Interval> for pb::EstimateInterval {
    fn from(i: &Interval) -> Self {
        Self {
            value: i.value,
            ci_low: i.ci_low,
            ci_high: i.ci_high,
        }
    }
}

impl From<pb::EstimateInterval> for Interval {
    fn from(i: pb::EstimateInterval) -> Self {
        Self {
            value: i.value,
            ci_low: i.ci_low,
            ci_high: i.ci_high,
        }
    }
}

impl From<&Evidence> for pb::PromotionEvidence {
    fn from(e: &Evidence) -> Self {
        Self {
            window: e.window,
            decisions: e.decisions,
            min_decisions: e.min_decisions,
            first_served_at_us: e.first_served_at.as_ref().map(micros),
            last_served_at_us: e.last_served_at.as_ref().map(micros),
            serving_value: e.serving_value,
            snips: e.snips.as_ref().map(Into::into),
            dr: e.dr.as_ref().map(Into::into),
            bootstrap: e.bootstrap,
            seed: e.seed,
            refusals: e.refusals.clone(),
        }
    }
}

impl TryFrom<pb::PromotionEvidence> for Evidence {
    type Error = DecodeError;
    fn try_from(e: pb::PromotionEvidence) -> Result<Self, DecodeError> {
        Ok(Self {
            window: e.window,
            decisions: e.decisions,
            min_decisions: e.min_decisions,
            first_served_at: optional_time("evidence.first_served_at_us", e.first_served_at_us)?,
            last_served_at: optional_time("evidence.last_served_at_us", e.last_served_at_us)?,
            serving_value: e.serving_value,
            snips: e.snips.map(Into::into),
            dr: e.dr.map(Into::into),
            bootstrap: e.bootstrap,
            seed: e.seed,
            refusals: e.refusals,
        })
    }
}

impl From<&PolicyEvent> for Payload {
    fn from(event: &PolicyEvent) -> Self {
        let PolicyEvent::PolicyPromoted {
            serving,
            replaced,
            shadows,
            evidence,
            forced,
            promoted_at,
        } = event;
        Self::PolicyPromoted(pb::PolicyPromoted {
            serving: serving.clone(),
            replaced: replaced.clone(),
            shadows: shadows.clone(),
            evidence: Some(evidence.into()),
            forced: *forced,
            promoted_at_us: micros(promoted_at),
        })
    }
}

impl TryFrom<pb::PolicyPromoted> for PolicyEvent {
    type Error = DecodeError;
    fn try_from(m: pb::PolicyPromoted) -> Result<Self, DecodeError> {
        Ok(Self::PolicyPromoted {
            serving: m.serving,
            replaced: m.replaced,
            shadows: m.shadows,
            evidence: m.evidence.ok_or(DecodeError::MissingField("evidence"))?.try_into()?,
            forced: m.forced,
            promoted_at: time("promoted_at_us", m.promoted_at_us)?,
        })
    }
}

// --- Connection ----------------------------------------------------------------------------

impl From<Provider> for pb::Provider {
    fn from(p: Provider) -> Self {
        match p {
            Provider::Todoist => Self::Todoist,
        }
    }
}

fn provider(value: i32) -> Result<Provider, DecodeError> {
    match pb::Provider::try_from(value) {
        Ok(pb::Provider::Todoist) => Ok(Provider::Todoist),
        Ok(pb::Provider::Unspecified) | Err(_) => Err(DecodeError::BadEnum {
            field: "provider",
            value,
        }),
    }
}

impl From<CloseOutcome> for pb::CloseOutcome {
    fn from(o: CloseOutcome) -> Self {
        match o {
            CloseOutcome::Closed => Self::Closed,
            CloseOutcome::NoConnection => Self::NoConnection,
            CloseOutcome::Broken => Self::Broken,
            CloseOutcome::NotFound => Self::NotFound,
            CloseOutcome::Refused => Self::Refused,
        }
    }
}

fn close_outcome(value: i32) -> Result<CloseOutcome, DecodeError> {
    match pb::CloseOutcome::try_from(value) {
        Ok(pb::CloseOutcome::Closed) => Ok(CloseOutcome::Closed),
        Ok(pb::CloseOutcome::NoConnection) => Ok(CloseOutcome::NoConnection),
        Ok(pb::CloseOutcome::Broken) => Ok(CloseOutcome::Broken),
        Ok(pb::CloseOutcome::NotFound) => Ok(CloseOutcome::NotFound),
        Ok(pb::CloseOutcome::Refused) => Ok(CloseOutcome::Refused),
        Ok(pb::CloseOutcome::Unspecified) | Err(_) => Err(DecodeError::BadEnum {
            field: "outcome",
            value,
        }),
    }
}

impl From<DisconnectReason> for pb::DisconnectReason {
    fn from(r: DisconnectReason) -> Self {
        match r {
            DisconnectReason::ByPerson => Self::ByPerson,
            DisconnectReason::Deletion => Self::Deletion,
        }
    }
}

fn disconnect_reason(value: i32) -> Result<DisconnectReason, DecodeError> {
    match pb::DisconnectReason::try_from(value) {
        Ok(pb::DisconnectReason::ByPerson) => Ok(DisconnectReason::ByPerson),
        Ok(pb::DisconnectReason::Deletion) => Ok(DisconnectReason::Deletion),
        Ok(pb::DisconnectReason::Unspecified) | Err(_) => Err(DecodeError::BadEnum { field: "reason", value }),
    }
}

impl From<RevokeOutcome> for pb::RevokeOutcome {
    fn from(o: RevokeOutcome) -> Self {
        match o {
            RevokeOutcome::Revoked => Self::Revoked,
            RevokeOutcome::UnknownToken => Self::UnknownToken,
        }
    }
}

fn revoke_outcome(value: i32) -> Result<RevokeOutcome, DecodeError> {
    match pb::RevokeOutcome::try_from(value) {
        Ok(pb::RevokeOutcome::Revoked) => Ok(RevokeOutcome::Revoked),
        Ok(pb::RevokeOutcome::UnknownToken) => Ok(RevokeOutcome::UnknownToken),
        Ok(pb::RevokeOutcome::Unspecified) | Err(_) => Err(DecodeError::BadEnum {
            field: "outcome",
            value,
        }),
    }
}

impl From<&ConnectionEvent> for Payload {
    fn from(event: &ConnectionEvent) -> Self {
        match event {
            ConnectionEvent::IntegrationConnected {
                user_id,
                provider,
                generation,
                connected_at,
            } => Self::IntegrationConnected(pb::IntegrationConnected {
                user_id: user_id.to_string(),
                provider: pb::Provider::from(*provider).into(),
                generation: *generation,
                connected_at_us: micros(connected_at),
            }),
            ConnectionEvent::IntegrationSynced {
                user_id,
                provider,
                outcome,
                synced_at,
            } => Self::IntegrationSynced(pb::IntegrationSynced {
                user_id: user_id.to_string(),
                provider: pb::Provider::from(*provider).into(),
                synced_at_us: micros(synced_at),
                outcome: Some(match outcome {
                    SyncOutcome::Synced { tasks, full } => pb::integration_synced::Outcome::Synced(pb::SyncSucceeded {
                        tasks: *tasks,
                        full: *full,
                    }),
                    SyncOutcome::Failed { reason } => pb::integration_synced::Outcome::Failed(reason.clone()),
                    SyncOutcome::Broken { reason } => pb::integration_synced::Outcome::Broken(reason.clone()),
                }),
            }),
            ConnectionEvent::IntegrationTaskClosed {
                user_id,
                provider,
                tip_id,
                external_id,
                outcome,
                closed_at,
            } => Self::IntegrationTaskClosed(pb::IntegrationTaskClosed {
                user_id: user_id.to_string(),
                provider: pb::Provider::from(*provider).into(),
                tip_id: tip_id.to_string(),
                external_id: external_id.clone(),
                outcome: pb::CloseOutcome::from(*outcome).into(),
                closed_at_us: micros(closed_at),
            }),
            ConnectionEvent::IntegrationDisconnected {
                user_id,
                provider,
                reason,
                disconnected_at,
            } => Self::IntegrationDisconnected(pb::IntegrationDisconnected {
                user_id: user_id.to_string(),
                provider: pb::Provider::from(*provider).into(),
                reason: pb::DisconnectReason::from(*reason).into(),
                disconnected_at_us: micros(disconnected_at),
            }),
            ConnectionEvent::IntegrationTokenRevoked {
                user_id,
                provider,
                outcome,
                revoked_at,
            } => Self::IntegrationTokenRevoked(pb::IntegrationTokenRevoked {
                user_id: user_id.to_string(),
                provider: pb::Provider::from(*provider).into(),
                outcome: pb::RevokeOutcome::from(*outcome).into(),
                revoked_at_us: micros(revoked_at),
            }),
        }
    }
}

impl TryFrom<pb::IntegrationConnected> for ConnectionEvent {
    type Error = DecodeError;
    fn try_from(m: pb::IntegrationConnected) -> Result<Self, DecodeError> {
        Ok(Self::IntegrationConnected {
            user_id: user_id(&m.user_id)?,
            provider: provider(m.provider)?,
            generation: m.generation,
            connected_at: time("connected_at_us", m.connected_at_us)?,
        })
    }
}

impl TryFrom<pb::IntegrationSynced> for ConnectionEvent {
    type Error = DecodeError;
    fn try_from(m: pb::IntegrationSynced) -> Result<Self, DecodeError> {
        use pb::integration_synced::Outcome;
        Ok(Self::IntegrationSynced {
            user_id: user_id(&m.user_id)?,
            provider: provider(m.provider)?,
            outcome: match m.outcome.ok_or(DecodeError::MissingField("outcome"))? {
                Outcome::Synced(s) => SyncOutcome::Synced {
                    tasks: s.tasks,
                    full: s.full,
                },
                Outcome::Failed(reason) => SyncOutcome::Failed { reason },
                Outcome::Broken(reason) => SyncOutcome::Broken { reason },
            },
            synced_at: time("synced_at_us", m.synced_at_us)?,
        })
    }
}

impl TryFrom<pb::IntegrationTaskClosed> for ConnectionEvent {
    type Error = DecodeError;
    fn try_from(m: pb::IntegrationTaskClosed) -> Result<Self, DecodeError> {
        Ok(Self::IntegrationTaskClosed {
            user_id: user_id(&m.user_id)?,
            provider: provider(m.provider)?,
            tip_id: tip_id(&m.tip_id)?,
            external_id: m.external_id,
            outcome: close_outcome(m.outcome)?,
            closed_at: time("closed_at_us", m.closed_at_us)?,
        })
    }
}

impl TryFrom<pb::IntegrationDisconnected> for ConnectionEvent {
    type Error = DecodeError;
    fn try_from(m: pb::IntegrationDisconnected) -> Result<Self, DecodeError> {
        Ok(Self::IntegrationDisconnected {
            user_id: user_id(&m.user_id)?,
            provider: provider(m.provider)?,
            reason: disconnect_reason(m.reason)?,
            disconnected_at: time("disconnected_at_us", m.disconnected_at_us)?,
        })
    }
}

impl TryFrom<pb::IntegrationTokenRevoked> for ConnectionEvent {
    type Error = DecodeError;
    fn try_from(m: pb::IntegrationTokenRevoked) -> Result<Self, DecodeError> {
        Ok(Self::IntegrationTokenRevoked {
            user_id: user_id(&m.user_id)?,
            provider: provider(m.provider)?,
            outcome: revoke_outcome(m.outcome)?,
            revoked_at: time("revoked_at_us", m.revoked_at_us)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn t(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_700_000_000_123_456 + micros).expect("valid time")
    }
    fn alice() -> UserId {
        UserId::from_uuid(Uuid::from_u128(0x0191_0000_0000_7000_8000_0000_0000_0001))
    }
    fn text(s: &str) -> Text {
        Text::parse("text", s).expect("valid text")
    }
    fn signal(data: SignalData) -> DomainEvent {
        DomainEvent::Signals(SignalsEvent::SignalRecorded {
            user_id: alice(),
            signal_id: SignalId::parse("sig-1").expect("valid id"),
            occurred_at: t(7),
            data,
        })
    }

    /// Domain → payload → envelope bytes → envelope → payload → domain.
    fn round_trip(event: DomainEvent) {
        let envelope = pb::EventEnvelope {
            payload: Some(payload_of(&event)),
            ..Default::default()
        };
        let bytes = envelope.encode_to_vec();
        let decoded = pb::EventEnvelope::decode(bytes.as_slice()).expect("valid protobuf");
        assert_eq!(decoded, envelope);
        let back = event_from_envelope(decoded).expect("valid event");
        assert_eq!(back, event);
    }

    fn decode_signal(m: pb::SignalRecorded) -> Result<DomainEvent, DecodeError> {
        event_from_payload(Payload::SignalRecorded(m))
    }

    fn task_message() -> pb::SignalRecorded {
        match payload_of(&signal(SignalData::Task {
            source: TaskSource::Todoist,
            external_id: ExternalId::parse("123").expect("valid"),
            title: text("buy milk"),
            priority: Priority::parse(2).expect("valid"),
            due: None,
            completed: false,
            project: None,
        })) {
            Payload::SignalRecorded(m) => m,
            other => panic!("unexpected payload {other:?}"),
        }
    }

    fn decision() -> Decision {
        Decision {
            tip_id: TipId::from_uuid(Uuid::from_u128(9)),
            user_id: alice(),
            served_at: t(1),
            candidates: vec![
                LoggedCandidate {
                    candidate_id: "todo:123".into(),
                    kind: CandidateKind::Todo,
                    features: vec![1.0, -0.25, 3.5e-7],
                },
                LoggedCandidate {
                    candidate_id: "advice:walk".into(),
                    kind: CandidateKind::Advice,
                    features: vec![0.0, 1.0, 0.5],
                },
                LoggedCandidate {
                    candidate_id: "not_now".into(),
                    kind: CandidateKind::NotNow,
                    features: vec![],
                },
            ],
            chosen: 1,
            policy: "linucb".into(),
            policy_version: "2".into(),
            feature_version: 3,
            score: 0.75,
            propensity: 0.8,
            distribution: vec![0.1, 0.8, 0.1],
            seed: u64::MAX - 3,
            shadow: vec![
                ShadowPick {
                    policy: "random".into(),
                    policy_version: "1".into(),
                    chosen: 2,
                    propensity: 1.0 / 3.0,
                    params: Default::default(),
                    distribution: vec![1.0 / 3.0; 3],
                },
                ShadowPick {
                    policy: "greedy".into(),
                    policy_version: "1".into(),
                    chosen: 0,
                    propensity: 1.0,
                    params: [("alpha".to_owned(), 0.3)].into(),
                    distribution: vec![],
                },
            ],
            title: "Buy milk".into(),
            body: "It is on your list since Monday.".into(),
            params: [("epsilon".to_owned(), 0.1), ("temperature".to_owned(), 0.05)].into(),
            context: vec![1.0, 0.5, -0.25],
            model_rewards: Some(12),
            prior_rewards: Some(345),
        }
    }

    // --- Round trips ---------------------------------------------------------------------------

    #[test]
    fn user_registered_round_trips() {
        round_trip(DomainEvent::User(UserEvent::UserRegistered {
            user_id: alice(),
            email: Email::parse("ada@example.org").expect("valid"),
            registered_at: t(0),
        }));
    }

    #[test]
    fn session_started_round_trips() {
        round_trip(DomainEvent::User(UserEvent::SessionStarted {
            user_id: alice(),
            session_id: SessionId::from_uuid(Uuid::from_u128(2)),
            started_at: t(0),
            expires_at: t(3_600_000_000),
        }));
    }

    #[test]
    fn session_revoked_round_trips() {
        round_trip(DomainEvent::User(UserEvent::SessionRevoked {
            user_id: alice(),
            session_id: SessionId::from_uuid(Uuid::from_u128(2)),
            revoked_at: t(5),
        }));
    }

    #[test]
    fn deletion_events_round_trip() {
        round_trip(DomainEvent::User(UserEvent::UserDeletionRequested {
            user_id: alice(),
            requested_at: t(6),
        }));
        round_trip(DomainEvent::User(UserEvent::UserShredded {
            user_id: alice(),
            shredded_at: t(7),
        }));
    }

    #[test]
    fn task_signals_round_trip_with_and_without_optional_fields() {
        for source in [TaskSource::Todoist, TaskSource::Manual] {
            for p in 1..=4 {
                round_trip(signal(SignalData::Task {
                    source,
                    external_id: ExternalId::parse("8765432101").expect("valid"),
                    title: text("Write the report"),
                    priority: Priority::parse(p).expect("valid"),
                    due: Some(t(86_400_000_001)),
                    completed: true,
                    project: Some(text("Work")),
                }));
            }
            round_trip(signal(SignalData::Task {
                source,
                external_id: ExternalId::parse("x").expect("valid"),
                title: text("Call mum"),
                priority: Priority::parse(1).expect("valid"),
                due: None,
                completed: false,
                project: None,
            }));
        }
    }

    #[test]
    fn habit_signals_round_trip() {
        for done in [true, false] {
            round_trip(signal(SignalData::Habit {
                name: text("Stretch"),
                done,
            }));
        }
    }

    #[test]
    fn calendar_signals_round_trip() {
        round_trip(signal(
            SignalData::calendar(text("Standup"), t(0), t(900_000_000)).expect("valid"),
        ));
        round_trip(signal(
            SignalData::calendar(text("Reminder"), t(0), t(0)).expect("valid"),
        ));
    }

    #[test]
    fn mood_signals_round_trip_with_and_without_a_note() {
        for score in -2..=2 {
            round_trip(signal(SignalData::Mood {
                score: MoodScore::parse(score).expect("valid"),
                note: Some(text("slept badly")),
            }));
            round_trip(signal(SignalData::Mood {
                score: MoodScore::parse(score).expect("valid"),
                note: None,
            }));
        }
    }

    #[test]
    fn context_signals_round_trip_with_and_without_optional_fields() {
        for place in [Place::Home, Place::Work, Place::Commute, Place::Elsewhere] {
            round_trip(signal(SignalData::Context {
                place,
                activity: Some(text("cooking")),
                time_zone: Some(TimeZoneName::parse("Europe/Paris").expect("valid")),
            }));
            round_trip(signal(SignalData::Context {
                place,
                activity: None,
                time_zone: None,
            }));
            round_trip(signal(SignalData::Context {
                place,
                activity: None,
                time_zone: Some(TimeZoneName::parse("America/New_York").expect("valid")),
            }));
        }
    }

    #[test]
    fn tip_served_round_trips_with_and_without_shadow_picks() {
        round_trip(DomainEvent::Tip(TipEvent::TipServed(Box::new(decision()))));
        let mut bare = decision();
        bare.shadow.clear();
        bare.body.clear();
        round_trip(DomainEvent::Tip(TipEvent::TipServed(Box::new(bare))));
    }

    #[test]
    fn tip_reacted_round_trips_for_every_reaction() {
        for reaction in Reaction::ALL {
            round_trip(DomainEvent::Tip(TipEvent::TipReacted {
                tip_id: TipId::from_uuid(Uuid::from_u128(9)),
                user_id: alice(),
                reaction,
                reacted_at: t(60_000_000),
            }));
        }
    }

    #[test]
    fn tip_rewarded_round_trips_for_every_settlement() {
        for (settled_by, reward) in [
            (SettledBy::Reaction, -0.5),
            (SettledBy::Completion, 1.0),
            (SettledBy::NotNow, 0.0),
            (SettledBy::Timeout, 0.0),
        ] {
            round_trip(DomainEvent::Tip(TipEvent::TipRewarded {
                tip_id: TipId::from_uuid(Uuid::from_u128(9)),
                user_id: alice(),
                reward,
                settled_by,
                settled_at: t(86_400_000_000),
            }));
        }
    }

    #[test]
    fn policy_promoted_round_trips_with_and_without_estimates() {
        let evidence = Evidence {
            window: 1000,
            decisions: 640,
            min_decisions: 100,
            first_served_at: Some(t(0)),
            last_served_at: Some(t(3_600_000_000)),
            serving_value: 0.25,
            snips: Some(Interval {
                value: 0.5,
                ci_low: 0.41,
                ci_high: 0.58,
            }),
            dr: Some(Interval {
                value: 0.48,
                ci_low: 0.4,
                ci_high: 0.57,
            }),
            bootstrap: 200,
            seed: 7,
            refusals: vec![],
        };
        let promoted = |evidence: Evidence, forced| {
            DomainEvent::Policy(PolicyEvent::PolicyPromoted {
                serving: "thompson:epsilon=0.1,samples=1,v=0.5".into(),
                replaced: "random".into(),
                shadows: vec!["random".into()],
                evidence,
                forced,
                promoted_at: t(7_200_000_000),
            })
        };
        round_trip(promoted(evidence.clone(), false));
        round_trip(promoted(
            Evidence {
                first_served_at: None,
                last_served_at: None,
                snips: None,
                dr: None,
                refusals: vec!["too few decisions".into()],
                ..evidence
            },
            true,
        ));
    }

    #[test]
    fn connection_events_round_trip() {
        let provider = Provider::Todoist;
        let tip = TipId::from_uuid(Uuid::from_u128(9));
        for event in [
            ConnectionEvent::IntegrationConnected {
                user_id: alice(),
                provider,
                generation: 2,
                connected_at: t(1),
            },
            ConnectionEvent::IntegrationSynced {
                user_id: alice(),
                provider,
                outcome: SyncOutcome::Synced { tasks: 3, full: true },
                synced_at: t(2),
            },
            ConnectionEvent::IntegrationSynced {
                user_id: alice(),
                provider,
                outcome: SyncOutcome::Failed {
                    reason: "http_503".into(),
                },
                synced_at: t(3),
            },
            ConnectionEvent::IntegrationSynced {
                user_id: alice(),
                provider,
                outcome: SyncOutcome::Broken {
                    reason: "http_401".into(),
                },
                synced_at: t(4),
            },
            ConnectionEvent::IntegrationTaskClosed {
                user_id: alice(),
                provider,
                tip_id: tip,
                external_id: "6X7rM8997g3RQmvh".into(),
                outcome: CloseOutcome::NoConnection,
                closed_at: t(5),
            },
            ConnectionEvent::IntegrationDisconnected {
                user_id: alice(),
                provider,
                reason: DisconnectReason::Deletion,
                disconnected_at: t(6),
            },
            ConnectionEvent::IntegrationTokenRevoked {
                user_id: alice(),
                provider,
                outcome: RevokeOutcome::UnknownToken,
                revoked_at: t(7),
            },
        ] {
            round_trip(DomainEvent::Connection(event));
        }
    }

    #[test]
    fn times_before_the_epoch_round_trip() {
        round_trip(DomainEvent::User(UserEvent::SessionRevoked {
            user_id: alice(),
            session_id: SessionId::from_uuid(Uuid::from_u128(2)),
            revoked_at: DateTime::from_timestamp_micros(-1_234_567).expect("valid"),
        }));
    }

    // --- Decode errors -------------------------------------------------------------------------

    #[test]
    fn a_bad_uuid_is_refused() {
        let mut m = task_message();
        m.user_id = "not-a-uuid".into();
        assert!(matches!(
            decode_signal(m),
            Err(DecodeError::BadUuid { field: "user_id", .. })
        ));
        let revoked = pb::SessionRevoked {
            user_id: alice().to_string(),
            session_id: String::new(),
            revoked_at_us: 0,
        };
        assert!(matches!(
            event_from_payload(Payload::SessionRevoked(revoked)),
            Err(DecodeError::BadUuid {
                field: "session_id",
                ..
            })
        ));
    }

    #[test]
    fn priority_9_is_refused() {
        let mut m = task_message();
        if let Some(Data::Task(task)) = m.data.as_mut() {
            task.priority = 9;
        }
        let err = decode_signal(m).expect_err("priority 9 is out of range");
        assert!(
            matches!(&err, DecodeError::InvalidField(f) if f.field == "priority"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_and_unspecified_enum_values_are_refused() {
        let mut m = task_message();
        if let Some(Data::Task(task)) = m.data.as_mut() {
            task.source = 0;
        }
        assert_eq!(
            decode_signal(m),
            Err(DecodeError::BadEnum {
                field: "source",
                value: 0
            })
        );

        let mut m = task_message();
        m.data = Some(Data::Context(pb::ContextSignal {
            place: 99,
            activity: None,
            time_zone: None,
        }));
        assert_eq!(
            decode_signal(m),
            Err(DecodeError::BadEnum {
                field: "place",
                value: 99
            })
        );

        let reacted = pb::TipReacted {
            tip_id: Uuid::from_u128(9).to_string(),
            user_id: alice().to_string(),
            reaction: 42,
            reacted_at_us: 0,
        };
        assert_eq!(
            event_from_payload(Payload::TipReacted(reacted)),
            Err(DecodeError::BadEnum {
                field: "reaction",
                value: 42
            })
        );

        let rewarded = pb::TipRewarded {
            tip_id: Uuid::from_u128(9).to_string(),
            user_id: alice().to_string(),
            reward: 0.0,
            settled_by: -1,
            settled_at_us: 0,
        };
        assert_eq!(
            event_from_payload(Payload::TipRewarded(rewarded)),
            Err(DecodeError::BadEnum {
                field: "settled_by",
                value: -1
            })
        );

        let mut served = pb::TipServed::from(&decision());
        served.candidates[2].kind = 7;
        assert_eq!(
            event_from_payload(Payload::TipServed(Box::new(served))),
            Err(DecodeError::BadEnum {
                field: "kind",
                value: 7
            })
        );
    }

    #[test]
    fn missing_payloads_and_signal_data_are_refused() {
        assert_eq!(
            event_from_envelope(pb::EventEnvelope::default()),
            Err(DecodeError::MissingField("payload"))
        );
        let mut m = task_message();
        m.data = None;
        assert_eq!(decode_signal(m), Err(DecodeError::MissingField("data")));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut m = task_message();
        m.data = Some(Data::Mood(pb::MoodSignal { score: 3, note: None }));
        assert!(matches!(decode_signal(m), Err(DecodeError::InvalidField(_))));

        let mut m = task_message();
        m.signal_id = "has space".into();
        assert!(matches!(decode_signal(m), Err(DecodeError::InvalidSignalId(_))));

        let mut m = task_message();
        m.data = Some(Data::Context(pb::ContextSignal {
            place: pb::Place::Home.into(),
            activity: Some("   ".into()),
            time_zone: None,
        }));
        assert!(matches!(decode_signal(m), Err(DecodeError::InvalidField(_))));

        let mut m = task_message();
        m.data = Some(Data::Calendar(pb::CalendarSignal {
            title: "Standup".into(),
            start_us: 2_000,
            end_us: 1_000,
        }));
        assert!(matches!(decode_signal(m), Err(DecodeError::InvalidField(f)) if f.field == "end"));
    }

    #[test]
    fn unrepresentable_times_are_refused() {
        let mut m = task_message();
        m.occurred_at_us = i64::MAX;
        assert_eq!(
            decode_signal(m),
            Err(DecodeError::BadTime {
                field: "occurred_at_us",
                value: i64::MAX
            })
        );
    }

    #[test]
    fn sealed_placeholders_decode_so_relayed_events_can_be_read_without_keys() {
        let registered = |email: &str| pb::UserRegistered {
            user_id: alice().to_string(),
            email: email.into(),
            registered_at_us: 0,
        };
        for marker in [oo_domain::personal::SEALED, oo_domain::personal::REDACTED] {
            let Ok(DomainEvent::User(UserEvent::UserRegistered { email, .. })) =
                event_from_payload(Payload::UserRegistered(registered(marker)))
            else {
                panic!("{marker} decodes");
            };
            assert_eq!(email.as_str(), marker);
        }
        assert!(matches!(
            event_from_payload(Payload::UserRegistered(registered("[other]"))),
            Err(DecodeError::InvalidEmail(_))
        ));
        let mut m = task_message();
        m.data = Some(Data::Habit(pb::HabitSignal {
            name: oo_domain::personal::SEALED.into(),
            done: true,
        }));
        assert!(decode_signal(m).is_ok());
    }

    #[test]
    fn decode_errors_name_the_field() {
        let err = DecodeError::BadEnum {
            field: "place",
            value: 99,
        };
        assert_eq!(err.to_string(), "place has no known value 99");
    }
}
