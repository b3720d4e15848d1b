//! The read models a decision needs, typed: what is known of a person (their features, their
//! latest tips, their open todos, their model) as [`oo_domain::decision::Prepared`], and the
//! population's prior. Read from the `user_features`, `tip_log`, `open_tasks`, `bandit_users`
//! and `bandit_population` tables (with the bandit's tails: [`crate::bandit`]); the person's
//! model and the prior are cached, since they change only when a reward is learned.

use crate::bandit::{load_population, load_user};
use chrono::{DateTime, Utc};
use oo_domain::bandit::{LinearModel, PooledSums};
use oo_domain::decision::{Known, MAX_TODOS, Overrides, Prepared, Prior, SealedText, Todo};
use oo_domain::features::{DIM, FEATURE_VERSION, REACTION_MIX_WINDOW};
use oo_domain::ids::UserId;
use oo_domain::signal::Priority;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Whom a decision is for.
#[derive(Debug, Clone, Copy)]
pub enum Person<'a> {
    /// A user already known (the simulator, or a request authenticated beforehand).
    Known(UserId),
    /// The holder of a session token, checked in the same query that reads the person
    /// ([`oo_commands::identity::SESSION_QUERY`]): one round trip instead of two.
    Session(&'a str),
}

/// What is read of a person, from `person` (a subquery naming `user_id`, with parameters `$1`
/// and `$2`). `$3` is the reaction-mix window, `$4` whether a model is read, `$5` the feature
/// version and `$6` the most todos.
fn person_query(person: &str) -> String {
    format!(
        "SELECT u.user_id, f.latest_mood, f.latest_mood_at, f.place, f.time_zone, f.activity_by_hour, \
                t.served, t.rewards, b.n, \
                o.k, o.external_ids, o.sources, o.priorities, o.dues, o.first_seen, o.title_event_ids, o.sealed \
         FROM ({person}) u \
         LEFT JOIN user_features f ON f.user_id = u.user_id \
         LEFT JOIN bandit_users b ON $4 AND b.user_id = u.user_id AND b.feature_version = $5 \
         CROSS JOIN LATERAL ( \
             SELECT array_agg(x.served_at ORDER BY x.served_at DESC) AS served, \
                    array_agg(x.reward ORDER BY x.served_at DESC) AS rewards \
             FROM (SELECT served_at, reward FROM tip_log WHERE user_id = u.user_id AND chosen_kind <> 'not_now' \
                   ORDER BY served_at DESC LIMIT $3) x) t \
         CROSS JOIN LATERAL ( \
             SELECT array_agg(y.k) AS k, array_agg(y.external_id) AS external_ids, array_agg(y.source) AS sources, \
                    array_agg(y.priority) AS priorities, array_agg(y.due) AS dues, array_agg(y.first_seen_at) AS first_seen, \
                    array_agg(y.title_event_id) AS title_event_ids, array_agg(y.sealed) AS sealed \
             FROM (SELECT external_id, source, priority, due, first_seen_at, title_event_id, sealed, \
                          row_number() OVER (ORDER BY priority DESC, due ASC NULLS LAST, first_seen_at, external_id) AS k \
                   FROM open_tasks WHERE user_id = u.user_id ORDER BY k LIMIT $6) y) o"
    )
}

static PERSON_BY_ID: LazyLock<String> =
    LazyLock::new(|| person_query("SELECT $1::uuid AS user_id, $2::timestamptz AS asked_at"));
static PERSON_BY_SESSION: LazyLock<String> = LazyLock::new(|| person_query(oo_commands::identity::SESSION_QUERY));

/// The model of a person nobody has learned anything about yet, shared.
static FRESH_MODEL: LazyLock<Arc<LinearModel>> = LazyLock::new(|| Arc::new(LinearModel::new(DIM)));

/// The prior when no policy uses one.
static NO_PRIOR: LazyLock<Arc<Prior>> = LazyLock::new(Arc::default);

