//! The learning recommender end to end: what `TipServed` logs, learning visible through
//! `min_position`, the bandit rebuilt bit for bit, the reward join settling each tip exactly
//! once, and the simulator learning and reproducing itself.

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use oo_commands::aggregate::{Meta, Repository};
use oo_commands::store::EventStore;
use oo_commands::vault::Vault;
use oo_domain::features::{CANDIDATE_DIM, CONTEXT_DIM, FEATURE_VERSION};
use oo_domain::ids::{SignalId, TipId, UserId};
use oo_domain::reward::Reaction;
use oo_domain::signal::{ExternalId, Priority, SignalData, TaskSource, Text};
use oo_domain::signals::{NewSignal, Signals};
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, Tip, TipCommand};
use oo_domain::user::Email;
use oo_projections::status::Status;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

#[tokio::test]
async fn tip_served_logs_the_distribution_the_seed_the_versions_and_the_shadow_picks() {
    let app = spawn_app().await;
    let (token, user) = app.login("logged@example.org").await;
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("s1", "t1", "Write the report", 4, false), task("s2", "t2", "Call mum", 2, false)]}),
        )
        .await;
    let position = r.body["position"].as_str().expect("position").to_owned();
    let r = app.post("/recommend", &token, json!({"min_position": position})).await;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NO_CONTENT);
    // Read straight from the store (the admin tail may lag behind transactions of other tests).
    let served = decisions(&app.pool, &user).await;
    assert_eq!(served.len(), 1);
    let d = &served[0].1;
    assert_eq!(d["policy"], "linucb");
    let linucb = oo_domain::policy::from_spec("linucb").expect("linucb");
    assert_eq!(d["policy_version"], linucb.version());
    assert_eq!(d["feature_version"], FEATURE_VERSION);
    for k in ["alpha", "temperature", "epsilon", "ridge"] {
        assert!(d["params"][k].is_f64(), "params.{k} logged: {d}");
    }
    let candidates = d["candidates"].as_array().expect("candidates");
    assert!(candidates.iter().any(|c| c["candidate_id"] == "todo:t1"));
    assert!(candidates.iter().any(|c| c["kind"] == "not_now"));
    assert!(
        candidates
            .iter()
            .all(|c| c["features"].as_array().map(Vec::len) == Some(CANDIDATE_DIM))
    );
    assert_eq!(d["context"].as_array().map(Vec::len), Some(CONTEXT_DIM));
    let dist = distribution(d);
    assert_eq!(dist.len(), candidates.len());
    assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let floor = d["params"]["epsilon"].as_f64().expect("epsilon") / dist.len() as f64;
    assert!(dist.iter().all(|p| *p >= floor - 1e-12), "every probability above ε/K");
    let chosen = d["chosen"].as_u64().expect("chosen") as usize;
    assert_eq!(d["propensity"].as_f64(), Some(dist[chosen]));
    assert!(d["seed"].is_u64());
    // The draw is reproducible from the log.
    assert_eq!(
        oo_domain::policy::draw(&dist, d["seed"].as_u64().expect("seed")),
        chosen
    );
    let shadow = d["shadow"].as_array().expect("shadow");
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0]["policy"], "thompson");
    let thompson = oo_domain::policy::from_spec("thompson").expect("thompson");
    assert_eq!(shadow[0]["policy_version"], thompson.version());
    assert!(shadow[0]["propensity"].as_f64().is_some_and(|p| p > 0.0 && p <= 1.0));
}

/// Signs `email` in and gives them one open todo; returns their session token and user id.
async fn with_a_todo(app: &TestApp, email: &str) -> (String, String) {
    let (token, user) = app.login(email).await;
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("s1", "t1", "Water the plants", 3, false)]}),
    )
    .await;
    (token, user)
}

/// Every `TipServed` of `user`, in log order: (tip id, the decision).
async fn decisions(pool: &PgPool, user: &str) -> Vec<(String, Value)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, payload::text FROM events WHERE event_type = 'TipServed' AND user_id = $1::uuid \
         ORDER BY tx_id, position",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .expect("decisions");
    rows.into_iter()
        .map(|(id, p)| {
            (
                id,
                serde_json::from_str::<Value>(&p).expect("json")["TipServed"].clone(),
            )
        })
        .collect()
}

