//! The `oo` subcommands other than `serve`: their arguments and the wiring into the crates.

use crate::config::DbConfig;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// `oo migrate`: create the database if missing and run the migrations, nothing else.
pub async fn migrate(db: &DbConfig) -> anyhow::Result<()> {
    db.connect().await?;
    eprintln!("migrations are up to date");
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// The projection to rebuild (open_tasks, features, tip_log, bandit, reward_pending, policies).
    pub name: Option<String>,
    /// Rebuild every projection.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
}

/// `oo rebuild <name>|--all`: blue/green rebuild with a progress bar; a running server keeps
/// serving the old tables until the swap.
pub async fn rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let pool = args.db.connect().await?;
    let all = oo_projections::all();
    let chosen: Vec<_> = match (&args.name, args.all) {
        (_, true) => all,
        (Some(n), false) => {
            let p = all
                .into_iter()
                .find(|p| p.name() == n)
                .with_context(|| format!("no projection named {n:?}"))?;
            vec![p]
        }
        (None, false) => anyhow::bail!("name a projection or pass --all"),
    };
    let status = oo_projections::status::Status::default();
    for p in chosen {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} events  {per_sec}  eta {eta}")
                .context("progress template")?
                .progress_chars("=> "),
        );
        bar.set_message(p.name());
        let rebuilt = oo_projections::rebuild::rebuild(&pool, p.as_ref(), &status, |applied, total| {
            bar.set_length(total);
            bar.set_position(applied);
        })
        .await?;
        bar.finish();
        eprintln!(
            "{}: {} events in {:.2} s ({:.0} events/s), swapped in",
            p.name(),
            rebuilt.events_applied,
            rebuilt.seconds,
            rebuilt.events_per_second()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// A file holding the new age identity (`age-keygen -o FILE` makes one). Every running
    /// server must hold it beside the old one before the rotation starts (docs/operations.md).
    #[arg(long)]
    pub new_key: std::path::PathBuf,
    /// How many data keys one transaction re-wraps.
    #[arg(long, default_value_t = oo_commands::vault::ROTATION_BATCH)]
    pub batch: i64,
}

/// `oo keys rotate --new-key FILE`: re-wraps every data key under the new master key, in short
/// transactions; run again with the same keys, it resumes an interrupted rotation.
pub async fn rotate_keys(args: &RotateArgs) -> anyhow::Result<()> {
    let pool = args.db.connect().await?;
    let old = args.db.master_key()?;
    let text =
        std::fs::read_to_string(&args.new_key).with_context(|| format!("cannot read {}", args.new_key.display()))?;
    let new = oo_commands::vault::MasterKey::parse_file(&text)
        .with_context(|| format!("{} holds no age identity", args.new_key.display()))?;
    if args.batch < 1 {
        anyhow::bail!("--batch must be at least 1");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("keys [{bar:40}] {pos}/{len}  {per_sec}  eta {eta}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let (keys, secrets) = oo_commands::vault::rotate_master_key(&pool, &old, &new, args.batch, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    eprintln!(
        "re-wrapped {keys} data keys and {secrets} service secrets under {}.\n\
         Now point OO_MASTER_KEY at that file alone, restart every server, and destroy the old master key (and its \
         backups): until then, keys of deleted users that survive in old copies can still be unwrapped.",
        args.new_key.display()
    );
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// The NATS server the relay publishes to.
    #[arg(long, env = "OO_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Which events: a subject filter such as `oo.events.v1.signals.>` or
    /// `oo.events.v1.*.*.7` (one partition).
    #[arg(long, default_value = "oo.events.v1.>")]
    pub subject: String,
    /// The durable consumer's name: a second `oo tail` with the same name resumes where the
    /// first stopped (and shares the work with it, if both run).
    #[arg(long, default_value = "oo-tail")]
    pub durable: String,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `oo tail`: follows the event stream through a durable pull consumer and prints each event as
/// one JSON line (personal fields stay sealed: they read "[sealed]").
pub async fn tail(args: &TailArgs) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;
    let client = async_nats::connect(args.nats_url.as_str())
        .await
        .context("cannot reach NATS")?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream("OO_EVENTS")
        .await
        .context("no OO_EVENTS stream: is the relay running?")?;
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: args.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .context("cannot create the consumer")?;
    // Pull in batches no larger than what is still wanted: a message pulled is a message this
    // consumer owes an acknowledgement for, so `--limit` never leaves pulled messages behind.
    let mut seen = 0usize;
    loop {
        let want = args.limit.map_or(100, |l| (l - seen).min(100));
        let mut batch = consumer
            .batch()
            .max_messages(want)
            .expires(std::time::Duration::from_secs(5))
            .messages()
            .await
            .context("cannot pull")?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e)).context("cannot receive")?;
            let envelope = oo_proto::decode_envelope(message.payload.as_ref()).context("not an oO event envelope")?;
            let (event_id, position, event_type, user_id) = (
                envelope.event_id.clone(),
                envelope.position.clone(),
                envelope.event_type.clone(),
                envelope.user_id.clone(),
            );
            let sealed = envelope.sealed.is_some();
            let payload = match oo_proto::event_from_envelope(envelope) {
                Ok(oo_proto::DomainEvent::User(e)) => serde_json::to_value(e)?,
                Ok(oo_proto::DomainEvent::Signals(e)) => serde_json::to_value(e)?,
                Ok(oo_proto::DomainEvent::Tip(e)) => serde_json::to_value(e)?,
                Ok(oo_proto::DomainEvent::Policy(e)) => serde_json::to_value(e)?,
                Ok(oo_proto::DomainEvent::Connection(e)) => serde_json::to_value(e)?,
                Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
            };
            let line = serde_json::json!({
                "subject": message.subject.as_str(),
                "event_id": event_id,
                "position": position,
                "event_type": event_type,
                "user_id": user_id,
                "sealed": sealed,
                "payload": payload,
            });
            println!("{line}");
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!(e))
                .context("cannot acknowledge")?;
            seen += 1;
        }
        if args.limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// How many people.
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// How many simulated days.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// The seed of the population and of every decision.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Comma-separated policies (specs as in OO_POLICY, e.g. `linucb:alpha=0.5`); `random` and
    /// `oracle` are always added.
    #[arg(long, default_value = "random,linucb,thompson")]
    pub policies: String,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write a plot of the daily mean reward (SVG).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Drop and re-create the simulation databases if they exist.
    #[arg(long)]
    pub reset: bool,
    /// How many people are simulated at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Off-policy evaluation: the other policies (and `uniform`) are evaluated offline on the
    /// logging policy's decisions, beside their true values (the JSON's `ope` object).
    #[arg(long)]
    pub ope: bool,
    /// The logging policy of `--ope`.
    #[arg(long, default_value = "random", requires = "ope")]
    pub ope_logging: String,
}

