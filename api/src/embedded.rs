//! Private PostgreSQL clusters: the one `oo serve --dev` starts under its data directory when no
//! database URL is configured and nothing answers at the default address, and the one the test
//! harness starts when no server is up. This module owns finding the server binaries, `initdb`
//! (once; the next start reuses the cluster and its data), starting and stopping the server, and
//! running all of it as an unprivileged user when oO runs as root (where `initdb` refuses).
//!
//! A cluster listens on a Unix socket of its own (owner only, trust authentication), and on a
//! loopback TCP port only when asked (the tests). The layout under its directory: `data/` (the
//! cluster), `socket/` (unless that path is too long for a socket, then a short directory under
//! the runtime or temporary directory), `server.log`, `oo.conf` (our settings, rewritten at each
//! start and included by `data/postgresql.conf`).

use sha2::Digest;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role the cluster is made with, and the one oO connects as.
pub const SUPERUSER: &str = "postgres";
/// The port in the socket's name (`.s.PGSQL.5432`), and on loopback when TCP is asked for none.
const SOCKET_PORT: u16 = 5432;
/// The longest socket path a server accepts is 107 bytes (`sun_path`); a margin below it.
const MAX_SOCKET_PATH: usize = 100;

/// How to install the server binaries, said wherever they are missing.
pub const INSTALL_HINT: &str = "install PostgreSQL's server: on Debian/Ubuntu `sudo apt-get install postgresql`, \
     on macOS `brew install postgresql@16` (or point OO_PG_BIN at the directory holding initdb and pg_ctl)";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL's server binaries (initdb, pg_ctl) were not found; looked in {}. To fix it, {INSTALL_HINT}",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoBinaries { tried: Vec<PathBuf> },
    #[error(
        "oO runs as root, where initdb refuses to make a cluster, and there is no `postgres` system user to run \
         it as. Run oO as an ordinary user, or create that user (`sudo useradd --system postgres`), or give a \
         database URL (OO_DATABASE_URL)"
    )]
    RootWithoutPostgresUser,
    #[error("{what} failed ({status}): {detail}")]
    Command {
        what: String,
        status: String,
        detail: String,
    },
    #[error(
        "the cluster in {dir} was made by PostgreSQL {cluster}, and the binaries found ({bin}) are PostgreSQL \
         {binaries}: point OO_PG_BIN at version {cluster}'s binaries, or move that directory away to start afresh"
    )]
    Version {
        dir: PathBuf,
        cluster: String,
        bin: PathBuf,
        binaries: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Where the server binaries are: `OO_PG_BIN` (or `explicit`) alone when given; otherwise
/// Debian's and RHEL's versioned directories (newest first), Homebrew's, then `PATH`.
pub fn find_binaries(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = explicit {
        return if has_server(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(ClusterError::NoBinaries {
                tried: vec![dir.to_path_buf()],
            })
        };
    }
    let mut tried = Vec::new();
    let versioned = |parent: &str, prefix: &str, suffix: &str| -> Vec<PathBuf> {
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix(prefix)?;
                let key = version
                    .split('.')
                    .map(|p| p.parse().ok())
                    .collect::<Option<Vec<u32>>>()?;
                Some((key, e.path().join(suffix)))
            })
            .collect();
        found.sort();
        found.into_iter().rev().map(|(_, p)| p).collect()
    };
    let mut candidates = Vec::new();
    candidates.extend(versioned("/usr/lib/postgresql", "", "bin"));
    candidates.extend(versioned("/usr", "pgsql-", "bin"));
    candidates.extend(versioned("/opt/homebrew/opt", "postgresql@", "bin"));
    candidates.extend(versioned("/usr/local/opt", "postgresql@", "bin"));
    candidates.push(PathBuf::from("/opt/homebrew/opt/postgresql/bin"));
    candidates.push(PathBuf::from("/usr/local/opt/postgresql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    for dir in candidates {
        if has_server(&dir) {
            return Ok(dir);
        }
        if !tried.contains(&dir) {
            tried.push(dir);
        }
    }
    Err(ClusterError::NoBinaries { tried })
}