/// Reacts to a tip `/recommend` answered with; returns the position of the reaction.
async fn feedback(app: &TestApp, token: &str, tip: &Value, reaction: &str) -> String {
    let r = app
        .post(
            "/feedback",
            token,
            json!({"tip_id": tip["tip"]["id"], "reaction": reaction}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    r.body["position"].as_str().expect("position").to_owned()
}

/// A logged decision's distribution.
fn distribution(decision: &Value) -> Vec<f64> {
    decision["distribution"]
        .as_array()
        .expect("distribution")
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// A server whose rate limit does not get in the way of many requests in a row.
fn unlimited(c: &mut oo_api::config::ServeConfig) {
    c.rate_limit.per_second = 10_000;
    c.rate_limit.burst = 10_000;
}

#[tokio::test]
async fn a_reaction_is_learned_before_the_next_recommendation_through_min_position() {
    let app = spawn_app().await;
    let (token, user) = with_a_todo(&app, "learner@example.org").await;
    let n = |pool: PgPool, user: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT n FROM bandit_users WHERE user_id = $1::uuid")
            .bind(user)
            .fetch_optional(&pool)
            .await
            .expect("bandit row")
    };
    for round in 1..=3i64 {
        let tip = app.tip(&token).await;
        let position = feedback(&app, &token, &tip, "not_helpful").await;
        let r = app.post("/recommend", &token, json!({"min_position": position})).await;
        assert!(r.body.get("stale").is_none(), "caught up within 2 s");
        // Every decision before this one has settled (reacted to, or "not now" at 0): the model
        // has learned each of them by the time the next recommendation is made.
        let settled: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TipRewarded' AND user_id = $1::uuid")
                .bind(&user)
                .fetch_one(&app.pool)
                .await
                .expect("count");
        let learned = n(app.pool.clone(), user.clone()).await.unwrap_or(0);
        assert!(
            learned >= round && learned >= settled - 1,
            "round {round}: learned {learned}, settled {settled}"
        );
    }
}

#[tokio::test]
async fn a_recommendation_with_min_position_answers_only_once_the_projections_have_passed_it() {
    let app = spawn_app().await;
    let (token, _) = with_a_todo(&app, "patient@example.org").await;
    let tip = app.tip(&token).await;
    wait_caught_up(&app.pool).await;
    // Hold every projection's checkpoint: the projector cannot pass the reaction below until
    // this transaction ends.
    let mut hold = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT name FROM checkpoints FOR UPDATE")
        .fetch_all(&mut *hold)
        .await
        .expect("lock checkpoints");
    let position = feedback(&app, &token, &tip, "dismiss").await;

    let released = std::sync::atomic::AtomicBool::new(false);
    let (answer, ()) = tokio::join!(
        async {
            let r = app.post("/recommend", &token, json!({"min_position": position})).await;
            (r, released.load(std::sync::atomic::Ordering::SeqCst))
        },
        async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            hold.commit().await.expect("release");
        }
    );
    let (r, answered_after_release) = answer;
    assert!(
        answered_after_release,
        "answered while the projections were behind min_position: {:?}",
        r.body
    );
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NO_CONTENT);
    assert!(r.body.get("stale").is_none(), "caught up within the wait");
}

