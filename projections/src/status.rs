//! What every projection is doing, for `/admin/projections`, `/ready` and read-your-writes.

use oo_commands::cursor::Cursor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    pub events_applied: u64,
    pub events_total: u64,
    pub started: Instant,
}

impl RebuildProgress {
    pub fn events_per_second(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.events_applied as f64 / secs
        } else {
            0.0
        }
    }
}

/// Shared, in-process view of the projectors. The durable truth is the `checkpoints` table.
#[derive(Debug, Clone, Default)]
pub struct Status {
    rebuilds: Arc<Mutex<HashMap<String, RebuildProgress>>>,
    checkpoints: Arc<Mutex<HashMap<String, Cursor>>>,
    progress: Arc<Notify>,
    /// Rung by a reader waiting for a position: the projector starts its next round at once
    /// instead of letting more commits accumulate.
    hurry: Arc<Notify>,
    relay_up: Arc<std::sync::atomic::AtomicBool>,
}

impl Status {
    pub fn rebuild(&self, name: &str) -> Option<RebuildProgress> {
        self.rebuilds.lock().ok().and_then(|m| m.get(name).copied())
    }

    pub(crate) fn set_rebuild(&self, name: &str, progress: Option<RebuildProgress>) {
        if let Ok(mut m) = self.rebuilds.lock() {
            match progress {
                Some(p) => {
                    m.insert(name.to_owned(), p);
                }
                None => {
                    m.remove(name);
                }
            }
        }
    }

    pub(crate) fn advanced(&self, name: &str, cursor: Cursor) {
        if let Ok(mut m) = self.checkpoints.lock() {
            m.insert(name.to_owned(), cursor);
        }
        self.progress.notify_waiters();
    }

    pub(crate) fn set_relay_up(&self, up: bool) {
        self.relay_up.store(up, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the relay is connected to NATS.
    pub fn relay_up(&self) -> bool {
        self.relay_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether every named projection of this process has committed past `target`.
    pub fn passed(&self, names: &[&str], target: Cursor) -> bool {
        self.checkpoints
            .lock()
            .map(|m| names.iter().all(|n| m.get(*n).is_some_and(|c| *c >= target)))
            .unwrap_or(false)
    }

    /// Asks this process's projector for a round now: someone waits for a position. (A permit is
    /// kept if the projector is busy, so the round after the current one starts at once.)
    pub fn hurry(&self) {
        self.hurry.notify_one();
    }

    pub(crate) fn hurried(&self) -> Arc<Notify> {
        self.hurry.clone()
    }

    /// Notified whenever a projector advances.
    pub fn progress(&self) -> Arc<Notify> {
        self.progress.clone()
    }
}
