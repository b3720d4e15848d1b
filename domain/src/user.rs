//! The `User` aggregate: registration, sessions and deletion (crypto-shredding: once
//! `UserShredded` is recorded, the user's data key is gone and nothing more happens to them).

use crate::event::{Aggregate, Event};
use crate::ids::{SessionId, UserId};
use crate::personal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// An email address as a person typed it, trimmed and lower-cased. Personal: sealed in storage,
/// looked up only through a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email must look like name@example.org (at most 254 characters)")]
pub struct InvalidEmail;

impl Email {
    pub fn parse(s: &str) -> Result<Self, InvalidEmail> {
        let e = s.trim().to_lowercase();
        let Some((local, domain)) = e.split_once('@') else {
            return Err(InvalidEmail);
        };
        let ok = e.chars().count() <= 254
            && !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !e.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        if ok { Ok(Self(e)) } else { Err(InvalidEmail) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s`, exactly as sent, is an email address the API takes: at most 254
    /// characters, no whitespace or control character, one `@` with something before it, and
    /// a domain with a dot that neither starts nor ends it. (`parse` also trims and lowercases
    /// what a provider sends.)
    pub fn is_well_formed(s: &str) -> bool {
        let Some((local, domain)) = s.split_once('@') else {
            return false;
        };
        s.chars().count() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }

    /// Stands for an email that travels sealed (`[sealed]`) or whose key is destroyed
    /// (`[redacted]`): events read without keys carry these markers in place of the address.
    pub fn withheld(marker: &str) -> Option<Self> {
        crate::personal::is_marker(marker).then(|| Self(marker.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        user_id: UserId,
        email: Email,
        at: DateTime<Utc>,
    },
    StartSession {
        session_id: SessionId,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    RevokeSession {
        session_id: SessionId,
        at: DateTime<Utc>,
    },
    /// The person accepted these versions (hashes) of the terms and the privacy notice.
    GiveConsent {
        terms_hash: String,
        privacy_hash: String,
        at: DateTime<Utc>,
    },
    /// The person asked to delete their account.
    RequestDeletion {
        at: DateTime<Utc>,
    },
    /// The user's key and lookup rows are destroyed: record it.
    CompleteShredding {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: UserId,
        email: Email,
        registered_at: DateTime<Utc>,
    },
    SessionStarted {
        user_id: UserId,
        session_id: SessionId,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    SessionRevoked {
        user_id: UserId,
        session_id: SessionId,
        revoked_at: DateTime<Utc>,
    },
    UserDeletionRequested {
        user_id: UserId,
        requested_at: DateTime<Utc>,
    },
    ConsentGiven {
        user_id: UserId,
        terms_hash: String,
        privacy_hash: String,
        given_at: DateTime<Utc>,
    },
    UserShredded {
        user_id: UserId,
        shredded_at: DateTime<Utc>,
    },
}

impl Event for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionRevoked { .. } => "SessionRevoked",
            Self::UserDeletionRequested { .. } => "UserDeletionRequested",
            Self::UserShredded { .. } => "UserShredded",
            Self::ConsentGiven { .. } => "ConsentGiven",
        }
    }
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            Self::UserRegistered { .. } => &[personal::USER_EMAIL],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user is already registered")]
    AlreadyRegistered,
    #[error("the user is not registered")]
    NotRegistered,
    #[error("a session cannot expire before it starts")]
    InvalidExpiry,
    #[error("the account is being deleted")]
    Deleted,
    #[error("shredding completes a deletion that was requested")]
    NoDeletionRequested,
}

/// No personal field lives in the state, so snapshots of it need no sealing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_id: Option<UserId>,
    pub open_sessions: BTreeSet<SessionId>,
    #[serde(default)]
    pub deletion_requested: bool,
    #[serde(default)]
    pub shredded: bool,
    /// The latest consent, if any.
    #[serde(default)]
    pub consent: Option<Consent>,
}

/// Which versions of the terms and the privacy notice a person accepted, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub terms_hash: String,
    pub privacy_hash: String,
    pub given_at: DateTime<Utc>,
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match command {
            UserCommand::Register { user_id, email, at } => {
                if self.user_id.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                Ok(vec![UserEvent::UserRegistered {
                    user_id: *user_id,
                    email: email.clone(),
                    registered_at: *at,
                }])
            }
            UserCommand::StartSession {
                session_id,
                at,
                expires_at,
            } => {
                let user_id = self.user_id.ok_or(UserError::NotRegistered)?;
                if self.deletion_requested {
                    return Err(UserError::Deleted);
                }
                if expires_at <= at {
                    return Err(UserError::InvalidExpiry);
                }
                Ok(vec![UserEvent::SessionStarted {
                    user_id,
                    session_id: *session_id,
                    started_at: *at,
                    expires_at: *expires_at,
                }])
            }
            UserCommand::RevokeSession { session_id, at } => {
                let user_id = self.user_id.ok_or(UserError::NotRegistered)?;
                if !self.open_sessions.contains(session_id) {
                    // Revoking twice is a no-op, so logging out can be retried.
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::SessionRevoked {
                    user_id,
                    session_id: *session_id,
                    revoked_at: *at,
                }])
            }
            UserCommand::GiveConsent {
                terms_hash,
                privacy_hash,
                at,
            } => {
                let user_id = self.user_id.ok_or(UserError::NotRegistered)?;
                if self.deletion_requested {
                    return Err(UserError::Deleted);
                }
                if self
                    .consent
                    .as_ref()
                    .is_some_and(|c| &c.terms_hash == terms_hash && &c.privacy_hash == privacy_hash)
                {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::ConsentGiven {
                    user_id,
                    terms_hash: terms_hash.clone(),
                    privacy_hash: privacy_hash.clone(),
                    given_at: *at,
                }])
            }
            UserCommand::RequestDeletion { at } => {
                let user_id = self.user_id.ok_or(UserError::NotRegistered)?;
                if self.deletion_requested {
                    // Asking again resumes the deletion already under way.
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::UserDeletionRequested {
                    user_id,
                    requested_at: *at,
                }])
            }
            UserCommand::CompleteShredding { at } => {
                let user_id = self.user_id.ok_or(UserError::NotRegistered)?;
                match (self.deletion_requested, self.shredded) {
                    (false, _) => Err(UserError::NoDeletionRequested),
                    (true, true) => Ok(vec![]),
                    (true, false) => Ok(vec![UserEvent::UserShredded {
                        user_id,
                        shredded_at: *at,
                    }]),
                }
            }
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered { user_id, .. } => self.user_id = Some(*user_id),
            UserEvent::SessionStarted { session_id, .. } => {
                self.open_sessions.insert(*session_id);
            }
            UserEvent::SessionRevoked { session_id, .. } => {
                self.open_sessions.remove(session_id);
            }
            UserEvent::UserDeletionRequested { .. } => self.deletion_requested = true,
            UserEvent::ConsentGiven {
                terms_hash,
                privacy_hash,
                given_at,
                ..
            } => {
                self.consent = Some(Consent {
                    terms_hash: terms_hash.clone(),
                    privacy_hash: privacy_hash.clone(),
                    given_at: *given_at,
                });
            }
            UserEvent::UserShredded { .. } => {
                self.shredded = true;
                self.open_sessions.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn given(events: &[UserEvent]) -> User {
        let mut u = User::default();
        for e in events {
            u.apply(e);
        }
        u
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.ORG ").map(|e| e.as_str().to_owned()),
            Ok("ada@example.org".into())
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a da@example.org",
            "ada@.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_user_registers_once() {
        let user_id = UserId::from_uuid(Uuid::from_u128(1));
        let email = Email::parse("ada@example.org").expect("valid");
        let cmd = UserCommand::Register {
            user_id,
            email: email.clone(),
            at: t(0),
        };
        let events = User::default().decide(&cmd).expect("registers");
        assert_eq!(
            events,
            vec![UserEvent::UserRegistered {
                user_id,
                email,
                registered_at: t(0)
            }]
        );
        assert_eq!(given(&events).decide(&cmd), Err(UserError::AlreadyRegistered));
    }

    #[test]
    fn a_deletion_is_requested_once_then_shredded_once_and_ends_sign_in() {
        let user_id = UserId::from_uuid(Uuid::from_u128(1));
        let reg = UserEvent::UserRegistered {
            user_id,
            email: Email::parse("a@b.co").expect("valid"),
            registered_at: t(0),
        };
        let registered = given(std::slice::from_ref(&reg));
        assert_eq!(
            registered.decide(&UserCommand::CompleteShredding { at: t(1) }),
            Err(UserError::NoDeletionRequested)
        );
        let requested = registered
            .decide(&UserCommand::RequestDeletion { at: t(1) })
            .expect("requested");
        assert_eq!(
            requested,
            vec![UserEvent::UserDeletionRequested {
                user_id,
                requested_at: t(1)
            }]
        );
        let state = given(&[reg.clone(), requested[0].clone()]);
        assert_eq!(
            state.decide(&UserCommand::RequestDeletion { at: t(2) }),
            Ok(vec![]),
            "asking again resumes"
        );
        let session = UserCommand::StartSession {
            session_id: SessionId::from_uuid(Uuid::from_u128(3)),
            at: t(2),
            expires_at: t(9),
        };
        assert_eq!(state.decide(&session), Err(UserError::Deleted));
        let shredded = state
            .decide(&UserCommand::CompleteShredding { at: t(3) })
            .expect("shredded");
        assert_eq!(
            shredded,
            vec![UserEvent::UserShredded {
                user_id,
                shredded_at: t(3)
            }]
        );
        let done = given(&[reg, requested[0].clone(), shredded[0].clone()]);
        assert_eq!(
            done.decide(&UserCommand::CompleteShredding { at: t(4) }),
            Ok(vec![]),
            "once"
        );
    }

    #[test]
    fn consent_is_recorded_once_per_version_of_the_documents() {
        let user_id = UserId::from_uuid(Uuid::from_u128(1));
        let reg = UserEvent::UserRegistered {
            user_id,
            email: Email::parse("a@b.co").expect("valid"),
            registered_at: t(0),
        };
        let give = |terms: &str| UserCommand::GiveConsent {
            terms_hash: terms.into(),
            privacy_hash: "p1".into(),
            at: t(1),
        };
        assert_eq!(User::default().decide(&give("t1")), Err(UserError::NotRegistered));
        let given = given(std::slice::from_ref(&reg)).decide(&give("t1")).expect("consent");
        assert_eq!(given.len(), 1);
        let state = given_state(&[reg.clone(), given[0].clone()]);
        assert_eq!(
            state.decide(&give("t1")),
            Ok(vec![]),
            "the same versions again: nothing new"
        );
        assert_eq!(
            state.decide(&give("t2")).map(|e| e.len()),
            Ok(1),
            "new terms: a new consent"
        );
        assert_eq!(state.consent.map(|c| c.terms_hash), Some("t1".into()));
    }

    fn given_state(events: &[UserEvent]) -> User {
        given(events)
    }

    #[test]
    fn sessions_start_and_revoke_idempotently() {
        let user_id = UserId::from_uuid(Uuid::from_u128(1));
        let session_id = SessionId::from_uuid(Uuid::from_u128(2));
        let reg = UserEvent::UserRegistered {
            user_id,
            email: Email::parse("a@b.co").expect("valid"),
            registered_at: t(0),
        };
        assert_eq!(
            User::default().decide(&UserCommand::StartSession {
                session_id,
                at: t(1),
                expires_at: t(2)
            }),
            Err(UserError::NotRegistered)
        );
        let started = given(std::slice::from_ref(&reg))
            .decide(&UserCommand::StartSession {
                session_id,
                at: t(1),
                expires_at: t(100),
            })
            .expect("starts");
        let state = given(&[reg.clone(), started[0].clone()]);
        let revoked = state
            .decide(&UserCommand::RevokeSession { session_id, at: t(5) })
            .expect("revokes");
        assert_eq!(revoked.len(), 1);
        let after = given(&[reg, started[0].clone(), revoked[0].clone()]);
        assert_eq!(
            after.decide(&UserCommand::RevokeSession { session_id, at: t(6) }),
            Ok(vec![])
        );
    }
}
