//! `bandit`: what the linear bandits have learned — each person's ridge model (`A⁻¹`, `b`,
//! count) and the population's pooled sums, the prior of every person's model. The two
//! symmetric matrices, `A⁻¹` and `Σ x xᵀ`, are stored as their upper triangles, rewritten only
//! every [`USER_TAIL`] (per person) or [`POPULATION_TAIL`] rewards: the rewards in between wait
//! in `bandit_user_tail` and `bandit_population_tail` and are applied, in order, whenever a model
//! is read ([`load_user`], [`load_population`]).
//!
//! It learns only from `TipServed` (the chosen candidate's features and the context, kept in
//! `bandit_pending` until the reward settles: the two factors of the joint vector, 18 doubles
//! instead of its 80, see [`pending_bytes`]) and `TipRewarded` (the settled reward), in log
//! order, so a rebuild from the log gives the same state bit for bit: when the matrices are
//! rewritten depends on the count of rewards alone, not on how the log was split into batches.
//! Decisions logged with another feature version than [`FEATURE_VERSION`] are not learned from.
//! `UserShredded` purges the person's model, tail and pending tips; the population keeps its
//! sums and its tail, which hold no one's personal data (no user id; the log holds the same
//! vectors in clear) and which a rebuild computes the same way.

use crate::{ApplyError, Projection, decode_shared};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::bandit::{LinearModel, PooledSums, from_upper_triangle, upper_triangle};
use oo_domain::features::{CANDIDATE_DIM, CONTEXT_DIM, DIM, FEATURE_VERSION, joint};
use oo_domain::tip::TipEvent;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct Bandit;

impl Projection for Bandit {
    fn name(&self) -> &'static str {
        "bandit"
    }
    fn tables(&self) -> &'static [&'static str] {
        &[
            "bandit_pending",
            "bandit_users",
            "bandit_user_tail",
            "bandit_population",
            "bandit_population_tail",
        ]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["TipServed", "TipRewarded"])
    }
    fn user_tables(&self) -> &'static [&'static str] {
        &["bandit_pending", "bandit_users", "bandit_user_tail"]
    }
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(fold(conn, events))
    }
}

/// Rewards a person's stored `A⁻¹` and `b` may lag behind: they are rewritten when the person's
/// count of rewards reaches a multiple of this, and the rewards since wait in
/// `bandit_user_tail` (18 doubles and a reward each), applied in order whenever the model is
/// read. Rewriting the 26 KB triangle on every reward was most of the WAL under steady load.
pub const USER_TAIL: i64 = 32;

/// The same for the population's sums (`bandit_population_tail`), rewritten at every multiple of
/// this count of rewards instead of once per batch.
pub const POPULATION_TAIL: i64 = 128;

/// Reads one person's model (a fresh one when they have none yet): the stored matrices and the
/// rewards since, in one statement (one snapshot, whatever a fold commits meanwhile).
pub async fn load_user(conn: &mut PgConnection, user_id: Uuid) -> Result<LinearModel, sqlx::Error> {
    let row = sqlx::query(&format!("{USER_QUERY} WHERE u.user_id = $1 AND u.feature_version = $2"))
        .bind(user_id)
        .bind(FEATURE_VERSION as i32)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => {
            let (mut model, tail) = stored_user(&r)?;
            for (x, reward) in &tail {
                model.update(x, *reward);
            }
            model
        }
        None => LinearModel::new(DIM),
    })
}

/// A person's stored model and the rewards since (`dim`, `a_inv`, `b`, `folded`, `n`,
/// `tail_x`, `tail_r`).
const USER_QUERY: &str = "SELECT u.user_id, u.dim, u.a_inv, u.b, u.folded, u.n, \
     ARRAY(SELECT t.features FROM bandit_user_tail t WHERE t.user_id = u.user_id ORDER BY t.k) AS tail_x, \
     ARRAY(SELECT t.reward FROM bandit_user_tail t WHERE t.user_id = u.user_id ORDER BY t.k) AS tail_r \
     FROM bandit_users u";

