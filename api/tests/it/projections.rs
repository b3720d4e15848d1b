//! Projections: a rebuild equals the incrementally built tables, and killing the projector at
//! random moments loses and double-applies nothing.

use crate::common::*;
use chrono::Utc;
use oo_commands::aggregate::{Meta, Repository};
use oo_domain::ids::{SignalId, UserId};
use oo_domain::signal::{ExternalId, MoodScore, Place, Priority, SignalData, TaskSource, Text};
use oo_domain::signals::{NewSignal, Signals};
use oo_domain::tip::Tip;
use oo_domain::user::Email;
use oo_projections::status::Status;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_rebuilt_projection_equals_the_incrementally_built_one() {
    let app = spawn_app().await;
    for u in 0..3 {
        let (token, _) = app.login(&format!("user{u}@example.org")).await;
        let mut signals = vec![];
        for i in 0..12 {
            signals.push(task(
                &format!("t{i}"),
                &format!("task-{}", i % 5),
                &format!("Task {i}"),
                1 + i % 4,
                i % 7 == 0,
            ));
            signals.push(mood(&format!("m{i}"), i % 5 - 2, "note"));
        }
        signals.push(json!({"id": "ctx", "kind": "context", "occurred_at": "2026-01-05T07:00:00Z", "data": {"place": "work", "time_zone": "Europe/Paris"}}));
        assert_eq!(
            app.post("/signals", &token, json!({ "signals": signals })).await.status,
            StatusCode::OK
        );
        for k in 0..4 {
            let tip = app.tip(&token).await;
            let reaction = ["done", "snooze", "dismiss", "helpful"][k];
            app.post(
                "/feedback",
                &token,
                json!({"tip_id": tip["tip"]["id"], "reaction": reaction}),
            )
            .await;
        }
    }
    // A promotion (forced: the gate has too few decisions), so that `policies` has a row too.
    let r = app.promote_by_force("thompson").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    wait_caught_up(&app.pool).await;
    let before = projection_tables(&app.pool).await;
    assert!(
        before.iter().all(|(_, rows)| !rows.is_empty()),
        "every table has rows: {before:?}"
    );

    for p in oo_projections::all() {
        let r = app
            .send(
                reqwest::Method::POST,
                &format!("/admin/projections/{}/rebuild", p.name()),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = app.get("/admin/projections", ADMIN_TOKEN).await;
            let entry = s.body["projections"]
                .as_array()
                .expect("list")
                .iter()
                .find(|e| e["name"] == p.name())
                .expect("entry")
                .clone();
            if entry["status"] == "live" && entry["rebuild"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "rebuild of {} did not finish", p.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_caught_up(&app.pool).await;
    assert_eq!(projection_tables(&app.pool).await, before, "rebuilt through the API");

    // The CLI's path, while the server keeps running.
    for p in oo_projections::all() {
        oo_projections::rebuild::rebuild(&app.pool, p.as_ref(), &Status::default(), |_, _| {})
            .await
            .expect("rebuild");
    }
    wait_caught_up(&app.pool).await;
    assert_eq!(
        projection_tables(&app.pool).await,
        before,
        "rebuilt through the CLI path"
    );
    let (token, _) = app.login("user0@example.org").await;
    assert_eq!(
        app.post("/signals", &token, json!({"signals": [mood("after", 1, "n")]}))
            .await
            .status,
        StatusCode::OK,
        "serving goes on"
    );
}

fn signal(i: usize, rng: &mut rand::rngs::StdRng) -> NewSignal {
    let data = match rng.gen_range(0..3) {
        0 => SignalData::Task {
            source: TaskSource::Manual,
            external_id: ExternalId::parse(&format!("t{}", rng.gen_range(0..20))).expect("id"),
            title: Text::parse("title", "Task").expect("text"),
            priority: Priority::parse(rng.gen_range(1..=4)).expect("priority"),
            due: None,
            completed: rng.gen_bool(0.3),
            project: None,
        },
        1 => SignalData::Mood {
            score: MoodScore::parse(rng.gen_range(-2..=2)).expect("score"),
            note: None,
        },
        _ => SignalData::Context {
            place: Place::Home,
            activity: None,
            time_zone: None,
        },
    };
    NewSignal {
        id: SignalId::parse(&format!("k{i}")).expect("id"),
        occurred_at: Utc::now() - chrono::Duration::minutes(i as i64),
        data,
    }
}

/// Records `signals` for `user` through the real command path.
async fn record(repo: &Repository<Signals>, user: UserId, signals: Vec<NewSignal>) {
    repo.record(user, signals, Meta::new(Utc::now()))
        .await
        .expect("recorded");
}

/// Every checkpoint has applied each of the log's events exactly once, and the live tables
/// equal a clean rebuild of every projection.
async fn assert_applied_once_and_equal_to_a_rebuild(pool: &sqlx::PgPool, status: &Status, context: &str) {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count");
    let checkpoints = oo_projections::projector::checkpoints(pool).await.expect("checkpoints");
    for c in &checkpoints {
        assert_eq!(
            c.events_applied, total,
            "{} applied every event exactly once ({context}): {checkpoints:?}",
            c.name
        );
    }
    let live = projection_tables(pool).await;
    for p in oo_projections::all() {
        oo_projections::rebuild::rebuild(pool, p.as_ref(), status, |_, _| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(
        projection_tables(pool).await,
        live,
        "the projections equal a clean rebuild ({context})"
    );
}

#[tokio::test]
async fn killing_the_projector_mid_batch_loses_and_duplicates_nothing() {
    let (_, pool, _db) = fresh_db(&server_url()).await;
    let WriteSide {
        store,
        vault,
        signals: repo,
        ..
    } = write_side(&pool).await;
    let mut users = vec![];
    for u in 0..4 {
        let email = Email::parse(&format!("k{u}@example.org")).expect("email");
        users.push(
            oo_commands::identity::find_or_register(&store, &vault, &email, Meta::new(Utc::now()))
                .await
                .expect("user")
                .0,
        );
    }
    let writer = {
        let repo = repo.clone();
        let users = users.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            for c in 0..200 {
                let user = users[c % users.len()];
                let signals = (0..10).map(|k| signal(c * 10 + k, &mut rng)).collect();
                record(&repo, user, signals).await;
            }
        })
    };
    let status = Status::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut kills = 0;
    while !writer.is_finished() || kills < 30 {
        let handles = spawn_projectors(&store, &status).await;
        tokio::time::sleep(Duration::from_micros(rng.gen_range(200..4000))).await;
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        kills += 1;
    }
    writer.await.expect("writer");
    let handles = spawn_projectors(&store, &status).await;
    wait_caught_up(&pool).await;
    for h in &handles {
        h.abort();
    }
    assert_applied_once_and_equal_to_a_rebuild(&pool, &status, &format!("after {kills} kills")).await;
}

/// The projector reads the log once per round from the furthest-behind checkpoint: projections
/// that start far apart (one caught up alone, the others at the start of a log longer than a
/// round's read) each apply every event exactly once and end equal to a clean rebuild.
#[tokio::test]
async fn projections_at_different_checkpoints_catch_up_together_exactly_once() {
    let (_, pool, _db) = fresh_db(&server_url()).await;
    let WriteSide {
        store,
        vault,
        signals: repo,
        ..
    } = write_side(&pool).await;
    let email = Email::parse("apart@example.org").expect("email");
    let (user, _) = oo_commands::identity::find_or_register(&store, &vault, &email, Meta::new(Utc::now()))
        .await
        .expect("user");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let commands = (oo_projections::projector::BATCH as usize) / 10 + 30;
    for c in 0..commands {
        let signals = (0..10).map(|k| signal(c * 10 + k, &mut rng)).collect();
        record(&repo, user, signals).await;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(
        total > oo_projections::projector::BATCH,
        "the log is longer than one read"
    );
    // One projection is brought to the head alone; the others have not started.
    let ahead = oo_projections::all()
        .into_iter()
        .find(|p| p.name() == "features")
        .expect("features");
    oo_projections::projector::ensure_checkpoint(&pool, ahead.name())
        .await
        .expect("checkpoint");
    while oo_projections::projector::step(&pool, ahead.as_ref(), ahead.name(), None, 97)
        .await
        .expect("step")
        .0
        > 0
    {}
    let status = Status::default();
    let handles = spawn_projectors(&store, &status).await;
    wait_caught_up(&pool).await;
    for h in &handles {
        h.abort();
    }
    assert_applied_once_and_equal_to_a_rebuild(&pool, &status, "starting apart").await;
}

#[tokio::test]
async fn a_projection_comes_out_the_same_whatever_the_batch_size() {
    let (_, pool, _db) = fresh_db(&server_url()).await;
    let WriteSide {
        store,
        vault,
        signals: repo,
        tips,
        policies,
        ..
    } = write_side(&pool).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut registered = vec![];
    for u in 0..3 {
        let email = Email::parse(&format!("b{u}@example.org")).expect("email");
        let user = oo_commands::identity::find_or_register(&store, &vault, &email, Meta::new(Utc::now()))
            .await
            .expect("user")
            .0;
        for c in 0..10 {
            // Three tasks, many completions: tasks close and reopen inside one batch, on rows
            // that earlier batches created.
            let signals = (0..40)
                .map(|k| {
                    let i = u * 1000 + c * 40 + k;
                    let mut s = signal(i, &mut rng);
                    if rng.gen_bool(0.7) {
                        s.data = SignalData::Task {
                            source: TaskSource::Manual,
                            external_id: ExternalId::parse(&format!("t{}", rng.gen_range(0..3))).expect("id"),
                            title: Text::parse("title", "Task").expect("text"),
                            priority: Priority::parse(rng.gen_range(1..=4)).expect("priority"),
                            due: None,
                            completed: rng.gen_bool(0.4),
                            project: None,
                        };
                    }
                    s
                })
                .collect();
            record(&repo, user, signals).await;
        }
        // Decisions and reactions, so that the tip and bandit projections have work too.
        serve_and_react(&tips, user, 25, &mut rng).await;
        // Completions after the tips, so that snoozed todos get their completion recorded.
        let completions = (0..3)
            .map(|t| NewSignal {
                id: SignalId::parse(&format!("done-{u}-{t}")).expect("id"),
                occurred_at: Utc::now(),
                data: SignalData::Task {
                    source: TaskSource::Manual,
                    external_id: ExternalId::parse(&format!("t{t}")).expect("id"),
                    title: Text::parse("title", "Task").expect("text"),
                    priority: Priority::parse(2).expect("priority"),
                    due: None,
                    completed: true,
                    project: None,
                },
            })
            .collect();
        record(&repo, user, completions).await;
        registered.push(user);
        // A promotion between people's events (forced: no evidence to speak of).
        promote_by_force(&policies, ["random", "thompson", "linucb"][u]).await;
    }
    // One user is deleted: every batch size must cut its batches there and purge them alike.
    let users: Repository<oo_domain::user::User> = Repository::new(store.clone(), vault.clone());
    let connections: Repository<oo_domain::connection::Connection> = Repository::new(store.clone(), vault.clone());
    oo_commands::identity::delete_user(
        &users,
        &vault,
        &connections,
        &pool,
        registered[0],
        Meta::new(Utc::now()),
    )
    .await
    .expect("deleted");
    for p in oo_projections::all() {
        let mut dumps = vec![];
        for (label, limit) in [("one", 1i64), ("seven", 7), ("all", 5000)] {
            let schema = format!("batch_{label}_{}", p.name());
            let checkpoint = format!("{}#{label}", p.name());
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&pool)
                .await
                .expect("schema");
            for t in p.tables() {
                sqlx::query(&format!("CREATE TABLE {schema}.{t} (LIKE public.{t} INCLUDING ALL)"))
                    .execute(&pool)
                    .await
                    .expect("table");
            }
            oo_projections::projector::ensure_checkpoint(&pool, &checkpoint)
                .await
                .expect("checkpoint");
            loop {
                let (n, _) = oo_projections::projector::step(&pool, p.as_ref(), &checkpoint, Some(&schema), limit)
                    .await
                    .expect("step");
                if n == 0 {
                    break;
                }
            }
            let mut rows = vec![];
            for t in p.tables() {
                let r = table_rows(&pool, &format!("{schema}.{t}")).await;
                rows.push(r);
            }
            dumps.push(rows);
        }
        assert!(!dumps[0].iter().all(|r| r.is_empty()), "{} has rows", p.name());
        assert_eq!(dumps[0], dumps[1], "{}: batches of 1 and of 7 differ", p.name());
        assert_eq!(dumps[0], dumps[2], "{}: batches of 1 and of 5000 differ", p.name());
    }
}

/// Serves `n` decisions to `user` over random feature vectors and reacts to most of them at
/// random (some are left unsettled, some choose "not now").
pub async fn serve_and_react(tips: &Repository<Tip>, user: UserId, n: usize, rng: &mut rand::rngs::StdRng) {
    use oo_domain::features::{CANDIDATE_DIM, CONTEXT_DIM};
    use oo_domain::reward::Reaction;
    use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, TipCommand};
    for _ in 0..n {
        let tip_id = oo_domain::ids::TipId::from_uuid(uuid::Uuid::now_v7());
        let mut candidates: Vec<LoggedCandidate> = (0..3)
            .map(|i| LoggedCandidate {
                candidate_id: format!("todo:t{i}"),
                kind: CandidateKind::Todo,
                features: (0..CANDIDATE_DIM).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            })
            .collect();
        candidates.push(LoggedCandidate {
            candidate_id: "not_now".into(),
            kind: CandidateKind::NotNow,
            features: vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        });
        let chosen = rng.gen_range(0..4);
        let decision = Decision {
            tip_id,
            user_id: user,
            served_at: Utc::now(),
            candidates,
            chosen,
            policy: "random".into(),
            policy_version: "1".into(),
            feature_version: oo_domain::features::FEATURE_VERSION,
            score: 0.0,
            propensity: 0.25,
            distribution: vec![0.25; 4],
            seed: rng.r#gen(),
            shadow: vec![],
            title: "Task".into(),
            body: String::new(),
            params: Default::default(),
            context: (0..CONTEXT_DIM).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            model_rewards: None,
            prior_rewards: None,
        };
        tips.execute_new(
            &tip_id.to_string(),
            TipCommand::Serve(Box::new(decision)),
            Meta::new(Utc::now()),
        )
        .await
        .expect("served");
        if chosen < 3 && rng.gen_bool(0.8) {
            let reaction = Reaction::ALL[rng.gen_range(0..5)];
            tips.execute(
                &tip_id.to_string(),
                TipCommand::React {
                    user_id: user,
                    reaction,
                    at: Utc::now(),
                },
                Meta::new(Utc::now()),
            )
            .await
            .expect("reacted");
        }
    }
}

#[tokio::test]
async fn a_rebuild_that_dies_midway_leaves_the_projection_live() {
    let app = spawn_app().await;
    let (token, _) = app.login("rebuild-dies@example.org").await;
    let signals: Vec<_> = (0..20).map(|i| mood(&format!("m{i}"), 1, "fine")).collect();
    assert_eq!(
        app.post("/signals", &token, json!({ "signals": signals })).await.status,
        StatusCode::OK
    );
    wait_caught_up(&app.pool).await;
    // The rebuilding task dies after its first batch, as a killed process would: no error path
    // runs.
    let pool = app.pool.clone();
    let died = tokio::spawn(async move {
        let status = oo_projections::status::Status::default();
        let features = oo_projections::all()
            .into_iter()
            .find(|p| p.name() == "features")
            .expect("features");
        let _ = oo_projections::rebuild::rebuild(&pool, features.as_ref(), &status, |_, _| {
            panic!("the rebuilding process dies")
        })
        .await;
    })
    .await;
    assert!(died.is_err(), "the task died");
    let live: String = sqlx::query_scalar("SELECT status FROM checkpoints WHERE name = 'features'")
        .fetch_one(&app.pool)
        .await
        .expect("the live checkpoint");
    assert_eq!(live, "live", "the live checkpoint is never marked");
    let status = |body: &serde_json::Value| {
        body["projections"]
            .as_array()
            .expect("projections")
            .iter()
            .find(|p| p["name"] == "features")
            .expect("features")["status"]
            .clone()
    };
    let r = app.get("/admin/projections", ADMIN_TOKEN).await;
    assert_eq!(status(&r.body), "rebuilding", "until its checkpoint goes stale");
    sqlx::query("UPDATE checkpoints SET updated_at = now() - interval '2 minutes' WHERE name = 'features#rebuild'")
        .execute(&app.pool)
        .await
        .expect("time passes");
    let r = app.get("/admin/projections", ADMIN_TOKEN).await;
    assert_eq!(status(&r.body), "live", "an abandoned rebuild does not count");
    let r = app
        .send(
            reqwest::Method::POST,
            "/admin/projections/features/rebuild",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
}

/// However many rebuilds an admin asks for at once, the server runs them one at a time, on
/// connections of their own: its requests keep their pool. Here every rebuild is held up at its
/// swap (the test holds the live checkpoints), and meanwhile `GET /admin/projections` and a
/// person's requests answer at once, one rebuild shows `rebuilding` and the others `queued`;
/// let go, they all finish, each equal to the live build. (Before, six rebuilds took two
/// connections each from the requests' pool, and `GET /admin/projections` answered 503.)
#[tokio::test]
async fn rebuilds_asked_all_at_once_run_one_by_one_and_leave_the_requests_pool_alone() {
    // Three connections are held for good (the two writers and the projector): two are left.
    let app = spawn_with(|c| c.db.db_pool = 5).await;
    let (token, _) = app.login("many-rebuilds@example.org").await;
    let signals = tasks("t", 20);
    assert_eq!(
        app.post("/signals", &token, json!({ "signals": signals })).await.status,
        StatusCode::OK
    );
    wait_caught_up(&app.pool).await;
    let before = projection_tables(&app.pool).await;

    let names = oo_projections::names();
    let mut holder = hold_live_checkpoints(&app.database_url).await;
    let rebuild = async |name: &str| {
        app.send(
            reqwest::Method::POST,
            &format!("/admin/projections/{name}/rebuild"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
    };
    for name in &names {
        let r = rebuild(name).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        assert_eq!(r.body["status"], "queued");
        let again = rebuild(name).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
        assert_eq!(again.body["code"], "rebuild_running");
    }
    let statuses = |body: &serde_json::Value| -> Vec<String> {
        body["projections"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|e| e["kind"] == "projection")
            .map(|e| e["status"].as_str().expect("status").to_owned())
            .collect()
    };
    for _ in 0..5 {
        let started = Instant::now();
        let r = app.get("/admin/projections", ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(started.elapsed() < Duration::from_secs(2), "answered at once");
        let s = statuses(&r.body);
        assert_eq!(s.iter().filter(|s| *s == "rebuilding").count(), 1, "{s:?}");
        assert_eq!(s.iter().filter(|s| *s == "queued").count(), names.len() - 1, "{s:?}");
        let me = app.get("/me", &token).await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("let go");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app.get("/admin/projections", ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        if statuses(&r.body).iter().all(|s| s == "live") {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuilds did not finish: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_caught_up(&app.pool).await;
    assert_eq!(
        projection_tables(&app.pool).await,
        before,
        "each rebuild equals the live build"
    );
}
