//! Executing commands against aggregates: load (snapshot + the events after it), decide through
//! cqrs-es's `Aggregate::handle`, seal personal fields, append, retry on conflict (bounded), and
//! snapshot long streams.
//!
//! cqrs-es supplies the aggregate model (`Aggregate`, `DomainEvent`, `EventSink`); the
//! repository and snapshots are ours (docs/adr/0001-event-store.md): postgres-es gives no global
//! order, positions or group commit, and cqrs-es 0.5.0's snapshot stores apply events twice.
//! `handle` runs on a scratch clone of the loaded state, and the state we keep is rebuilt from
//! the events the store actually wrote, so a duplicate left out by the store never enters it.

use crate::cursor::Cursor;
use crate::sealing::{self, Sealed};
use crate::store::{AppendRequest, EventStore, Expected, NewEvent, StoreError, read_stream};
use crate::vault::{Vault, VaultError};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use oo_domain::event::{Aggregate, Event};
use oo_domain::ids::UserId;
use oo_domain::personal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A domain event seen by cqrs-es.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CqrsEvent<E>(pub E);

impl<E: Event> cqrs_es::DomainEvent for CqrsEvent<E> {
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }
    fn event_version(&self) -> String {
        self.0.schema_version().to_string()
    }
}

/// A domain aggregate seen by cqrs-es: `handle` only calls the pure `decide`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CqrsAggregate<A>(pub A);