/// `oo simulate`: runs the simulator (`oo_replay::simulate`) and prints its report, as one JSON
/// object with `--json`, as a table otherwise.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let report = oo_replay::simulate::run(oo_replay::simulate::SimulateArgs {
        database_url: args.db.url().to_owned(),
        db_pool: args.db.db_pool,
        users: args.users,
        days: args.days,
        seed: args.seed,
        policies: args.policies,
        plot: args.plot,
        reset: args.reset,
        concurrency: args.concurrency,
        ope: args.ope.then_some(args.ope_logging),
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", oo_replay::simulate::table(&report));
        if let Some(ope) = &report.ope {
            print!("\n{}", oo_replay::simulate::ope_table(ope));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct ExportDecisionsArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// The first decision: a time (RFC 3339, when the tip was served) or a position; inclusive.
    #[arg(long)]
    pub since: Option<oo_replay::export::Bound>,
    /// Where to stop: a time or a position; exclusive.
    #[arg(long)]
    pub until: Option<oo_replay::export::Bound>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// The file to write (`-`: standard output).
    #[arg(long, default_value = "-")]
    pub out: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object a line (DESIGN section 12).
    Jsonl,
    /// The same columns as Parquet (for pandas, polars, DuckDB).
    Parquet,
}

/// `oo export decisions`: the log's decisions as logged bandit feedback (docs/replay.md), with a
/// progress bar on a terminal and a summary on stderr.
pub async fn export_decisions(args: &ExportDecisionsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let pool = oo_commands::db::connect(args.db.url(), 2).await?;
    let out: Box<dyn Write + Send> = if args.out == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let mut sink = match args.format {
        ExportFormat::Jsonl => Sink::Jsonl(out),
        ExportFormat::Parquet => Sink::Parquet(Box::new(oo_replay::columnar::ParquetSink::new(out)?)),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("decisions [{bar:40}] {pos}/{len}  {per_sec}  eta {eta}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let range = oo_replay::export::Range {
        since: args.since,
        until: args.until,
    };
    let exported = oo_replay::export::export(
        &pool,
        range,
        |decision| match &mut sink {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, decision)?;
                out.write_all(b"\n")
            }
            Sink::Parquet(parquet) => parquet.push(decision).map_err(std::io::Error::other),
        },
        |total, read| {
            bar.set_length(total);
            bar.set_position(read);
        },
    )
    .await?;
    match sink {
        Sink::Jsonl(mut out) => out.flush().context("cannot write the export")?,
        Sink::Parquet(parquet) => {
            parquet.finish()?.flush().context("cannot write the export")?;
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "exported {} decisions ({} not settled yet); left out {} of people deleted since",
        exported.decisions, exported.unsettled, exported.deleted
    );
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// A file of logged decisions (JSON lines, DESIGN section 12, or Parquet with the same
    /// columns, told by its first bytes; `-`: JSON lines on standard input). Without
    /// it, the decisions of the database (`--database-url`), exactly as `oo export decisions`
    /// would write them.
    #[arg(long)]
    pub input: Option<String>,
    /// The policies to evaluate: `uniform`, `logged`, or any spec `/recommend` takes; `;`
    /// separates specs when one holds a comma.
    #[arg(long, default_value = "uniform,logged")]
    pub policies: String,
    /// Estimators (default: all of replay, ips, ips_clipped, snips, dr, sndr).
    #[arg(long, value_delimiter = ',')]
    pub estimators: Vec<String>,
    /// The largest weight `ips_clipped` keeps.
    #[arg(long, default_value_t = 10.0)]
    pub clip: f64,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1_000)]
    pub bootstrap: usize,
    /// The seed of the bootstrap, the reward model's halves and sampling policies.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Also draw the estimates with their intervals, and how SNIPS settles, as SVG.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// `oo replay`: evaluates policies on logged decisions and prints the table (docs/replay.md).