/// How many people's models the cache keeps (about 51 KB each).
const MODEL_CACHE_CAPACITY: usize = 2_048;

/// A stored value that does not parse: the read fails rather than guess.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Corrupt(String);

fn corrupt(what: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(Corrupt(what.into())))
}

/// Reads what deciding needs. The population's weights are kept for `prior_max_age` (one
/// caller refreshes them at a time while the others go on with the previous weights); each
/// person's model is kept with its count of rewards `n`, so a read that finds the same `n` in
/// the projection reuses it instead of reading the 51 KB row again (bounded; cleared when full).
pub struct DecisionReader {
    learns: bool,
    prior_max_age: Duration,
    prior: Mutex<Option<(Instant, Arc<Prior>)>>,
    refreshing: tokio::sync::Mutex<()>,
    models: Mutex<std::collections::HashMap<Uuid, (i64, Arc<LinearModel>)>>,
}

impl DecisionReader {
    /// `learns`: whether any policy reads the person's model and the prior (without, neither is
    /// read).
    pub fn new(learns: bool, prior_max_age: Duration) -> Self {
        Self {
            learns,
            prior_max_age,
            prior: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            models: Mutex::default(),
        }
    }

    /// The population's weights (refreshed when older than the cache's age; empty when no
    /// policy uses them).
    pub async fn prior(&self, pool: &PgPool) -> Result<Arc<Prior>, sqlx::Error> {
        if !self.learns {
            return Ok(NO_PRIOR.clone());
        }
        let current = self.prior.lock().ok().and_then(|g| g.clone());
        match current {
            Some((at, theta)) if at.elapsed() < self.prior_max_age => Ok(theta),
            // Stale: one caller refreshes, the others keep the previous weights meanwhile.
            Some((_, theta)) => match self.refreshing.try_lock() {
                Ok(_guard) => self.refresh_prior(pool).await,
                Err(_) => Ok(theta),
            },
            None => {
                let _guard = self.refreshing.lock().await;
                match self.prior.lock().ok().and_then(|g| g.clone()) {
                    Some((_, theta)) => Ok(theta),
                    None => self.refresh_prior(pool).await,
                }
            }
        }
    }

    /// Reads the population's sums again and solves for its weights.
    pub async fn refresh_prior(&self, pool: &PgPool) -> Result<Arc<Prior>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let sums: PooledSums = load_population(&mut conn).await?;
        let theta = Arc::new(Prior {
            theta: sums.theta(),
            rewards: sums.n.max(0) as u64,
        });
        if let Ok(mut guard) = self.prior.lock() {
            *guard = Some((Instant::now(), theta.clone()));
        }
        Ok(theta)
    }

    /// What is known of the person, as candidates with their features at `now`. `None` when
    /// `person` is a session that is not (or no longer) valid.
    pub async fn prepare(
        &self,
        pool: &PgPool,
        person: Person<'_>,
        overrides: Overrides,
        now: DateTime<Utc>,
    ) -> Result<Option<Prepared>, sqlx::Error> {
        // Features, the latest tips that showed something (today's count and the recent
        // reaction mix), the model's reward count and the open todos, in one round trip, which
        // for a session also checks it.
        let row = match person {
            Person::Known(user) => sqlx::query(&PERSON_BY_ID).bind(user.as_uuid()),
            Person::Session(token) => sqlx::query(&PERSON_BY_SESSION).bind(oo_commands::identity::hash_token(token)),
        }
        .bind(now)
        .bind(REACTION_MIX_WINDOW as i64)
        .bind(self.learns)
        .bind(FEATURE_VERSION as i32)
        .bind(MAX_TODOS as i64)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let uid: Uuid = row.try_get("user_id")?;
        let model = match row.try_get::<Option<i64>, _>("n")? {
            Some(n) => self.model(pool, uid, n).await?,
            None => FRESH_MODEL.clone(),
        };
        let known = known(&row)?;
        Ok(Some(Prepared::new(
            UserId::from_uuid(uid),
            known,
            overrides,
            now,
            model,
        )))
    }

    /// The person's model with `n` rewards learned: from the cache, or read once.
    async fn model(&self, pool: &PgPool, user: Uuid, n: i64) -> Result<Arc<LinearModel>, sqlx::Error> {
        if let Ok(cache) = self.models.lock()
            && let Some((cached_n, m)) = cache.get(&user)
            && *cached_n == n
        {
            return Ok(m.clone());
        }
        let mut conn = pool.acquire().await?;
        let m = Arc::new(load_user(&mut conn, user).await?);
        if let Ok(mut cache) = self.models.lock() {
            if cache.len() >= MODEL_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(user, (m.n as i64, m.clone()));
        }
        Ok(m)
    }
}

