//! `oo-bench`: benchmarks that print figures (never pass/fail), run as
//! `cargo run --release -p oo-bench -- <benchmark> …`. Each one builds its own database
//! on the Postgres server given by `--server` (created fresh, dropped afterwards), runs the real
//! server in-process on a loopback port where HTTP is involved, and prints a table.
//!
//! - `appends`: durable appends per second through `POST /signals` (1 signal per request, and
//!   batches of 100) at several client counts, beside pgbench's single-row INSERT rate at the same
//!   concurrency on the same server.
//! - `recommend`: `POST /recommend` latency at a fixed offered load (open loop: requests are sent
//!   on schedule whether or not earlier ones have answered, latency counted from the scheduled
//!   time), and the maximum throughput of closed-loop clients. Beside the open loop's latency it
//!   prints the machine's CPU, how late 1 ms sleeps ran on an OS thread and on the runtime, and
//!   the server's own histograms (`/recommend`, appends, the writer's batches), so that a tail can
//!   be traced to the machine, the runtime or the durable commit.
//! - `snapshot`: the time of one command on a `Signals` stream after 10 and after 50,000 events.
//! - `rebuild`: projection rebuild speed on a log of N events, beside the time to read the log.
//! - `export`: `oo export decisions`' time and peak memory on logs of growing size.

mod appends;
mod crypto;
mod export;
mod harness;
mod probes;
mod rebuild;
mod recommend;
mod relay;
mod replay;
mod snapshot;
mod soak;

use clap::{Parser, Subcommand};

// The server runs in-process: the same allocator as the `oo` binary, so that its figures hold
// for `oo serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "oo-bench",
    about = "oO's benchmarks: figures beside a reference, never pass/fail"
)]
pub struct BenchArgs {
    /// The Postgres server to benchmark on (a database is created on it and dropped afterwards).
    #[arg(
        long,
        env = "OO_BENCH_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432",
        global = true
    )]
    pub server: String,
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Which {
    /// Durable appends per second through POST /signals, beside pgbench.
    Appends {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Give every signal a personal field (a mood note), sealed under the user's key.
        #[arg(long)]
        personal: bool,
    },
    /// Relay throughput on a backlog, end-to-end relay latency under append load, beside a
    /// trivial JetStream publisher. Starts a private `nats-server` (Debian's) of its own.
    Relay {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The cost of sealing and opening one event's personal fields, and of unwrapping a key.
    Crypto {
        #[arg(long, default_value_t = 100_000)]
        iterations: u32,
    },
    /// POST /recommend latency at a fixed offered load, and maximum throughput.
    Recommend {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        /// Open todos per user (candidates = todos + fitting advices + not now).
        #[arg(long, default_value_t = 10)]
        todos: usize,
        /// The serving policy (a spec as in OO_POLICY).
        #[arg(long, default_value = "linucb")]
        policy: String,
        /// Shadow policies (`;`-separated specs, as in OO_SHADOW_POLICIES).
        #[arg(long, default_value = "")]
        shadows: String,
        /// Decisions each user gets and reacts to before the measurement, so that their models
        /// are not empty.
        #[arg(long, default_value_t = 5)]
        history: usize,
    },
    /// One command's time on a Signals stream after 10 and after 50,000 events.
    Snapshot {
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Off-policy estimation speed beside Open Bandit Pipeline's formulas in numpy, then oO alone
    /// on a large log.
    Replay {
        #[arg(long, default_value_t = 10_000)]
        decisions: usize,
        #[arg(long, default_value_t = 1_000)]
        bootstrap: usize,
        /// Decisions of the large run (0: skip it).
        #[arg(long, default_value_t = 1_000_000)]
        large: usize,
    },
    /// Rebuild speed on a log of N events, beside the time to read the log alone.
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// `oo export decisions`' time and peak memory on logs of these sizes, in both formats.
    Export {
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        decisions: Vec<usize>,
    },
    /// Mixed traffic (signals, recommend, feedback, reads) at a fixed rate for a long time against
    /// `oo serve` as a process of its own: errors, p50/p99 per route over time, the server's
    /// memory. Needs the `oo` binary beside this one (cargo build --release -p oo-api --bin oo).
    Soak {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
        /// People sending the traffic. Each person's history grows by about 0.9 × rate / users
        /// events a second, and the export streams all of it: with 1,000 people at 500 req/s,
        /// 0.44 a second, still hundreds of times a heavy user's pace; with 200 (the default
        /// before), an export took about a second after 14 minutes (docs/benchmarks.md).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Seconds between two report lines.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// Seconds after which memory should stay flat.
        #[arg(long, default_value_t = 300)]
        warmup: u64,
    },
    /// One export, for `export` to measure (prints its peak memory in MiB).
    #[command(hide = true)]
    ExportChild {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        format: String,
        #[arg(long)]
        out: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(BenchArgs::parse()).await
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Appends {
            clients,
            seconds,
            personal,
        } => appends::appends(&args.server, &clients, seconds, personal).await,
        Which::Relay {
            events,
            clients,
            seconds,
        } => relay::relay(&args.server, events, clients, seconds).await,
        Which::Crypto { iterations } => {
            crypto::crypto(iterations);
            Ok(())
        }
        Which::Recommend {
            rate,
            seconds,
            clients,
            users,
            todos,
            policy,
            shadows,
            history,
        } => {
            let load = recommend::Load {
                rate,
                seconds,
                clients,
                users,
                todos,
                history,
            };
            recommend::recommend(&args.server, &load, &policy, &shadows).await
        }
        Which::Snapshot { events } => snapshot::snapshot(&args.server, events).await,
        Which::Rebuild { events } => rebuild::rebuild(&args.server, events).await,
        Which::Replay {
            decisions,
            bootstrap,
            large,
        } => replay::replay(decisions, bootstrap, large),
        Which::Export { decisions } => export::export(&args.server, &decisions).await,
        Which::Soak {
            rate,
            seconds,
            users,
            interval,
            warmup,
        } => {
            let run = soak::Soak {
                rate,
                seconds,
                users,
                interval,
                warmup,
            };
            soak::soak(&args.server, &run).await
        }
        Which::ExportChild {
            database_url,
            format,
            out,
        } => export::child(&database_url, &format, &out).await,
    }
}
