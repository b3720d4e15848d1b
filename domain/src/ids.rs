//! Identifiers. User and tip ids are random (they carry no identity); signal ids are chosen by
//! clients and only have to be unique per user.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A user: random, never derived from an email or a provider's subject.
    UserId
);
impl UserId {
    /// The envelope user id of system events, which belong to no person (the `policy` stream's
    /// promotions): the nil UUID, which no person is ever given (theirs are random, v4). Nobody
    /// can delete it; its events hold no personal field, so no key is ever made for it.
    pub const SYSTEM: Self = Self::from_uuid(Uuid::nil());

    /// Whether this is [`UserId::SYSTEM`].
    pub fn is_system(&self) -> bool {
        self.0.is_nil()
    }
}

uuid_id!(
    /// One decision of the recommender (one `Tip` aggregate).
    TipId
);
uuid_id!(
    /// A session (the token itself is never an id; only its hash is stored).
    SessionId
);

/// A client-chosen signal id: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignalId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signal id is 1 to 128 printable ASCII characters")]
pub struct InvalidSignalId;

impl SignalId {
    pub fn parse(s: &str) -> Result<Self, InvalidSignalId> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidSignalId);
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SignalId {
    type Error = InvalidSignalId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SignalId> for String {
    fn from(id: SignalId) -> String {
        id.0
    }
}

impl fmt::Display for SignalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 64 bits: a stable hash for routing and partitioning (streams to writers, users to
/// subjects, policy names to seeds). Not for anything an adversary chooses against.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_ids_are_bounded_printable_ascii() {
        assert!(SignalId::parse("s-1").is_ok());
        assert!(SignalId::parse("").is_err());
        assert!(SignalId::parse("has space").is_err());
        assert!(SignalId::parse(&"x".repeat(129)).is_err());
        assert!(SignalId::parse(&"x".repeat(128)).is_ok());
        assert!(SignalId::parse("é").is_err());
    }
}
