//! The rebuilds a server runs for `POST /admin/projections/{name}/rebuild`: one at a time, in
//! the order asked, each on a pool of connections of its own, so that however many an admin asks
//! for, the requests' pool keeps every connection it has (six rebuilds at once on the requests'
//! pool took twelve of its eight connections on two cores, and `GET /admin/projections` itself
//! answered 503). A rebuild is CPU-bound: running them side by side would not finish them sooner
//! on a small machine, only slow the requests down.

use oo_projections::Projection;
use oo_projections::status::Status;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections of the rebuild pool: a rebuild holds one for its advisory lock and takes one more
/// for each batch.
const CONNECTIONS: u32 = 2;

/// Where an asked-for rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the one before it to finish.
    Queued,
    Running,
}

pub struct Rebuilds {
    pool: PgPool,
    phases: Mutex<HashMap<String, Phase>>,
    turn: tokio::sync::Mutex<()>,
}

/// Why a rebuild was not started.
#[derive(Debug, thiserror::Error)]
pub enum RebuildRefused {
    #[error("{0} is already being rebuilt")]
    Running(String),
    #[error("the rebuild registry is poisoned")]
    Poisoned,
}

impl Rebuilds {
    /// No connection is opened until the first rebuild; they close once idle for a minute.
    pub fn new(database_url: &str) -> Result<Self, oo_commands::db::ConnectError> {
        Ok(Self {
            pool: oo_commands::db::connect_lazy(database_url, CONNECTIONS, Duration::from_secs(60))?,
            phases: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// What this server has queued or is running, by projection.
    pub fn phases(&self) -> HashMap<String, Phase> {
        self.phases.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Queues a rebuild of `projection`, refused while one of it is queued or running here.
    pub fn start(
        self: &Arc<Self>,
        projection: Arc<dyn Projection>,
        status: Status,
    ) -> Result<tokio::task::JoinHandle<()>, RebuildRefused> {
        let name = projection.name().to_owned();
        {
            let mut phases = self.phases.lock().map_err(|_| RebuildRefused::Poisoned)?;
            if phases.contains_key(&name) {
                return Err(RebuildRefused::Running(name));
            }
            phases.insert(name.clone(), Phase::Queued);
        }
        let this = self.clone();
        Ok(tokio::spawn(async move {
            {
                // Tokio's mutex is fair: rebuilds run in the order they were asked for.
                let _turn = this.turn.lock().await;
                if let Ok(mut phases) = this.phases.lock() {
                    phases.insert(name.clone(), Phase::Running);
                }
                match oo_projections::rebuild::rebuild(&this.pool, projection.as_ref(), &status, |_, _| {}).await {
                    Ok(r) => tracing::info!(
                        projection = %name,
                        events = r.events_applied,
                        events_per_second = r.events_per_second(),
                        "rebuilt"
                    ),
                    Err(e) => tracing::error!(projection = %name, error = %e, "rebuild failed"),
                }
            }
            if let Ok(mut phases) = this.phases.lock() {
                phases.remove(&name);
            }
        }))
    }
}