/// The OS user the cluster's processes run as: this process's own, or `postgres` when this one
/// is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    fn find() -> Result<Self, ClusterError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self { ids: None });
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        passwd
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 3 && f[0] == "postgres").then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
            })
            .map(|ids| Self { ids: Some(ids) })
            .ok_or(ClusterError::RootWithoutPostgresUser)
    }

    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(cwd);
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Hands `path` to the cluster's user (when that is not this process's).
    fn own(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io(format!("cannot hand {} to the postgres user", path.display())))?;
        }
        Ok(())
    }
}

/// A cluster under a directory; [`Cluster::start`] runs its server.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    socket_dir: PathBuf,
    tcp_port: Option<u16>,
    settings: Vec<(String, String)>,
    run_as: RunAs,
}

/// How [`Cluster::start`] found the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It made the cluster (`initdb`) and started it.
    Created,
    /// It started the cluster an earlier run had made.
    Reused,
    /// The server was already running (left by a process that did not stop it).
    AlreadyRunning,
}

impl Cluster {
    /// The cluster under `dir` (made at the first [`Cluster::start`]), with the binaries in `bin`
    /// or found by [`find_binaries`]; on a loopback TCP port too when `tcp_port` is given.
    pub fn new(dir: &Path, bin: Option<&Path>, tcp_port: Option<u16>) -> Result<Self, ClusterError> {
        let bin = find_binaries(bin)?;
        let run_as = RunAs::find()?;
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("cannot resolve {}", dir.display())))?;
        let socket_dir = socket_dir_for(&dir);
        Ok(Self {
            dir,
            bin,
            socket_dir,
            tcp_port,
            settings: Vec::new(),
            run_as,
        })
    }

    /// A server setting of ours (`name = value` in `oo.conf`), from the next start on.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The URL of `database` on this cluster: over its socket, or over TCP when it listens there.
    pub fn url(&self, database: &str) -> String {
        match self.tcp_port {
            Some(port) => format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}"),
            None => {
                let socket: String =
                    url::form_urlencoded::byte_serialize(self.socket_dir.to_string_lossy().as_bytes()).collect();
                format!("postgres://{SUPERUSER}@localhost/{database}?host={socket}&port={SOCKET_PORT}")
            }
        }
    }

    /// Makes the cluster if there is none yet, and starts its server unless it runs already.
    pub fn start(&self) -> Result<Started, ClusterError> {
        let data = self.data_dir();
        let created = if data.join("PG_VERSION").is_file() {
            self.check_version(&data)?;
            false
        } else {
            self.initdb(&data)?;
            true
        };
        if self.pg_ctl(&["status"])?.status.success() {
            return Ok(Started::AlreadyRunning);
        }
        self.write_settings()?;
        let log = self.dir.join("server.log");
        let out = self.pg_ctl(&["-l", &log.to_string_lossy(), "-w", "-t", "60", "start"])?;
        if !out.status.success() {
            return Err(failed("pg_ctl start", &out, Some(&log)));
        }
        Ok(if created { Started::Created } else { Started::Reused })
    }

    /// Stops the server: `fast` ends open connections and shuts down cleanly; `immediate` is a
    /// crash (recovery replays the WAL at the next start).
    pub fn stop(&self, mode: StopMode) -> Result<(), ClusterError> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let out = self.pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"])?;
        if out.status.success() || !self.data_dir().join("postmaster.pid").exists() {
            Ok(())
        } else {
            Err(failed("pg_ctl stop", &out, None))
        }
    }

    /// Whether the server of this cluster runs.
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).is_ok_and(|o| o.status.success())
    }

    fn initdb(&self, data: &Path) -> Result<(), ClusterError> {
        self.run_as.own(&self.dir)?;
        std::fs::create_dir_all(data).map_err(io(format!("cannot create {}", data.display())))?;
        self.run_as.own(data)?;
        let out = self
            .run_as
            .command(&self.bin.join("initdb"), &self.dir)
            .arg("-D")
            .arg(data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .output()
            .map_err(io(format!("cannot run {}", self.bin.join("initdb").display())))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(data);
            let mut e = failed("initdb", &out, None);
            if let (ClusterError::Command { detail, .. }, Some(_)) = (&mut e, self.run_as.ids) {
                detail.push_str(&format!(
                    " (the cluster runs as the postgres user, who must be able to reach {}: choose a data \
                     directory it can reach with --data-dir, or run oO as an ordinary user)",
                    self.dir.display()
                ));
            }
            return Err(e);
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io(format!("cannot read {}", conf.display())))?;
        text.push_str(
            "\n# oO's settings for this private cluster (rewritten at each start)\ninclude_if_exists = '../oo.conf'\n",
        );
        std::fs::write(&conf, text).map_err(io(format!("cannot write {}", conf.display())))
    }

    fn check_version(&self, data: &Path) -> Result<(), ClusterError> {
        let cluster = std::fs::read_to_string(data.join("PG_VERSION"))
            .map_err(io("cannot read the cluster's PG_VERSION"))?
            .trim()
            .to_owned();
        let out = Command::new(self.bin.join("pg_ctl"))
            .arg("--version")
            .output()
            .map_err(io(format!("cannot run {}", self.bin.join("pg_ctl").display())))?;
        // "pg_ctl (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or("")
            .to_owned();
        let major = version.split('.').next().unwrap_or("").to_owned();
        if major == cluster {
            Ok(())
        } else {
            Err(ClusterError::Version {
                dir: self.dir.clone(),
                cluster,
                bin: self.bin.clone(),
                binaries: version,
            })
        }
    }

    fn write_settings(&self) -> Result<(), ClusterError> {
        std::fs::create_dir_all(&self.socket_dir)
            .map_err(io(format!("cannot create {}", self.socket_dir.display())))?;
        std::fs::set_permissions(&self.socket_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io(format!("cannot restrict {}", self.socket_dir.display())))?;
        self.run_as.own(&self.socket_dir)?;
        let quoted = |p: &Path| format!("'{}'", p.to_string_lossy().replace('\'', "''"));
        let (listen, port) = match self.tcp_port {
            Some(port) => ("127.0.0.1", port),
            None => ("", SOCKET_PORT),
        };
        let mut text = format!(
            "listen_addresses = '{listen}'\nport = {port}\nunix_socket_directories = {}\n\
             unix_socket_permissions = 0700\nmax_connections = 200\n",
            quoted(&self.socket_dir)
        );
        for (name, value) in &self.settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let path = self.dir.join("oo.conf");
        std::fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))?;
        self.run_as.own(&path)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let program = self.bin.join("pg_ctl");
        self.run_as
            .command(&program, &self.dir)
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .map_err(io(format!("cannot run {}", program.display())))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    Fast,
    Immediate,
}

