//! The `Connection` aggregate: one stream per person and provider (`{user_id}:{provider}`),
//! holding what happened to the link between them — connected, the outcome of syncs, broken by
//! the provider, tasks closed there from a tip, disconnected, the token revoked. The provider's
//! token and sync cursor never enter it: they live sealed in an operational table that
//! disconnecting deletes (DESIGN section 3; `oo_commands::connections`).
//!
//! Nothing here is personal: reasons are our own codes, a task is named by the provider's id (as
//! in `SignalRecorded`), a tip by its id.

use crate::event::{Aggregate, Event};
use crate::ids::{TipId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Todoist,
}

impl Provider {
    pub const ALL: [Provider; 1] = [Provider::Todoist];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todoist => "todoist",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The stream of `user`'s connection to `provider`.
pub fn stream_id(user: UserId, provider: Provider) -> String {
    format!("{user}:{}", provider.as_str())
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SyncOutcome {
    /// `tasks` task signals were recorded (repeats of earlier ones not counted); `full`: the
    /// provider sent everything rather than what changed.
    Synced { tasks: u32, full: bool },
    /// The provider could not be used this time (rate limited, unavailable, timed out, answered
    /// nonsense); retried later. `reason` is one of our codes, never the provider's text.
    Failed { reason: String },
    /// The provider refused the token (revoked at the provider): no more syncs until the person
    /// connects again.
    Broken { reason: String },
}

impl SyncOutcome {
    fn kind(&self) -> &'static str {
        match self {
            Self::Synced { .. } => "synced",
            Self::Failed { .. } => "failed",
            Self::Broken { .. } => "broken",
        }
    }
}

/// What became of a `done` on a todo that came from the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseOutcome {
    /// Closed at the provider (or already closed there).
    Closed,
    /// No live connection provided that task (sent by hand, or after a disconnect): nothing
    /// was done, and nothing will be retried.
    NoConnection,
    /// The provider refused the token: the connection is broken, the task left as it is.
    Broken,
    /// The provider does not know the task (deleted there): nothing to close.
    NotFound,
    /// The provider refused this close (a task the person may not change there); the
    /// connection is fine.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// `DELETE /integrations/{provider}`.
    ByPerson,
    /// `DELETE /me`.
    Deletion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeOutcome {
    Revoked,
    /// The provider did not know the token (revoked there already).
    UnknownToken,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionCommand {
    Connect {
        user_id: UserId,
        provider: Provider,
        at: DateTime<Utc>,
    },
    RecordSync {
        outcome: SyncOutcome,
        at: DateTime<Utc>,
    },
    RecordClose {
        user_id: UserId,
        provider: Provider,
        tip_id: TipId,
        external_id: String,
        outcome: CloseOutcome,
        at: DateTime<Utc>,
    },
    Disconnect {
        reason: DisconnectReason,
        at: DateTime<Utc>,
    },
    RecordRevocation {
        outcome: RevokeOutcome,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConnectionEvent {
    IntegrationConnected {
        user_id: UserId,
        provider: Provider,
        /// 1 for the first connection, then one more at each reconnection: task signals of one
        /// connection are told from another's by it.
        generation: u32,
        connected_at: DateTime<Utc>,
    },
    IntegrationSynced {
        user_id: UserId,
        provider: Provider,
        outcome: SyncOutcome,
        synced_at: DateTime<Utc>,
    },
    IntegrationTaskClosed {
        user_id: UserId,
        provider: Provider,
        tip_id: TipId,
        external_id: String,
        outcome: CloseOutcome,
        closed_at: DateTime<Utc>,
    },
    IntegrationDisconnected {
        user_id: UserId,
        provider: Provider,
        reason: DisconnectReason,
        disconnected_at: DateTime<Utc>,
    },
    IntegrationTokenRevoked {
        user_id: UserId,
        provider: Provider,
        outcome: RevokeOutcome,
        revoked_at: DateTime<Utc>,
    },
}

impl ConnectionEvent {
    pub fn user_id(&self) -> UserId {
        match self {
            Self::IntegrationConnected { user_id, .. }
            | Self::IntegrationSynced { user_id, .. }
            | Self::IntegrationTaskClosed { user_id, .. }
            | Self::IntegrationDisconnected { user_id, .. }
            | Self::IntegrationTokenRevoked { user_id, .. } => *user_id,
        }
    }
}

impl Event for ConnectionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::IntegrationConnected { .. } => "IntegrationConnected",
            Self::IntegrationSynced { .. } => "IntegrationSynced",
            Self::IntegrationTaskClosed { .. } => "IntegrationTaskClosed",
            Self::IntegrationDisconnected { .. } => "IntegrationDisconnected",
            Self::IntegrationTokenRevoked { .. } => "IntegrationTokenRevoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("not connected")]
    NotConnected,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub user_id: Option<UserId>,
    pub provider: Option<Provider>,
    pub generation: u32,
    pub connected: bool,
    pub broken: bool,
    pub connected_at: Option<DateTime<Utc>>,
    /// The kind of the last recorded sync outcome (`synced`, `failed`, `broken`).
    pub last_outcome: Option<String>,
    /// Tips whose close was recorded.
    pub closed: BTreeSet<TipId>,
    /// Disconnections whose token's revocation is not recorded yet.
    pub revocations_pending: u32,
}

impl Aggregate for Connection {
    const TYPE: &'static str = "connection";
    type Command = ConnectionCommand;
    type Event = ConnectionEvent;
    type Error = ConnectionError;

    fn decide(&self, command: &ConnectionCommand) -> Result<Vec<ConnectionEvent>, ConnectionError> {
        let who = || self.user_id.zip(self.provider).ok_or(ConnectionError::NotConnected);
        match command {
            ConnectionCommand::Connect { user_id, provider, at } => Ok(vec![ConnectionEvent::IntegrationConnected {
                user_id: *user_id,
                provider: *provider,
                generation: self.generation + 1,
                connected_at: *at,
            }]),
            ConnectionCommand::RecordSync { outcome, at } => {
                if !self.connected {
                    return Err(ConnectionError::NotConnected);
                }
                let (user_id, provider) = who()?;
                // A sync that recorded nothing and ended as the last one did is not news: the
                // log does not grow by a background sync every few minutes.
                let news = matches!(outcome, SyncOutcome::Synced { tasks, full } if *tasks > 0 || *full)
                    || self.last_outcome.as_deref() != Some(outcome.kind());
                if !news {
                    return Ok(vec![]);
                }
                Ok(vec![ConnectionEvent::IntegrationSynced {
                    user_id,
                    provider,
                    outcome: outcome.clone(),
                    synced_at: *at,
                }])
            }
            ConnectionCommand::RecordClose {
                user_id,
                provider,
                tip_id,
                external_id,
                outcome,
                at,
            } => {
                if self.closed.contains(tip_id) {
                    return Ok(vec![]);
                }
                Ok(vec![ConnectionEvent::IntegrationTaskClosed {
                    user_id: *user_id,
                    provider: *provider,
                    tip_id: *tip_id,
                    external_id: external_id.clone(),
                    outcome: *outcome,
                    closed_at: *at,
                }])
            }
            ConnectionCommand::Disconnect { reason, at } => {
                if !self.connected {
                    return Ok(vec![]);
                }
                let (user_id, provider) = who()?;
                Ok(vec![ConnectionEvent::IntegrationDisconnected {
                    user_id,
                    provider,
                    reason: *reason,
                    disconnected_at: *at,
                }])
            }
            ConnectionCommand::RecordRevocation { outcome, at } => {
                if self.revocations_pending == 0 {
                    return Ok(vec![]);
                }
                let (user_id, provider) = who()?;
                Ok(vec![ConnectionEvent::IntegrationTokenRevoked {
                    user_id,
                    provider,
                    outcome: *outcome,
                    revoked_at: *at,
                }])
            }
        }
    }

    fn apply(&mut self, event: &ConnectionEvent) {
        match event {
            ConnectionEvent::IntegrationConnected {
                user_id,
                provider,
                generation,
                connected_at,
            } => {
                self.user_id = Some(*user_id);
                self.provider = Some(*provider);
                self.generation = *generation;
                self.connected = true;
                self.broken = false;
                self.connected_at = Some(*connected_at);
                self.last_outcome = None;
            }
            ConnectionEvent::IntegrationSynced { outcome, .. } => {
                self.last_outcome = Some(outcome.kind().to_owned());
                self.broken = matches!(outcome, SyncOutcome::Broken { .. });
            }
            ConnectionEvent::IntegrationTaskClosed { tip_id, .. } => {
                self.closed.insert(*tip_id);
            }
            ConnectionEvent::IntegrationDisconnected { .. } => {
                self.connected = false;
                self.broken = false;
                self.revocations_pending += 1;
            }
            ConnectionEvent::IntegrationTokenRevoked { .. } => {
                self.revocations_pending = self.revocations_pending.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }

    fn given(events: &[ConnectionEvent]) -> Connection {
        let mut c = Connection::default();
        for e in events {
            c.apply(e);
        }
        c
    }

    fn connected() -> Vec<ConnectionEvent> {
        Connection::default()
            .decide(&ConnectionCommand::Connect {
                user_id: UserId::from_uuid(uuid::Uuid::new_v4()),
                provider: Provider::Todoist,
                at: t(0),
            })
            .expect("connects")
    }

    fn sync(c: &Connection, outcome: SyncOutcome) -> Vec<ConnectionEvent> {
        c.decide(&ConnectionCommand::RecordSync { outcome, at: t(10) })
            .expect("recorded")
    }

    #[test]
    fn each_connection_has_a_generation_of_its_own() {
        let mut h = connected();
        assert!(matches!(
            h[0],
            ConnectionEvent::IntegrationConnected { generation: 1, .. }
        ));
        h.extend(
            given(&h)
                .decide(&ConnectionCommand::Disconnect {
                    reason: DisconnectReason::ByPerson,
                    at: t(5),
                })
                .expect("disconnects"),
        );
        let again = given(&h)
            .decide(&ConnectionCommand::Connect {
                user_id: UserId::from_uuid(uuid::Uuid::new_v4()),
                provider: Provider::Todoist,
                at: t(6),
            })
            .expect("reconnects");
        assert!(matches!(
            again[0],
            ConnectionEvent::IntegrationConnected { generation: 2, .. }
        ));
    }

    #[test]
    fn a_sync_is_recorded_when_it_brought_something_or_ended_otherwise_than_the_last() {
        let mut h = connected();
        let first = sync(&given(&h), SyncOutcome::Synced { tasks: 0, full: true });
        assert_eq!(first.len(), 1, "the first, full sync");
        h.extend(first);
        assert!(
            sync(&given(&h), SyncOutcome::Synced { tasks: 0, full: false }).is_empty(),
            "nothing new"
        );
        let some = sync(&given(&h), SyncOutcome::Synced { tasks: 2, full: false });
        assert_eq!(some.len(), 1);
        h.extend(some);
        let failed = sync(
            &given(&h),
            SyncOutcome::Failed {
                reason: "http_503".into(),
            },
        );
        assert_eq!(failed.len(), 1, "a change of outcome");
        h.extend(failed);
        assert!(
            sync(
                &given(&h),
                SyncOutcome::Failed {
                    reason: "timeout".into()
                }
            )
            .is_empty(),
            "still failing"
        );
        let broken = sync(
            &given(&h),
            SyncOutcome::Broken {
                reason: "http_401".into(),
            },
        );
        h.extend(broken);
        assert!(given(&h).broken);
        assert!(
            sync(
                &given(&h),
                SyncOutcome::Broken {
                    reason: "http_401".into()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn a_close_is_recorded_once_per_tip() {
        let h = connected();
        let c = given(&h);
        let close = ConnectionCommand::RecordClose {
            user_id: c.user_id.expect("user"),
            provider: Provider::Todoist,
            tip_id: TipId::from_uuid(uuid::Uuid::now_v7()),
            external_id: "123".into(),
            outcome: CloseOutcome::Closed,
            at: t(20),
        };
        let events = c.decide(&close).expect("recorded");
        assert_eq!(events.len(), 1);
        let mut all = h.clone();
        all.extend(events);
        assert_eq!(given(&all).decide(&close), Ok(vec![]), "never twice");
    }

    #[test]
    fn a_disconnection_leaves_one_revocation_to_record() {
        let mut h = connected();
        assert_eq!(
            given(&h).decide(&ConnectionCommand::RecordRevocation {
                outcome: RevokeOutcome::Revoked,
                at: t(1)
            }),
            Ok(vec![])
        );
        h.extend(
            given(&h)
                .decide(&ConnectionCommand::Disconnect {
                    reason: DisconnectReason::Deletion,
                    at: t(2),
                })
                .expect("disconnects"),
        );
        assert_eq!(
            given(&h).decide(&ConnectionCommand::Disconnect {
                reason: DisconnectReason::ByPerson,
                at: t(3)
            }),
            Ok(vec![]),
            "once"
        );
        let revoked = given(&h)
            .decide(&ConnectionCommand::RecordRevocation {
                outcome: RevokeOutcome::UnknownToken,
                at: t(4),
            })
            .expect("recorded");
        assert_eq!(revoked.len(), 1);
        h.extend(revoked);
        assert_eq!(given(&h).revocations_pending, 0);
        assert_eq!(
            given(&h).decide(&ConnectionCommand::RecordSync {
                outcome: SyncOutcome::Synced { tasks: 1, full: false },
                at: t(5)
            }),
            Err(ConnectionError::NotConnected),
            "no sync after a disconnection"
        );
    }
}
