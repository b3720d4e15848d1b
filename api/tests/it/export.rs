//! `oo export decisions`: the log's decisions as logged bandit feedback — every decision with
//! its reward, nothing personal, nobody deleted.

use crate::common::*;
use oo_replay::export::{Bound, Range, export};
use oo_replay::logged::{LoggedDecision, read_jsonl};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Everything `export` writes for `range`.
async fn exported(app: &TestApp, range: Range) -> Vec<LoggedDecision> {
    let mut out = vec![];
    let keep = |d: &LoggedDecision| {
        out.push(d.clone());
        Ok(())
    };
    export(&app.pool, range, keep, |_, _| {}).await.expect("exported");
    out
}

#[tokio::test]
async fn an_export_holds_every_decision_with_its_reward_and_no_personal_field_nor_deleted_person() {
    let app = spawn_app().await;
    let secret_title = "Call Dr Zhivago about the biopsy";
    let secret_note = "slept badly after the argument";
    let (alice, alice_id) = app.login("alice-export@example.org").await;
    let (bob, bob_id) = app.login("bob-export@example.org").await;
    for token in [&alice, &bob] {
        let r = app
            .post(
                "/signals",
                token,
                json!({"signals": [task("t1", "x1", secret_title, 4, false), mood("m1", -1, secret_note)]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let mut served = vec![];
    for token in [&alice, &alice, &bob] {
        let tip = app.tip(token).await;
        let tip_id = tip["tip"]["id"].as_str().expect("tip id").to_owned();
        let r = app
            .post("/feedback", token, json!({"tip_id": tip_id, "reaction": "helpful"}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        served.push(tip_id);
    }
    wait_caught_up(&app.pool).await;

    let before = exported(&app, Range::default()).await;
    let alices: Vec<&LoggedDecision> = before.iter().filter(|d| d.user.as_deref() == Some(&alice_id)).collect();
    let bobs = before.iter().filter(|d| d.user.as_deref() == Some(&bob_id)).count();
    assert!(alices.len() >= 2 && bobs >= 1, "{} decisions", before.len());
    for id in &served {
        let d = before
            .iter()
            .find(|d| &d.id == id)
            .expect("every served tip is exported");
        assert_eq!((d.reward, d.settled_by.as_deref()), (Some(0.5), Some("reaction")));
        assert_eq!(d.policy.as_deref(), Some("linucb"));
        let chosen = d.chosen_index().expect("the chosen one is a candidate");
        let distribution = d.distribution.as_ref().expect("the distribution");
        assert_eq!(distribution[chosen], d.propensity);
        assert_eq!(d.candidates.len(), distribution.len());
        assert!(d.candidates.iter().all(|c| !c.features.is_empty()));
        assert!(!d.context.is_empty());
        assert_eq!(d.shadows.len(), 1, "the default shadow");
        let shadow = &d.shadows[0];
        let own = shadow.distribution.as_ref().expect("the shadow's whole distribution");
        assert_eq!(own.len(), d.candidates.len());
        let picked = d
            .candidates
            .iter()
            .position(|c| c.id == shadow.chosen)
            .expect("a candidate");
        assert_eq!(own[picked], shadow.propensity);
    }
    // The "not now" decisions are exported too, settled at 0 when they are chosen.
    for d in before.iter().filter(|d| d.chosen == "not_now") {
        assert_eq!((d.reward, d.settled_by.as_deref()), (Some(0.0), Some("not_now")));
    }
    let text: String = before.iter().map(|d| serde_json::to_string(d).expect("json")).collect();
    for personal in [secret_title, secret_note, "[sealed]", "alice-export", "bob-export"] {
        assert!(!text.contains(personal), "{personal} in the export");
    }

    // Times bound the range: nothing served before the first decision's time is left out, and
    // nothing after a time past the last one is included.
    let first = before.first().and_then(|d| d.timestamp).expect("a time");
    let since_first = exported(
        &app,
        Range {
            since: Some(Bound::Time(first)),
            until: None,
        },
    )
    .await;
    assert_eq!(since_first.len(), before.len(), "--since is inclusive");
    let until_first = exported(
        &app,
        Range {
            since: None,
            until: Some(Bound::Time(first)),
        },
    )
    .await;
    assert!(until_first.is_empty(), "--until is exclusive");

    // Bob deletes his account: the next export leaves him out, and only him.
    let r = app.send(Method::DELETE, "/me", Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let after = exported(&app, Range::default()).await;
    assert!(
        after.iter().all(|d| d.user.as_deref() != Some(&bob_id)),
        "a deleted person is left out"
    );
    assert_eq!(after.len(), before.len() - bobs, "everyone else is still there");
}

#[tokio::test]
async fn oo_export_decisions_writes_json_lines_that_oo_replay_reads() {
    let app = spawn_app().await;
    let (token, _) = app.login("cli-export@example.org").await;
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("t1", "x1", "A private title", 2, false)]}),
    )
    .await;
    for _ in 0..3 {
        app.tip(&token).await;
    }
    let out = temp_dir("oo-export").join("decisions.jsonl");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"))
        .args(["export", "decisions", "--out"])
        .arg(&out)
        .env("OO_DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("oo export runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("exported"), "a summary on stderr: {stderr}");
    let file = std::fs::File::open(&out).expect("the file is written");
    let decisions: Vec<LoggedDecision> = read_jsonl(std::io::BufReader::new(file))
        .collect::<Result<_, _>>()
        .expect("every line is a valid decision");
    assert!(decisions.len() >= 3, "{} decisions", decisions.len());
    assert!(
        decisions.iter().any(|d| d.reward.is_none()),
        "unsettled tips export with a null reward"
    );
    let text = std::fs::read_to_string(&out).expect("text");
    assert!(!text.contains("A private title"));
}

#[tokio::test]
async fn oo_replay_evaluates_an_exported_log_and_writes_the_json_of_design_section_12() {
    // Logged uniformly (the `random` policy), so that the replay estimator applies.
    let app = spawn_with(|c| c.policy = "random".into()).await;
    let (token, _) = app.login("replayed@example.org").await;
    let todos: Vec<_> = (0..4)
        .map(|i| task(&format!("t{i}"), &format!("x{i}"), "a todo", 1 + i, false))
        .collect();
    app.post("/signals", &token, json!({ "signals": todos })).await;
    // Enough decisions that every target's own draw meets the logged one somewhere (replay).
    for i in 0..300 {
        let tip = app.tip(&token).await;
        let reaction = ["done", "helpful", "not_helpful", "dismiss"][i % 4];
        app.post(
            "/feedback",
            &token,
            json!({"tip_id": tip["tip"]["id"], "reaction": reaction}),
        )
        .await;
    }
    let dir = temp_dir("oo-replay");
    let (log, report) = (dir.join("log.jsonl"), dir.join("report.json"));
    let oo = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"));
        command.args(args).env("OO_DATABASE_URL", &app.database_url);
        command
    };
    let exported = oo(&["export", "decisions", "--out", log.to_str().expect("path")])
        .output()
        .await
        .expect("oo export runs");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let run = oo(&[
        "replay",
        "--input",
        log.to_str().expect("path"),
        "--policies",
        "uniform;logged;linucb:alpha=0.5,epsilon=0.2;shadow:thompson",
        "--bootstrap",
        "200",
        "--json",
        report.to_str().expect("path"),
        "--plot",
        dir.join("report.svg").to_str().expect("path"),
    ])
    .output()
    .await
    .expect("oo replay runs");
    let svg = std::fs::read_to_string(dir.join("report.svg")).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.contains("shadow:thompson") && svg.contains("snips"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("snips") && stdout.contains("effective sample"),
        "a table: {stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the JSON is written")).expect("JSON");
    let decisions = report["decisions"].as_u64().expect("decisions");
    assert!(decisions >= 300, "{report}");
    let logged_value = report["logged_value"].as_f64().expect("logged_value");
    let policies = report["policies"].as_array().expect("policies");
    let names: Vec<&str> = policies.iter().filter_map(|p| p["policy"].as_str()).collect();
    assert_eq!(
        names,
        ["uniform", "logged", "linucb:alpha=0.5,epsilon=0.2", "shadow:thompson"],
        "named by their specs as given"
    );
    for p in policies {
        for estimator in ["replay", "ips", "ips_clipped", "snips", "dr", "sndr"] {
            let e = &p["estimates"][estimator];
            let (value, low, high) = (e["value"].as_f64(), e["ci_low"].as_f64(), e["ci_high"].as_f64());
            let (value, low, high) = (
                value.unwrap_or_else(|| panic!("{} {estimator}: {e}", p["policy"])),
                low.expect("ci_low"),
                high.expect("ci_high"),
            );
            assert!(low <= value && value <= high, "{}: {estimator} {e}", p["policy"]);
            assert!(e["se"].is_f64(), "{estimator}: {e}");
        }
        for field in [
            "effective_sample_size",
            "mean_weight",
            "max_weight",
            "low_propensity_share",
        ] {
            assert!(p["diagnostics"][field].is_f64(), "{field}: {p}");
        }
    }
    // Logged uniformly: the uniform target's weights are all exactly 1, and the logged policy's
    // IPS is its own value.
    assert_eq!(policies[0]["diagnostics"]["mean_weight"].as_f64(), Some(1.0));
    assert_eq!(policies[0]["diagnostics"]["max_weight"].as_f64(), Some(1.0));
    let logged_ips = policies[1]["estimates"]["ips"]["value"].as_f64().expect("ips");
    assert!(
        (logged_ips - logged_value).abs() < 1e-12,
        "{logged_ips} vs {logged_value}"
    );
}

/// Every logged decision says which model state decided it; folding the log's rewards in order
/// rebuilds those states, and the serving policy's and the shadow's distributions computed
/// again from the log alone come out the same to the bit.
#[tokio::test]
async fn a_decision_is_recomputed_from_the_log_alone_to_the_bit() {
    use oo_replay::recompute::{TipOrShred, recompute};
    let app = spawn_app().await; // linucb, with thompson as its shadow
    let mut people = vec![];
    for p in 0..3 {
        let (token, _) = app.login(&format!("recomputed{p}@example.org")).await;
        let todos: Vec<_> = (0..3)
            .map(|i| task(&format!("t{i}"), &format!("x{i}"), "a todo", 1 + i, false))
            .collect();
        app.post("/signals", &token, json!({ "signals": todos })).await;
        people.push(token);
    }
    let mut position = None;
    for round in 0..20 {
        if round == 10 {
            // Let the server's one-second cache of the prior expire: later decisions use a
            // prior learned from the rewards so far.
            tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        }
        for token in &people {
            let body = position.as_ref().map_or(json!({}), |p| json!({ "min_position": p }));
            let r = app.post("/recommend", token, body).await;
            if r.status != StatusCode::OK {
                continue;
            }
            let reaction = ["done", "helpful", "not_helpful", "dismiss", "snooze"][round % 5];
            let f = app
                .post(
                    "/feedback",
                    token,
                    json!({"tip_id": r.body["tip"]["id"], "reaction": reaction}),
                )
                .await;
            position = f.body["position"].as_str().map(str::to_owned);
        }
    }
    wait_caught_up(&app.pool).await;
    let mut conn = app.pool.acquire().await.expect("connection");
    let mut events = vec![];
    let mut after = oo_commands::cursor::Cursor::START;
    loop {
        let page = oo_commands::store::read_of_types_after(
            &mut conn,
            after,
            500,
            &["TipServed", "TipRewarded", "UserShredded"],
        )
        .await
        .expect("the log");
        let Some(last) = page.last() else { break };
        after = last.cursor;
        for e in page {
            let event = match e.event_type.as_str() {
                "UserShredded" => TipOrShred::Shredded,
                _ => TipOrShred::Tip(e.decode().expect("a tip event")),
            };
            events.push((e.user_id, event));
        }
    }
    let recomputed = recompute(events).expect("every decision recomputes");
    assert!(recomputed.len() >= 50, "{} decisions", recomputed.len());
    assert!(
        recomputed.iter().any(|r| r.decision.model_rewards > Some(2)),
        "some decisions used a model that had learned"
    );
    assert!(
        recomputed.iter().any(|r| r.decision.prior_rewards > Some(0)),
        "some decisions used a learned prior"
    );
    for r in &recomputed {
        let d = &r.decision;
        let bits = |v: &[f64]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&r.serving),
            bits(&d.distribution),
            "the serving distribution of {}",
            d.tip_id
        );
        assert_eq!(r.shadows.len(), d.shadow.len());
        for (again, logged) in r.shadows.iter().zip(&d.shadow) {
            assert_eq!(
                bits(again),
                bits(&logged.distribution),
                "{}'s distribution of {}",
                logged.policy,
                d.tip_id
            );
        }
    }
}