/// The socket directory of the cluster under `dir`: `dir/socket`, unless the socket's path
/// would be too long; then a directory named after `dir` under the runtime directory (or the
/// temporary one).
fn socket_dir_for(dir: &Path) -> PathBuf {
    let inside = dir.join("socket");
    let socket_len = |d: &Path| d.as_os_str().len() + "/.s.PGSQL.5432".len();
    if socket_len(&inside) <= MAX_SOCKET_PATH {
        return inside;
    }
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let name = format!("oo-pg-{}", hex::encode(&digest[..8]));
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    match runtime {
        Some(r) if socket_len(&r.join(&name)) <= MAX_SOCKET_PATH => r.join(name),
        _ => PathBuf::from("/tmp").join(name),
    }
}

fn failed(what: &str, out: &Output, log: Option<&Path>) -> ClusterError {
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    if let Some(log) = log {
        let tail: Vec<String> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(5)
            .map(str::to_owned)
            .collect();
        detail.push_str(&format!(
            "; the server's log ({}) ends with: {}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    ClusterError::Command {
        what: what.to_owned(),
        status: out.status.to_string(),
        detail,
    }
}

/// A started cluster that is stopped (fast shutdown) when this is dropped: `oo serve --dev`'s.
#[derive(Debug)]
pub struct Running {
    cluster: Cluster,
    pub started: Started,
}

impl Running {
    pub fn start(cluster: Cluster) -> Result<Self, ClusterError> {
        let started = cluster.start()?;
        Ok(Self { cluster, started })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        match self.cluster.stop(StopMode::Fast) {
            Ok(()) => tracing::info!(dir = %self.cluster.dir.display(), "stopped the private PostgreSQL cluster"),
            Err(e) => tracing::error!(error = %e, "cannot stop the private PostgreSQL cluster"),
        }
    }
}

/// `oo serve --dev`'s database when none is configured: if nothing answers at the default URL,
/// a private cluster under the data directory (`pg/`), started here and stopped when the
/// returned guard is dropped, with `config`'s URL pointing at it. Never without `--dev`, never
/// when a URL is given (even one equal to the default).
pub async fn for_dev_serve(config: &mut crate::config::ServeConfig) -> anyhow::Result<Option<Running>> {
    use crate::config::DEFAULT_DATABASE_URL;
    if !config.dev || config.db.database_url.is_some() || answers(DEFAULT_DATABASE_URL).await {
        return Ok(None);
    }
    let dir = config.db.data_dir.join("pg");
    let bin = config.pg_bin.clone();
    let running =
        tokio::task::spawn_blocking(move || Cluster::new(&dir, bin.as_deref(), None).and_then(Running::start))
            .await?
            .map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "nothing answers at {DEFAULT_DATABASE_URL}, and no private PostgreSQL cluster could be started \
                 instead"
                ))
            })?;
    let how = match running.started {
        Started::Created => "made and started",
        Started::Reused => "started",
        Started::AlreadyRunning => "already running",
    };
    let url = running.cluster().url("oo");
    eprintln!(
        "nothing answers at {DEFAULT_DATABASE_URL}: using a private PostgreSQL cluster in {} ({how}; stopped when oO \
         exits): {url}",
        running.cluster().dir().display()
    );
    config.db.database_url = Some(url);
    Ok(Some(running))
}