pub async fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    use oo_replay::evaluate::{Options, Target, evaluate, split_specs};
    use oo_replay::ope::Estimator;
    let targets = split_specs(&args.policies)
        .into_iter()
        .map(|spec| {
            let target = Target::parse(&spec).with_context(|| format!("--policies: {spec:?}"))?;
            Ok((spec, target))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let estimators = if args.estimators.is_empty() {
        Estimator::ALL.to_vec()
    } else {
        args.estimators
            .iter()
            .map(|e| Estimator::parse(e).with_context(|| format!("--estimators: no estimator named {e:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let decisions = match args.input.as_deref() {
        Some("-") => read_decisions(std::io::stdin().lock(), "standard input")?,
        Some(path) => {
            let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
            let mut magic = [0u8; 4];
            let parquet = std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"PAR1";
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
            if parquet {
                oo_replay::columnar::read_parquet(file).with_context(|| format!("reading {path}"))?
            } else {
                read_decisions(std::io::BufReader::new(file), path)?
            }
        }
        None => {
            let pool = oo_commands::db::connect(args.db.url(), 2).await?;
            let mut out = vec![];
            oo_replay::export::export(
                &pool,
                oo_replay::export::Range::default(),
                |d| {
                    out.push(d.clone());
                    Ok(())
                },
                |_, _| {},
            )
            .await?;
            out
        }
    };
    let options = Options {
        estimators,
        clip: args.clip,
        bootstrap: args.bootstrap,
        seed: args.seed,
        ..Options::default()
    };
    let report = evaluate(&decisions, &targets, &options);
    print!("{}", oo_replay::evaluate::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let svg = oo_replay::plot::svg(&report).map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Where an export goes.
enum Sink {
    Jsonl(Box<dyn std::io::Write + Send>),
    Parquet(Box<oo_replay::columnar::ParquetSink<Box<dyn std::io::Write + Send>>>),
}

fn read_decisions(input: impl std::io::BufRead, name: &str) -> anyhow::Result<Vec<oo_replay::logged::LoggedDecision>> {
    oo_replay::logged::read_jsonl(input)
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {name}"))
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// The serving policy before the first promotion (as `oo serve` takes it); after one, the
    /// log's line-up holds.
    #[arg(long, env = "OO_POLICY", default_value = "linucb")]
    pub policy: String,
    /// The shadows before the first promotion, `;`-separated.
    #[arg(long, env = "OO_SHADOW_POLICIES", default_value = "thompson")]
    pub shadow_policies: String,
    #[command(flatten)]
    pub gate: crate::config::GateConfig,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl PolicyArgs {
    async fn lineup(&self, pool: &sqlx::PgPool) -> anyhow::Result<oo_domain::promotion::Lineup> {
        let configured =
            oo_domain::decision::Policies::from_specs(&self.policy, &self.shadow_policies).with_context(|| {
                format!(
                    "--policy {:?}, --shadow-policies {:?}",
                    self.policy, self.shadow_policies
                )
            })?;
        Ok(crate::promotion::lineup_of_log(pool, &configured).await?)
    }
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The shadow to promote, as a policy spec (`thompson`, `linucb:alpha=0.5`).
    pub spec: String,
    /// Promote whatever the gate says (logged as forced).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `oo policy show`: the line-up, each policy's mean reward and decision count over the latest
/// settled decisions, and the last promotion.
pub async fn policy_show(args: &PolicyArgs) -> anyhow::Result<()> {
    let pool = args.db.connect().await?;
    let lineup = args.lineup(&pool).await?;
    let window = args.gate.window.max(1);
    let crate::promotion::Overview {
        decisions,
        recent,
        last_promotion: last,
    } = crate::promotion::overview(&pool, &lineup, window).await?;
    if args.json {
        let last = last.map(|p| {
            serde_json::json!({
                "promoted_at": p.promoted_at, "serving": p.lineup.serving, "replaced": p.replaced,
                "forced": p.forced, "evidence": p.evidence,
            })
        });
        let out = serde_json::json!({ "window": window, "policies": recent, "last_promotion": last });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("over the latest {decisions} settled decisions ({window} asked for):");
    println!("{:<8} {:>9} {:>11}  spec", "role", "decisions", "mean reward");
    for r in &recent {
        let mean = r.mean_reward.map_or("-".to_owned(), |m| format!("{m:.4}"));
        println!("{:<8} {:>9} {:>11}  {}", r.role, r.decisions, mean, r.spec);
    }
    match last {
        Some(p) => println!(
            "last promotion: {} at {} (replaced {}{})",
            p.lineup.serving,
            p.promoted_at.to_rfc3339(),
            p.replaced,
            if p.forced { ", forced" } else { "" }
        ),
        None => println!("never promoted: the configured line-up serves"),
    }
    Ok(())
}

/// `oo policy promote SPEC [--force]`: the gate's evidence, then the promotion logged, or the
/// refusal and exit status 1.
pub async fn policy_promote(args: &PromoteArgs) -> anyhow::Result<()> {
    use crate::promotion::{PromoteError, promote};
    let pool = args.policy.db.connect().await?;
    let write = oo_commands::WriteSide::start(
        pool.clone(),
        args.policy.db.master_key()?,
        oo_commands::store::WriterConfig::default(),
    )
    .await
    .context("cannot open the key vault")?;
    let current = args.policy.lineup(&pool).await?;
    let outcome = promote(
        &write,
        &pool,
        &current,
        &args.spec,
        args.force,
        &args.policy.gate.options(),
    )
    .await;
    let (evidence, promoted) = match &outcome {
        Ok(p) => (&p.evidence, true),
        Err(PromoteError::Refused { evidence, .. }) => (evidence.as_ref(), false),
        Err(_) => {
            return outcome.map(|_| ()).context("cannot promote");
        }
    };
    if args.policy.json {
        let out = serde_json::json!({
            "spec": oo_domain::policy::canonical(&args.spec)?,
            "serving": current.serving,
            "promoted": promoted,
            "forced": args.force,
            "evidence": evidence,
            "passes": evidence.passes(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", evidence_text(evidence, &current.serving));
    }
    match outcome {
        Ok(p) => {
            eprintln!(
                "{} serves from now on{} (running servers switch within a few seconds)",
                p.lineup.serving,
                if p.forced { ", promoted by force" } else { "" }
            );
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(e)),
    }
}

/// The evidence as lines for the terminal.
fn evidence_text(e: &oo_domain::promotion::Evidence, serving: &str) -> String {
    let interval = |i: Option<oo_domain::promotion::Interval>| {
        i.map_or("not computable".to_owned(), |i| {
            format!("{:.4} [{:.4}, {:.4}]", i.value, i.ci_low, i.ci_high)
        })
    };
    let mut out = format!(
        "decisions weighed: {} (latest {} settled asked for, at least {} needed)\n\
         serving policy {serving}: on-policy value {:.4}\n\
         candidate SNIPS: {}\n\
         candidate DR:    {}\n",
        e.decisions,
        e.window,
        e.min_decisions,
        e.serving_value,
        interval(e.snips),
        interval(e.dr),
    );
    if e.passes() {
        out.push_str("the gate passes: both lower 95% bounds are at least the serving policy's value");
    } else {
        out.push_str("the gate refuses:");
        for r in &e.refusals {
            out.push_str("\n  - ");
            out.push_str(r);
        }
    }
    out
}