#[tokio::test]
async fn a_parquet_export_holds_the_same_decisions_as_json_lines_and_replays_the_same() {
    let app = spawn_app().await;
    let (token, _) = app.login("columns@example.org").await;
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("t1", "x1", "A private title", 3, false)]}),
    )
    .await;
    for i in 0..12 {
        let tip = app.tip(&token).await;
        if i % 3 != 0 {
            app.post(
                "/feedback",
                &token,
                json!({"tip_id": tip["tip"]["id"], "reaction": "helpful"}),
            )
            .await;
        }
    }
    let dir = temp_dir("oo-parquet");
    let oo = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_oo"));
        command.args(args).env("OO_DATABASE_URL", &app.database_url);
        command
    };
    let mut reports = vec![];
    for format in ["jsonl", "parquet"] {
        let file = dir.join(format!("decisions.{format}"));
        let report = dir.join(format!("report-{format}.json"));
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let run = oo(args(&[
            "export",
            "decisions",
            "--format",
            format,
            "--out",
            file.to_str().expect("path"),
        ]))
        .output()
        .await
        .expect("oo export runs");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let run = oo(args(&[
            "replay",
            "--input",
            file.to_str().expect("path"),
            "--bootstrap",
            "50",
            "--json",
            report.to_str().expect("path"),
        ]))
        .output()
        .await
        .expect("oo replay runs");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        reports.push(std::fs::read_to_string(&report).expect("a report"));
    }
    let bytes = std::fs::read(dir.join("decisions.parquet")).expect("the parquet file");
    assert_eq!(&bytes[..4], b"PAR1");
    let from_parquet =
        oo_replay::columnar::read_parquet(std::fs::File::open(dir.join("decisions.parquet")).expect("file"))
            .expect("parquet reads back");
    let from_lines: Vec<LoggedDecision> = read_jsonl(std::io::BufReader::new(
        std::fs::File::open(dir.join("decisions.jsonl")).expect("file"),
    ))
    .collect::<Result<_, _>>()
    .expect("lines");
    assert!(from_lines.len() >= 12);
    assert_eq!(
        from_parquet, from_lines,
        "both formats carry the same decisions, column for column"
    );
    assert_eq!(reports[0], reports[1], "and replay the same");
}