/// The population's sums and the rewards since, in one statement.
const POPULATION_QUERY: &str = "SELECT p.dim, p.xx, p.xr, p.folded, p.n, \
     ARRAY(SELECT t.features FROM bandit_population_tail t WHERE t.feature_version = p.feature_version ORDER BY t.k) AS tail_x, \
     ARRAY(SELECT t.reward FROM bandit_population_tail t WHERE t.feature_version = p.feature_version ORDER BY t.k) AS tail_r \
     FROM bandit_population p WHERE p.feature_version = $1";

/// Reads the population's sums, the rewards waiting in its tail added (empty sums before any
/// reward).
pub async fn load_population(conn: &mut PgConnection) -> Result<PooledSums, sqlx::Error> {
    let Some((mut sums, tail)) = stored_population(conn).await? else {
        return Ok(PooledSums::new(DIM));
    };
    for (x, reward) in &tail {
        sums.add(x, *reward);
    }
    Ok(sums)
}

/// The population's stored sums (with `n` the count they hold) and the rewards of its tail.
async fn stored_population(conn: &mut PgConnection) -> Result<Option<(PooledSums, Tail)>, sqlx::Error> {
    let row = sqlx::query(POPULATION_QUERY)
        .bind(FEATURE_VERSION as i32)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let dim = r.try_get::<i32, _>("dim")? as usize;
    let folded: i64 = r.try_get("folded")?;
    let sums = PooledSums {
        dim,
        xx: symmetric(i64s(&r.try_get::<Vec<u8>, _>("xx")?), dim),
        xr: i64s(&r.try_get::<Vec<u8>, _>("xr")?),
        n: folded,
    };
    let tail = tail_of(&r, r.try_get::<i64, _>("n")? - folded)?;
    Ok(Some((sums, tail)))
}

/// Rewards waiting to be folded, in order: each joint vector and its reward.
type Tail = Vec<(Vec<f64>, f64)>;

/// The `tail_x` and `tail_r` arrays of a row, checked against the count they must hold.
fn tail_of(r: &sqlx::postgres::PgRow, expected: i64) -> Result<Tail, sqlx::Error> {
    let xs: Vec<Vec<u8>> = r.try_get("tail_x")?;
    let rewards: Vec<f64> = r.try_get("tail_r")?;
    if xs.len() as i64 != expected || rewards.len() != xs.len() {
        return Err(sqlx::Error::Decode(
            format!("a bandit tail of {} rewards where {expected} are counted", xs.len()).into(),
        ));
    }
    xs.iter()
        .zip(rewards)
        .map(|(bytes, reward)| {
            pending_vector(bytes)
                .map(|x| (x, reward))
                .ok_or_else(|| sqlx::Error::Decode(format!("a bandit tail vector of {} bytes", bytes.len()).into()))
        })
        .collect()
}

/// A person's stored model (with `n` the count it holds) and the rewards of their tail.
fn stored_user(r: &sqlx::postgres::PgRow) -> Result<(LinearModel, Tail), sqlx::Error> {
    let model = model_of(r)?;
    let n: i64 = r.try_get("n")?;
    let tail = tail_of(r, n - model.n as i64)?;
    Ok((model, tail))
}

