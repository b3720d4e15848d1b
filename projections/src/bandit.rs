//! `bandit`: what the linear bandits have learned — each person's ridge model (`A⁻¹`, `b`,
//! count) and the population's pooled sums, the prior of every person's model. The two
//! symmetric matrices, `A⁻¹` and `Σ x xᵀ`, are stored as their upper triangles.
//!
//! It learns only from `TipServed` (the chosen candidate's features and the context, kept in
//! `bandit_pending` until the reward settles: the two factors of the joint vector, 18 doubles
//! instead of its 80, see [`pending_bytes`]) and `TipRewarded` (the settled reward), in log
//! order, so a rebuild from the log gives the same state bit for bit. Decisions logged with
//! another feature version than [`FEATURE_VERSION`] are not learned from. `UserShredded` purges
//! the person's model and pending tips; the population keeps its sums, which hold no one's
//! personal data and which a rebuild computes the same way.

use crate::{ApplyError, Projection, decode_shared};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::bandit::{LinearModel, PooledSums, from_upper_triangle, upper_triangle};
use oo_domain::features::{CANDIDATE_DIM, CONTEXT_DIM, DIM, FEATURE_VERSION, joint};
use oo_domain::tip::TipEvent;
use sqlx::{PgConnection, Row};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct Bandit;

impl Projection for Bandit {
    fn name(&self) -> &'static str {
        "bandit"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["bandit_pending", "bandit_users", "bandit_population"]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["TipServed", "TipRewarded"])
    }
    fn user_tables(&self) -> &'static [&'static str] {
        &["bandit_pending", "bandit_users"]
    }
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(fold(conn, events))
    }
}

/// Reads one person's model (a fresh one when they have none yet).
pub async fn load_user(conn: &mut PgConnection, user_id: Uuid) -> Result<LinearModel, sqlx::Error> {
    let row = sqlx::query("SELECT dim, a_inv, b, n FROM bandit_users WHERE user_id = $1 AND feature_version = $2")
        .bind(user_id)
        .bind(FEATURE_VERSION as i32)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => model_of(&r)?,
        None => LinearModel::new(DIM),
    })
}

/// Reads the population's sums (empty ones before any reward).
pub async fn load_population(conn: &mut PgConnection) -> Result<PooledSums, sqlx::Error> {
    let row = sqlx::query("SELECT dim, xx, xr, n FROM bandit_population WHERE feature_version = $1")
        .bind(FEATURE_VERSION as i32)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => {
            let dim = r.try_get::<i32, _>("dim")? as usize;
            PooledSums {
                dim,
                xx: symmetric(i64s(&r.try_get::<Vec<u8>, _>("xx")?), dim),
                xr: i64s(&r.try_get::<Vec<u8>, _>("xr")?),
                n: r.try_get("n")?,
            }
        }
        None => PooledSums::new(DIM),
    })
}

fn model_of(r: &sqlx::postgres::PgRow) -> Result<LinearModel, sqlx::Error> {
    let dim = r.try_get::<i32, _>("dim")? as usize;
    Ok(LinearModel {
        dim,
        a_inv: symmetric(f64s(&r.try_get::<Vec<u8>, _>("a_inv")?), dim),
        b: f64s(&r.try_get::<Vec<u8>, _>("b")?),
        n: r.try_get::<i64, _>("n")? as u64,
    })
}

/// A symmetric matrix as stored: its upper triangle (`upper_triangle`), half the bytes of the
/// whole, which a settled reward rewrites. A whole matrix, as earlier versions stored it, reads
/// as it is.
fn symmetric<T: Copy + Default>(stored: Vec<T>, dim: usize) -> Vec<T> {
    from_upper_triangle(&stored, dim).unwrap_or(stored)
}

/// Doubles as stored: little-endian bytes.
pub fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Doubles from their stored bytes (a trailing partial value is ignored).
pub fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// 64-bit integers as stored: little-endian bytes.
pub fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// 64-bit integers from their stored bytes.
pub fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// A pending tip's vector as stored: the chosen candidate's features, then the context's
/// (18 doubles), from which [`pending_vector`] rebuilds the joint vector with [`joint`], bit for
/// bit. Storing the joint vector itself (80 doubles) made this table a sixth of the WAL each
/// decision writes.
pub fn pending_bytes(candidate: &[f64], context: &[f64]) -> Vec<u8> {
    f64_bytes(&[candidate, context].concat())
}