/// The person's row as typed values.
fn known(row: &PgRow) -> Result<Known, sqlx::Error> {
    let mood: Option<i16> = row.try_get("latest_mood")?;
    let mood_at: Option<DateTime<Utc>> = row.try_get("latest_mood_at")?;
    let mood = match mood.zip(mood_at) {
        Some((m, at)) => Some((i8::try_from(m).map_err(|_| corrupt(format!("a mood of {m}")))?, at)),
        None => None,
    };
    Ok(Known {
        mood,
        place: row.try_get("place")?,
        time_zone: row.try_get("time_zone")?,
        activity_by_hour: row
            .try_get::<Option<Vec<i64>>, _>("activity_by_hour")?
            .unwrap_or_default(),
        served: row.try_get::<Option<Vec<_>>, _>("served")?.unwrap_or_default(),
        rewards: row.try_get::<Option<Vec<_>>, _>("rewards")?.unwrap_or_default(),
        todos: todos(row)?,
    })
}

/// The open todos, best first. Each column is aggregated in whatever order the rows came;
/// `k` is each row's rank (priority, then due date, then age), by which they are put back in
/// order.
fn todos(row: &PgRow) -> Result<Vec<Todo>, sqlx::Error> {
    fn column<T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &PgRow,
        name: &str,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        Vec<T>: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        Ok(row.try_get::<Option<Vec<T>>, _>(name)?.unwrap_or_default())
    }
    let rank: Vec<i64> = column(row, "k")?;
    let external_ids: Vec<String> = column(row, "external_ids")?;
    let sources: Vec<String> = column(row, "sources")?;
    let priorities: Vec<i16> = column(row, "priorities")?;
    let dues: Vec<Option<DateTime<Utc>>> = column(row, "dues")?;
    let first_seen: Vec<DateTime<Utc>> = column(row, "first_seen")?;
    let title_event_ids: Vec<Uuid> = column(row, "title_event_ids")?;
    let sealed: Vec<Option<Vec<u8>>> = column(row, "sealed")?;
    let n = rank.len();
    if [
        external_ids.len(),
        sources.len(),
        priorities.len(),
        dues.len(),
        first_seen.len(),
        title_event_ids.len(),
        sealed.len(),
    ]
    .iter()
    .any(|len| *len != n)
    {
        return Err(corrupt("open todos came back with columns of different lengths"));
    }
    let mut ranked: Vec<(i64, Todo)> = Vec::with_capacity(n);
    let columns = external_ids
        .into_iter()
        .zip(sources)
        .zip(priorities)
        .zip(dues)
        .zip(first_seen)
        .zip(title_event_ids)
        .zip(sealed)
        .zip(rank);
    for (((((((external_id, source), priority), due), first_seen_at), event_id), envelope), k) in columns {
        let todo = Todo {
            external_id,
            source,
            priority: Priority::parse(i64::from(priority)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            due,
            first_seen_at,
            text: SealedText { event_id, envelope },
        };
        ranked.push((k, todo));
    }
    ranked.sort_by_key(|(k, _)| *k);
    Ok(ranked.into_iter().map(|(_, t)| t).collect())
}
