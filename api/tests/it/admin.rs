//! Admin endpoints, the OpenAPI document and metrics.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn admin_endpoints_take_only_the_admin_token() {
    let app = spawn_app().await;
    let (user_token, _) = app.login("u@example.org").await;
    for path in ["/admin/projections", "/admin/events", "/admin/policies"] {
        assert_eq!(
            app.send(reqwest::Method::GET, path, None, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = app.get(path, &user_token).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "a user's session is not an admin token"
        );
        assert_eq!(r.body["code"], "admin_token_required");
        assert_eq!(app.get(path, "wrong").await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.get(path, ADMIN_TOKEN).await.status, StatusCode::OK);
    }
    let closed = spawn_with(|c| {
        c.admin_token = None;
        c.dev = false;
    })
    .await;
    assert_eq!(
        closed.get("/admin/projections", "").await.status,
        StatusCode::UNAUTHORIZED,
        "no token configured: closed"
    );
}

#[tokio::test]
async fn the_log_pages_in_global_order_with_personal_fields_sealed() {
    let app = spawn_app().await;
    let (token, _) = app.login("pager@example.org").await;
    let signals: Vec<_> = (0..7)
        .map(|i| mood(&format!("m{i}"), 1, "secret diary entry"))
        .collect();
    app.post("/signals", &token, json!({ "signals": signals })).await;
    let total = app.event_count().await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    // The tail only shows transactions older than every one still in flight on the server, so
    // a page may come back empty for a moment while other writers commit: poll, as a client does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (seen.len() as i64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} events after 10 s",
            seen.len()
        );
        let path = match &after {
            Some(a) => format!("/admin/events?limit=3&after={a}"),
            None => "/admin/events?limit=3".to_owned(),
        };
        let r = app.get(&path, ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let events = r.body["events"].as_array().expect("events").clone();
        assert!(events.len() <= 3);
        for e in &events {
            assert!(
                !e.to_string().contains("secret diary entry"),
                "personal fields stay sealed"
            );
            seen.push(e["event_id"].as_str().expect("id").to_owned());
        }
        let next = r.body["next"].as_str().expect("next").to_owned();
        if events.is_empty() {
            assert_eq!(
                Some(&next),
                after.as_ref().or(Some(&next)),
                "an empty page keeps the cursor"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        after = Some(next);
    }
    assert_eq!(seen.len() as i64, total, "every event once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "no duplicates");
    let r = app.get("/admin/events?after=garbage", ADMIN_TOKEN).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"))
    );
    for limit in ["0", "1001"] {
        assert_eq!(
            app.get(&format!("/admin/events?limit={limit}"), ADMIN_TOKEN)
                .await
                .status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    // The latest events, newest first (the console's tail): the forward pages reversed, and
    // `next` to follow the log from the newest on.
    let r = app.get("/admin/events?latest=4", ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let latest: Vec<String> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect();
    let newest_first: Vec<String> = seen.iter().rev().take(4).cloned().collect();
    assert_eq!(latest, newest_first);
    assert_eq!(r.body["next"], r.body["events"][0]["position"]);
    let after = app
        .get(
            &format!("/admin/events?after={}", r.body["next"].as_str().expect("next")),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(
        after.body["events"].as_array().map(Vec::len),
        Some(0),
        "nothing after the newest"
    );
    for bad in [
        "latest=0",
        "latest=1001",
        "latest=3&limit=3",
        "latest=3&after=c00000000000000000000000000000000",
    ] {
        let r = app.get(&format!("/admin/events?{bad}"), ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {:?}", r.body);
    }
}

#[tokio::test]
async fn projections_report_every_event_applied_once_caught_up() {
    // The reward join passes every second, so that it too catches up within the test.
    let app = spawn_with(|c| c.settle_interval_secs = 1).await;
    let (token, _) = app.login("p@example.org").await;
    let r = app
        .post(
            "/signals",
            &token,
            json!({"signals": [task("a", "t1", "One", 1, false), mood("b", 0, "meh")]}),
        )
        .await;
    let position = r.body["position"].as_str().expect("position").to_owned();
    app.post("/recommend", &token, json!({"min_position": position})).await;
    let total = app.event_count().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = app.get("/admin/projections", ADMIN_TOKEN).await;
        let ps = r.body["projections"].as_array().expect("projections").clone();
        let projections: Vec<_> = ps.iter().filter(|p| p["kind"] == "projection").collect();
        assert_eq!(projections.len(), oo_projections::all().len());
        let consumers: Vec<_> = ps.iter().filter(|p| p["kind"] == "consumer").collect();
        assert_eq!(consumers.len(), 1, "the reward join: {ps:?}");
        assert_eq!(consumers[0]["name"], "reward_join");
        if projections
            .iter()
            .chain(&consumers)
            .all(|p| p["events_applied"].as_i64() == Some(total) && p["lag_events"] == 0 && p["status"] == "live")
        {
            assert!(ps.iter().any(|p| p["kind"] == "relay" && p["status"] == "off"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections did not catch up: {ps:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn openapi_lists_the_routes_and_every_error_code_and_health_metrics_answer() {
    let app = spawn_app().await;
    let r = app.send(reqwest::Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for path in [
        "/signals",
        "/recommend",
        "/feedback",
        "/me",
        "/auth/dev-login",
        "/auth/logout",
        "/admin/events",
        "/admin/projections",
        "/admin/policies",
        "/admin/policies/promote",
        "/ready",
        "/health",
        "/metrics",
    ] {
        assert!(r.body["paths"].get(path).is_some(), "{path} is documented");
    }
    let codes = r.body["components"]["schemas"]["ErrorCode"].to_string();
    for code in [
        "invalid_json",
        "invalid_body",
        "invalid_value",
        "unauthorized",
        "not_found",
        "conflicting_reaction",
        "too_many_signals",
        "payload_too_large",
        "rate_limited",
        "unavailable",
        "promotion_refused",
        "not_a_shadow",
        "lineup_changed",
    ] {
        assert!(codes.contains(code), "{code} is listed");
    }
    assert_eq!(
        app.send(reqwest::Method::GET, "/health", None, None).await.body["status"],
        "ok"
    );
    let ready = app.send(reqwest::Method::GET, "/ready", None, None).await;
    assert_eq!(
        (ready.status, ready.body["nats"].as_str()),
        (StatusCode::OK, Some("off"))
    );
    let (token, _) = app.login("m@example.org").await;
    app.post("/signals", &token, json!({"signals": [mood("a", 0, "x")]}))
        .await;
    let metrics = app.metrics().await;
    for name in [
        "oo_events_appended_total",
        "oo_projection_lag_events",
        "oo_command_duration_seconds",
        "oo_http_requests_total",
        "oo_oldest_transaction_age_seconds",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    // The writer's histograms: every append and every batch observed once, buckets cumulative.
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().expect("a count")))
            .unwrap_or_else(|| panic!("{line} in /metrics"))
    };
    for h in ["oo_append_duration_seconds", "oo_append_commit_duration_seconds"] {
        let count = value(&format!("{h}_count "));
        assert!(count >= 1, "{h} observed the append of /signals");
        assert_eq!(
            value(&format!("{h}_bucket{{le=\"+Inf\"}} ")),
            count,
            "{h}'s buckets are cumulative"
        );
        assert!(value(&format!("{h}_bucket{{le=\"0.0005\"}} ")) <= count);
    }
    assert!(
        value("oo_append_duration_seconds_count ") >= value("oo_append_commit_duration_seconds_count "),
        "a batch holds one append or more"
    );
    let unknown = app.send(reqwest::Method::GET, "/nope", None, None).await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn connections_get_our_session_settings_unless_the_url_says_otherwise() {
    let (url, pool, _db) = fresh_db(&server_url()).await;
    async fn show(pool: &sqlx::PgPool, name: &str) -> String {
        let sql = format!("SHOW {name}");
        sqlx::query_scalar(&sql).fetch_one(pool).await.expect("shown")
    }
    for (name, value) in oo_commands::db::SESSION_SETTINGS {
        assert_eq!(show(&pool, name).await, value, "{name}");
    }
    let own = format!("{url}?options=-c%20backend_flush_after%3D64kB");
    let options = oo_commands::db::connect_options(&own).expect("a URL");
    let other = sqlx::PgPool::connect_with(options).await.expect("connected");
    assert_eq!(show(&other, "backend_flush_after").await, "64kB");
    assert_eq!(
        show(&other, "idle_in_transaction_session_timeout").await,
        "10s",
        "the settings the URL does not name are still ours"
    );
}

#[tokio::test]
async fn arbitrary_methods_add_no_metric_series() {
    // Out of the anonymous limit's way: this is about the metrics' labels.
    let app = spawn_with(|c| {
        c.anon_rate_limit = oo_api::config::RateLimit {
            per_second: 100_000,
            burst: 100_000,
        }
    })
    .await;
    for i in 0..5_000 {
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).expect("a method");
        let r = app.send(method, "/health", None, None).await;
        assert!(r.status.is_client_error(), "{}", r.status);
    }
    let metrics = app.metrics().await;
    let methods: HashSet<&str> = metrics
        .match_indices("method=\"")
        .map(|(i, m)| {
            let rest = &metrics[i + m.len()..];
            &rest[..rest.find('"').expect("closing quote")]
        })
        .collect();
    assert!(methods.len() <= 8, "{methods:?}");
    assert!(methods.contains("other"), "{methods:?}");
}

#[tokio::test]
async fn what_needs_no_credentials_is_limited_per_address_and_sessions_are_not() {
    let app = spawn_with(|c| {
        c.dev = true;
        c.anon_rate_limit = oo_api::config::RateLimit {
            per_second: 1,
            burst: 5,
        };
    })
    .await;
    let (token, _) = app.login("limited@example.org").await;
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/legal/terms",
        "/no-such-page",
    ] {
        let mut limited = None;
        for _ in 0..8 {
            let r = app.send(reqwest::Method::GET, path, None, None).await;
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                limited = Some(r);
                break;
            }
        }
        let r = limited.unwrap_or_else(|| panic!("{path} was never limited"));
        assert_eq!(r.body["code"], "rate_limited", "{path}");
        assert!(r.headers.contains_key("retry-after"), "{path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .expect("type")
                .starts_with("application/problem+json"),
            "{path}"
        );
    }
    let r = app
        .send(
            reqwest::Method::POST,
            "/auth/dev-login",
            None,
            Some(serde_json::json!({"email": "another@example.org"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "dev-login too");
    // A session is limited per person, not by the anonymous budget of its address.
    for _ in 0..10 {
        assert_eq!(app.get("/me", &token).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_trusted_proxy_is_counted_per_forwarded_address() {
    let app = spawn_with(|c| {
        c.anon_rate_limit = oo_api::config::RateLimit {
            per_second: 1,
            burst: 2,
        };
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    let health = |from: &'static str| {
        app.client
            .get(format!("{}/health", app.base))
            .header("x-forwarded-for", format!("203.0.113.9, {from}"))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(health("198.51.100.1").await.expect("health").status(), StatusCode::OK);
    }
    assert_eq!(
        health("198.51.100.1").await.expect("health").status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own budget; what the client itself wrote
    // further left is not believed.
    assert_eq!(health("198.51.100.2").await.expect("health").status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_admin_tokens_are_counted_per_address_then_refused_unread() {
    let app = spawn_app().await;
    let wrong = "w".repeat(40);
    for _ in 0..oo_api::auth::MAX_ADMIN_FAILURES {
        let r = app.get("/admin/projections", &wrong).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.get("/admin/projections", &wrong).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["code"], "rate_limited");
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(wait > 0 && wait <= oo_api::auth::ADMIN_FAILURE_WINDOW.as_secs());
    // From that address even the right token waits: a guess that happens to be right is not told.
    let r = app.get("/admin/projections", ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn health_figures_are_computed_at_most_about_once_a_second() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let requests = (0..40).map(|i| {
        let path = if i % 2 == 0 { "/ready" } else { "/metrics" };
        app.client.get(format!("{}{path}", app.base)).send()
    });
    for r in futures::future::join_all(requests).await {
        assert!(r.expect("answered").status().is_success());
    }
    let metrics = app.metrics().await;
    let refreshes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("oo_health_refreshes_total "))
        .expect("the refresh counter")
        .parse()
        .expect("a number");
    let bound = started.elapsed().as_secs_f64().ceil() + 1.0;
    assert!(
        refreshes >= 1.0 && refreshes <= bound,
        "{refreshes} refreshes for 41 requests in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_its_capacity_the_server_answers_503_at_once_and_health_still_answers() {
    let app = spawn_with(|c| {
        c.dev = true;
        c.max_in_flight = 1;
    })
    .await;
    let (token, _) = app.login("busy@example.org").await;
    // One slow request holds the only slot: it waits up to 2 s for a position the log has not
    // reached.
    let slow = app.post(
        "/recommend",
        &token,
        json!({"min_position": "c7fffffffffffff000000000000000001"}),
    );
    let fast = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let r = app.get("/me", &token).await;
        let health = app.send(reqwest::Method::GET, "/health", None, None).await;
        (r, started.elapsed(), health)
    };
    let (slow, (shed, waited, health)) = tokio::join!(slow, fast);
    assert!(slow.status.is_success(), "{:?}", slow.body);
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", shed.body);
    assert_eq!(shed.body["code"], "unavailable");
    assert!(shed.headers.contains_key("retry-after"));
    assert!(
        waited < std::time::Duration::from_secs(1),
        "answered at once: {waited:?}"
    );
    assert_eq!(health.status, StatusCode::OK, "liveness is never shed");
    // Once the slot is free, requests are served again.
    assert_eq!(app.get("/me", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn oo_serve_reports_the_heap_it_holds_beside_its_resident_memory() {
    let database_url = format!("{}/oo_test_{}", server_url(), uuid::Uuid::new_v4().simple());
    let _db = DbGuard::new(&database_url);
    let data_dir = temp_dir("oo-data");
    let served = Served::start(
        &database_url,
        &data_dir,
        &[("OO_LOG", "warn")],
        std::process::Stdio::null(),
    );
    let http = reqwest::Client::new();
    let heap = || async {
        let text = http
            .get(format!("{}/metrics", served.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains("# TYPE oo_heap_live_bytes gauge"),
            "the heap is a gauge: {text}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix("oo_heap_live_bytes "))
            .map(|v| v.trim().parse::<f64>().expect("a number"))
            .expect("oo_heap_live_bytes in /metrics")
    };
    let rss = || -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", served.child.id())).expect("status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024.0
    };
    let first = heap().await;
    // A running server holds its runtime, pools and registries: megabytes, all of them resident
    // (the allocator's reserve and the binary's pages come on top).
    assert!(first > 1e6, "the heap held is counted: {first} bytes");
    assert!(first < rss(), "held ({first}) within resident ({})", rss());

    // The figure is read at each scrape: any work between two scrapes changes it.
    served.login("heap@example.org").await;
    let second = heap().await;
    assert_ne!(first, second, "the figure is read live, not once");
    let _ = std::fs::remove_dir_all(&data_dir);
}
