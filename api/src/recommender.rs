//! The recommender behind `POST /recommend` (and `oo simulate`): gathers a person's candidates
//! (open todos, the advices that fit the moment, "not now"), builds their feature vectors from
//! the `features`, `tip_log` and `bandit` projections, lets the serving policy and the shadow
//! policies score them, draws the served one with a logged seed, and appends `TipServed`.
//!
//! The steps are split ([`Recommender::prepare`], [`Recommender::decide`], [`Recommender::serve`])
//! so that the simulator can run the same path with its own clock and seeds, and its oracle can
//! choose among exactly the candidates a policy would have seen.

use crate::error::{ApiError, command_error};
use chrono::{DateTime, TimeZone, Utc};
use oo_commands::aggregate::{Executed, Meta, Repository, open_fields};
use oo_commands::sealing::REDACTED;
use oo_commands::vault::Vault;
use oo_domain::advice::{self, Advice};
use oo_domain::bandit::{LinearModel, PooledSums};
use oo_domain::features::{
    CandidateSource, DIM, FEATURE_VERSION, REACTION_MIX_WINDOW, UserContext, candidate_vector, joint,
};
use oo_domain::ids::{TipId, UserId};
use oo_domain::policy::{Inputs, Policy, Scored, draw, mix};
use oo_domain::signal::{MoodScore, Place, Priority};
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, ShadowPick, Tip, TipCommand, TipError};
use sqlx::{PgPool, Row};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most todos considered per decision.
const MAX_TODOS: i64 = 50;

/// What the client says about the moment; overrides what oO has learned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub place: Option<Place>,
    pub mood: Option<MoodScore>,
    pub time_zone: Option<chrono_tz::Tz>,
}

/// Whom a decision is for.
#[derive(Debug, Clone, Copy)]
pub enum Person<'a> {
    /// A user already known (the simulator, or a request authenticated beforehand).
    Known(UserId),
    /// The holder of a session token, checked in the same query that reads the person
    /// ([`oo_commands::identity::SESSION_QUERY`]): one round trip instead of two.
    Session(&'a str),
}

/// What the recommender reads of a person, from `person` (a subquery naming `user_id`, with
/// parameters `$1` and `$2`). `$3` is the reaction-mix window, `$4` whether a model is read, `$5`
/// the feature version and `$6` the most todos.
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

static PERSON_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| person_query("SELECT $1::uuid AS user_id, $2::timestamptz AS asked_at"));
static PERSON_BY_SESSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| person_query(oo_commands::identity::SESSION_QUERY));

