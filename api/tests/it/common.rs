//! Test harness: the real server on port 0 against a fresh database, and private Postgres
//! clusters for tests that hold transactions open.

#![allow(dead_code)]

use oo_api::config::{DbConfig, ServeConfig};
pub use oo_commands::WriteSide;
use oo_commands::store::WriterConfig;
use oo_commands::vault::MasterKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::Command;
pub use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token-of-at-least-32-characters";

/// The Postgres server the tests make their databases on (trust auth): `OO_TEST_PG_URL`, else
/// the one on 127.0.0.1:5432 when it answers, else a private cluster started once for this test
/// process (stopped and removed once the process has ended). Without PostgreSQL's server
/// binaries the first test to need a server fails at once, saying which package to install.
pub fn server_url() -> String {
    static URL: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let url = URL.get_or_init(|| {
        if let Ok(url) = std::env::var("OO_TEST_PG_URL") {
            return Ok(url);
        }
        let shared = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
        if std::net::TcpStream::connect_timeout(&shared, std::time::Duration::from_secs(2)).is_ok() {
            return Ok("postgres://postgres@127.0.0.1:5432".into());
        }
        let private = try_start_private_server(std::process::id())?;
        eprintln!(
            "no PostgreSQL answers on 127.0.0.1:5432: the tests use a private cluster in {} ({})",
            private.dir.display(),
            private.url
        );
        Ok(private.url)
    });
    url.clone().unwrap_or_else(|e| panic!("{e}"))
}

/// A private cluster for the tests, listening on a loopback port.
pub struct PrivateServer {
    pub dir: PathBuf,
    pub url: String,
}

impl PrivateServer {
    /// The postmaster's pid while it runs.
    pub fn postmaster(&self) -> Option<u32> {
        postmaster_pid(&self.dir.join("data"))
    }
}

/// Starts a private cluster (`oo_api::embedded`, as `oo serve --dev` does) that stops, and is
/// removed, once the process `owner` has ended.
pub fn start_private_server(owner: u32) -> PrivateServer {
    try_start_private_server(owner).unwrap_or_else(|e| panic!("{e}"))
}

