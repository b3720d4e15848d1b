//! Positions in the global order of the log: the pair (writing transaction id, position),
//! handed to clients as an opaque string.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in the log's global order. `Cursor::START` is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub tx_id: u64,
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a position of this log")]
pub struct InvalidCursor;

impl Cursor {
    pub const START: Cursor = Cursor { tx_id: 0, position: 0 };

    /// The opaque form: `c` then 16 hex digits of the transaction id and 16 of the position.
    pub fn encode(&self) -> String {
        format!("c{:016x}{:016x}", self.tx_id, self.position as u64)
    }

    pub fn decode(s: &str) -> Result<Self, InvalidCursor> {
        let hex = s.strip_prefix('c').ok_or(InvalidCursor)?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidCursor);
        }
        let tx_id = u64::from_str_radix(&hex[..16], 16).map_err(|_| InvalidCursor)?;
        let position = u64::from_str_radix(&hex[16..], 16).map_err(|_| InvalidCursor)?;
        let position = i64::try_from(position).map_err(|_| InvalidCursor)?;
        Ok(Self { tx_id, position })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_like_the_log() {
        let a = Cursor {
            tx_id: 5,
            position: 900,
        };
        let b = Cursor { tx_id: 6, position: 10 };
        assert!(a < b, "a later transaction comes later even with a smaller position");
        assert_eq!(Cursor::decode(&a.encode()), Ok(a));
        assert_eq!(Cursor::decode(&Cursor::START.encode()), Ok(Cursor::START));
        for bad in [
            "",
            "c12",
            "x0000000000000005000000000000038400",
            "czz00000000000005000000000000038",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