fn model_of(r: &sqlx::postgres::PgRow) -> Result<LinearModel, sqlx::Error> {
    let dim = r.try_get::<i32, _>("dim")? as usize;
    Ok(LinearModel {
        dim,
        a_inv: symmetric(f64s(&r.try_get::<Vec<u8>, _>("a_inv")?), dim),
        b: f64s(&r.try_get::<Vec<u8>, _>("b")?),
        n: r.try_get::<i64, _>("folded")? as u64,
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
    // Features of rewarded tips served in earlier batches, as stored.
    let earlier: Vec<Uuid> = rewards
        .iter()
        .map(|r| r.0)
        .filter(|t| !served.contains_key(t))
        .collect();
    let mut pending: HashMap<Uuid, Vec<u8>> = HashMap::new();
    if !earlier.is_empty() {
        let rows = sqlx::query("SELECT tip_id, features FROM bandit_pending WHERE tip_id = ANY($1)")
            .bind(&earlier)
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            pending.insert(r.try_get("tip_id")?, r.try_get("features")?);
        }
    }
    // What each settled reward teaches, in log order.
    let mut learned: Vec<Learned> = Vec::new();
    let mut settled_here: HashSet<Uuid> = HashSet::new();
    let mut settled_earlier: Vec<Uuid> = Vec::new();
    for (tip, user, reward) in &rewards {
        let stored = match (served.get(tip), pending.get(tip)) {
            (Some(s), _) => {
                settled_here.insert(*tip);
                &s.stored
            }
            (None, Some(stored)) => {
                settled_earlier.push(*tip);
                stored
            }
            (None, None) => continue,
        };
        let Some(x) = pending_vector(stored) else { continue };
        learned.push(Learned {
            user: *user,
            stored: stored.clone(),
            x,
            reward: *reward,
        });
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
    learn_people(&mut *conn, &learned).await?;
    learn_population(conn, &learned).await?;
    Ok(())
}

/// A settled reward: whose, the chosen vector as `bandit_pending` keeps it, the joint vector,
/// and the reward.
struct Learned {
    user: Uuid,
    stored: Vec<u8>,
    x: Vec<f64>,
    reward: f64,
}

/// A person's model while a batch is folded: the stored matrices (with `n` the count they
/// hold), the rewards after them in order, and the count of all.
struct Person {
    model: LinearModel,
    tail: Tail,
    n: i64,
    stored: bool,
}

/// Teaches each person their rewards, in log order: the rewards join the person's tail, and the
/// stored matrices are rewritten only when the count crosses a multiple of [`USER_TAIL`]
/// (otherwise only the row's count changes, which leaves the out-of-line `a_inv` where it is).
async fn learn_people(conn: &mut PgConnection, learned: &[Learned]) -> Result<(), sqlx::Error> {
    let mut users: Vec<Uuid> = Vec::new();
    for l in learned {
        if !users.contains(&l.user) {
            users.push(l.user);
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    let mut people: HashMap<Uuid, Person> = HashMap::new();
    let rows = sqlx::query(&format!(
        "{USER_QUERY} WHERE u.user_id = ANY($1) AND u.feature_version = $2"
    ))
    .bind(&users)
    .bind(FEATURE_VERSION as i32)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let (model, tail) = stored_user(&r)?;
        let n = r.try_get("n")?;
        people.insert(
            r.try_get("user_id")?,
            Person {
                model,
                tail,
                n,
                stored: true,
            },
        );
    }
    // Each reward gets the next ordinal of its person.
    let mut added: Vec<(Uuid, i64, &Learned)> = Vec::with_capacity(learned.len());
    for l in learned {
        let p = people.entry(l.user).or_insert_with(|| Person {
            model: LinearModel::new(DIM),
            tail: Vec::new(),
            n: 0,
            stored: false,
        });
        p.n += 1;
        p.tail.push((l.x.clone(), l.reward));
        added.push((l.user, p.n, l));
    }
    let mut counts: (Vec<Uuid>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut folds: (Vec<Uuid>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut fresh: Vec<Uuid> = Vec::new();
    for user in &users {
        let Some(p) = people.get_mut(user) else { continue };
        let folded = p.model.n as i64;
        let target = p.n / USER_TAIL * USER_TAIL;
        if target > folded {
            for (x, reward) in p.tail.drain(..(target - folded) as usize) {
                p.model.update(&x, reward);
            }
            folds.0.push(*user);
            folds.1.push(target);
        }
        if !p.stored {
            fresh.push(*user);
        }
        if target > folded || !p.stored {
            let m = &p.model;
            sqlx::query(
                "INSERT INTO bandit_users (user_id, feature_version, dim, a_inv, b, folded, n) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id) DO UPDATE SET feature_version = EXCLUDED.feature_version, dim = EXCLUDED.dim, \
                 a_inv = EXCLUDED.a_inv, b = EXCLUDED.b, folded = EXCLUDED.folded, n = EXCLUDED.n",
            )
            .bind(user)
            .bind(FEATURE_VERSION as i32)
            .bind(m.dim as i32)
            .bind(f64_bytes(&upper_triangle(&m.a_inv, m.dim)))
            .bind(f64_bytes(&m.b))
            .bind(m.n as i64)
            .bind(p.n)
            .execute(&mut *conn)
            .await?;
        } else {
            counts.0.push(*user);
            counts.1.push(p.n);
        }
    }
    if !fresh.is_empty() {
        // What another feature version's model left behind.
        sqlx::query("DELETE FROM bandit_user_tail WHERE user_id = ANY($1)")
            .bind(&fresh)
            .execute(&mut *conn)
            .await?;
    }
    if !folds.0.is_empty() {
        sqlx::query(
            "DELETE FROM bandit_user_tail t USING UNNEST($1::uuid[], $2::bigint[]) AS f(user_id, k) \
             WHERE t.user_id = f.user_id AND t.k <= f.k",
        )
        .bind(&folds.0)
        .bind(&folds.1)
        .execute(&mut *conn)
        .await?;
    }
    let waiting: Vec<&(Uuid, i64, &Learned)> = added
        .iter()
        .filter(|(user, k, _)| people.get(user).is_some_and(|p| *k > p.model.n as i64))
        .collect();
    if !waiting.is_empty() {
        sqlx::query(
            "INSERT INTO bandit_user_tail (user_id, k, features, reward) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bytea[], $4::float8[])",
        )
        .bind(waiting.iter().map(|w| w.0).collect::<Vec<_>>())
        .bind(waiting.iter().map(|w| w.1).collect::<Vec<_>>())
        .bind(waiting.iter().map(|w| w.2.stored.clone()).collect::<Vec<_>>())
        .bind(waiting.iter().map(|w| w.2.reward).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !counts.0.is_empty() {
        sqlx::query(
            "UPDATE bandit_users u SET n = c.n FROM UNNEST($1::uuid[], $2::bigint[]) AS c(user_id, n) \
             WHERE u.user_id = c.user_id",
        )
        .bind(&counts.0)
        .bind(&counts.1)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds the rewards to the population's, in log order: they join its tail, and the stored sums
/// are rewritten only when the count crosses a multiple of [`POPULATION_TAIL`].
async fn learn_population(conn: &mut PgConnection, learned: &[Learned]) -> Result<(), sqlx::Error> {
    if learned.is_empty() {
        return Ok(());
    }
    let (mut sums, tail, stored) = match stored_population(&mut *conn).await? {
        Some((sums, tail)) => (sums, tail, true),
        None => (PooledSums::new(DIM), Vec::new(), false),
    };
    let folded = sums.n;
    let before = folded + tail.len() as i64;
    let total = before + learned.len() as i64;
    let target = total / POPULATION_TAIL * POPULATION_TAIL;
    if target > folded {
        let rewards = tail
            .iter()
            .map(|(x, reward)| (x.as_slice(), *reward))
            .chain(learned.iter().map(|l| (l.x.as_slice(), l.reward)));
        for (x, reward) in rewards.take((target - folded) as usize) {
            sums.add(x, reward);
        }
        sums.n = target;
        sqlx::query("DELETE FROM bandit_population_tail WHERE feature_version = $1 AND k <= $2")
            .bind(FEATURE_VERSION as i32)
            .bind(target)
            .execute(&mut *conn)
            .await?;
    }
    let waiting: Vec<(i64, &Learned)> = (before + 1..).zip(learned).filter(|(k, _)| *k > target).collect();
    if !waiting.is_empty() {
        sqlx::query(
            "INSERT INTO bandit_population_tail (feature_version, k, features, reward) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[], $4::float8[])",
        )
        .bind(FEATURE_VERSION as i32)
        .bind(waiting.iter().map(|w| w.0).collect::<Vec<_>>())
        .bind(waiting.iter().map(|w| w.1.stored.clone()).collect::<Vec<_>>())
        .bind(waiting.iter().map(|w| w.1.reward).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if target > folded || !stored {
        sqlx::query(
            "INSERT INTO bandit_population (feature_version, dim, xx, xr, folded, n) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (feature_version) DO UPDATE SET xx = EXCLUDED.xx, xr = EXCLUDED.xr, \
             folded = EXCLUDED.folded, n = EXCLUDED.n",
        )
        .bind(FEATURE_VERSION as i32)
        .bind(DIM as i32)
        .bind(i64_bytes(&upper_triangle(&sums.xx, sums.dim)))
        .bind(i64_bytes(&sums.xr))
        .bind(sums.n)
        .bind(total)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query("UPDATE bandit_population SET n = $2 WHERE feature_version = $1")
            .bind(FEATURE_VERSION as i32)
            .bind(total)
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