fn try_start_private_server(owner: u32) -> Result<PrivateServer, String> {
    use oo_api::embedded::Cluster;
    let dir = std::env::temp_dir().join(format!("oo-test-pg-{}", Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for a private PostgreSQL: {e}"))?
        .port();
    let bin = std::env::var_os("OO_PG_BIN").map(PathBuf::from);
    let cluster = Cluster::new(&dir, bin.as_deref(), Some(port))
        .map_err(|e| format!("no PostgreSQL answers on 127.0.0.1:5432 and no private cluster can be made: {e}"))?;
    // The watchdog: once `owner` is gone, an immediate shutdown (SIGQUIT to the postmaster),
    // then the cluster's directories are removed. Detached, with no inherited output, so that
    // nothing waits on it.
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
pm=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
if [ -n "$pm" ]; then kill -QUIT "$pm" 2>/dev/null; while kill -0 "$pm" 2>/dev/null; do sleep 0.1; done; fi
rm -rf "$2" "$3""#;
    cluster
        .start()
        .map_err(|e| format!("cannot start a private PostgreSQL cluster in {}: {e}", dir.display()))?;
    Command::new("sh")
        .args(["-c", script, "watchdog", &owner.to_string()])
        .arg(cluster.dir())
        .arg(cluster.socket_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    Ok(PrivateServer {
        dir: cluster.dir().to_path_buf(),
        url: format!("postgres://{}@127.0.0.1:{port}", oo_api::embedded::SUPERUSER),
    })
}

/// A loopback port that was free a moment ago (for a peer that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A fresh database on `server`, migrated.
pub async fn fresh_db(server: &str) -> (String, PgPool, DbGuard) {
    let url = format!("{server}/oo_test_{}", Uuid::new_v4().simple());
    let guard = DbGuard::new(&url);
    let db = DbConfig {
        database_url: Some(url.clone()),
        db_pool: 8,
        data_dir: temp_dir("oo-data"),
        master_key: None,
    };
    let pool = db.connect().await.expect("fresh database");
    (url, pool, guard)
}

/// A test's own database, dropped when the test passes with the databases `oo simulate` made
/// beside it (`<name>_sim_<policy>`); a failed test leaves them to be looked at (the URL is
/// printed with the failure). Bind it to a named variable (`_db`, not `_`) so that it lives as
/// long as the test.
pub struct DbGuard(String);

impl DbGuard {
    pub fn new(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: the failed test's database {}", self.0);
            return;
        }
        let Some((server, name)) = self.0.rsplit_once('/') else {
            return;
        };
        let (admin, name) = (format!("{server}/postgres"), name.to_owned());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread and a
        // runtime of its own. `WITH (FORCE)` ends the connections the test's server still holds.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| e.to_string())?;
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT datname FROM pg_database WHERE datname = $1 OR starts_with(datname, $1 || '_sim_')",
                )
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                for name in names {
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.0);
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub database_url: String,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The database when this app created it ([`spawn_on`]), dropped after the server is told
    /// to stop; an app started on a given URL ([`spawn_at`]) leaves it to whoever made it.
    _db: Option<DbGuard>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_on(&server_url(), adjust).await
}

/// The server against a fresh database on the Postgres server at `server`.
pub async fn spawn_on(server: &str, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let url = format!("{server}/oo_test_{}", Uuid::new_v4().simple());
    let guard = DbGuard::new(&url);
    let mut app = spawn_at(&url, temp_dir("oo-data"), adjust).await;
    app._db = Some(guard);
    app
}

/// The server against the database at `url` (created if missing), with its data directory.
pub async fn spawn_at(url: &str, data_dir: PathBuf, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut config = ServeConfig::for_database(url, data_dir.clone());
    config.dev = true;
    config.admin_token = Some(ADMIN_TOKEN.into());
    adjust(&mut config);
    let app = oo_api::Application::build(config).await.expect("app builds");
    let addr = app.local_addr().expect("addr");
    let pool = app.pool();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        pool,
        database_url: url.to_owned(),
        data_dir,
        shutdown: Some(tx),
        _db: None,
    }
}

impl TestApp {
    /// A handle on a server running elsewhere (another process) at `base`.
    pub async fn attach(base: &str, database_url: &str, data_dir: &std::path::Path) -> TestApp {
        TestApp {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            pool: PgPool::connect(database_url).await.expect("database"),
            database_url: database_url.to_owned(),
            data_dir: data_dir.to_path_buf(),
            shutdown: None,
            _db: None,
        }
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Response { status, headers, body }
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn raw_post(&self, path: &str, token: &str, content_type: &str, body: &str) -> Response {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Response {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// Signs in with dev-login; returns (token, user id).
    pub async fn login(&self, email: &str) -> (String, String) {
        let r = self
            .send(
                reqwest::Method::POST,
                "/auth/dev-login",
                None,
                Some(json!({ "email": email })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        (
            r.body["token"].as_str().expect("token").to_owned(),
            r.body["user_id"].as_str().expect("user id").to_owned(),
        )
    }

    /// Promotes the shadow `spec` by force (the gate may refuse it) through the admin endpoint.
    pub async fn promote_by_force(&self, spec: &str) -> Response {
        self.send(
            reqwest::Method::POST,
            "/admin/policies/promote",
            Some(ADMIN_TOKEN),
            Some(json!({"spec": spec, "force": true})),
        )
        .await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Asks until a tip (not a 204) comes back; returns the response body.
    pub async fn tip(&self, token: &str) -> Value {
        for _ in 0..200 {
            let r = self.post("/recommend", token, json!({})).await;
            if r.status == StatusCode::OK {
                return r.body;
            }
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        }
        panic!("200 recommendations in a row were 'not now'");
    }
}

pub fn task(id: &str, external_id: &str, title: &str, priority: i64, completed: bool) -> Value {
    json!({"id": id, "kind": "task", "occurred_at": "2026-01-05T09:00:00Z",
           "data": {"source": "manual", "external_id": external_id, "title": title, "priority": priority, "completed": completed}})
}

/// `n` open manual tasks, ids `{prefix}{i}` and `x{i}`, titles `task {i}`, priorities 1 to 4.
pub fn tasks(prefix: &str, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            task(
                &format!("{prefix}{i}"),
                &format!("x{i}"),
                &format!("task {i}"),
                i % 4 + 1,
                false,
            )
        })
        .collect()
}

/// A connection that holds every live projection's checkpoint row (`FOR UPDATE`, in a
/// transaction left open): a rebuild then applies the log and waits to swap. Released by
/// `ROLLBACK` or by dropping it.
pub async fn hold_live_checkpoints(database_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(database_url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM checkpoints WHERE name = ANY($1) FOR UPDATE")
        .bind(oo_projections::names())
        .execute(&mut holder)
        .await
        .expect("hold the live checkpoints");
    holder
}

pub fn mood(id: &str, score: i64, note: &str) -> Value {
    json!({"id": id, "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": score, "note": note}})
}

/// A private Postgres cluster (`oo_api::embedded`) on its own loopback port, for tests that hold
/// transactions open or restart the server; stopped and removed on drop.
pub struct PrivateCluster {
    cluster: oo_api::embedded::Cluster,
    pub url: String,
}

/// The directory of PostgreSQL's binaries (`pg_dump`, `psql` beside the server's).
pub fn pg_bin() -> PathBuf {
    let explicit = std::env::var_os("OO_PG_BIN").map(PathBuf::from);
    oo_api::embedded::find_binaries(explicit.as_deref()).unwrap_or_else(|e| panic!("{e}"))
}

impl PrivateCluster {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("oo-pg-{}", Uuid::new_v4().simple()));
        let cluster = oo_api::embedded::Cluster::new(&dir, Some(&pg_bin()), Some(port))
            .unwrap_or_else(|e| panic!("{e}"))
            .setting("fsync", "off");
        let cluster = Self {
            cluster,
            url: format!("postgres://{}@127.0.0.1:{port}", oo_api::embedded::SUPERUSER),
        };
        cluster.start_server();
        cluster
    }

    /// Starts the server (again, after [`PrivateCluster::stop`]).
    pub fn start_server(&self) {
        self.cluster.start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        self.cluster
            .stop(oo_api::embedded::StopMode::Fast)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Crashes the server (immediate shutdown: no checkpoint, and WAL that was not yet written
    /// out of shared memory is lost; recovery replays the rest at the next start).
    pub fn crash(&self) {
        self.cluster
            .stop(oo_api::embedded::StopMode::Immediate)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop(oo_api::embedded::StopMode::Immediate);
        let _ = std::fs::remove_dir_all(self.cluster.dir());
        let _ = std::fs::remove_dir_all(self.cluster.socket_dir());
    }
}

/// The write side (store writer, vault, repositories) on `pool`, under a fresh master key.
pub async fn write_side(pool: &PgPool) -> WriteSide {
    write_side_with(pool, MasterKey::generate()).await
}

/// The write side on `pool` under `master` (another process's view of a server's database).
pub async fn write_side_with(pool: &PgPool, master: MasterKey) -> WriteSide {
    WriteSide::start(pool.clone(), master, WriterConfig::default())
        .await
        .expect("the write side starts")
}

/// Starts the projector over `store`'s log, reporting to `status` (stopped by aborting it).
pub async fn spawn_projectors(
    store: &oo_commands::store::EventStore,
    status: &oo_projections::status::Status,
) -> Vec<tokio::task::JoinHandle<()>> {
    oo_projections::projector::spawn_all(store, oo_projections::all(), status.clone(), CancellationToken::new())
        .await
        .expect("the projector starts")
}

/// A table's rows as JSON text, in a stable order (to compare projections).
pub async fn table_rows(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT to_jsonb(t)::text AS r FROM {table} t ORDER BY r"))
        .fetch_all(pool)
        .await
        .expect("dump")
}

/// Every projection table's rows, in a stable order.
pub async fn projection_tables(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    for p in oo_projections::all() {
        for t in p.tables() {
            out.push((t.to_string(), table_rows(pool, t).await));
        }
    }
    out
}

/// Waits until every projection has reached the head of the log.
pub async fn wait_caught_up(pool: &PgPool) {
    let ok = oo_projections::projector::wait_for_head(
        pool,
        &oo_projections::status::Status::default(),
        std::time::Duration::from_secs(30),
    )
    .await
    .expect("wait");
    if !ok {
        let head = oo_commands::store::head(pool).await.expect("head");
        let checkpoints = oo_projections::projector::checkpoints(pool).await.expect("checkpoints");
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' | ', state, wait_event_type || ':' || wait_event, 'in transaction for ' || (now() - xact_start)::text, left(query, 120)) \
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool)
        .await
        .expect("activity");
        panic!("projections did not reach the head of the log ({head:?}): {checkpoints:#?}\nsessions: {sessions:#?}");
    }
}

/// A private NATS JetStream server (Debian's nats-server) on its own port and store directory.
pub struct PrivateNats {
    child: Option<std::process::Child>,
    dir: PathBuf,
    port: u16,
    pub url: String,
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("oo-nats");
        let mut nats = Self {
            child: None,
            dir,
            port,
            url: format!("nats://127.0.0.1:{port}"),
        };
        nats.start_server();
        nats
    }

    /// Starts the server (again, on the same port and store, after [`PrivateNats::kill`]).
    pub fn start_server(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}): install it, on Debian/Ubuntu `sudo apt-get install nats-server`, \
                     on macOS `brew install nats-server`"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the server cleanly (SIGTERM: it syncs its store first), and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Kills the server (SIGKILL: what it had not synced to disk is lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Promotes `spec` by force in the line-up the log holds (or `random` with the shadows
/// `thompson` and `linucb` before the first promotion), straight through the command side.
pub async fn promote_by_force(policies: &oo_commands::aggregate::Repository<oo_domain::promotion::Policy>, spec: &str) {
    use oo_domain::promotion::{Evidence, Lineup, PolicyCommand, STREAM};
    let canonical = |s: &str| oo_domain::policy::canonical(s).expect("a spec");
    let loaded = policies.load(STREAM).await.expect("the line-up");
    let current = loaded.state.lineup.unwrap_or_else(|| Lineup {
        serving: canonical("random"),
        shadows: vec![canonical("thompson"), canonical("linucb")],
    });
    let spec = canonical(spec);
    let spec = if spec == current.serving {
        current.shadows[0].clone()
    } else {
        spec
    };
    let evidence = Evidence {
        window: 0,
        decisions: 0,
        min_decisions: 0,
        first_served_at: None,
        last_served_at: None,
        serving_value: 0.0,
        snips: None,
        dr: None,
        bootstrap: 0,
        seed: 0,
        refusals: vec!["forced in a test".into()],
    };
    let command = PolicyCommand::Promote {
        spec,
        current,
        evidence,
        force: true,
        at: chrono::Utc::now(),
    };
    policies
        .execute(STREAM, command, oo_commands::aggregate::Meta::new(chrono::Utc::now()))
        .await
        .expect("promoted");
}

/// `oo serve --dev` as a separate process (so that a test can kill it), on any free port,
/// against `database_url` with `data_dir` and the admin token, plus `env`; its stderr goes to
/// `stderr`. Killed on drop.
pub struct Served {
    pub child: std::process::Child,
    pub base: String,
}

impl Served {
    pub fn start(
        database_url: &str,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_oo"))
            .args(["serve", "--dev"])
            .env("OO_DATABASE_URL", database_url)
            .env("OO_BIND", "127.0.0.1:0")
            .env("OO_DATA_DIR", data_dir)
            .env("OO_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("oo serve runs");
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("oo says where it listens");
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        Self { child, base }
    }

    /// Signs `email` in through dev-login; the session token.
    pub async fn login(&self, email: &str) -> String {
        let login: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/auth/dev-login", self.base))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        login["token"]
            .as_str()
            .unwrap_or_else(|| panic!("a token: {login}"))
            .to_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The postmaster's pid of the cluster whose data directory is `data`, while it runs.
pub fn postmaster_pid(data: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Waits until the relay has published every event of the log (60 s at most).
pub async fn relay_caught_up(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = app.get("/admin/projections", ADMIN_TOKEN).await;
        let relay = r.body["projections"]
            .as_array()
            .expect("list")
            .iter()
            .find(|p| p["kind"] == "relay")
            .expect("relay")
            .clone();
        if relay["lag_events"] == 0 && relay["events_applied"].as_i64() == Some(app.event_count().await) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not catch up: {relay}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs `npm install` in `dir` (a test peer's folder with its `package.json` and lock) once per
/// test run, unless its `node_modules` is there already.
pub fn npm_install(dir: &std::path::Path) {
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == dir) || dir.join("node_modules/.package-lock.json").exists() {
        done.push(dir.to_path_buf());
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}): install Node.js, on Debian/Ubuntu `sudo apt-get install nodejs npm`, on \
                 macOS `brew install node`"
            )
        });
    assert!(status.success(), "npm install in {} failed", dir.display());
    done.push(dir.to_path_buf());
}