/// The joint vector of a pending tip: from its two factors, or as stored whole by earlier
/// versions; `None` for any other length.
pub fn pending_vector(bytes: &[u8]) -> Option<Vec<f64>> {
    let values = f64s(bytes);
    match values.len() {
        n if n == CANDIDATE_DIM + CONTEXT_DIM => {
            let (candidate, context) = values.split_at(CANDIDATE_DIM);
            Some(joint(candidate, context))
        }
        DIM => Some(values),
        _ => None,
    }
}

/// A tip served in the batch being folded: whose, and the chosen vector as `bandit_pending`
/// keeps it ([`pending_bytes`]); only a tip settled in the same batch needs the joint vector.
struct Served {
    user: Uuid,
    stored: Vec<u8>,
}

/// Folds a run of events (with no `UserShredded` in it) and writes it.
async fn fold(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ApplyError> {
    // Tips served in this batch, and the rewards in log order.
    let mut served: HashMap<Uuid, Served> = HashMap::new();
    let mut served_order: Vec<Uuid> = Vec::new();
    let mut rewards: Vec<(Uuid, Uuid, f64)> = Vec::new();
    for event in events {
        match event.event_type.as_str() {
            "TipServed" => {
                let tip = decode_shared::<TipEvent>(event)?;
                let TipEvent::TipServed(d) = &*tip else {
                    continue;
                };
                let Some(chosen) = d.candidates.get(d.chosen) else {
                    continue;
                };
                if d.feature_version != FEATURE_VERSION
                    || chosen.features.len() != CANDIDATE_DIM
                    || d.context.len() != CONTEXT_DIM
                {
                    continue;
                }
                let tip = d.tip_id.as_uuid();
                served.insert(
                    tip,
                    Served {
                        user: event.user_id,
                        stored: pending_bytes(&chosen.features, &d.context),
                    },
                );
                served_order.push(tip);
            }
            "TipRewarded" => {
                if let TipEvent::TipRewarded { tip_id, reward, .. } = &*decode_shared::<TipEvent>(event)? {
                    rewards.push((tip_id.as_uuid(), event.user_id, *reward));
                }
            }
            _ => {}
        }
    }
    if served.is_empty() && rewards.is_empty() {
        return Ok(());
    }
    // Features of rewarded tips served in earlier batches.
    let earlier: Vec<Uuid> = rewards
        .iter()
        .map(|r| r.0)
        .filter(|t| !served.contains_key(t))
        .collect();
    let mut pending: HashMap<Uuid, Vec<f64>> = HashMap::new();
    if !earlier.is_empty() {
        let rows = sqlx::query("SELECT tip_id, features FROM bandit_pending WHERE tip_id = ANY($1)")
            .bind(&earlier)
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            if let Some(x) = pending_vector(&r.try_get::<Vec<u8>, _>("features")?) {
                pending.insert(r.try_get("tip_id")?, x);
            }
        }
    }
    // The models of the people rewarded in this batch.
    let mut users: Vec<Uuid> = Vec::new();
    for (tip, user, _) in &rewards {
        if (served.contains_key(tip) || pending.contains_key(tip)) && !users.contains(user) {
            users.push(*user);
        }
    }
    let mut models: HashMap<Uuid, LinearModel> = HashMap::new();
    if !users.is_empty() {
        let rows = sqlx::query(
            "SELECT user_id, dim, a_inv, b, n FROM bandit_users WHERE user_id = ANY($1) AND feature_version = $2",
        )
        .bind(&users)
        .bind(FEATURE_VERSION as i32)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            models.insert(r.try_get("user_id")?, model_of(&r)?);
        }
    }
    let mut population = PooledSums::new(DIM);
    let mut settled_here: HashSet<Uuid> = HashSet::new();
    let mut settled_earlier: Vec<Uuid> = Vec::new();
    for (tip, user, reward) in &rewards {
        let x: Cow<'_, [f64]> = match (served.get(tip), pending.get(tip)) {
            (Some(s), _) => {
                settled_here.insert(*tip);
                let Some(x) = pending_vector(&s.stored) else { continue };
                Cow::Owned(x)
            }
            (None, Some(x)) => {
                settled_earlier.push(*tip);
                Cow::Borrowed(x)
            }
            (None, None) => continue,
        };
        models
            .entry(*user)
            .or_insert_with(|| LinearModel::new(DIM))
            .update(&x, *reward);
        population.add(&x, *reward);
    }
    // Pending tips: the new ones still unsettled in, the settled earlier ones out.
    let unsettled: Vec<(&Uuid, &Served)> = served_order
        .iter()
        .filter(|t| !settled_here.contains(*t))
        .filter_map(|t| served.get(t).map(|s| (t, s)))
        .collect();
    if !unsettled.is_empty() {
        let mut insert = sqlx::QueryBuilder::new("INSERT INTO bandit_pending (tip_id, user_id, features) ");
        insert.push_values(&unsettled, |mut b, (tip, s)| {
            b.push_bind(**tip).push_bind(s.user).push_bind(s.stored.as_slice());
        });
        insert.push(" ON CONFLICT DO NOTHING");
        insert.build().execute(&mut *conn).await?;
    }
    if !settled_earlier.is_empty() {
        sqlx::query("DELETE FROM bandit_pending WHERE tip_id = ANY($1)")
            .bind(&settled_earlier)
            .execute(&mut *conn)
            .await?;
    }
    for user in users {
        let Some(m) = models.get(&user) else { continue };
        sqlx::query(
            "INSERT INTO bandit_users (user_id, feature_version, dim, a_inv, b, n) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET feature_version = EXCLUDED.feature_version, dim = EXCLUDED.dim, \
             a_inv = EXCLUDED.a_inv, b = EXCLUDED.b, n = EXCLUDED.n",
        )
        .bind(user)
        .bind(FEATURE_VERSION as i32)
        .bind(m.dim as i32)
        .bind(f64_bytes(&upper_triangle(&m.a_inv, m.dim)))
        .bind(f64_bytes(&m.b))
        .bind(m.n as i64)
        .execute(&mut *conn)
        .await?;
    }
    if population.n > 0 {
        let mut total = load_population(&mut *conn).await?;
        total.merge(&population);
        sqlx::query(
            "INSERT INTO bandit_population (feature_version, dim, xx, xr, n) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (feature_version) DO UPDATE SET xx = EXCLUDED.xx, xr = EXCLUDED.xr, n = EXCLUDED.n",
        )
        .bind(FEATURE_VERSION as i32)
        .bind(DIM as i32)
        .bind(i64_bytes(&upper_triangle(&total.xx, total.dim)))
        .bind(i64_bytes(&total.xr))
        .bind(total.n)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_vector_is_stored_as_its_factors_and_read_back_bit_for_bit() {
        let candidate: Vec<f64> = (0..CANDIDATE_DIM).map(|i| 0.1 * i as f64 + 1.0 / 3.0).collect();
        let context: Vec<f64> = (0..CONTEXT_DIM).map(|j| (j as f64).sin() - 0.7).collect();
        let stored = pending_bytes(&candidate, &context);
        assert_eq!(stored.len(), 8 * (CANDIDATE_DIM + CONTEXT_DIM));
        let read = pending_vector(&stored).expect("two factors");
        let direct = joint(&candidate, &context);
        assert_eq!(
            read.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            direct.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_matrix_reads_from_its_triangle_and_a_whole_one_as_it_is() {
        let mut m = LinearModel::new(3);
        m.update(&[1.0, 0.5, -0.25], 1.0);
        let stored = f64s(&f64_bytes(&upper_triangle(&m.a_inv, 3)));
        assert_eq!(stored.len(), 6);
        assert_eq!(symmetric(stored, 3), m.a_inv);
        let whole: Vec<f64> = (0..9).map(f64::from).collect();
        assert_eq!(
            symmetric(whole.clone(), 3),
            whole,
            "earlier rows: not symmetric, kept as stored"
        );
    }

    #[test]
    fn a_joint_vector_stored_whole_by_an_earlier_version_still_reads() {
        let whole: Vec<f64> = (0..DIM).map(|k| k as f64 / 7.0).collect();
        assert_eq!(pending_vector(&f64_bytes(&whole)), Some(whole));
        assert_eq!(
            pending_vector(&f64_bytes(&[1.0; 5])),
            None,
            "any other length is not learned from"
        );
    }
}
