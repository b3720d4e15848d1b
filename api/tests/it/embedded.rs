//! A fresh machine: `oo serve --dev` with no database URL and nothing answering at the default
//! address starts a private cluster under its data directory, reuses it at the next start and
//! stops it on exit; clear failures otherwise; and the test harness's own private cluster.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `oo serve` with the shared server out of reach: libpq's defaults (which sqlx follows) point at
/// an empty socket directory and a closed port, and no URL is configured.
fn oo(data_dir: &Path, unreachable: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oo"));
    c.args(args)
        .env_remove("OO_DATABASE_URL")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("PGHOST", unreachable)
        .env("PGPORT", "1")
        .env("OO_BIND", "127.0.0.1:0")
        .env("OO_DATA_DIR", data_dir)
        .env("OO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OO_LOG", "warn");
    c
}

struct Served {
    child: Child,
    base: String,
    /// What oO wrote on stderr before it listened.
    stderr_first_line: String,
}

fn serve(data_dir: &Path, unreachable: &Path) -> Served {
    let mut child = oo(data_dir, unreachable, &["serve", "--dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oo serve runs");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("oo says where it listens");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("stdout's first line says where oO listens: {line:?}"))
        .to_owned();
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut stderr_first_line = String::new();
    err.read_line(&mut stderr_first_line).expect("stderr");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Served {
        child,
        base,
        stderr_first_line,
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "oO did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` runs (an exited process its parent has not reaped yet is not running: here
/// the postmaster's parent is whatever adopted it once pg_ctl exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
}

/// The postmaster's pid of the cluster under `data_dir`.
fn postmaster(data_dir: &Path) -> Option<u32> {
    postmaster_pid(&data_dir.join("pg/data"))
}

async fn sign_in(client: &reqwest::Client, base: &str, email: &str) -> String {
    let r = client
        .post(format!("{base}/auth/dev-login"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("dev-login");
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test]
async fn serve_dev_starts_a_private_cluster_when_nothing_answers_reuses_it_and_stops_it_on_exit() {
    let data_dir = temp_dir("oo-fresh");
    let unreachable = temp_dir("oo-no-pg");
    let client = reqwest::Client::new();

    // First start: the cluster is made under the data directory.
    let mut first = serve(&data_dir, &unreachable);
    assert!(
        first.stderr_first_line.contains("private PostgreSQL cluster")
            && first.stderr_first_line.contains("made and started"),
        "one line on stderr says so: {:?}",
        first.stderr_first_line
    );
    assert!(data_dir.join("pg/data/PG_VERSION").is_file());
    let pid = postmaster(&data_dir).expect("the cluster runs");
    assert!(alive(pid));
    let token = sign_in(&client, &first.base, "fresh@example.org").await;
    let r = client
        .post(format!("{}/signals", first.base))
        .bearer_auth(&token)
        .json(&json!({"signals": [task("s1", "x1", "Water the basil", 2, false)]}))
        .send()
        .await
        .expect("signals");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .post(format!("{}/recommend", first.base))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("recommend");
    assert_eq!(r.status(), StatusCode::OK);
    let tip: serde_json::Value = r.json().await.expect("json");
    assert!(tip["tip"]["id"].is_string(), "{tip}");

    // SIGTERM: oO stops, and so does its cluster.
    signal(&first.child, "TERM");
    assert!(wait_exit(&mut first.child).success());
    assert!(!alive(pid), "no PostgreSQL process of the cluster is left");
    assert!(postmaster(&data_dir).is_none(), "stopped cleanly");

    // Second start: the same cluster and its data.
    let mut second = serve(&data_dir, &unreachable);
    assert!(
        second.stderr_first_line.contains("private PostgreSQL cluster") && !second.stderr_first_line.contains("made"),
        "{:?}",
        second.stderr_first_line
    );
    let pid = postmaster(&data_dir).expect("the cluster runs again");
    let token = sign_in(&client, &second.base, "fresh@example.org").await;
    let export = client
        .get(format!("{}/me/export", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    assert!(
        export.contains("Water the basil"),
        "the signal of the first run is there: {export}"
    );

    // Ctrl-C: the same.
    signal(&second.child, "INT");
    assert!(wait_exit(&mut second.child).success());
    assert!(!alive(pid), "no PostgreSQL process of the cluster is left");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Runs `oo` to its end and returns its stderr.
fn fails(mut command: Command) -> String {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oo runs");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = wait_exit(&mut child);
    assert!(!status.success(), "oO stops: {stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "no backtrace unless asked: {stderr}"
    );
    stderr
}

#[test]
fn without_the_server_binaries_oo_says_which_package_to_install() {
    let data_dir = temp_dir("oo-fresh");
    let unreachable = temp_dir("oo-no-pg");
    let mut command = oo(&data_dir, &unreachable, &["serve", "--dev"]);
    command.env("OO_PG_BIN", &unreachable);
    let stderr = fails(command);
    assert!(stderr.contains("nothing answers at postgres:///oo"), "{stderr}");
    assert!(
        stderr.contains(&unreachable.display().to_string()),
        "says where it looked: {stderr}"
    );
    assert!(stderr.contains("sudo apt-get install postgresql"), "{stderr}");
    assert!(stderr.contains("brew install postgresql"), "{stderr}");
}

#[test]
fn a_configured_url_or_production_mode_never_starts_a_cluster_and_says_how_to_start_the_server() {
    let unreachable = temp_dir("oo-no-pg");
    let explicit = |data_dir: &PathBuf| {
        let mut c = oo(data_dir, &unreachable, &["serve", "--dev"]);
        c.env("OO_DATABASE_URL", "postgres:///oo");
        c
    };
    for (what, data_dir, command) in [
        ("a URL equal to the default", temp_dir("oo-fresh"), None),
        ("production mode", temp_dir("oo-fresh"), Some(["serve"])),
    ] {
        let c = match command {
            None => explicit(&data_dir),
            Some(args) => oo(&data_dir, &unreachable, &args),
        };
        let stderr = fails(c);
        assert!(
            stderr.contains("cannot reach PostgreSQL at postgres:///oo"),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("sudo systemctl start postgresql"), "{what}: {stderr}");
        assert!(stderr.contains("brew services start postgresql"), "{what}: {stderr}");
        assert!(!data_dir.join("pg").exists(), "{what}: no cluster");
    }
}

/// `oo serve --dev` against a fresh database of the test server (start-up failures past it),
/// and the database's guard.
fn on_a_fresh_database(data_dir: &Path, unreachable: &Path) -> (Command, DbGuard) {
    let mut command = oo(data_dir, unreachable, &["serve", "--dev"]);
    let url = format!("{}/oo_test_{}", server_url(), uuid::Uuid::new_v4().simple());
    command.env("OO_DATABASE_URL", &url);
    (command, DbGuard::new(&url))
}

#[test]
fn a_port_in_use_is_named_with_the_way_out() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port();
    let data_dir = temp_dir("oo-fresh");
    let unreachable = temp_dir("oo-no-pg");
    let (mut command, _db) = on_a_fresh_database(&data_dir, &unreachable);
    command.env("OO_BIND", format!("127.0.0.1:{port}"));
    let stderr = fails(command);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("--bind"), "{stderr}");
}

#[test]
fn an_unreadable_master_key_is_named_with_the_way_out() {
    let data_dir = temp_dir("oo-fresh");
    let unreachable = temp_dir("oo-no-pg");
    let (mut command, _db) = on_a_fresh_database(&data_dir, &unreachable);
    command.env("OO_MASTER_KEY", "/nonexistent/master.key");
    let stderr = fails(command);
    assert!(stderr.contains("/nonexistent/master.key"), "{stderr}");
    assert!(stderr.contains("age-keygen"), "{stderr}");
}

/// The harness's path when no server answers: a private cluster on a loopback port, which the
/// tests use like the shared server, and which stops once the process that started it is gone.
#[tokio::test]
async fn the_harness_starts_a_private_cluster_and_stops_it_when_its_process_ends() {
    let mut owner = Command::new("sleep").arg("600").spawn().expect("sleep runs");
    let private = start_private_server(owner.id());
    let app = spawn_on(&private.url, |_| {}).await;
    let (token, _) = app.login("harness@example.org").await;
    assert_eq!(app.get("/me", &token).await.status, StatusCode::OK);
    let pid = private.postmaster().expect("it runs");
    assert!(alive(pid));
    drop(app);

    owner.kill().expect("kill");
    owner.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) || private.dir.exists() {
        assert!(Instant::now() < deadline, "the cluster outlived its process");
        std::thread::sleep(Duration::from_millis(100));
    }
}
