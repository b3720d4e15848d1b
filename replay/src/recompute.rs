//! Decisions recomputed from the log alone: every `TipServed` logs which model state decided
//! (`model_rewards`, `prior_rewards`), and both states are folds of the log's rewards in order —
//! the person's model over their own, the population's sums over everyone's — exactly as the
//! `bandit` projection folds them. So the serving policy's and each shadow's distribution can be
//! computed again from the logged candidates, context, policy parameters and seed, and must come
//! out the same to the bit.

use oo_domain::bandit::{LinearModel, PooledSums};
use oo_domain::features::{CANDIDATE_DIM, CONTEXT_DIM, DIM, FEATURE_VERSION, joint};
use oo_domain::ids::fnv1a;
use oo_domain::policy::{Inputs, PolicySpecError, from_logged, mix};
use oo_domain::tip::{Decision, TipEvent};
use std::collections::HashMap;
use uuid::Uuid;

/// One logged decision and its distributions computed again.
#[derive(Debug, Clone)]
pub struct Recomputed {
    pub decision: Decision,
    /// The serving policy's distribution, computed again.
    pub serving: Vec<f64>,
    /// Each shadow's distribution, computed again, in the logged order.
    pub shadows: Vec<Vec<f64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecomputeError {
    #[error("decision {0} does not say which model state decided it")]
    Unidentified(String),
    #[error("decision {tip} names a model state the log never reached ({what})")]
    Unreached { tip: String, what: &'static str },
    #[error("decision {tip}: {source}")]
    Policy {
        tip: String,
        #[source]
        source: PolicySpecError,
    },
}

/// What the log has taught so far: each person's rewarded vectors and everyone's, in order.
#[derive(Default)]
struct Taught {
    /// Tips served with the current feature schema and not rewarded yet: whose, and the chosen
    /// joint vector.
    pending: HashMap<Uuid, (Uuid, Vec<f64>)>,
    people: HashMap<Uuid, Vec<(Vec<f64>, f64)>>,
    everyone: Vec<(Vec<f64>, f64)>,
    /// Priors already solved, by the number of rewards they were learned from.
    priors: HashMap<u64, Vec<f64>>,
}

impl Taught {
    fn model(&self, user: Uuid, rewards: u64) -> Option<LinearModel> {
        let mut model = LinearModel::new(DIM);
        let taught = self.people.get(&user).map_or(&[][..], Vec::as_slice);
        for (x, r) in taught.get(..rewards as usize)? {
            model.update(x, *r);
        }
        Some(model)
    }

    fn prior(&mut self, rewards: u64) -> Option<Vec<f64>> {
        if let Some(theta) = self.priors.get(&rewards) {
            return Some(theta.clone());
        }
        let mut sums = PooledSums::new(DIM);
        for (x, r) in self.everyone.get(..rewards as usize)? {
            sums.add(x, *r);
        }
        let theta = sums.theta();
        self.priors.insert(rewards, theta.clone());
        Some(theta)
    }
}

/// Recomputes every decision of `events` (the log's `TipServed`, `TipRewarded` and
/// `UserShredded` events in the global order, as `(user id, event)`).
pub fn recompute(events: impl IntoIterator<Item = (Uuid, TipOrShred)>) -> Result<Vec<Recomputed>, RecomputeError> {
    let mut taught = Taught::default();
    let mut out = Vec::new();
    for (user, event) in events {
        match event {
            TipOrShred::Shredded => {
                taught.people.remove(&user);
                taught.pending.retain(|_, (u, _)| *u != user);
            }
            TipOrShred::Tip(TipEvent::TipRewarded { tip_id, reward, .. }) => {
                if let Some((user, x)) = taught.pending.remove(&tip_id.as_uuid()) {
                    taught.people.entry(user).or_default().push((x.clone(), reward));
                    taught.everyone.push((x, reward));
                }
            }
            TipOrShred::Tip(TipEvent::TipServed(decision)) => {
                let decision = *decision;
                let tip = decision.tip_id.to_string();
                let (Some(model_rewards), Some(prior_rewards)) = (decision.model_rewards, decision.prior_rewards)
                else {
                    return Err(RecomputeError::Unidentified(tip));
                };
                let model = taught.model(user, model_rewards).ok_or(RecomputeError::Unreached {
                    tip: tip.clone(),
                    what: "the person's model",
                })?;
                let prior = taught.prior(prior_rewards).ok_or(RecomputeError::Unreached {
                    tip: tip.clone(),
                    what: "the population's prior",
                })?;
                let vectors: Vec<Vec<f64>> = decision
                    .candidates
                    .iter()
                    .map(|c| joint(&c.features, &decision.context))
                    .collect();
                let distribution = |name: &str, params, seed| {
                    from_logged(name, params)
                        .map(|p| {
                            p.distribution(&Inputs {
                                candidates: &vectors,
                                model: &model,
                                prior: &prior,
                                seed,
                            })
                            .probabilities
                        })
                        .map_err(|source| RecomputeError::Policy {
                            tip: tip.clone(),
                            source,
                        })
                };
                let serving = distribution(&decision.policy, &decision.params, decision.seed)?;
                let shadows = decision
                    .shadow
                    .iter()
                    .map(|s| distribution(&s.policy, &s.params, mix(decision.seed ^ fnv1a(s.policy.bytes()))))
                    .collect::<Result<_, _>>()?;
                // What the bandit learns from: the chosen candidate, if the schema is current.
                if let Some(chosen) = decision.candidates.get(decision.chosen)
                    && decision.feature_version == FEATURE_VERSION
                    && chosen.features.len() == CANDIDATE_DIM
                    && decision.context.len() == CONTEXT_DIM
                {
                    taught
                        .pending
                        .insert(decision.tip_id.as_uuid(), (user, vectors[decision.chosen].clone()));
                }
                out.push(Recomputed {
                    decision,
                    serving,
                    shadows,
                });
            }
            TipOrShred::Tip(TipEvent::TipReacted { .. }) => {}
        }
    }
    Ok(out)
}

/// The events [`recompute`] folds.
#[derive(Debug, Clone)]
pub enum TipOrShred {
    Tip(TipEvent),
    Shredded,
}
