//! `oo`: parse the command line, set up logging, call into the crates.

use clap::{Parser, Subcommand};
use oo_api::cli::{self, RebuildArgs};
use oo_api::config::{DbConfig, ServeConfig};
use tracing_subscriber::EnvFilter;

// The request path allocates many small, short-lived buffers (JSON, rows); mimalloc serves them
// with far less contention than the system allocator (see docs/benchmarks.md). The wrapper counts
// the bytes held (no limit is set), for `/metrics` (`oo_api::heap`).
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

#[derive(Debug, Parser)]
#[command(name = "oo", version, about = "oO: one tip, at the right moment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (HTTP API, projectors).
    Serve(Box<ServeConfig>),
    /// Create the database if missing and migrate it.
    Migrate(DbConfig),
    /// Rebuild projections from the log without downtime.
    Rebuild(RebuildArgs),
    /// Simulate a synthetic population through the real command path, once per policy.
    Simulate(Box<oo_api::cli::SimulateArgs>),
    /// Export from the log (docs/replay.md).
    #[command(subcommand)]
    Export(Export),
    /// Evaluate policies on logged decisions (docs/replay.md).
    Replay(Box<oo_api::cli::ReplayArgs>),
    /// Follow the event stream (NATS JetStream) and print events as JSON lines.
    Tail(oo_api::cli::TailArgs),
    /// Print the OpenAPI document the server serves at /openapi.json (for generating clients)
    Openapi,
    /// Master-key operations.
    #[command(subcommand)]
    Keys(Keys),
    /// The serving line-up: show it, or promote a shadow through the offline gate.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The serving policy and the shadows with their recent mean reward and decision count.
    Show(Box<oo_api::cli::PolicyArgs>),
    /// Make a shadow the serving policy if the offline gate lets it (exit status 1 if not).
    Promote(Box<oo_api::cli::PromoteArgs>),
}

#[derive(Debug, Subcommand)]
enum Export {
    /// Every decision with its settled reward, as logged bandit feedback (ids and numbers only).
    Decisions(Box<oo_api::cli::ExportDecisionsArgs>),
}

#[derive(Debug, Subcommand)]
enum Keys {
    /// Re-wrap every data key under a new master key.
    Rotate(oo_api::cli::RotateArgs),
}

fn init_tracing() {
    // Postgres's notices are left out by default: `store::held_connection`'s ROLLBACK draws
    // "there is no transaction in progress" each time a connection is taken from the pool.
    let filter = EnvFilter::try_from_env("OO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("OO_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    oo_api::heap::register(|| GLOBAL.allocated());
    match Cli::parse().command {
        Command::Serve(mut config) => {
            let dev = config.dev;
            // Stopped when dropped: after the server, or on any start-up failure.
            let _cluster = oo_api::embedded::for_dev_serve(&mut config).await?;
            let app = oo_api::Application::build(*config).await?;
            if dev {
                tracing::warn!(
                    "DEVELOPMENT MODE: POST /auth/dev-login signs anyone in by email. Never expose this server."
                );
            }
            if let Some(token) = &app.generated_admin_token {
                eprintln!("dev admin token (generated for this run): {token}");
            }
            let addr = app.local_addr()?;
            println!("listening on http://{addr}");
            eprintln!("the app: open http://{addr}/ in a browser (the operator's console: http://{addr}/console)");
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate(db) => cli::migrate(&db).await,
        Command::Rebuild(args) => cli::rebuild(&args).await,
        Command::Keys(Keys::Rotate(args)) => cli::rotate_keys(&args).await,
        Command::Tail(args) => cli::tail(&args).await,
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(oo_api::openapi::document())?);
            Ok(())
        }
        Command::Export(Export::Decisions(args)) => cli::export_decisions(&args).await,
        Command::Replay(args) => cli::replay(&args).await,
        Command::Simulate(args) => cli::simulate(*args).await,
        Command::Policy(PolicyCommand::Show(args)) => cli::policy_show(&args).await,
        Command::Policy(PolicyCommand::Promote(args)) => cli::policy_promote(&args).await,
    }
}
