//! The promotion gate end to end: a shadow serves only if its offline evidence beats the serving
//! policy, the promotion is a system event in the log, and every server — the one that promoted,
//! one already running, one started afterwards — serves the promoted policy.

use crate::common::*;
use chrono::{Duration, Utc};
use oo_commands::aggregate::Meta;
use oo_commands::vault::MasterKey;
use oo_domain::ids::{TipId, UserId};
use oo_domain::policy::{canonical, from_spec};
use oo_domain::reward::Reaction;
use oo_domain::tip::{CandidateKind, Decision, LoggedCandidate, ShadowPick, TipCommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Logged under `random` (uniform over three candidates), where the first candidate is done
/// (reward 1) and the others dismissed (-1): `random` earns -1/3. `thompson` logged 0.8 on the
/// first (worth 0.6), `linucb` 0.1 (worth -0.8).
async fn log_decisions(write: &WriteSide, user: UserId, n: usize) {
    let shadow = |spec: &str, first: f64| {
        let p = from_spec(spec).expect("a spec");
        let rest = (1.0 - first) / 2.0;
        ShadowPick {
            policy: p.name().to_owned(),
            policy_version: p.version().to_owned(),
            chosen: 0,
            propensity: first,
            params: p.params(),
            distribution: vec![first, rest, rest],
        }
    };
    let start = Utc::now() - Duration::hours(2);
    for i in 0..n {
        let tip_id = TipId::from_uuid(Uuid::new_v4());
        let chosen = i % 3;
        let decision = Decision {
            tip_id,
            user_id: user,
            served_at: start + Duration::seconds(i as i64),
            candidates: (0..3)
                .map(|c| LoggedCandidate {
                    candidate_id: format!("advice:{c}"),
                    kind: CandidateKind::Advice,
                    features: vec![f64::from(c == 0), f64::from(c == 1), 1.0],
                })
                .collect(),
            chosen,
            policy: "random".into(),
            policy_version: "1".into(),
            feature_version: 2,
            score: 0.0,
            propensity: 1.0 / 3.0,
            distribution: vec![1.0 / 3.0; 3],
            seed: i as u64,
            shadow: vec![shadow("thompson", 0.8), shadow("linucb", 0.1)],
            title: "an advice".into(),
            body: String::new(),
            params: Default::default(),
            context: vec![1.0, (i % 5) as f64 / 5.0],
            model_rewards: Some(0),
            prior_rewards: Some(0),
        };
        let id = tip_id.to_string();
        let meta = || Meta::new(Utc::now());
        write
            .tips
            .execute_new(&id, TipCommand::Serve(Box::new(decision)), meta())
            .await
            .expect("served");
        let reaction = if chosen == 0 { Reaction::Done } else { Reaction::Dismiss };
        write
            .tips
            .execute(
                &id,
                TipCommand::React {
                    user_id: user,
                    reaction,
                    at: Utc::now(),
                },
                meta(),
            )
            .await
            .expect("reacted");
    }
}

fn gate(c: &mut oo_api::config::ServeConfig) {
    c.policy = "random".into();
    c.shadow_policies = "thompson; linucb".into();
    c.gate.window = 1_000;
    c.gate.min_decisions = 100;
    c.gate.bootstrap = 200;
}

async fn lineup(app: &TestApp) -> Value {
    let r = app.get("/admin/policies", ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

async fn promotions(app: &TestApp) -> Vec<(Uuid, String, Value)> {
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT user_id, aggregate_type, payload::text FROM events WHERE event_type = 'PolicyPromoted' \
         ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    rows.into_iter()
        .map(|(u, t, p)| (u, t, serde_json::from_str(&p).expect("json")))
        .collect()
}

#[tokio::test]
async fn the_gate_refuses_a_worse_shadow_promotes_a_better_one_and_every_server_serves_it() {
    let a = spawn_with(gate).await;
    let (token, user) = a.login("gate@example.org").await;
    let write = write_side_with(&a.pool, MasterKey::load(None, &a.data_dir).expect("the dev key").0).await;
    log_decisions(&write, user.parse().expect("a user id"), 300).await;
    let thompson = canonical("thompson").expect("spec");
    let linucb = canonical("linucb").expect("spec");

    // Before: random serves, earning -1/3; thompson's SNIPS is 0.6 on the same decisions.
    let before = lineup(&a).await;
    assert_eq!(before["serving"]["spec"], "random");
    assert_eq!(before["serving"]["decisions"], 300);
    assert!((before["serving"]["mean_reward"].as_f64().expect("mean") + 1.0 / 3.0).abs() < 1e-9);
    let shadows = before["shadows"].as_array().expect("shadows");
    assert_eq!(shadows[0]["spec"], thompson.as_str());
    assert!((shadows[0]["mean_reward"].as_f64().expect("snips") - 0.6).abs() < 1e-9);
    assert!(before["last_promotion"].is_null());

    // A server already running beside it.
    let b = spawn_at(&a.database_url, a.data_dir.clone(), gate).await;

    // Refused: the worse shadow, with the evidence; nothing is logged.
    let r = a
        .send(
            Method::POST,
            "/admin/policies/promote",
            Some(ADMIN_TOKEN),
            Some(json!({"spec": "linucb"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "promotion_refused");
    assert_eq!(r.body["evidence"]["decisions"], 300);
    assert_eq!(r.body["evidence"]["passes"], false);
    assert!(r.body["evidence"]["snips"]["ci_high"].as_f64().expect("snips") < -1.0 / 3.0);
    assert!(promotions(&a).await.is_empty());
    // Bad requests are refused before anything is read.
    for (body, status, code) in [
        (
            json!({"spec": "random"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_shadow",
        ),
        (
            json!({"spec": "linucb:alpha=0.123"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_shadow",
        ),
        (
            json!({"spec": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            json!({"spec": "thompson", "why": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let r = a
            .send(
                Method::POST,
                "/admin/policies/promote",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (status, Some(code)),
            "{body}: {:?}",
            r.body
        );
    }
    let r = a
        .send(
            Method::POST,
            "/admin/policies/promote",
            Some(&token),
            Some(json!({"spec": "thompson"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a person's session is not an admin token"
    );

    // Accepted: the better shadow, which serves at once here.
    let r = a
        .send(
            Method::POST,
            "/admin/policies/promote",
            Some(ADMIN_TOKEN),
            Some(json!({"spec": "thompson"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["serving"], thompson.as_str());
    assert_eq!(r.body["shadows"], json!(["random", linucb]));
    assert_eq!(
        (r.body["forced"].as_bool(), r.body["evidence"]["passes"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(r.body["evidence"]["dr"]["ci_low"].as_f64().expect("dr") >= -1.0 / 3.0);
    assert_eq!(lineup(&a).await["serving"]["spec"], thompson.as_str());
    let tip = a.tip(&token).await;
    assert_eq!(tip["tip"]["meta"]["policy"], "thompson", "{tip}");

    // The promotion is a system event with its evidence.
    let logged = promotions(&a).await;
    assert_eq!(logged.len(), 1);
    let (owner, aggregate, payload) = &logged[0];
    assert_eq!((owner.is_nil(), aggregate.as_str()), (true, "policy"));
    let promoted = &payload["PolicyPromoted"];
    assert_eq!(
        (promoted["serving"].as_str(), promoted["replaced"].as_str()),
        (Some(thompson.as_str()), Some("random"))
    );
    assert_eq!(promoted["forced"], false);
    assert_eq!(promoted["evidence"]["decisions"], 300);

    // The server already running switches when its projection reads the promotion.
    let mut switched = false;
    for _ in 0..100 {
        if lineup(&b).await["serving"]["spec"] == thompson.as_str() {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(switched, "the other server still serves random");
    let last = lineup(&b).await["last_promotion"].clone();
    assert_eq!(last["serving"], thompson.as_str());
    // A server started afterwards, configured with `random`, reads the line-up from the log.
    let c = spawn_at(&a.database_url, a.data_dir.clone(), gate).await;
    assert_eq!(lineup(&c).await["serving"]["spec"], thompson.as_str());

    // Forced: logged as forced, whatever the gate says (thompson has no decisions of its own).
    let r = c
        .send(
            Method::POST,
            "/admin/policies/promote",
            Some(ADMIN_TOKEN),
            Some(json!({"spec": "linucb", "force": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["forced"], true);
    assert_eq!(r.body["evidence"]["passes"], false);
    let logged = promotions(&a).await;
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[1].2["PolicyPromoted"]["forced"], true);
    // A server that has not read the forced promotion yet weighs against the line-up it knows;
    // the log refuses that promotion rather than let it overwrite the newer one.
    let stale = oo_domain::promotion::Lineup {
        serving: thompson.clone(),
        shadows: vec!["random".into(), linucb.clone()],
    };
    let options = oo_replay::gate::GateOptions::default();
    let refused = oo_api::promotion::promote(&write, &a.pool, &stale, "random", true, &options).await;
    assert!(
        matches!(refused, Err(oo_api::promotion::PromoteError::LineupChanged(ref now)) if *now == linucb),
        "{refused:?}"
    );
    assert_eq!(promotions(&a).await.len(), 2);
}

#[tokio::test]
async fn oo_policy_promote_exits_1_with_the_evidence_when_the_gate_refuses() {
    let a = spawn_with(gate).await;
    let (_, user) = a.login("gate-cli@example.org").await;
    let write = write_side_with(&a.pool, MasterKey::load(None, &a.data_dir).expect("the dev key").0).await;
    log_decisions(&write, user.parse().expect("a user id"), 150).await;
    let run = |spec: &'static str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"));
        command
            .args([
                "policy",
                "promote",
                spec,
                "--policy",
                "random",
                "--shadow-policies",
                "thompson;linucb",
            ])
            .args(["--promotion-min-decisions", "100", "--promotion-bootstrap", "200"])
            .env("OO_DATABASE_URL", &a.database_url)
            .env("OO_DATA_DIR", &a.data_dir);
        command.output()
    };
    let refused = run("linucb").await.expect("oo runs");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("decisions weighed: 150"), "{stdout}");
    assert!(stdout.contains("the gate refuses"), "{stdout}");
    assert!(promotions(&a).await.is_empty());

    let accepted = run("thompson").await.expect("oo runs");
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(stdout.contains("the gate passes"), "{stdout}");
    assert_eq!(promotions(&a).await.len(), 1);
    // The running server switches to it.
    let mut serving = Value::Null;
    for _ in 0..100 {
        serving = lineup(&a).await["serving"]["spec"].clone();
        if serving == canonical("thompson").expect("spec").as_str() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server still serves {serving}");
}