#[tokio::test]
async fn not_now_answers_204_and_is_logged_with_its_propensity_and_settled_at_zero() {
    // `random` chooses "not now" with probability 1/K (K ≈ 20 here); 400 tries miss it with a
    // probability under 10⁻⁸.
    let app = spawn_with(|c| {
        unlimited(c);
        c.policy = "random".into();
        c.shadow_policies = String::new();
    })
    .await;
    let (token, user) = app.login("withheld@example.org").await;
    let mut withheld = None;
    for _ in 0..400 {
        let r = app.post("/recommend", &token, json!({})).await;
        if r.status == StatusCode::NO_CONTENT {
            withheld = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = withheld.expect("random chose not now at least once in 400 decisions");
    assert!(r.body.is_null(), "204 has no body: {:?}", r.body);

    let (tip_id, d) = decisions(&app.pool, &user).await.pop().expect("the last decision");
    let chosen = d["chosen"].as_u64().expect("chosen") as usize;
    assert_eq!(
        d["candidates"][chosen]["kind"], "not_now",
        "the withheld decision is logged"
    );
    let dist = distribution(&d);
    assert_eq!(d["propensity"].as_f64(), Some(dist[chosen]));
    assert!((dist[chosen] - 1.0 / dist.len() as f64).abs() < 1e-12, "random: 1/K");
    assert_eq!(
        rewards(&app.pool).await.get(&tip_id),
        Some(&vec![(0.0, "not_now".to_owned())]),
        "settled at 0 as it was served"
    );
    // Nothing was shown, so there is nothing to react to.
    let r = app
        .post("/feedback", &token, json!({"tip_id": tip_id, "reaction": "done"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
}

/// The last `TipServed` of `user`: when it was served, its context vector, and the serving times
/// of the person's earlier decisions that showed something.
async fn last_context(pool: &PgPool, user: &str) -> (DateTime<Utc>, Vec<f64>, Vec<DateTime<Utc>>) {
    let mut decisions: Vec<Value> = decisions(pool, user).await.into_iter().map(|(_, d)| d).collect();
    let last = decisions.pop().expect("a decision");
    let served_at = |d: &Value| -> DateTime<Utc> { d["served_at"].as_str().expect("served_at").parse().expect("time") };
    let shown = decisions
        .iter()
        .filter(|d| d["candidates"][d["chosen"].as_u64().expect("chosen") as usize]["kind"] != "not_now")
        .map(served_at)
        .collect();
    let context = last["context"]
        .as_array()
        .expect("context")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    (served_at(&last), context, shown)
}

#[tokio::test]
async fn the_context_follows_the_person_s_time_zone_utc_until_one_is_known() {
    use oo_domain::features::UserContext;
    let app = spawn_app().await;
    let (token, user) = app.login("traveller@example.org").await;
    // What the context's hour, weekend and tips-today features must be at `local`, given the
    // tips shown before.
    let expect = |served_at: DateTime<Utc>, local: DateTime<chrono::FixedOffset>, shown: &[DateTime<Utc>]| {
        let midnight = local
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|m| m.and_local_timezone(*local.offset()).single())
            .expect("midnight")
            .with_timezone(&Utc);
        let mut c = UserContext::bare(served_at, local);
        c.tips_today = shown.iter().filter(|at| **at >= midnight && **at <= served_at).count() as u32;
        let v = c.vector();
        vec![v[1], v[2], v[3], v[7]]
    };
    let check = |what: &str, context: &[f64], want: Vec<f64>| {
        let got = vec![context[1], context[2], context[3], context[7]];
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-9,
                "{what}: hour_sin, hour_cos, weekend, tips_today {got:?}, want {want:?}"
            );
        }
    };

    app.tip(&token).await;
    let (at, context, shown) = last_context(&app.pool, &user).await;
    check("no time zone yet: UTC", &context, expect(at, at.fixed_offset(), &shown));

    // Kiritimati is UTC+14: its hour, and often its day, differ from UTC's.
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [{"id": "tz", "kind": "context", "occurred_at": "2026-01-05T07:00:00Z", "data": {"place": "home", "time_zone": "Pacific/Kiritimati"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let position = r.body["position"].as_str().expect("position").to_owned();
    let r = app.post("/recommend", &token, json!({"min_position": position})).await;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NO_CONTENT);
    let (at, context, shown) = last_context(&app.pool, &user).await;
    let kiritimati = at.with_timezone(&chrono_tz::Pacific::Kiritimati).fixed_offset();
    check("the context signal's zone", &context, expect(at, kiritimati, &shown));
    assert!(
        !shown.is_empty(),
        "the first tip was shown and counts as today's, where it was today"
    );

    // The request's own context overrides what oO knows, for this decision (once the decision
    // above is projected, so that it counts among today's tips).
    wait_caught_up(&app.pool).await;
    let r = app
        .post(
            "/recommend",
            &token,
            json!({"context": {"time_zone": "America/Los_Angeles"}}),
        )
        .await;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NO_CONTENT);
    let (at, context, shown) = last_context(&app.pool, &user).await;
    let los_angeles = at.with_timezone(&chrono_tz::America::Los_Angeles).fixed_offset();
    check("the request's zone", &context, expect(at, los_angeles, &shown));
}

/// The mean probability the last decision of `user` gave to advices, over the mean it gave
/// to todos.
async fn advice_over_todo(pool: &PgPool, user: &str) -> f64 {
    let (_, d) = decisions(pool, user).await.pop().expect("a decision");
    let mean = |kind: &str| {
        let ps: Vec<f64> = d["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .zip(d["distribution"].as_array().expect("distribution"))
            .filter(|(c, _)| c["kind"] == kind)
            .filter_map(|(_, p)| p.as_f64())
            .collect();
        assert!(!ps.is_empty(), "a {kind} among the candidates");
        ps.iter().sum::<f64>() / ps.len() as f64
    };
    mean("advice") / mean("todo")
}

#[tokio::test]
async fn a_newcomer_is_served_from_what_the_population_has_taught_the_prior() {
    let app = spawn_with(unlimited).await;
    let todos = json!({"signals": [task("s1", "t1", "File the taxes", 4, false), task("s2", "t2", "Clean the garage", 3, false)]});
    // A newcomer while nobody has taught oO anything.
    let (token, first) = app.login("first-comer@example.org").await;
    app.post("/signals", &token, todos.clone()).await;
    wait_caught_up(&app.pool).await;
    app.tip(&token).await;
    let before = advice_over_todo(&app.pool, &first).await;

    // Three people who find every advice helpful and dismiss every todo.
    for who in ["p1", "p2", "p3"] {
        let (token, _) = app.login(&format!("{who}@example.org")).await;
        app.post("/signals", &token, todos.clone()).await;
        wait_caught_up(&app.pool).await;
        for _ in 0..20 {
            let tip = app.tip(&token).await;
            let reaction = if tip["tip"]["kind"] == "advice" {
                "helpful"
            } else {
                "dismiss"
            };
            feedback(&app, &token, &tip, reaction).await;
        }
    }
    wait_caught_up(&app.pool).await;
    // The recommender reads the population's prior at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    // A newcomer now starts from what they taught it.
    let (token, newcomer) = app.login("newcomer@example.org").await;
    app.post("/signals", &token, todos).await;
    wait_caught_up(&app.pool).await;
    app.tip(&token).await;
    let after = advice_over_todo(&app.pool, &newcomer).await;
    assert!(
        after > 1.5 * before,
        "advices over todos for a newcomer: {before:.3} with an empty prior, {after:.3} after the population's lessons"
    );
}

/// A decision over a todo and "not now" with features of our choosing, served at `served_at`.
async fn serve(
    tips: &Repository<Tip>,
    user: UserId,
    todo: &str,
    served_at: DateTime<Utc>,
    rng: &mut rand::rngs::StdRng,
) -> TipId {
    serve_features(tips, user, todo, served_at, rng, FEATURE_VERSION).await
}

/// [`serve`], with features of the given schema version.
async fn serve_features(
    tips: &Repository<Tip>,
    user: UserId,
    todo: &str,
    served_at: DateTime<Utc>,
    rng: &mut rand::rngs::StdRng,
    feature_version: u32,
) -> TipId {
    use rand::Rng;
    let tip_id = TipId::from_uuid(uuid::Uuid::now_v7());
    let decision = Decision {
        tip_id,
        user_id: user,
        served_at,
        candidates: vec![
            LoggedCandidate {
                candidate_id: format!("todo:{todo}"),
                kind: CandidateKind::Todo,
                features: (0..CANDIDATE_DIM).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            },
            LoggedCandidate {
                candidate_id: "not_now".into(),
                kind: CandidateKind::NotNow,
                features: vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            },
        ],
        chosen: 0,
        policy: "random".into(),
        policy_version: "1".into(),
        feature_version,
        score: 0.0,
        propensity: 0.5,
        distribution: vec![0.5, 0.5],
        seed: 1,
        shadow: vec![],
        title: "A task".into(),
        body: String::new(),
        params: Default::default(),
        context: (0..CONTEXT_DIM).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        model_rewards: None,
        prior_rewards: None,
    };
    tips.execute_new(
        &tip_id.to_string(),
        TipCommand::Serve(Box::new(decision)),
        Meta::new(served_at),
    )
    .await
    .expect("served");
    tip_id
}

async fn react(tips: &Repository<Tip>, user: UserId, tip: TipId, reaction: Reaction, at: DateTime<Utc>) {
    tips.execute(
        &tip.to_string(),
        TipCommand::React {
            user_id: user,
            reaction,
            at,
        },
        Meta::new(at),
    )
    .await
    .expect("reacted");
}

async fn complete(signals: &Repository<Signals>, user: UserId, todo: &str, at: DateTime<Utc>) {
    let signal = NewSignal {
        id: SignalId::parse(&format!("done-{todo}")).expect("id"),
        occurred_at: at,
        data: SignalData::Task {
            source: TaskSource::Manual,
            external_id: ExternalId::parse(todo).expect("id"),
            title: Text::parse("title", "A task").expect("title"),
            priority: Priority::parse(2).expect("priority"),
            due: None,
            completed: true,
            project: None,
        },
    };
    signals
        .record(user, vec![signal], Meta::new(Utc::now()))
        .await
        .expect("recorded");
}

/// Every `TipRewarded` per tip: (reward, settled_by).
async fn rewards(pool: &PgPool) -> std::collections::HashMap<String, Vec<(f64, String)>> {
    let rows = sqlx::query("SELECT aggregate_id, payload::text AS p FROM events WHERE event_type = 'TipRewarded'")
        .fetch_all(pool)
        .await
        .expect("rewards");
    let mut out: std::collections::HashMap<String, Vec<(f64, String)>> = Default::default();
    for r in rows {
        let id: String = r.get("aggregate_id");
        let p: Value = serde_json::from_str(&r.get::<String, _>("p")).expect("json");
        let p = &p["TipRewarded"];
        out.entry(id).or_default().push((
            p["reward"].as_f64().expect("reward"),
            p["settled_by"].as_str().expect("settled_by").to_owned(),
        ));
    }
    out
}

struct Parts {
    pool: PgPool,
    store: EventStore,
    vault: Vault,
    tips: Repository<Tip>,
    signals: Repository<Signals>,
    status: Status,
    /// The projectors' tasks (a test may stop them to hold the projections behind the log).
    projectors: Vec<tokio::task::JoinHandle<()>>,
    _db: DbGuard,
}

async fn parts() -> Parts {
    let (_, pool, db) = fresh_db(&server_url()).await;
    let WriteSide {
        store,
        vault,
        signals,
        tips,
        ..
    } = write_side(&pool).await;
    let status = Status::default();
    let projectors = spawn_projectors(&store, &status).await;
    Parts {
        projectors,
        tips,
        signals,
        pool,
        store,
        vault,
        status,
        _db: db,
    }
}

/// The reward join's rules applied to what `reward_pending` says is due at `now`.
async fn settle_due(
    p: &Parts,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<oo_commands::reward_join::Settled, oo_commands::aggregate::CommandError<oo_domain::tip::TipError>> {
    let due = oo_projections::reward_pending::due(&p.pool, now, limit)
        .await
        .expect("due tips");
    oo_commands::reward_join::settle(&p.tips, &due, now).await
}

async fn user(p: &Parts, email: &str) -> UserId {
    let email = Email::parse(email).expect("email");
    oo_commands::identity::find_or_register(&p.store, &p.vault, &email, Meta::new(Utc::now()))
        .await
        .expect("user")
        .0
}

#[tokio::test]
async fn the_reward_join_settles_every_tip_exactly_once() {
    let p = parts().await;
    let alice = user(&p, "join@example.org").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let t0 = Utc::now() - Duration::hours(2);
    let ignored = serve(&p.tips, alice, "a", t0, &mut rng).await;
    let snoozed_then_done = serve(&p.tips, alice, "b", t0, &mut rng).await;
    let snoozed_only = serve(&p.tips, alice, "c", t0, &mut rng).await;
    let done = serve(&p.tips, alice, "d", t0, &mut rng).await;
    let completed_too_late = serve(&p.tips, alice, "e", t0 - Duration::hours(30), &mut rng).await;
    let unanswered_then_done = serve(&p.tips, alice, "f", t0, &mut rng).await;
    for tip in [snoozed_then_done, snoozed_only, completed_too_late] {
        react(&p.tips, alice, tip, Reaction::Snooze, t0 + Duration::minutes(5)).await;
    }
    react(&p.tips, alice, done, Reaction::Done, t0 + Duration::minutes(5)).await;
    complete(&p.signals, alice, "b", t0 + Duration::hours(1)).await;
    complete(&p.signals, alice, "e", t0 + Duration::hours(1)).await;
    complete(&p.signals, alice, "f", t0 + Duration::hours(1)).await;
    wait_caught_up(&p.pool).await;

    // Now: only the completions within the window settle (of a snoozed todo, and of one nobody
    // answered: done elsewhere); "e" is past its window already.
    let now = Utc::now();
    let s = settle_due(&p, now, 100).await.expect("settle");
    assert_eq!(
        (s.completions, s.timeouts),
        (2, 1),
        "b and f by completion, e by timeout"
    );
    wait_caught_up(&p.pool).await;
    // A day later: the rest time out. Two joins at once (a second process, a retry after a
    // crash) settle nothing twice.
    let later = now + Duration::hours(25);
    let (a, b) = tokio::join!(settle_due(&p, later, 100), settle_due(&p, later, 100),);
    let (a, b) = (a.expect("join a"), b.expect("join b"));
    assert_eq!(a.timeouts + b.timeouts, 2, "ignored and snoozed_only, once each");
    wait_caught_up(&p.pool).await;
    let again = settle_due(&p, later + Duration::hours(1), 100).await.expect("settle");
    assert_eq!((again.completions, again.timeouts), (0, 0));
    // A reaction after settlement is recorded and settles nothing.
    react(&p.tips, alice, ignored, Reaction::Done, later).await;
    wait_caught_up(&p.pool).await;

    let r = rewards(&p.pool).await;
    let want = [
        (ignored, 0.0, "timeout"),
        (snoozed_then_done, 1.0, "completion"),
        (snoozed_only, 0.0, "timeout"),
        (done, 1.0, "reaction"),
        (completed_too_late, 0.0, "timeout"),
        (unanswered_then_done, 1.0, "completion"),
    ];
    for (tip, reward, by) in want {
        assert_eq!(
            r.get(&tip.to_string()),
            Some(&vec![(reward, by.to_owned())]),
            "tip settled once"
        );
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM reward_pending")
        .fetch_one(&p.pool)
        .await
        .expect("pending");
    assert_eq!(pending, 0);
    let _ = &p.status;
}

#[tokio::test]
async fn the_reward_join_waits_for_a_completion_the_projector_has_not_applied_yet() {
    let mut p = parts().await;
    let alice = user(&p, "lagging@example.org").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    // Served 25 h ago, snoozed at once, the todo completed within the window: +1 is due.
    let t0 = Utc::now() - Duration::hours(25);
    let tip = serve(&p.tips, alice, "late-sync", t0, &mut rng).await;
    react(&p.tips, alice, tip, Reaction::Snooze, t0 + Duration::minutes(5)).await;
    wait_caught_up(&p.pool).await;
    // The projector stops; the completion is stored but not applied to `reward_pending`.
    for projector in p.projectors.drain(..) {
        projector.abort();
        let _ = projector.await;
    }
    complete(&p.signals, alice, "late-sync", t0 + Duration::hours(2)).await;

    let wait = std::time::Duration::from_millis(300);
    let pass = oo_api::jobs::settle_rewards(&p.pool, &p.status, &p.tips, 100, wait)
        .await
        .expect("pass");
    assert_eq!(pass, None, "a pass on a projection behind the log settles nothing");
    assert!(rewards(&p.pool).await.is_empty(), "nothing settled as a timeout");

    let status = Status::default();
    spawn_projectors(&p.store, &status).await;
    let pass = oo_api::jobs::settle_rewards(&p.pool, &status, &p.tips, 100, std::time::Duration::from_secs(30))
        .await
        .expect("pass")
        .expect("caught up");
    assert_eq!((pass.settled.completions, pass.settled.timeouts), (1, 0));
    wait_caught_up(&p.pool).await;
    assert_eq!(
        rewards(&p.pool).await.get(&tip.to_string()),
        Some(&vec![(1.0, "completion".to_owned())])
    );
}

#[tokio::test]
async fn the_bandit_learns_only_from_decisions_of_the_current_feature_schema() {
    let p = parts().await;
    let alice = user(&p, "schemas@example.org").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let now = Utc::now();
    let old = serve_features(&p.tips, alice, "old", now, &mut rng, FEATURE_VERSION - 1).await;
    let current = serve(&p.tips, alice, "current", now, &mut rng).await;
    for tip in [old, current] {
        react(&p.tips, alice, tip, Reaction::Done, now + Duration::minutes(1)).await;
    }
    wait_caught_up(&p.pool).await;
    assert_eq!(rewards(&p.pool).await.len(), 2, "both settled");
    let n: i64 = sqlx::query_scalar("SELECT n FROM bandit_users WHERE user_id = $1")
        .bind(alice.as_uuid())
        .fetch_one(&p.pool)
        .await
        .expect("alice's model");
    assert_eq!(n, 1, "the reward of the older schema's decision is not learned");
    let population: i64 = sqlx::query_scalar("SELECT n FROM bandit_population")
        .fetch_one(&p.pool)
        .await
        .expect("population");
    assert_eq!(population, 1);
}

/// The bandit's tables as exact bits.
async fn bandit_bits(pool: &PgPool, schema: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let rows = sqlx::query(&format!(
        "SELECT user_id::text AS u, a_inv, b, folded, n FROM {schema}.bandit_users ORDER BY user_id"
    ))
    .fetch_all(pool)
    .await
    .expect("users");
    for r in rows {
        let mut bits: Vec<u8> = r.get("a_inv");
        bits.extend(r.get::<Vec<u8>, _>("b"));
        bits.extend(r.get::<i64, _>("folded").to_le_bytes());
        bits.extend(r.get::<i64, _>("n").to_le_bytes());
        out.push((r.get("u"), bits));
    }
    let rows = sqlx::query(&format!("SELECT xx, xr, folded, n FROM {schema}.bandit_population"))
        .fetch_all(pool)
        .await
        .expect("population");
    for r in rows {
        let mut bits: Vec<u8> = r.get("xx");
        bits.extend(r.get::<Vec<u8>, _>("xr"));
        bits.extend(r.get::<i64, _>("folded").to_le_bytes());
        bits.extend(r.get::<i64, _>("n").to_le_bytes());
        out.push(("population".into(), bits));
    }
    let rows = sqlx::query(&format!(
        "SELECT 'user ' || user_id::text || ' ' || k AS t, features, reward FROM {schema}.bandit_user_tail \
         UNION ALL SELECT 'population ' || k, features, reward FROM {schema}.bandit_population_tail ORDER BY 1"
    ))
    .fetch_all(pool)
    .await
    .expect("tails");
    for r in rows {
        let mut bits: Vec<u8> = r.get("features");
        bits.extend(r.get::<f64, _>("reward").to_le_bytes());
        out.push((r.get("t"), bits));
    }
    let rows = sqlx::query(&format!(
        "SELECT tip_id::text AS t, features FROM {schema}.bandit_pending ORDER BY tip_id"
    ))
    .fetch_all(pool)
    .await
    .expect("pending");
    for r in rows {
        out.push((r.get("t"), r.get::<Vec<u8>, _>("features")));
    }
    out
}

#[tokio::test]
async fn the_bandit_rebuilt_from_the_log_is_the_same_bit_for_bit() {
    let p = parts().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for u in 0..4 {
        let id = user(&p, &format!("bits{u}@example.org")).await;
        crate::projections::serve_and_react(&p.tips, id, 90, &mut rng).await;
    }
    wait_caught_up(&p.pool).await;
    let live = bandit_bits(&p.pool, "public").await;
    assert!(live.len() > 4, "models, population and pending tips exist");
    let (folded_people, population_folded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bandit_users WHERE folded > 0), (SELECT folded FROM bandit_population)",
    )
    .fetch_one(&p.pool)
    .await
    .expect("folds");
    assert!(
        folded_people > 0 && population_folded > 0,
        "the matrices were rewritten at least once, so the rebuild must rewrite them at the same counts"
    );
    let bandit = oo_projections::all()
        .into_iter()
        .find(|x| x.name() == "bandit")
        .expect("bandit");
    oo_projections::rebuild::rebuild(&p.pool, bandit.as_ref(), &p.status, |_, _| {})
        .await
        .expect("rebuilt");
    assert_eq!(bandit_bits(&p.pool, "public").await, live);
}

#[tokio::test]
async fn oo_simulate_prints_the_json_of_design_section_11_between_random_and_the_oracle() {
    let (url, _pool, _db) = fresh_db(&server_url()).await;
    let plot = temp_dir("oo-sim-plot").join("sim.svg");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"))
        .args([
            "simulate",
            "--users",
            "3",
            "--days",
            "2",
            "--seed",
            "3",
            "--policies",
            "linucb",
        ])
        .args(["--json", "--reset", "--plot"])
        .arg(&plot)
        .env("OO_DATABASE_URL", &url)
        .env("OO_DATA_DIR", temp_dir("oo-sim-data"))
        .output()
        .await
        .expect("oo simulate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("simulating linucb"), "progress on stderr: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(
        (
            report["seed"].as_u64(),
            report["users"].as_u64(),
            report["days"].as_u64()
        ),
        (Some(3), Some(3), Some(2))
    );
    let policies = report["policies"].as_object().expect("policies");
    let names: Vec<&str> = policies.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["linucb", "oracle", "random"],
        "random and the oracle are always run"
    );
    for (name, p) in policies {
        assert_eq!(p["daily_mean_reward"].as_array().map(Vec::len), Some(2), "{name}");
        for field in ["last_week_mean_reward", "first_10_tips_mean_reward"] {
            assert!(p[field].is_f64(), "{name}.{field}: {p}");
        }
    }
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "an SVG");
    // A second run on the same databases is refused without --reset.
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"))
        .args([
            "simulate",
            "--users",
            "3",
            "--days",
            "2",
            "--policies",
            "linucb",
            "--json",
        ])
        .env("OO_DATABASE_URL", &url)
        .env("OO_DATA_DIR", temp_dir("oo-sim-data"))
        .output()
        .await
        .expect("oo simulate runs");
    assert!(
        !again.status.success(),
        "reusing the simulation's databases needs --reset"
    );
}

#[tokio::test]
async fn the_simulator_learns_and_a_seed_reproduces_its_run() {
    let (url, _pool, _db) = fresh_db(&server_url()).await;
    let args = |users, days, policies: &str| oo_replay::simulate::SimulateArgs {
        database_url: url.clone(),
        db_pool: 8,
        users,
        days,
        seed: 7,
        policies: policies.into(),
        plot: None,
        reset: true,
        concurrency: 32,
        ope: None,
    };
    let report = oo_replay::simulate::run(args(30, 7, "random,linucb"))
        .await
        .expect("simulated");
    let (random, linucb, oracle) = (
        &report.policies["random"],
        &report.policies["linucb"],
        &report.policies["oracle"],
    );
    assert_eq!(random.daily_mean_reward.len(), 7);
    assert!(random.decisions > 500, "{} decisions", random.decisions);
    assert_eq!(random.decisions, linucb.decisions, "the same sessions for every policy");
    assert!(oracle.last_week_mean_reward > random.last_week_mean_reward + 0.1);
    assert!(
        linucb.last_week_mean_reward > random.last_week_mean_reward + 0.05,
        "linucb {} vs random {}",
        linucb.last_week_mean_reward,
        random.last_week_mean_reward
    );
    // The same seed, the same run (decisions, reactions, rewards), whatever the interleaving.
    let a = oo_replay::simulate::run(args(8, 2, "linucb")).await.expect("first");
    let b = oo_replay::simulate::run(args(8, 2, "linucb")).await.expect("second");
    assert_eq!(a, b);
    assert!(!oo_replay::simulate::table(&a).is_empty());
    assert!(oo_replay::simulate::plot(&report).starts_with("<svg"));
}

/// What the log teaches a person's model, reward by reward in log order: each settled tip's
/// chosen joint vector and its reward (the oracle of the bandit's tables).
async fn learned_from_the_log(pool: &PgPool, user: UserId) -> Vec<(Vec<f64>, f64)> {
    use oo_domain::tip::TipEvent;
    let mut conn = pool.acquire().await.expect("conn");
    let events = oo_commands::store::read_user_events_after(&mut conn, user.as_uuid(), None, 100_000)
        .await
        .expect("events");
    let mut served = std::collections::HashMap::new();
    let mut learned = vec![];
    for e in events {
        match e.decode::<TipEvent>() {
            Ok(TipEvent::TipServed(d)) => {
                let chosen = &d.candidates[d.chosen];
                served.insert(d.tip_id, oo_domain::features::joint(&chosen.features, &d.context));
            }
            Ok(TipEvent::TipRewarded { tip_id, reward, .. }) => {
                learned.push((served[&tip_id].clone(), reward));
            }
            _ => {}
        }
    }
    learned
}

#[tokio::test]
async fn the_bandit_rewrites_its_matrices_only_every_so_many_rewards_and_reads_the_rest_from_its_tail() {
    use oo_domain::bandit::{LinearModel, PooledSums, upper_triangle};
    use oo_domain::features::DIM;
    use oo_projections::bandit::{POPULATION_TAIL, USER_TAIL, f64_bytes, load_population, load_user};
    let p = parts().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let alice = user(&p, "tail-alice@example.org").await;
    let bob = user(&p, "tail-bob@example.org").await;
    for who in [alice, bob] {
        crate::projections::serve_and_react(&p.tips, who, 200, &mut rng).await;
    }
    wait_caught_up(&p.pool).await;
    let mut conn = p.pool.acquire().await.expect("conn");
    let mut everyone = PooledSums::new(DIM);
    for who in [alice, bob] {
        let learned = learned_from_the_log(&p.pool, who).await;
        let n = learned.len() as i64;
        assert!(
            n > 2 * USER_TAIL && n % USER_TAIL != 0,
            "{n} rewards: two rewrites and a tail"
        );
        let (folded, counted, a_inv): (i64, i64, Vec<u8>) =
            sqlx::query_as("SELECT folded, n, a_inv FROM bandit_users WHERE user_id = $1")
                .bind(who.as_uuid())
                .fetch_one(&p.pool)
                .await
                .expect("model");
        assert_eq!((folded, counted), (n / USER_TAIL * USER_TAIL, n));
        let mut model = LinearModel::new(DIM);
        for (x, reward) in &learned[..folded as usize] {
            model.update(x, *reward);
        }
        assert_eq!(
            a_inv,
            f64_bytes(&upper_triangle(&model.a_inv, DIM)),
            "the stored matrix is the model at the last multiple of the step, not at the last reward"
        );
        let tail: i64 = sqlx::query_scalar("SELECT count(*) FROM bandit_user_tail WHERE user_id = $1")
            .bind(who.as_uuid())
            .fetch_one(&p.pool)
            .await
            .expect("tail");
        assert_eq!(tail, n - folded);
        for (x, reward) in &learned[folded as usize..] {
            model.update(x, *reward);
        }
        let read = load_user(&mut conn, who.as_uuid()).await.expect("read");
        assert_eq!(read.n, n as u64, "a decision reads every reward");
        assert_eq!(
            f64_bytes(&read.a_inv),
            f64_bytes(&model.a_inv),
            "bit for bit, as if each reward had been written"
        );
        assert_eq!(f64_bytes(&read.b), f64_bytes(&model.b));
        for (x, reward) in &learned {
            everyone.add(x, *reward);
        }
    }
    let (folded, counted): (i64, i64) = sqlx::query_as("SELECT folded, n FROM bandit_population")
        .fetch_one(&p.pool)
        .await
        .expect("population");
    assert!(folded > 0, "the population's sums were rewritten once at least");
    assert_eq!(
        (folded, counted),
        (everyone.n / POPULATION_TAIL * POPULATION_TAIL, everyone.n)
    );
    assert_eq!(load_population(&mut conn).await.expect("read"), everyone);
}