/// Whether a PostgreSQL server answers at `url`: one that refuses the role or lacks the
/// database answers too (connecting then says why); nothing listening does not.
pub async fn answers(url: &str) -> bool {
    use sqlx::ConnectOptions;
    let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
        return true;
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            true
        }
        Ok(Err(sqlx::Error::Io(_))) | Err(_) => false,
        Ok(Err(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_directory_gets_a_short_socket_directory_of_its_own() {
        let short = Path::new("/home/a/oo/.oo/pg");
        assert_eq!(socket_dir_for(short), short.join("socket"));
        let long = PathBuf::from(format!("/home/{}/.oo/pg", "x".repeat(90)));
        let other = PathBuf::from(format!("/home/{}/.oo/pg", "y".repeat(90)));
        let (a, b) = (socket_dir_for(&long), socket_dir_for(&other));
        assert!(a.as_os_str().len() + 14 <= MAX_SOCKET_PATH, "{a:?}");
        assert_ne!(a, b, "one per cluster");
        assert_eq!(a, socket_dir_for(&long), "the same at each start");
    }

    #[test]
    fn missing_binaries_name_where_they_were_looked_for_and_how_to_install_them() {
        let e = find_binaries(Some(Path::new("/nonexistent/pg/bin"))).expect_err("none there");
        let text = e.to_string();
        assert!(text.contains("/nonexistent/pg/bin"), "{text}");
        assert!(text.contains("apt-get install postgresql"), "{text}");
        assert!(text.contains("brew install postgresql"), "{text}");
    }
}