impl<A> cqrs_es::Aggregate for CqrsAggregate<A>
where
    A: Aggregate + 'static,
    A::Command: Send + Sync,
{
    const TYPE: &'static str = A::TYPE;
    type Command = A::Command;
    type Event = CqrsEvent<A::Event>;
    type Error = A::Error;
    type Services = ();

    async fn handle(&mut self, command: A::Command, _services: &(), sink: &EventSink<Self>) -> Result<(), A::Error> {
        for event in self.0.decide(&command)? {
            sink.write(CqrsEvent(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CqrsEvent<A::Event>) {
        self.0.apply(&event.0);
    }
}

/// How the store treats one aggregate type's streams.
pub trait Stream: Aggregate + 'static
where
    Self::Command: Send + Sync,
{
    /// Events do not depend on each other's order, so the writer may number them.
    const ORDER_INDEPENDENT: bool = false;
    /// Take a snapshot once this many events follow the last one (`None`: never).
    const SNAPSHOT_EVERY: Option<i64> = None;
    fn user_of(event: &Self::Event) -> UserId;
    fn occurred_at(event: &Self::Event, now: DateTime<Utc>) -> DateTime<Utc> {
        let _ = event;
        now
    }
    fn dedup_key(event: &Self::Event) -> Option<String> {
        let _ = event;
        None
    }
}

impl Stream for oo_domain::signals::Signals {
    const ORDER_INDEPENDENT: bool = true;
    const SNAPSHOT_EVERY: Option<i64> = Some(200);
    fn user_of(e: &Self::Event) -> UserId {
        let oo_domain::signals::SignalsEvent::SignalRecorded { user_id, .. } = e;
        *user_id
    }
    fn occurred_at(e: &Self::Event, _now: DateTime<Utc>) -> DateTime<Utc> {
        let oo_domain::signals::SignalsEvent::SignalRecorded { occurred_at, .. } = e;
        *occurred_at
    }
    fn dedup_key(e: &Self::Event) -> Option<String> {
        let oo_domain::signals::SignalsEvent::SignalRecorded { signal_id, .. } = e;
        Some(signal_id.as_str().to_owned())
    }
}

impl Stream for oo_domain::user::User {
    const SNAPSHOT_EVERY: Option<i64> = Some(200);
    fn user_of(e: &Self::Event) -> UserId {
        use oo_domain::user::UserEvent::*;
        match e {
            UserRegistered { user_id, .. }
            | SessionStarted { user_id, .. }
            | SessionRevoked { user_id, .. }
            | UserDeletionRequested { user_id, .. }
            | ConsentGiven { user_id, .. }
            | UserShredded { user_id, .. } => *user_id,
        }
    }
}

impl Stream for oo_domain::tip::Tip {
    fn user_of(e: &Self::Event) -> UserId {
        use oo_domain::tip::TipEvent::*;
        match e {
            TipServed(d) => d.user_id,
            TipReacted { user_id, .. } | TipRewarded { user_id, .. } => *user_id,
        }
    }
}

impl Stream for oo_domain::connection::Connection {
    fn user_of(e: &Self::Event) -> UserId {
        e.user_id()
    }
}

/// The line-up's one stream: system events, which belong to no person ([`UserId::SYSTEM`]).
impl Stream for oo_domain::promotion::Policy {
    fn user_of(e: &Self::Event) -> UserId {
        oo_domain::promotion::user_of(e)
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Domain(E),
    #[error("the stream kept changing; gave up after {0} attempts")]
    Contended(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the user's key is missing (account deleted?)")]
    NoKey,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

/// Tracing ids every command carries.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub now: DateTime<Utc>,
}

impl Meta {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            now,
        }
    }
}

/// The outcome of a command.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// Where the last written event stands; `None` if nothing was written.
    pub cursor: Option<Cursor>,
    pub written: Vec<A::Event>,
    pub duplicates: usize,
    pub state: A,
}

/// A loaded aggregate.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    pub sequence: i64,
    pub snapshot_sequence: i64,
}

/// Executes commands for one aggregate type.
#[derive(Debug, Clone)]
pub struct Repository<A> {
    store: EventStore,
    vault: Vault,
    max_attempts: u32,
    /// The last known state of long streams (those with snapshots), so that a command reads only
    /// the events after it. Always completed from the store: a stale entry costs a longer tail,
    /// never a wrong state, since events are immutable and sequences have no gaps.
    cache: Arc<Mutex<HashMap<String, Loaded<A>>>>,
    _a: PhantomData<fn() -> A>,
}

/// How many stream states a repository keeps in memory.
const STATE_CACHE_CAPACITY: usize = 50_000;

impl<A> Repository<A>
where
    A: Stream,
    A::Command: Send + Sync,
{
    pub fn new(store: EventStore, vault: Vault) -> Self {
        Self {
            store,
            vault,
            max_attempts: 5,
            cache: Arc::default(),
            _a: PhantomData,
        }
    }

    /// Loads a stream: from the cached state (or else its snapshot) and the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, CommandError<A::Error>> {
        let cached = self.cache.lock().ok().and_then(|c| c.get(id).cloned());
        let loaded = match cached {
            Some(c) => self.load_after(id, c).await?,
            None => self.load_from_store(id).await?,
        };
        self.remember(id, &loaded);
        Ok(loaded)
    }

    fn remember(&self, id: &str, loaded: &Loaded<A>) {
        if A::SNAPSHOT_EVERY.is_none() {
            return;
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= STATE_CACHE_CAPACITY && !c.contains_key(id) {
                c.clear();
            }
            match c.get(id) {
                Some(old) if old.sequence > loaded.sequence => {}
                _ => {
                    c.insert(id.to_owned(), loaded.clone());
                }
            }
        }
    }

    async fn load_after(&self, id: &str, mut from: Loaded<A>) -> Result<Loaded<A>, CommandError<A::Error>> {
        for e in read_stream(self.store.pool(), A::TYPE, id, from.sequence)
            .await
            .map_err(|e| CommandError::Store(StoreError::from_sqlx(e)))?
        {
            let event: A::Event = e.decode().map_err(|e| CommandError::Corrupt(e.to_string()))?;
            from.state.apply(&event);
            from.sequence = e.sequence;
        }
        Ok(from)
    }

    /// Loads a stream from the store alone: its snapshot if any, then the events after it.
    pub async fn load_from_store(&self, id: &str) -> Result<Loaded<A>, CommandError<A::Error>> {
        let pool = self.store.pool();
        let snap: Option<(i64, serde_json::Value)> =
            sqlx::query_as("SELECT sequence, state FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(A::TYPE)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(|e| CommandError::Store(StoreError::from_sqlx(e)))?;
        let (mut state, snapshot_sequence) = match snap {
            Some((seq, json)) => (
                serde_json::from_value::<A>(json).map_err(|e| CommandError::Corrupt(e.to_string()))?,
                seq,
            ),
            None => (A::default(), 0),
        };
        let mut sequence = snapshot_sequence;
        for e in read_stream(pool, A::TYPE, id, snapshot_sequence)
            .await
            .map_err(|e| CommandError::Store(StoreError::from_sqlx(e)))?
        {
            // Aggregate states need no personal field: the public payload is enough.
            let event: A::Event = e.decode().map_err(|e| CommandError::Corrupt(e.to_string()))?;
            state.apply(&event);
            sequence = e.sequence;
        }
        Ok(Loaded {
            state,
            sequence,
            snapshot_sequence,
        })
    }

    /// Loads, decides and appends, retrying a bounded number of times on conflict.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        meta: Meta,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        self.run(id, command, meta, false).await
    }

    /// Executes a command on a stream the caller has just named with a fresh random id: the first
    /// attempt decides on the empty state without reading the store (if the stream did exist, the
    /// append conflicts and the retry loads it).
    pub async fn execute_new(
        &self,
        id: &str,
        command: A::Command,
        meta: Meta,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        self.run(id, command, meta, true).await
    }

    async fn run(
        &self,
        id: &str,
        command: A::Command,
        meta: Meta,
        assume_new: bool,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        for attempt in 0..self.max_attempts {
            // Optimistic: decide on the cached state without reading the store. If the stream
            // moved on, an exact append conflicts and the retry reads the store; order-independent
            // streams decide nothing that depends on the events they have not seen.
            let cached = match attempt {
                0 if assume_new => Some(Loaded {
                    state: A::default(),
                    sequence: 0,
                    snapshot_sequence: 0,
                }),
                0 => self.cache.lock().ok().and_then(|c| c.get(id).cloned()),
                _ => None,
            };
            let optimistic = cached.is_some();
            let loaded = match cached {
                Some(c) => c,
                None => self.load(id).await?,
            };
            let mut scratch = CqrsAggregate(loaded.state.clone());
            let sink = EventSink::default();
            let decided = cqrs_es::Aggregate::handle(&mut scratch, command.clone(), &(), &sink).await;
            // A refusal or a no-op decided on an unchecked state is checked against the store:
            // only an append lets the store catch a stale state.
            let events: Vec<A::Event> = sink.collect().await.into_iter().map(|e| e.0).collect();
            if optimistic && (decided.is_err() || events.is_empty()) {
                continue;
            }
            decided.map_err(CommandError::Domain)?;
            if events.is_empty() {
                return Ok(Executed {
                    cursor: None,
                    written: vec![],
                    duplicates: 0,
                    state: loaded.state,
                });
            }
            let mut new_events = Vec::with_capacity(events.len());
            for e in &events {
                new_events.push(self.prepare(e, &meta).await?);
            }
            let ids: Vec<Uuid> = new_events.iter().map(|e| e.event_id).collect();
            let expected = if A::ORDER_INDEPENDENT {
                Expected::Any(loaded.sequence)
            } else {
                Expected::Exact(loaded.sequence)
            };
            let request = AppendRequest {
                aggregate_type: A::TYPE,
                aggregate_id: id.to_owned(),
                expected,
                events: new_events,
            };
            match self.store.append(request).await {
                Ok(appended) => {
                    let written_ids: std::collections::HashSet<Uuid> =
                        appended.written.iter().map(|(id, _)| *id).collect();
                    let mut state = loaded.state;
                    let mut written = Vec::with_capacity(appended.written.len());
                    for (event, id) in events.into_iter().zip(ids) {
                        if written_ids.contains(&id) {
                            state.apply(&event);
                            written.push(event);
                        }
                    }
                    let last_seq = appended.written.last().map_or(loaded.sequence, |(_, s)| *s);
                    let contiguous = appended
                        .written
                        .iter()
                        .enumerate()
                        .all(|(k, (_, seq))| *seq == loaded.sequence + 1 + k as i64);
                    if contiguous {
                        self.remember(
                            id,
                            &Loaded {
                                state: state.clone(),
                                sequence: last_seq,
                                snapshot_sequence: loaded.snapshot_sequence,
                            },
                        );
                    } else if let Ok(mut c) = self.cache.lock() {
                        // Other commands' events sit between ours: the next load reads the store.
                        c.remove(id);
                    }
                    self.maybe_snapshot(id, last_seq, loaded.snapshot_sequence).await;
                    return Ok(Executed {
                        cursor: appended.cursor,
                        written,
                        duplicates: appended.duplicates,
                        state,
                    });
                }
                Err(StoreError::Conflict) => {
                    if let Ok(mut c) = self.cache.lock() {
                        c.remove(id);
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Contended(self.max_attempts))
    }
}

impl Repository<oo_domain::signals::Signals> {
    /// Records `signals` for `user` on their stream, as of `meta.now`.
    pub async fn record(
        &self,
        user: UserId,
        signals: Vec<oo_domain::signals::NewSignal>,
        meta: Meta,
    ) -> Result<Executed<oo_domain::signals::Signals>, CommandError<oo_domain::signals::SignalsError>> {
        let command = oo_domain::signals::RecordSignals {
            user_id: user,
            signals,
            at: meta.now,
        };
        self.execute(&user.to_string(), command, meta).await
    }
}

impl<A> Repository<A>
where
    A: Stream,
    A::Command: Send + Sync,
{
    async fn prepare(&self, event: &A::Event, meta: &Meta) -> Result<NewEvent, CommandError<A::Error>> {
        let user_id = A::user_of(event);
        let key = if event.personal_fields().is_empty() {
            None
        } else {
            Some(self.vault.key_for(user_id).await?.ok_or(CommandError::NoKey)?)
        };
        prepare_event(
            event,
            user_id,
            A::occurred_at(event, meta.now),
            A::dedup_key(event),
            key.as_ref(),
            meta,
        )
        .map_err(|e| CommandError::Corrupt(e.to_string()))
    }

    /// Snapshots a stream once enough events follow its last snapshot. The state is loaded
    /// afresh from the store rather than taken from the command: on an order-independent stream
    /// the writer may have numbered this command's events after other commands' events.
    async fn maybe_snapshot(&self, id: &str, sequence: i64, snapshot_sequence: i64) {
        let Some(every) = A::SNAPSHOT_EVERY else { return };
        if sequence - snapshot_sequence < every {
            return;
        }
        let loaded = match self.load_from_store(id).await {
            Ok(l) if l.sequence - l.snapshot_sequence >= every => l,
            _ => return,
        };
        let Ok(json) = serde_json::to_value(&loaded.state) else {
            return;
        };
        // A failed snapshot costs only speed: the next load replays a little more.
        let result = sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, sequence, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence, state = EXCLUDED.state, \
             taken_at = now() WHERE snapshots.sequence < EXCLUDED.sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(loaded.sequence)
        .bind(json)
        .execute(self.store.pool())
        .await;
        match result {
            Ok(_) => {
                if let Ok(mut c) = self.cache.lock()
                    && let Some(entry) = c.get_mut(id)
                {
                    entry.snapshot_sequence = entry.snapshot_sequence.max(loaded.sequence);
                }
            }
            Err(e) => tracing::warn!(aggregate_type = A::TYPE, error = %e, "snapshot not saved"),
        }
    }
}

/// Serialises an event for storage: personal fields sealed under `key`, bound to a fresh event
/// id. An event with personal fields needs a key.
pub fn prepare_event<E: Event>(
    event: &E,
    user_id: UserId,
    occurred_at: DateTime<Utc>,
    dedup_key: Option<String>,
    key: Option<&sealing::DataKey>,
    meta: &Meta,
) -> Result<NewEvent, sealing::SealError> {
    let event_id = Uuid::now_v7();
    let personal = event.personal_fields();
    // Serialised here, in the command's task, so that the writer only copies text.
    let (payload, sealed) = if personal.is_empty() {
        (
            serde_json::to_string(event).map_err(|_| sealing::SealError::Seal)?,
            None,
        )
    } else {
        let (public, fields) = match event.redacted(personal::SEALED) {
            Some((copy, taken)) => (
                serde_json::to_string(&copy).map_err(|_| sealing::SealError::Seal)?,
                taken
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(p, v)| (p.to_owned(), v))
                    .collect(),
            ),
            None => {
                let mut value = serde_json::to_value(event).map_err(|_| sealing::SealError::Seal)?;
                let fields = sealing::split(&mut value, personal);
                // `to_string` writes into a buffer; `Value`'s `Display` goes through a
                // formatter, several times slower on a large payload.
                (
                    serde_json::to_string(&value).map_err(|_| sealing::SealError::Seal)?,
                    fields,
                )
            }
        };
        let sealed = if fields.is_empty() {
            None
        } else {
            let key = key.ok_or(sealing::SealError::WrongKey)?;
            Some(sealing::seal(key, event_id, &fields)?.to_bytes())
        };
        (public, sealed)
    };
    Ok(NewEvent {
        event_id,
        event_type: event.event_type(),
        schema_version: event.schema_version() as i32,
        user_id: user_id.as_uuid(),
        payload,
        sealed,
        occurred_at,
        correlation_id: meta.correlation_id,
        causation_id: meta.causation_id,
        dedup_key,
    })
}

/// The personal fields of a stored event, opened with `key`; `None` when there are none, the
/// key is gone or the envelope does not open (the fields then read as redacted).
pub fn open_fields(
    key: Option<&sealing::DataKey>,
    event_id: Uuid,
    sealed: Option<&[u8]>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let sealed = Sealed::from_bytes(sealed?).ok()?;
    sealing::open(key?, event_id, &sealed).ok()
}

/// An event's public payload with its personal fields opened under `key`; where they cannot be
/// opened (no key: the user was deleted) they read [`personal::REDACTED`].
pub fn open_payload(
    key: Option<&sealing::DataKey>,
    event: &crate::store::StoredEvent,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut payload: serde_json::Value = event.decode()?;
    match open_fields(key, event.event_id, event.sealed.as_deref()) {
        Some(fields) => {
            let pointers: Vec<&str> = fields.keys().map(String::as_str).collect();
            sealing::join(&mut payload, &pointers, Some(&fields));
        }
        None => redact(&mut payload),
    }
    Ok(payload)
}

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s == personal::SEALED => *s = personal::REDACTED.to_owned(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        serde_json::Value::Object(o) => o.values_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::DataKey;
    use serde_json::json;

    fn stored(payload: &serde_json::Value, sealed: Option<Vec<u8>>, event_id: Uuid) -> crate::store::StoredEvent {
        crate::store::StoredEvent {
            cursor: Cursor::START,
            event_id,
            aggregate_type: "signals".into(),
            aggregate_id: "a".into(),
            sequence: 1,
            event_type: "SignalRecorded".into(),
            schema_version: 1,
            user_id: Uuid::nil(),
            payload: payload.to_string(),
            sealed,
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            decoded: Default::default(),
        }
    }

    #[test]
    fn a_shared_decoding_is_made_once_per_type() {
        let e = stored(&json!({"a": 1, "b": [1.5, 2.5]}), None, Uuid::now_v7());
        let pristine = e.clone();
        let first = e.decode_shared::<serde_json::Value>().expect("decodes");
        let again = e.decode_shared::<serde_json::Value>().expect("decodes");
        assert!(
            std::sync::Arc::ptr_eq(&first, &again),
            "the second reader shares the first decoding"
        );
        assert_eq!(*first, json!({"a": 1, "b": [1.5, 2.5]}));
        // Another type decodes anew, and the shared one stays.
        let map = e
            .decode_shared::<std::collections::BTreeMap<String, serde_json::Value>>()
            .expect("decodes");
        assert_eq!(map.len(), 2);
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &e.decode_shared::<serde_json::Value>().expect("decodes")
        ));
        // A clone carries the decoding with it; equality ignores it.
        let copy = e.clone();
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &copy.decode_shared::<serde_json::Value>().expect("decodes")
        ));
        assert_eq!(pristine, e, "equality ignores whether the payload was decoded");
    }

    #[test]
    fn a_tip_served_sealed_through_its_copy_stores_what_a_json_tree_would() {
        use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, TipEvent};
        let user = UserId::from_uuid(Uuid::from_u128(7));
        let event = TipEvent::TipServed(Box::new(Decision {
            tip_id: oo_domain::ids::TipId::from_uuid(Uuid::from_u128(9)),
            user_id: user,
            served_at: Utc::now(),
            candidates: (0..3)
                .map(|i| LoggedCandidate {
                    candidate_id: format!("todo:t{i}"),
                    kind: CandidateKind::Todo,
                    features: vec![1.0 / (i as f64 + 3.0), 0.25],
                })
                .collect(),
            chosen: 1,
            policy: "linucb".into(),
            policy_version: "2".into(),
            feature_version: 2,
            score: 0.125,
            propensity: 0.7,
            distribution: vec![0.1, 0.7, 0.2],
            seed: 42,
            shadow: vec![],
            title: "Call \"mum\" é".into(),
            body: "".into(),
            params: [("alpha".to_owned(), 0.5)].into(),
            context: vec![1.0, -0.5],
            model_rewards: Some(3),
            prior_rewards: Some(40),
        }));
        assert!(event.redacted(personal::SEALED).is_some(), "the shortcut is taken");
        let key = DataKey::generate();
        let meta = Meta::new(Utc::now());
        let new = prepare_event(&event, user, Utc::now(), None, Some(&key), &meta).expect("prepared");
        // The generic path: the fields taken out of a JSON tree of the whole event.
        let mut tree = serde_json::to_value(&event).expect("serialises");
        let fields = sealing::split(&mut tree, event.personal_fields());
        // The same JSON; only the key order differs (a tree sorts keys, the copy keeps the struct's).
        let stored: serde_json::Value = serde_json::from_str(&new.payload).expect("JSON");
        assert_eq!(stored, tree);
        let sealed = Sealed::from_bytes(new.sealed.as_deref().expect("sealed")).expect("envelope");
        assert_eq!(sealing::open(&key, new.event_id, &sealed).expect("opens"), fields);
        assert_eq!(fields.len(), 2, "title and body, the empty body included");
    }

    #[test]
    fn a_payload_opens_with_its_key_and_reads_redacted_without() {
        let key = DataKey::generate();
        let event_id = Uuid::now_v7();
        let mut payload = json!({"E": {"title": "call mum", "list": ["x"], "n": 3}});
        let fields = sealing::split(&mut payload, &["/E/title"]);
        let sealed = sealing::seal(&key, event_id, &fields).expect("seals").to_bytes();
        let e = stored(&payload, Some(sealed), event_id);
        assert_eq!(
            open_payload(Some(&key), &e).expect("opens"),
            json!({"E": {"title": "call mum", "list": ["x"], "n": 3}})
        );
        assert_eq!(
            open_payload(None, &e).expect("reads"),
            json!({"E": {"title": personal::REDACTED, "list": ["x"], "n": 3}})
        );
    }
}
