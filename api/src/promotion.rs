//! The serving line-up of a running server and how it changes: read from the log at start (the
//! configuration is only the default before the first promotion), switched when the `policies`
//! projection reads a newer promotion (one made by another process), and promoted here through
//! the offline gate ([`promote`]), for `POST /admin/policies/promote` and `oo policy promote`.

use chrono::Utc;
use oo_commands::WriteSide;
use oo_commands::aggregate::{CommandError, Meta};
use oo_commands::store::read_latest_of_type;
use oo_domain::decision::Policies;
use oo_domain::policy::{PolicySpecError, canonical};
use oo_domain::promotion::{Evidence, Lineup, PolicyCommand, PolicyEvent, PromotionError, STREAM};
use oo_projections::deciding::DecisionReader;
use oo_replay::gate::{GateOptions, assess, window};
use sqlx::PgPool;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a server looks for a promotion made elsewhere.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The policies that serve now, with the reader they decide from (which reads the person's model
/// and the prior only when a policy of the line-up learns).
#[derive(Clone)]
pub struct Current {
    pub policies: Arc<Policies>,
    pub reader: Arc<DecisionReader>,
    /// The log position of the promotion that set them (`None`: the configured default).
    pub position: Option<i64>,
}

/// The line-up a server decides with, swapped whole when a promotion is read.
pub struct Serving {
    current: RwLock<Current>,
    prior_max_age: Duration,
}

impl Serving {
    fn new(policies: Policies, position: Option<i64>, prior_max_age: Duration) -> Self {
        Self {
            current: RwLock::new(Current {
                reader: Arc::new(DecisionReader::new(policies.learn(), prior_max_age)),
                policies: Arc::new(policies),
                position,
            }),
            prior_max_age,
        }
    }

    /// The line-up from the log's latest `PolicyPromoted`, or `configured` when there is none.
    pub async fn at_start(pool: &PgPool, configured: Policies, prior_max_age: Duration) -> anyhow::Result<Self> {
        use anyhow::Context;
        match latest_promotion(pool).await? {
            Some((position, lineup)) => {
                let policies = Policies::from_lineup(&lineup)
                    .with_context(|| format!("the log's serving line-up {lineup:?} does not parse"))?;
                if policies.lineup() != configured.lineup() {
                    tracing::info!(
                        serving = %lineup.serving,
                        shadows = %lineup.shadows.join("; "),
                        "serving the line-up of the log's latest promotion, not OO_POLICY/OO_SHADOW_POLICIES"
                    );
                }
                Ok(Self::new(policies, Some(position), prior_max_age))
            }
            None => Ok(Self::new(configured, None, prior_max_age)),
        }
    }

    pub fn current(&self) -> Current {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `lineup`, set by the promotion at `position`, unless a later one already serves.
    /// Returns whether it switched.
    pub fn switch(&self, lineup: &Lineup, position: i64) -> Result<bool, PolicySpecError> {
        let policies = Policies::from_lineup(lineup)?;
        let mut current = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.position.is_some_and(|p| p >= position) {
            return Ok(false);
        }
        *current = Current {
            reader: Arc::new(DecisionReader::new(policies.learn(), self.prior_max_age)),
            policies: Arc::new(policies),
            position: Some(position),
        };
        tracing::info!(serving = %lineup.serving, position, "serving a promoted policy");
        Ok(true)
    }
}

/// The latest `PolicyPromoted` of the log: its position and the line-up it left.
async fn latest_promotion(pool: &PgPool) -> Result<Option<(i64, Lineup)>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(event) = read_latest_of_type(&mut conn, "PolicyPromoted", None, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let promoted: PolicyEvent = event.decode().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some((event.cursor.position, promoted.lineup())))
}

/// The line-up the log holds, or `configured` before the first promotion (for `oo policy`).
pub async fn lineup_of_log(pool: &PgPool, configured: &Policies) -> Result<Lineup, sqlx::Error> {
    Ok(match latest_promotion(pool).await? {
        Some((_, lineup)) => lineup,
        None => configured.lineup(),
    })
}

/// Switches `serving` whenever the `policies` projection shows a newer promotion, until
/// `shutdown`.
pub async fn follow(serving: Arc<Serving>, pool: PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match oo_projections::policies::latest(&pool).await {
            Ok(Some(p)) => {
                if let Err(e) = serving.switch(&p.lineup, p.position) {
                    tracing::error!(error = %e, serving = %p.lineup.serving, "a promoted line-up does not parse");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the promotions"),
        }
    }
}

/// A promotion that was logged.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub lineup: Lineup,
    pub replaced: String,
    pub evidence: Evidence,
    pub forced: bool,
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{0}")]
    InvalidSpec(#[from] PolicySpecError),
    #[error("{spec} is not one of the shadow policies ({shadows}); only a logged shadow can be promoted")]
    NotAShadow { spec: String, shadows: String },
    #[error("{0} serves already")]
    AlreadyServing(String),
    #[error("the offline gate refuses {spec}: {}", .evidence.refusals.join("; "))]
    Refused { spec: String, evidence: Box<Evidence> },
    #[error("the line-up changed meanwhile: {0} serves now; evaluate again")]
    LineupChanged(String),
    #[error("cannot read the log")]
    Read(#[from] oo_replay::export::ExportError),
    #[error(transparent)]
    Command(CommandError<PromotionError>),
}

/// Promotes the shadow `spec` of `current` if the gate lets it (or `force`), and logs the
/// promotion with its evidence. The gate reads the log: run it off the async runtime's
/// request path only as an admin action.
pub async fn promote(
    write: &WriteSide,
    pool: &PgPool,
    current: &Lineup,
    spec: &str,
    force: bool,
    options: &GateOptions,
) -> Result<Promoted, PromoteError> {
    let spec = canonical(spec)?;
    if spec == current.serving {
        return Err(PromoteError::AlreadyServing(spec));
    }
    if !current.shadows.contains(&spec) {
        return Err(PromoteError::NotAShadow {
            spec,
            shadows: current.shadows.join("; "),
        });
    }
    let decisions = window(pool, &current.serving, &spec, options.window).await?;
    let options = *options;
    let (serving, candidate) = (current.serving.clone(), spec.clone());
    let evidence = tokio::task::spawn_blocking(move || assess(&decisions, &serving, &candidate, &options))
        .await
        .map_err(|e| PromoteError::Command(CommandError::Corrupt(e.to_string())))?;
    if !force && !evidence.passes() {
        return Err(PromoteError::Refused {
            spec,
            evidence: Box::new(evidence),
        });
    }
    let command = PolicyCommand::Promote {
        spec: spec.clone(),
        current: current.clone(),
        evidence: evidence.clone(),
        force,
        at: Utc::now(),
    };
    let executed = write
        .policies
        .execute(STREAM, command, Meta::new(Utc::now()))
        .await
        .map_err(|e| match e {
            CommandError::Domain(PromotionError::LineupChanged(now)) => PromoteError::LineupChanged(now),
            CommandError::Domain(PromotionError::AlreadyServing(s)) => PromoteError::AlreadyServing(s),
            other => PromoteError::Command(other),
        })?;
    let lineup = current.promoting(&spec);
    Ok(Promoted {
        lineup,
        replaced: current.serving.clone(),
        evidence,
        forced: force,
        position: executed.cursor.map(|c| c.position),
    })
}

/// The line-up over the latest settled decisions: what `GET /admin/policies` and `oo policy
/// show` report.
pub struct Overview {
    /// How many settled decisions the figures are over.
    pub decisions: usize,
    /// The serving policy first, then each shadow.
    pub recent: Vec<oo_replay::gate::Recent>,
    pub last_promotion: Option<oo_projections::policies::Promotion>,
}

/// Each policy of `lineup` over the latest `window` settled decisions, and the last promotion.
pub async fn overview(pool: &PgPool, lineup: &Lineup, window: usize) -> anyhow::Result<Overview> {
    let decisions = oo_replay::export::latest_settled(pool, window.max(1), |_| true).await?;
    Ok(Overview {
        decisions: decisions.len(),
        recent: oo_replay::gate::recent(&decisions, lineup),
        last_promotion: oo_projections::policies::latest(pool).await?,
    })
}
