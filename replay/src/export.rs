//! `oo export decisions`: every `TipServed` of the log as a [`LoggedDecision`], with the reward
//! its `TipRewarded` settled, read from the store in the safe global order a batch at a time (so
//! memory stays flat however long the log is). People deleted before the export are left out;
//! no personal field is ever read (a decision's shown text stays sealed in the store).

use crate::logged::{Candidate, LoggedDecision, Shadow};
use chrono::{DateTime, Utc};
use oo_commands::cursor::Cursor;
use oo_commands::store::{StoredEvent, read_in_streams, read_latest_of_type, read_of_types_after, read_shredded_after};
use oo_domain::tip::{Decision, TipEvent};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// How many decisions are read (and their rewards joined) at a time.
const BATCH: i64 = 1_000;

/// One end of the range of an export: a time (when the tip was served) or a position of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Time(DateTime<Utc>),
    Position(Cursor),
}

impl std::str::FromStr for Bound {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(c) = Cursor::decode(s) {
            return Ok(Self::Position(c));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a position of the log"))
    }
}

/// Which decisions: `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub since: Option<Bound>,
    pub until: Option<Bound>,
}

impl Range {
    /// Where reading starts: just before the `since` position (inclusive), or the start.
    fn first_after(&self) -> Cursor {
        match self.since {
            Some(Bound::Position(c)) if c > Cursor::START => Cursor {
                tx_id: c.tx_id,
                position: c.position - 1,
            },
            _ => Cursor::START,
        }
    }
    /// Whether an event at `at`, served at `served_at`, is in the range; `None`: past its end.
    fn holds(&self, at: Cursor, served_at: DateTime<Utc>) -> Option<bool> {
        match self.until {
            Some(Bound::Position(end)) if at >= end => return None,
            Some(Bound::Time(end)) if served_at >= end => return Some(false),
            _ => {}
        }
        Some(match self.since {
            Some(Bound::Time(start)) => served_at >= start,
            _ => true,
        })
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub decisions: u64,
    /// Of those, the ones whose reward was not settled yet (`reward: null`).
    pub unsettled: u64,
    /// Decisions left out because their person was deleted.
    pub deleted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the log")]
    Db(#[from] sqlx::Error),
    #[error("event {event_id} is not a decision this build can read")]
    Undecodable {
        event_id: Uuid,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the export")]
    Write(#[from] std::io::Error),
}

/// Writes every decision of `range` through `write`, in the log's order. `progress` is told how
/// many decisions the log holds in all and how many have been read.
pub async fn export(
    pool: &PgPool,
    range: Range,
    mut write: impl FnMut(&LoggedDecision) -> std::io::Result<()>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Exported, ExportError> {
    let mut conn = pool.acquire().await?;
    let deleted = deleted_people(&mut conn).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TipServed'")
        .fetch_one(&mut *conn)
        .await?;
    let total = total.max(0) as u64;
    let mut out = Exported::default();
    let mut read = 0u64;
    let mut after = range.first_after();
    'log: loop {
        let batch = read_of_types_after(&mut conn, after, BATCH, &["TipServed"]).await?;
        let Some(last) = batch.last() else { break };
        after = last.cursor;
        let mut decisions = Vec::with_capacity(batch.len());
        for event in &batch {
            read += 1;
            let decision = served(event)?;
            match range.holds(event.cursor, decision.served_at) {
                None => break,
                Some(false) => continue,
                Some(true) if deleted.contains(&decision.user_id.as_uuid()) => out.deleted += 1,
                Some(true) => decisions.push(decision),
            }
        }
        let rewards = rewards_of(&mut conn, &decisions).await?;
        for decision in decisions {
            let settled = rewards.get(&decision.tip_id.to_string()).cloned();
            let record = logged(decision, settled);
            if record.reward.is_none() {
                out.unsettled += 1;
            }
            write(&record)?;
            out.decisions += 1;
        }
        progress(total, read);
        if (batch.len() as i64) < BATCH || matches!(range.until, Some(Bound::Position(end)) if after >= end) {
            break 'log;
        }
    }
    Ok(out)
}

/// The latest `n` settled decisions that `keep` accepts, of people not deleted, oldest first (in
/// the order they were served). "Latest" is by settlement: the log is read backwards from its
/// newest `TipRewarded`, a batch at a time, until `n` are found or the log is exhausted.
pub async fn latest_settled(
    pool: &PgPool,
    n: usize,
    keep: impl Fn(&LoggedDecision) -> bool,
) -> Result<Vec<LoggedDecision>, ExportError> {
    let mut conn = pool.acquire().await?;
    let deleted = deleted_people(&mut conn).await?;
    let mut found: Vec<(Cursor, LoggedDecision)> = Vec::new();
    let mut before = None;
    while found.len() < n {
        let page = read_latest_of_type(&mut conn, "TipRewarded", before, BATCH).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.cursor);
        let rewarded: Vec<&StoredEvent> = page.iter().filter(|e| !deleted.contains(&e.user_id)).collect();
        let ids: Vec<String> = rewarded.iter().map(|e| e.aggregate_id.clone()).collect();
        let serves: HashMap<String, StoredEvent> = read_in_streams(&mut conn, "tip", &ids, "TipServed")
            .await?
            .into_iter()
            .map(|e| (e.aggregate_id.clone(), e))
            .collect();
        for event in rewarded {
            let Some(served_event) = serves.get(&event.aggregate_id) else {
                continue;
            };
            let settled = match event.decode::<TipEvent>() {
                Ok(TipEvent::TipRewarded { reward, settled_by, .. }) => (reward, settled_by.as_str().to_owned()),
                Ok(_) => continue,
                Err(source) => {
                    return Err(ExportError::Undecodable {
                        event_id: event.event_id,
                        source,
                    });
                }
            };
            let record = logged(served(served_event)?, Some(settled));
            if keep(&record) {
                found.push((served_event.cursor, record));
                if found.len() == n {
                    break;
                }
            }
        }
        if (page.len() as i64) < BATCH {
            break;
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(found.into_iter().map(|(_, d)| d).collect())
}

/// Everyone whose account was deleted (shredded).
async fn deleted_people(conn: &mut sqlx::PgConnection) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut people = HashSet::new();
    let mut after = Cursor::START;
    loop {
        let page = read_shredded_after(conn, after, 10_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        people.extend(page.into_iter().map(|(_, user)| user));
    }
    Ok(people)
}

fn served(event: &StoredEvent) -> Result<Decision, ExportError> {
    match event.decode::<TipEvent>() {
        Ok(TipEvent::TipServed(decision)) => Ok(*decision),
        Ok(_) => Err(ExportError::Undecodable {
            event_id: event.event_id,
            source: serde::de::Error::custom("not a TipServed"),
        }),
        Err(source) => Err(ExportError::Undecodable {
            event_id: event.event_id,
            source,
        }),
    }
}

/// The settled reward and what settled it, for each of `decisions` that has one.
async fn rewards_of(
    conn: &mut sqlx::PgConnection,
    decisions: &[Decision],
) -> Result<HashMap<String, (f64, String)>, ExportError> {
    if decisions.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = decisions.iter().map(|d| d.tip_id.to_string()).collect();
    let mut rewards = HashMap::with_capacity(ids.len());
    for event in read_in_streams(conn, "tip", &ids, "TipRewarded").await? {
        match event.decode::<TipEvent>() {
            Ok(TipEvent::TipRewarded { reward, settled_by, .. }) => {
                rewards.insert(event.aggregate_id.clone(), (reward, settled_by.as_str().to_owned()));
            }
            Ok(_) => {}
            Err(source) => {
                return Err(ExportError::Undecodable {
                    event_id: event.event_id,
                    source,
                });
            }
        }
    }
    Ok(rewards)
}

/// A logged decision as DESIGN section 12 lays it out: ids and numbers only.
fn logged(d: Decision, settled: Option<(f64, String)>) -> LoggedDecision {
    let id_of = |i: usize| d.candidates.get(i).map(|c| c.candidate_id.clone()).unwrap_or_default();
    let chosen = id_of(d.chosen);
    let shadows = d
        .shadow
        .iter()
        .map(|s| Shadow {
            policy: s.policy.clone(),
            policy_version: s.policy_version.clone(),
            params: s.params.clone(),
            chosen: id_of(s.chosen),
            propensity: s.propensity,
            distribution: (!s.distribution.is_empty()).then(|| s.distribution.clone()),
        })
        .collect();
    let (reward, settled_by) = match settled {
        Some((r, by)) => (Some(r), Some(by)),
        None => (None, None),
    };
    LoggedDecision {
        id: d.tip_id.to_string(),
        timestamp: Some(d.served_at),
        user: Some(d.user_id.to_string()),
        context: d.context,
        candidates: d
            .candidates
            .into_iter()
            .map(|c| Candidate {
                id: c.candidate_id,
                kind: Some(c.kind.as_str().to_owned()),
                features: c.features,
            })
            .collect(),
        chosen,
        propensity: d.propensity,
        distribution: Some(d.distribution),
        reward,
        settled_by,
        slot: None,
        policy: Some(d.policy),
        policy_version: Some(d.policy_version),
        policy_params: d.params,
        feature_version: Some(d.feature_version),
        shadows,
    }
}