/// An open todo as a candidate.
#[derive(Debug, Clone)]
pub struct Todo {
    pub external_id: String,
    pub source: String,
    pub priority: Priority,
    pub due: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    title_event_id: Uuid,
    sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Candidate {
    Todo(Todo),
    Advice(&'static Advice),
    NotNow,
}

/// Everything a decision is made from.
pub struct Prepared {
    pub user_id: UserId,
    pub now: DateTime<Utc>,
    pub context: UserContext,
    pub candidates: Vec<Candidate>,
    pub logged: Vec<LoggedCandidate>,
    pub vectors: Vec<Vec<f64>>,
    /// The context's own features, logged once for all candidates.
    pub context_vector: Vec<f64>,
    pub model: Arc<LinearModel>,
}

/// The served decision.
pub struct Served {
    pub tip_id: TipId,
    pub kind: CandidateKind,
    pub title: String,
    pub body: String,
    pub source: String,
    pub deep_link: Option<String>,
    pub score: f64,
    pub propensity: f64,
    pub executed: Executed<Tip>,
}

/// The population's weights, read from the `bandit` projection and kept for `max_age`; one
/// request refreshes them at a time while the others go on with the previous weights.
struct PriorCache {
    max_age: Duration,
    current: Mutex<Option<(Instant, Arc<Vec<f64>>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

/// The model of a person nobody has learned anything about yet, shared.
static FRESH_MODEL: std::sync::LazyLock<Arc<LinearModel>> =
    std::sync::LazyLock::new(|| Arc::new(LinearModel::new(DIM)));

/// The prior when no policy uses one.
static NO_PRIOR: std::sync::LazyLock<Arc<Vec<f64>>> = std::sync::LazyLock::new(Arc::default);

/// The serving policy's decision and the shadow policies' picks.
pub struct Decided {
    pub scored: Scored,
    pub chosen: usize,
    pub seed: u64,
    pub shadow: Vec<ShadowPick>,
}

/// The people's models last read, each with its count of rewards (`n`): a model changes only
/// when a reward is learned, so a request that finds the same `n` in the projection reuses it
/// instead of reading the 51 KB row again. Bounded; cleared when full.
#[derive(Default)]
struct ModelCache {
    models: Mutex<std::collections::HashMap<Uuid, (i64, Arc<LinearModel>)>>,
}

/// How many people's models the cache keeps (about 51 KB each).
const MODEL_CACHE_CAPACITY: usize = 2_048;

/// The serving policy, the shadow policies and the prior they share.
pub struct Recommender {
    pub policy: Arc<dyn Policy>,
    pub shadows: Vec<Arc<dyn Policy>>,
    prior: PriorCache,
    models: ModelCache,
}

impl Recommender {
    pub fn new(policy: Arc<dyn Policy>, shadows: Vec<Arc<dyn Policy>>, prior_max_age: Duration) -> Self {
        Self {
            policy,
            shadows,
            prior: PriorCache {
                max_age: prior_max_age,
                current: Mutex::new(None),
                refreshing: tokio::sync::Mutex::new(()),
            },
            models: ModelCache::default(),
        }
    }

    fn learns(&self) -> bool {
        std::iter::once(&self.policy)
            .chain(&self.shadows)
            .any(|p| p.uses_model())
    }

    /// The population's weights (refreshed when older than the cache's age; empty when no
    /// policy uses them).
    pub async fn prior(&self, pool: &PgPool) -> Result<Arc<Vec<f64>>, ApiError> {
        if !self.learns() {
            return Ok(NO_PRIOR.clone());
        }
        let current = self.prior.current.lock().ok().and_then(|g| g.clone());
        match current {
            Some((at, theta)) if at.elapsed() < self.prior.max_age => Ok(theta),
            // Stale: one request refreshes, the others keep the previous weights meanwhile.
            Some((_, theta)) => match self.prior.refreshing.try_lock() {
                Ok(_guard) => self.refresh_prior(pool).await,
                Err(_) => Ok(theta),
            },
            None => {
                let _guard = self.prior.refreshing.lock().await;
                match self.prior.current.lock().ok().and_then(|g| g.clone()) {
                    Some((_, theta)) => Ok(theta),
                    None => self.refresh_prior(pool).await,
                }
            }
        }
    }

    /// Reads the population's sums again and solves for its weights.
    pub async fn refresh_prior(&self, pool: &PgPool) -> Result<Arc<Vec<f64>>, ApiError> {
        let mut conn = pool.acquire().await?;
        let sums: PooledSums = oo_projections::bandit::load_population(&mut conn).await?;
        let theta = Arc::new(sums.theta());
        if let Ok(mut guard) = self.prior.current.lock() {
            *guard = Some((Instant::now(), theta.clone()));
        }
        Ok(theta)
    }

    /// Reads what is known of the person and builds the candidates and their features. `None`
    /// when `person` is a session that is not (or no longer) valid.
    pub async fn prepare(
        &self,
        pool: &PgPool,
        person: Person<'_>,
        overrides: Overrides,
        now: DateTime<Utc>,
    ) -> Result<Option<Prepared>, ApiError> {
        // What is known of the person — features, the latest tips that showed something (today's
        // count and the recent reaction mix), their model's reward count and their open todos —
        // in one round trip, which for a session also checks it.
        let row = match person {
            Person::Known(user) => sqlx::query(&PERSON_BY_ID).bind(user.as_uuid()),
            Person::Session(token) => sqlx::query(&PERSON_BY_SESSION).bind(oo_commands::identity::hash_token(token)),
        }
        .bind(now)
        .bind(REACTION_MIX_WINDOW as i64)
        .bind(self.learns())
        .bind(FEATURE_VERSION as i32)
        .bind(MAX_TODOS)
        .fetch_optional(pool)
        .await?;
        let Some(person) = row else {
            return Ok(None);
        };
        let uid: Uuid = person.try_get("user_id")?;
        let user_id = UserId::from_uuid(uid);

        let mood: Option<i16> = person.try_get("latest_mood")?;
        let mood_at: Option<DateTime<Utc>> = person.try_get("latest_mood_at")?;
        let known_mood = mood.zip(mood_at).map(|(m, at)| (m as i8, at));
        let known_place = person.try_get::<Option<String>, _>("place")?;
        let known_tz = person.try_get::<Option<String>, _>("time_zone")?;
        let activity = person
            .try_get::<Option<Vec<i64>>, _>("activity_by_hour")?
            .unwrap_or_default();
        let served: Vec<DateTime<Utc>> = person.try_get::<Option<Vec<_>>, _>("served")?.unwrap_or_default();
        let settled: Vec<Option<f64>> = person.try_get::<Option<Vec<_>>, _>("rewards")?.unwrap_or_default();
        let model = match person.try_get::<Option<i64>, _>("n")? {
            Some(n) => self.model(pool, uid, n).await?,
            None => FRESH_MODEL.clone(),
        };
        let tz = overrides
            .time_zone
            .or_else(|| known_tz.as_deref().and_then(parse_time_zone));
        let local_time = match tz {
            Some(tz) => now.with_timezone(&tz).fixed_offset(),
            None => now.fixed_offset(),
        };
        let midnight = local_time
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|m| local_time.offset().from_local_datetime(&m).single())
            .map(|m| m.with_timezone(&Utc))
            .unwrap_or(now);
        let tips_today = served.iter().filter(|at| **at >= midnight && **at <= now).count() as u32;
        let rewards: Vec<f64> = settled.into_iter().flatten().collect();
        let context = UserContext {
            local_time,
            now,
            mood: overrides
                .mood
                .map(|m| m.get())
                .or_else(|| UserContext::fresh_mood(known_mood, now)),
            place: overrides
                .place
                .or_else(|| known_place.as_deref().and_then(|p| Place::parse(p).ok())),
            activity_now: UserContext::activity_share(&activity, now),
            reaction_mix: UserContext::mix_of(&rewards),
            tips_today,
        };

        // The todos' columns, each aggregated in whatever order the rows came; `k` is each row's
        // rank (priority, then due date, then age), by which they are put back in order.
        let rank: Vec<i64> = person.try_get::<Option<_>, _>("k")?.unwrap_or_default();
        let external_ids: Vec<String> = person.try_get::<Option<_>, _>("external_ids")?.unwrap_or_default();
        let sources: Vec<String> = person.try_get::<Option<_>, _>("sources")?.unwrap_or_default();
        let priorities: Vec<i16> = person.try_get::<Option<_>, _>("priorities")?.unwrap_or_default();
        let dues: Vec<Option<DateTime<Utc>>> = person.try_get::<Option<_>, _>("dues")?.unwrap_or_default();
        let first_seen: Vec<DateTime<Utc>> = person.try_get::<Option<_>, _>("first_seen")?.unwrap_or_default();
        let title_event_ids: Vec<Uuid> = person.try_get::<Option<_>, _>("title_event_ids")?.unwrap_or_default();
        let sealed: Vec<Option<Vec<u8>>> = person.try_get::<Option<_>, _>("sealed")?.unwrap_or_default();
        let todos = rank.len();
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
        .any(|n| *n != todos)
        {
            return Err(ApiError::internal(
                "open todos came back with columns of different lengths",
            ));
        }
        let mut ranked: Vec<(i64, Todo)> = Vec::with_capacity(todos);
        let columns = external_ids
            .into_iter()
            .zip(sources)
            .zip(priorities)
            .zip(dues)
            .zip(first_seen)
            .zip(title_event_ids)
            .zip(sealed)
            .zip(rank);
        for (((((((external_id, source), priority), due), first_seen_at), title_event_id), sealed), k) in columns {
            let todo = Todo {
                external_id,
                source,
                priority: Priority::parse(i64::from(priority)).map_err(ApiError::internal)?,
                due,
                first_seen_at,
                title_event_id,
                sealed,
            };
            ranked.push((k, todo));
        }
        ranked.sort_by_key(|(k, _)| *k);
        let mut candidates: Vec<Candidate> = Vec::with_capacity(todos + 20);
        candidates.extend(ranked.into_iter().map(|(_, t)| Candidate::Todo(t)));
        let (part, weekend) = (context.day_part(), context.is_weekend());
        candidates.extend(
            advice::library()
                .iter()
                .filter(|a| a.fits(part, weekend))
                .map(Candidate::Advice),
        );
        candidates.push(Candidate::NotNow);

        let logged: Vec<LoggedCandidate> = candidates
            .iter()
            .map(|c| {
                let (id, kind, source) = match c {
                    Candidate::Todo(t) => (
                        format!("todo:{}", t.external_id),
                        CandidateKind::Todo,
                        CandidateSource::Todo {
                            priority: t.priority,
                            due: t.due,
                            first_seen_at: t.first_seen_at,
                        },
                    ),
                    Candidate::Advice(a) => (
                        format!("advice:{}", a.id),
                        CandidateKind::Advice,
                        CandidateSource::Advice(a),
                    ),
                    Candidate::NotNow => ("not_now".to_owned(), CandidateKind::NotNow, CandidateSource::NotNow),
                };
                LoggedCandidate {
                    candidate_id: id,
                    kind,
                    features: candidate_vector(&source, &context).to_vec(),
                }
            })
            .collect();
        let context_vector = context.vector().to_vec();
        let vectors = logged.iter().map(|c| joint(&c.features, &context_vector)).collect();
        Ok(Some(Prepared {
            user_id,
            now,
            context,
            candidates,
            logged,
            vectors,
            context_vector,
            model,
        }))
    }

    /// The person's model with `n` rewards learned: from the cache, or read once.
    async fn model(&self, pool: &PgPool, user: Uuid, n: i64) -> Result<Arc<LinearModel>, ApiError> {
        if let Ok(cache) = self.models.models.lock()
            && let Some((cached_n, m)) = cache.get(&user)
            && *cached_n == n
        {
            return Ok(m.clone());
        }
        let mut conn = pool.acquire().await?;
        let m = Arc::new(oo_projections::bandit::load_user(&mut conn, user).await?);
        if let Ok(mut cache) = self.models.models.lock() {
            if cache.len() >= MODEL_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(user, (m.n as i64, m.clone()));
        }
        Ok(m)
    }

    /// What `policy` makes of the prepared candidates.
    fn score(policy: &dyn Policy, prepared: &Prepared, prior: &[f64], seed: u64) -> Scored {
        policy.distribution(&Inputs {
            candidates: &prepared.vectors,
            model: &prepared.model,
            prior,
            seed,
        })
    }

    /// The serving policy's distribution and the shadow policies' picks, with the served index.
    pub fn decide(&self, prepared: &Prepared, prior: &[f64], seed: u64) -> Decided {
        let scored = Self::score(self.policy.as_ref(), prepared, prior, seed);
        let chosen = draw(&scored.probabilities, seed);
        let shadows = self
            .shadows
            .iter()
            .map(|p| {
                // Each shadow draws with its own seed, derived from the decision's.
                let seed = mix(seed ^ oo_domain::ids::fnv1a(p.name().bytes()));
                let s = Self::score(p.as_ref(), prepared, prior, seed);
                let pick = draw(&s.probabilities, seed);
                ShadowPick {
                    policy: p.name().to_owned(),
                    policy_version: p.version().to_owned(),
                    chosen: pick,
                    propensity: s.probabilities[pick],
                    params: p.params(),
                }
            })
            .collect();
        Decided {
            scored,
            chosen,
            seed,
            shadow: shadows,
        }
    }

    /// Appends `TipServed` for the decision (durably) and says what to show.
    pub async fn serve(
        &self,
        prepared: Prepared,
        decided: Decided,
        tips: &Repository<Tip>,
        vault: &Vault,
    ) -> Result<Served, ApiError> {
        let Decided {
            scored,
            chosen,
            seed,
            shadow,
        } = decided;
        let policy = self.policy.as_ref();
        let Prepared {
            user_id,
            now,
            candidates,
            logged,
            context_vector,
            ..
        } = prepared;
        let (title, body, source, deep_link) = match &candidates[chosen] {
            Candidate::Todo(t) => {
                let key = vault.key_for(user_id).await?;
                let fields = open_fields(key.as_ref(), t.title_event_id, t.sealed.as_deref());
                let text = |p: &str| {
                    fields
                        .as_ref()
                        .and_then(|f| f.get(p))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                };
                let title = text("/SignalRecorded/data/title").unwrap_or_else(|| REDACTED.to_owned());
                let body = text("/SignalRecorded/data/project").unwrap_or_default();
                let link = (t.source == "todoist").then(|| format!("todoist://task?id={}", t.external_id));
                (title, body, t.source.clone(), link)
            }
            Candidate::Advice(a) => (a.title.clone(), a.body.clone(), "oo".to_owned(), None),
            Candidate::NotNow => (String::new(), String::new(), "oo".to_owned(), None),
        };
        let tip_id = TipId::from_uuid(Uuid::now_v7());
        let kind = logged[chosen].kind;
        let (score, propensity) = (scored.scores[chosen], scored.probabilities[chosen]);
        let decision = Decision {
            tip_id,
            user_id,
            served_at: now,
            candidates: logged,
            chosen,
            policy: policy.name().to_owned(),
            policy_version: policy.version().to_owned(),
            feature_version: FEATURE_VERSION,
            score,
            propensity,
            distribution: scored.probabilities,
            seed,
            shadow,
            title: title.clone(),
            body: body.clone(),
            params: policy.params(),
            context: context_vector,
        };
        let executed = tips
            .execute_new(
                &tip_id.to_string(),
                TipCommand::Serve(Box::new(decision)),
                Meta::new(now),
            )
            .await
            .map_err(|e| command_error(e, |d: TipError| ApiError::internal(d)))?;
        Ok(Served {
            tip_id,
            kind,
            title,
            body,
            source,
            deep_link,
            score,
            propensity,
            executed,
        })
    }
}

/// An IANA time zone name, if this build knows it.
pub(crate) fn parse_time_zone(s: &str) -> Option<chrono_tz::Tz> {
    s.parse::<chrono_tz::Tz>().ok()
}
