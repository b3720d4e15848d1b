//! Sealing personal fields: the personal fields of one event travel together in one AEAD
//! envelope (XChaCha20-Poly1305 under the user's data key). The associated data binds the
//! envelope to its event id, and the field names travel inside the authenticated plaintext (each
//! value next to the JSON pointer it belongs at), so a sealed value cannot be moved to another
//! event or field unnoticed. The public payload keeps the placeholder [`SEALED`] in their place.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use oo_domain::personal::{REDACTED, SEALED};
use rand::RngCore;
use serde_json::{Map, Value};
use uuid::Uuid;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// A user's 256-bit data key.
#[derive(Clone)]
pub struct DataKey {
    pub key_id: Uuid,
    key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self {
            key_id: Uuid::new_v4(),
            key,
        }
    }
    pub fn from_parts(key_id: Uuid, key: [u8; 32]) -> Self {
        Self { key_id, key }
    }
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// A sealed envelope: key id, nonce, ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Uuid,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed bytes are malformed")]
    Malformed,
    #[error("the envelope was sealed under another key")]
    WrongKey,
    #[error("the envelope does not open: tampered, moved or wrong key")]
    Open,
    #[error("encryption failed")]
    Seal,
}

impl Sealed {
    /// Storage form: format byte, key id (16), nonce (24), ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 16 + NONCE_LEN + self.ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, SealError> {
        if b.len() < 1 + 16 + NONCE_LEN + 16 || b[0] != FORMAT_V1 {
            return Err(SealError::Malformed);
        }
        let key_id = Uuid::from_slice(&b[1..17]).map_err(|_| SealError::Malformed)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[17..17 + NONCE_LEN]);
        Ok(Self {
            key_id,
            nonce,
            ciphertext: b[17 + NONCE_LEN..].to_vec(),
        })
    }
}

fn associated_data(event_id: Uuid) -> Vec<u8> {
    let mut ad = b"oo.sealed.v1\0".to_vec();
    ad.extend_from_slice(event_id.as_bytes());
    ad
}

/// Seals `fields` (JSON pointer → value) of event `event_id`.
pub fn seal(key: &DataKey, event_id: Uuid, fields: &Map<String, Value>) -> Result<Sealed, SealError> {
    let plaintext = serde_json::to_vec(fields).map_err(|_| SealError::Seal)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new((&key.key).into());
    let ad = associated_data(event_id);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &ad,
            },
        )
        .map_err(|_| SealError::Seal)?;
    Ok(Sealed {
        key_id: key.key_id,
        nonce,
        ciphertext,
    })
}

/// Opens an envelope sealed by [`seal`] for `event_id`: the fields by JSON pointer.
pub fn open(key: &DataKey, event_id: Uuid, sealed: &Sealed) -> Result<Map<String, Value>, SealError> {
    if sealed.key_id != key.key_id {
        return Err(SealError::WrongKey);
    }
    let cipher = XChaCha20Poly1305::new((&key.key).into());
    let ad = associated_data(event_id);
    let plaintext = cipher
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &ad,
            },
        )
        .map_err(|_| SealError::Open)?;
    serde_json::from_slice(&plaintext).map_err(|_| SealError::Malformed)
}

/// Takes the personal fields out of a serialised event: returns them (pointer → value; only
/// those present and not null) and leaves [`SEALED`] in their place.
pub fn split(payload: &mut Value, pointers: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for p in pointers {
        if let Some(v) = payload.pointer_mut(p)
            && !v.is_null()
        {
            out.insert((*p).to_owned(), std::mem::replace(v, Value::String(SEALED.to_owned())));
        }
    }
    out
}

/// Puts personal fields back into a public payload; with `None` (key destroyed) every sealed
/// placeholder becomes [`REDACTED`].
pub fn join(payload: &mut Value, pointers: &[&str], fields: Option<&Map<String, Value>>) {
    for p in pointers {
        if let Some(slot) = payload.pointer_mut(p) {
            if slot.as_str() != Some(SEALED) {
                continue;
            }
            *slot = match fields.and_then(|f| f.get(*p)) {
                Some(v) => v.clone(),
                None => Value::String(REDACTED.to_owned()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_fields_round_trip_and_are_bound_to_their_event() {
        let key = DataKey::generate();
        let event_id = Uuid::now_v7();
        let mut payload = json!({"E": {"title": "call mum", "note": null, "priority": 3}});
        let ptrs = ["/E/title", "/E/note"];
        let fields = split(&mut payload, &ptrs);
        assert_eq!(payload, json!({"E": {"title": SEALED, "note": null, "priority": 3}}));
        let sealed = seal(&key, event_id, &fields).expect("seals");
        let bytes = sealed.to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("call mum"));
        let sealed = Sealed::from_bytes(&bytes).expect("parses");
        let opened = open(&key, event_id, &sealed).expect("opens");
        assert_eq!(opened, fields);
        let mut back = payload.clone();
        join(&mut back, &ptrs, Some(&opened));
        assert_eq!(back, json!({"E": {"title": "call mum", "note": null, "priority": 3}}));

        assert!(open(&key, Uuid::now_v7(), &sealed).is_err(), "moved to another event");
        assert!(open(&DataKey::generate(), event_id, &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(open(&key, event_id, &tampered).is_err(), "tampered");

        let mut redacted = payload;
        join(&mut redacted, &ptrs, None);
        assert_eq!(redacted, json!({"E": {"title": REDACTED, "note": null, "priority": 3}}));
    }
}
