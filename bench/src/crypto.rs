//! `crypto`: the cost of sealing and opening one event's personal fields, and of wrapping a key.

use oo_commands::vault::MasterKey;
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

/// Sealing and opening one event's personal fields (the work every append and every read of a
/// personal field adds), and unwrapping a data key with age (once per user per process).
pub(crate) fn crypto(iterations: u32) {
    use oo_commands::sealing::{DataKey, Sealed, open, seal, split};
    let key = DataKey::generate();
    let event_id = Uuid::now_v7();
    let mut payload = json!({"SignalRecorded": {"data": {"kind": "task", "title": "Call the dentist about the crown", "project": "Health"}}});
    let fields = split(
        &mut payload,
        &[oo_domain::personal::TASK_TITLE, oo_domain::personal::TASK_PROJECT],
    );
    let started = Instant::now();
    let mut bytes = vec![];
    for _ in 0..iterations {
        bytes = seal(&key, event_id, &fields).map(|s| s.to_bytes()).unwrap_or_default();
    }
    let seal_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let started = Instant::now();
    let mut opened = 0usize;
    for _ in 0..iterations {
        if let Ok(s) = Sealed::from_bytes(&bytes) {
            opened += open(&key, event_id, &s).map(|m| m.len()).unwrap_or(0);
        }
    }
    let open_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let master = MasterKey::generate();
    let rounds = (iterations / 100).max(10);
    let started = Instant::now();
    let mut wrapped = vec![];
    for _ in 0..rounds {
        wrapped = master.wrap_key(&key).unwrap_or_default();
    }
    let wrap_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = master.unwrap_key(&wrapped);
    }
    let unwrap_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let _ = opened;
    println!("sealing two personal fields of one event (XChaCha20-Poly1305, {iterations} times):");
    println!(
        "  seal {seal_us:.2} µs, open {open_us:.2} µs, envelope {} bytes for {} bytes of fields",
        bytes.len(),
        serde_json::to_vec(&fields).map(|v| v.len()).unwrap_or(0)
    );
    println!(
        "a data key with age x25519 ({rounds} times): wrap {wrap_us:.0} µs, unwrap {unwrap_us:.0} µs ({} bytes wrapped)",
        wrapped.len()
    );
}
