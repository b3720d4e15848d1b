//! `oo simulate`: a synthetic population ([`world`]) driven through the real command path, the
//! real projector and the real recommender, once per policy on identical populations and seeds,
//! to show how much each policy learns (DESIGN section 11, `docs/simulator.md`).
//!
//! Each policy runs in its own fresh database (`<database>_sim_<policy>`), hour by simulated hour:
//! every person, in parallel, sends their apps' signals and opens oO at their session times; each
//! session waits for the projections to pass the person's last write (read-your-writes, as a
//! client's `min_position` does), asks the recommender, appends `TipServed`, and sends the
//! person's reaction through `/feedback`'s command. At the end of each hour the projections catch
//! up, the reward join settles what is due at the simulated time, and the population prior is
//! read again. Everything a person's decision reads depends only on their own events and on the
//! prior as of the last hour boundary, so a seed gives the same run whatever the interleaving.
//! The oracle is a chooser of its own, not a policy of oO: through the same path, it serves the
//! candidate with the highest expected reward under the hidden preferences, with probability 1.

pub mod coverage;
pub mod world;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use oo_commands::WriteSide;
use oo_commands::aggregate::Meta;
use oo_commands::store::WriterConfig;
use oo_commands::vault::MasterKey;
use oo_domain::decision::{Candidate, Decided, Overrides, Policies, Prepared, ServedBy};
use oo_domain::ids::{SignalId, UserId};
use oo_domain::policy::{Scored, mix};
use oo_domain::reward::Reaction;
use oo_domain::signal::{ExternalId, MoodScore, Place, Priority, SignalData, TaskSource, Text, TimeZoneName};
use oo_domain::signals::NewSignal;
use oo_domain::tip::{CandidateKind, TipCommand};
use oo_domain::user::Email;
use oo_projections::deciding::{DecisionReader, Person};
use oo_projections::status::Status;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use world::{SimCandidate, SimSignal, World};

/// What to simulate, and where.
#[derive(Debug, Clone)]
pub struct SimulateArgs {
    /// The database URL each policy's database is named after (`<database>_sim_<policy>` on
    /// the same server).
    pub database_url: String,
    /// Connections in each run's pool.
    pub db_pool: u32,
    /// How many people.
    pub users: usize,
    /// How many simulated days.
    pub days: u32,
    /// The seed of the population and of every decision.
    pub seed: u64,
    /// Comma-separated policies (specs as in OO_POLICY, e.g. `linucb:alpha=0.5`); `random` and
    /// `oracle` are always added.
    pub policies: String,
    /// Write a plot of the daily mean reward (SVG).
    pub plot: Option<PathBuf>,
    /// Drop and re-create the simulation databases if they exist.
    pub reset: bool,
    /// How many people are simulated at once.
    pub concurrency: usize,
    /// `--ope`: the logging policy whose decisions the other policies are evaluated on offline,
    /// beside their true values (`None`: no off-policy evaluation).
    pub ope: Option<String>,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyResult {
    pub daily_mean_reward: Vec<f64>,
    pub last_week_mean_reward: f64,
    /// Over the newcomers (people who join at the start of the last week, a tenth of the
    /// population): the mean reward of their first 10 decisions.
    pub first_10_tips_mean_reward: f64,
    pub decisions: u64,
    pub not_now_share: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub users: usize,
    pub days: u32,
    pub policies: BTreeMap<String, PolicyResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ope: Option<OpeReport>,
}

/// `--ope`: each target's true value on the logging policy's decisions beside its offline
/// estimates from them (DESIGN section 11).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpeReport {
    pub logged_by: String,
    /// Settled decisions of the logging run, the ones every estimate and truth is over.
    pub decisions: usize,
    pub targets: BTreeMap<String, OpeTarget>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpeTarget {
    /// The mean over the logged decisions of `Σₐ π(a|xᵢ)·E[r|xᵢ,a]`: `π` the target's
    /// distribution at each decision (after learning from the ones before it), `E[r|x,a]` the
    /// world's hidden expected reward.
    pub truth: f64,
    /// By estimator name (`replay`, `ips`, `ips_clipped`, `snips`, `dr`, `sndr`); `null` where
    /// the estimator does not apply.
    pub estimates: BTreeMap<&'static str, Option<crate::ope::Estimate>>,
}

/// The day a person joins: a tenth of the population (every tenth person) joins at the start of
/// the last week (or half-way through a run shorter than two weeks); the others on day 0.
pub fn join_day(person: usize, days: u32) -> u32 {
    if person % 10 == 9 {
        days.saturating_sub(7).max(days / 2)
    } else {
        0
    }
}

/// The name the oracle's decisions are logged and reported under.
const ORACLE: &str = "oracle";

/// Who chooses in a run: oO's policies, or the oracle, which knows the hidden preferences.
enum Chooser {
    Policies(Policies),
    Oracle,
}

impl Chooser {
    fn of(spec: &str) -> anyhow::Result<Self> {
        Ok(if spec == ORACLE {
            Self::Oracle
        } else {
            Self::Policies(Policies::from_specs(spec, "")?)
        })
    }
    /// Whether decisions read the person's model and the prior.
    fn learns(&self) -> bool {
        match self {
            Self::Policies(p) => p.learn(),
            Self::Oracle => false,
        }
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<Report> {
    // Commas separate policies and a spec's parameters alike: a `key=value` token without a
    // policy name continues the spec before it (`linucb:alpha=0.5,epsilon=0.05,random`).
    let mut specs: Vec<String> = Vec::new();
    for token in args.policies.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match specs.last_mut() {
            Some(last) if token.contains('=') && !token.contains(':') => {
                last.push(',');
                last.push_str(token);
            }
            _ => specs.push(token.to_owned()),
        }
    }
    specs.retain(|s| s != ORACLE);
    for s in &specs {
        oo_domain::policy::from_spec(s).with_context(|| format!("--policies: {s:?}"))?;
    }
    // The two ends every other policy is measured between (DESIGN section 11).
    if !specs.iter().any(|s| s == "random") {
        specs.insert(0, "random".into());
    }
    // The logging policy of `--ope` runs like the others (added if it is not one of them).
    let logging = match &args.ope {
        Some(spec) => {
            let spec = spec.trim().to_owned();
            anyhow::ensure!(
                spec != ORACLE,
                "--ope-logging: the oracle logs no distribution to evaluate from"
            );
            oo_domain::policy::from_spec(&spec).with_context(|| format!("--ope-logging: {spec:?}"))?;
            if !specs.contains(&spec) {
                specs.push(spec.clone());
            }
            Some(spec)
        }
        None => None,
    };
    specs.push(ORACLE.into());
    let mut policies = BTreeMap::new();
    let mut logged = None;
    for spec in &specs {
        // Reported under the whole spec when it carries parameters, so two variants of one
        // policy do not overwrite each other.
        eprintln!(
            "simulating {spec}: {} people, {} days, seed {}",
            args.users, args.days, args.seed
        );
        let started = std::time::Instant::now();
        let records = logging.as_deref() == Some(spec.as_str());
        let (result, log) = run_policy(&args, spec, records)
            .await
            .with_context(|| format!("simulating {spec}"))?;
        if log.is_some() {
            logged = log;
        }
        eprintln!(
            "  {spec}: {} decisions in {:.1} s, last week {:.3}",
            result.decisions,
            started.elapsed().as_secs_f64(),
            result.last_week_mean_reward
        );
        policies.insert(spec.clone(), result);
    }
    let ope = match (logging, logged) {
        (Some(logged_by), Some(log)) => {
            // The targets: uniform, and every other policy of the run but the oracle.
            let targets: Vec<String> = std::iter::once("uniform".to_owned())
                .chain(specs.iter().filter(|s| **s != logged_by && *s != ORACLE).cloned())
                .collect();
            eprintln!("evaluating {} offline on {logged_by}'s decisions", targets.join(", "));
            Some(off_policy(logged_by, log, targets, args.seed).await?)
        }
        _ => None,
    };
    let report = Report {
        seed: args.seed,
        users: args.users,
        days: args.days,
        policies,
        ope,
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&report)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// The table printed without `--json`.
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let names: Vec<&String> = report.policies.keys().collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mean reward per decision (not now = 0), {} people, seed {}",
        report.users, report.seed
    );
    let _ = write!(out, "{:>5}", "day");
    for n in &names {
        let _ = write!(out, " {n:>10}");
    }
    out.push('\n');
    for d in 0..report.days as usize {
        let _ = write!(out, "{:>5}", d + 1);
        for n in &names {
            let v = report.policies[*n]
                .daily_mean_reward
                .get(d)
                .copied()
                .unwrap_or(f64::NAN);
            let _ = write!(out, " {v:>10.3}");
        }
        out.push('\n');
    }
    let row = |out: &mut String, label: &str, f: &dyn Fn(&PolicyResult) -> f64| {
        let _ = write!(out, "{label:<26}");
        for n in &names {
            let _ = write!(out, " {:>10.3}", f(&report.policies[*n]));
        }
        out.push('\n');
    };
    out.push('\n');
    let _ = write!(out, "{:<26}", "");
    for n in &names {
        let _ = write!(out, " {n:>10}");
    }
    out.push('\n');
    row(&mut out, "last week", &|p| p.last_week_mean_reward);
    row(&mut out, "newcomers' first 10 tips", &|p| p.first_10_tips_mean_reward);
    row(&mut out, "share of not now", &|p| p.not_now_share);
    row(&mut out, "decisions", &|p| p.decisions as f64);
    if let (Some(r), Some(o)) = (report.policies.get("random"), report.policies.get("oracle")) {
        out.push('\n');
        for (n, p) in &report.policies {
            if n == "random" || n == "oracle" {
                continue;
            }
            let gap = |v: f64, r: f64, o: f64| if o > r { (v - r) / (o - r) } else { f64::NAN };
            let _ = writeln!(
                out,
                "{n}: closes {:.0}% of the random→oracle gap in the last week, {:.0}% over newcomers' first 10 tips",
                100.0
                    * gap(
                        p.last_week_mean_reward,
                        r.last_week_mean_reward,
                        o.last_week_mean_reward
                    ),
                100.0
                    * gap(
                        p.first_10_tips_mean_reward,
                        r.first_10_tips_mean_reward,
                        o.first_10_tips_mean_reward
                    ),
            );
        }
    }
    out
}

/// The `--ope` part of the table: each target's truth beside its estimates and intervals.
pub fn ope_table(ope: &OpeReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "off-policy evaluation on {}'s {} settled decisions (95% bootstrap intervals)\n",
        ope.logged_by, ope.decisions
    );
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:<12} {:>8} {:>19}  covers",
        "target", "truth", "estimator", "estimate", "interval"
    );
    for (name, t) in &ope.targets {
        for (estimator, e) in &t.estimates {
            let Some(e) = e else { continue };
            let covers = e.ci_low <= t.truth && t.truth <= e.ci_high;
            let _ = writeln!(
                out,
                "{name:<28} {:>8.4} {estimator:<12} {:>8.4} [{:>8.4}, {:>8.4}]  {}",
                t.truth,
                e.value,
                e.ci_low,
                e.ci_high,
                if covers { "yes" } else { "no" }
            );
        }
    }
    out
}

/// The URL of the database a policy's run uses: `<database>_sim_<policy>` on the same server.
fn sim_url(base: &str, policy: &str) -> String {
    let slug: String = policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let (url, query) = base.split_once('?').map_or((base, None), |(u, q)| (u, Some(q)));
    let (server, database) = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('/') {
            Some((host, db)) => (format!("{scheme}://{host}"), db),
            None => (url.to_owned(), ""),
        },
        None => (url.to_owned(), ""),
    };
    let database = if database.is_empty() { "oo" } else { database };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{server}/{database}_sim_{slug}{query}")
}

/// A fresh, migrated database for one policy's run (an existing one only with `--reset`).
async fn fresh_database(args: &SimulateArgs, policy: &str) -> anyhow::Result<PgPool> {
    use sqlx::migrate::MigrateDatabase;
    let url = sim_url(&args.database_url, policy);
    if sqlx::Postgres::database_exists(&url).await? {
        anyhow::ensure!(
            args.reset,
            "the database of {url} exists; pass --reset to drop it and simulate again"
        );
        sqlx::Postgres::force_drop_database(&url).await?;
    }
    Ok(oo_commands::db::connect_and_migrate(&url, args.db_pool).await?)
}

struct Sim {
    pool: PgPool,
    write: WriteSide,
    status: Status,
    chooser: Chooser,
    reader: DecisionReader,
    world: Mutex<World>,
    seed: u64,
    /// With `--ope`, in the logging run: each decision's candidates' expected rewards.
    expected: Option<Mutex<HashMap<String, Vec<f64>>>>,
}

impl Sim {
    fn world(&self) -> anyhow::Result<std::sync::MutexGuard<'_, World>> {
        self.world.lock().map_err(|_| anyhow::anyhow!("world poisoned"))
    }
}

/// The logging run's decisions, as `oo export` writes them, and the expected reward of each
/// candidate of each decision when it was made, by decision id.
struct Logged {
    decisions: Vec<crate::logged::LoggedDecision>,
    expected: HashMap<String, Vec<f64>>,
}

/// `--ope` alone: the logging policy's run, and `targets` evaluated offline on its decisions
/// beside their true values (what `run` does for `--ope`, without the other policies' runs).
pub async fn logged_run(
    args: &SimulateArgs,
    logging: &str,
    targets: &[String],
) -> anyhow::Result<(PolicyResult, OpeReport)> {
    let (result, log) = run_policy(args, logging, true).await?;
    let log = log.ok_or_else(|| anyhow::anyhow!("the logging run recorded nothing"))?;
    Ok((
        result,
        off_policy(logging.to_owned(), log, targets.to_vec(), args.seed).await?,
    ))
}

/// Evaluates `targets` offline on the logged decisions, each beside its true value, on a
/// blocking thread (the bootstrap is seconds of CPU the runtime's other tasks must not wait for).
async fn off_policy(logged_by: String, log: Logged, targets: Vec<String>, seed: u64) -> anyhow::Result<OpeReport> {
    tokio::task::spawn_blocking(move || evaluate_logged(logged_by, &log, &targets, seed)).await?
}

fn evaluate_logged(logged_by: String, log: &Logged, targets: &[String], seed: u64) -> anyhow::Result<OpeReport> {
    use crate::evaluate::{Options, Target, evaluate_with_truth};
    let parsed = targets
        .iter()
        .map(|t| Ok((t.clone(), Target::parse(t)?)))
        .collect::<Result<Vec<_>, oo_domain::policy::PolicySpecError>>()?;
    let options = Options {
        seed,
        ..Options::default()
    };
    let report = evaluate_with_truth(&log.decisions, &parsed, &options, &log.expected);
    let targets = report
        .policies
        .into_iter()
        .map(|p| {
            let truth = p
                .truth
                .ok_or_else(|| anyhow::anyhow!("{}: the expected rewards of some decision are missing", p.policy))?;
            Ok((
                p.policy,
                OpeTarget {
                    truth,
                    estimates: p.estimates,
                },
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(OpeReport {
        logged_by,
        decisions: report.decisions,
        targets,
    })
}

async fn run_policy(args: &SimulateArgs, spec: &str, records: bool) -> anyhow::Result<(PolicyResult, Option<Logged>)> {
    let pool = fresh_database(args, spec).await?;
    let write = WriteSide::start(pool.clone(), MasterKey::generate(), WriterConfig::default()).await?;
    let status = Status::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handles =
        oo_projections::projector::spawn_all(&write.store, oo_projections::all(), status.clone(), shutdown.clone())
            .await?;
    let chooser = Chooser::of(spec)?;
    let sim = Arc::new(Sim {
        // The prior is refreshed explicitly at every hour boundary.
        reader: DecisionReader::new(chooser.learns(), std::time::Duration::MAX),
        chooser,
        write,
        status,
        world: Mutex::new(World::new(args.users, args.seed)),
        seed: args.seed,
        pool: pool.clone(),
        expected: records.then(|| Mutex::new(HashMap::new())),
    });
    let epoch = world::epoch();
    let mut users = Vec::with_capacity(args.users);
    for p in 0..args.users {
        let email = Email::parse(&format!("person{p}@sim.oo.invalid"))?;
        let (id, _) =
            oo_commands::identity::find_or_register(&sim.write.store, &sim.write.vault, &email, Meta::new(epoch))
                .await?;
        users.push(id);
    }
    // The prior as of the start (empty), before any session reads it.
    sim.reader.refresh_prior(&pool).await.context("prior")?;
    let hours = i64::from(args.days) * 24;
    for hour in 0..hours {
        let from = epoch + Duration::hours(hour);
        let to = from + Duration::hours(1);
        let day = (hour / 24) as u32;
        let active: Vec<usize> = (0..args.users).filter(|p| join_day(*p, args.days) <= day).collect();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(active)
            .map(|p| {
                let sim = sim.clone();
                let user = users[p];
                async move { person_hour(&sim, p, user, from, to).await }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        boundary(&sim, to).await?;
        if hour % 24 == 23 {
            eprintln!("  day {} of {}", day + 1, args.days);
        }
    }
    // Settle everything still open, then read the outcome from the tip log.
    let end = epoch + Duration::hours(hours) + oo_domain::tip::SETTLE_WINDOW + Duration::hours(1);
    boundary(&sim, end).await?;
    let result = outcome(&pool, &users, args.days).await?;
    let logged = match &sim.expected {
        Some(expected) => {
            let mut decisions = Vec::new();
            crate::export::export(
                &pool,
                crate::export::Range::default(),
                |d| {
                    decisions.push(d.clone());
                    Ok(())
                },
                |_, _| {},
            )
            .await?;
            // A seed must give the same evaluation, but tip and user ids are random and people
            // run concurrently, so the log interleaves them differently from run to run (and a
            // policy evaluated offline learns in the order it reads, draws with seeds derived
            // from ids, and DR's halves are split by id). So decisions are named by person and
            // time (`p<person>-<microseconds>`), people by their index, and read in simulated
            // time order; each person's decisions keep their order.
            let mut by_tip = std::mem::take(&mut *expected.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
            let person_of: HashMap<String, usize> = users.iter().enumerate().map(|(i, u)| (u.to_string(), i)).collect();
            let mut expected = HashMap::with_capacity(by_tip.len());
            for d in &mut decisions {
                let person = d
                    .user
                    .as_ref()
                    .and_then(|u| person_of.get(u))
                    .ok_or_else(|| anyhow::anyhow!("a decision of nobody simulated"))?;
                let at = d.timestamp.map_or(0, |t| t.timestamp_micros());
                let id = format!("p{person}-{at}");
                if let Some(values) = by_tip.remove(&d.id) {
                    expected.insert(id.clone(), values);
                }
                d.id = id;
                d.user = Some(person.to_string());
            }
            decisions.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
            Some(Logged { decisions, expected })
        }
        None => None,
    };
    shutdown.cancel();
    for h in handles {
        h.await?;
    }
    pool.close().await;
    Ok((result, logged))
}

/// End of an hour: the projections catch up, the reward join settles what is due, the prior is
/// read again.
async fn boundary(sim: &Sim, now: DateTime<Utc>) -> anyhow::Result<()> {
    catch_up(sim).await?;
    let due = oo_projections::reward_pending::due(&sim.pool, now, i64::MAX).await?;
    oo_commands::reward_join::settle(&sim.write.tips, &due, now)
        .await
        .context("reward join")?;
    catch_up(sim).await?;
    sim.reader.refresh_prior(&sim.pool).await.context("prior")?;
    Ok(())
}

/// How long the simulator waits for the projections before it gives up.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(120);

async fn catch_up(sim: &Sim) -> anyhow::Result<()> {
    let ok = oo_projections::projector::wait_for_head(&sim.pool, &sim.status, CATCH_UP).await?;
    anyhow::ensure!(ok, "the projections did not catch up within 120 s");
    Ok(())
}

async fn wait(sim: &Sim, target: oo_commands::cursor::Cursor) -> anyhow::Result<()> {
    let ok =
        oo_projections::projector::wait_for(&sim.pool, &sim.status, &oo_projections::names(), target, CATCH_UP).await?;
    anyhow::ensure!(ok, "the projections did not catch up within 120 s");
    Ok(())
}

fn signal_data(s: &SimSignal) -> anyhow::Result<SignalData> {
    let bad = |e: oo_domain::signal::InvalidField| anyhow::Error::new(e).context("the world made an invalid signal");
    Ok(match s {
        SimSignal::Task {
            external_id,
            title,
            priority,
            due,
            completed,
        } => SignalData::Task {
            source: TaskSource::Manual,
            external_id: ExternalId::parse(external_id).map_err(bad)?,
            title: Text::parse("title", title).map_err(bad)?,
            priority: Priority::parse(i64::from(*priority)).map_err(bad)?,
            due: *due,
            completed: *completed,
            project: None,
        },
        SimSignal::Mood { score } => SignalData::Mood {
            score: MoodScore::parse(i64::from(*score)).map_err(bad)?,
            note: None,
        },
        SimSignal::Context { place, time_zone } => SignalData::Context {
            place: Place::parse(place).map_err(bad)?,
            activity: None,
            time_zone: time_zone.as_deref().map(TimeZoneName::parse).transpose().map_err(bad)?,
        },
    })
}

/// Appends a person's pending signals; returns where the last one stands.
async fn flush(
    sim: &Sim,
    user: UserId,
    person: usize,
    pending: &mut Vec<(DateTime<Utc>, SimSignal)>,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<oo_commands::cursor::Cursor>> {
    if pending.is_empty() {
        return Ok(None);
    }
    let mut signals = Vec::with_capacity(pending.len());
    for (t, s) in pending.drain(..) {
        // Ids derived from the person and the moment: a run is reproducible.
        let id = format!("sim-{person}-{}-{}", t.timestamp_micros(), signals.len());
        signals.push(NewSignal {
            id: SignalId::parse(&id)?,
            occurred_at: t,
            data: signal_data(&s)?,
        });
    }
    let done = sim
        .write
        .signals
        .record(user, signals, Meta::new(at))
        .await
        .context("signals")?;
    Ok(done.cursor)
}

fn sim_candidate(c: &Candidate) -> SimCandidate<'_> {
    match c {
        Candidate::Todo(t) => SimCandidate::Todo {
            external_id: &t.external_id,
        },
        Candidate::Advice(a) => SimCandidate::Advice { tags: &a.tags },
        Candidate::NotNow => SimCandidate::NotNow,
    }
}

/// The oracle's choice: the candidate with the highest expected reward (the first on ties),
/// served with probability 1.
fn oracle_choice(sim: &Sim, person: usize, prepared: &Prepared, seed: u64) -> anyhow::Result<Decided> {
    let world = sim.world()?;
    let scores: Vec<f64> = prepared
        .candidates
        .iter()
        .map(|c| world.expected_reward(person, sim_candidate(c), prepared.now, prepared.context.tips_today))
        .collect();
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    let mut probabilities = vec![0.0; scores.len()];
    probabilities[best] = 1.0;
    Ok(Decided {
        prior_rewards: 0,
        served_by: ServedBy {
            policy: ORACLE.to_owned(),
            version: "1".to_owned(),
            params: BTreeMap::new(),
        },
        scored: Scored { scores, probabilities },
        chosen: best,
        seed,
        shadow: vec![],
    })
}

/// One person's simulated hour: signals and sessions in time order. The world is asked for the
/// signals of each stretch between two sessions just before the later one, so a reaction it
/// records (a snoozed task done later) shapes only what comes after it.
async fn person_hour(
    sim: &Sim,
    person: usize,
    user: UserId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let sessions = sim.world()?.sessions(person, from, to);
    let mut pending: Vec<(DateTime<Utc>, SimSignal)> = Vec::new();
    let mut since = from;
    for at in sessions {
        let signals = sim.world()?.signals(person, since, at);
        pending.extend(signals);
        since = at;
        if let Some(c) = flush(sim, user, person, &mut pending, at).await? {
            wait(sim, c).await?;
        }
        if let Some(c) = session(sim, person, user, at).await? {
            // The next session reads what this one wrote (the reaction included).
            wait(sim, c).await?;
        }
    }
    let signals = sim.world()?.signals(person, since, to);
    pending.extend(signals);
    flush(sim, user, person, &mut pending, to).await?;
    Ok(())
}

/// One decision and the person's reaction to it; returns the last position written.
async fn session(
    sim: &Sim,
    person: usize,
    user: UserId,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<oo_commands::cursor::Cursor>> {
    let prior = sim.reader.prior(&sim.pool).await.context("prior")?;
    let prepared = sim
        .reader
        .prepare(&sim.pool, Person::Known(user), Overrides::default(), at)
        .await
        .context("recommend")?
        .ok_or_else(|| anyhow::anyhow!("a known person came back unknown"))?;
    let seed = mix(sim.seed ^ mix(person as u64 ^ mix(at.timestamp_micros() as u64)));
    let decided = match &sim.chooser {
        Chooser::Oracle => oracle_choice(sim, person, &prepared, seed)?,
        Chooser::Policies(policies) => policies.decide(&prepared, &prior, seed),
    };
    let tips_today = prepared.context.tips_today;
    let candidate = prepared.candidates[decided.chosen].clone();
    // The truth of off-policy evaluation: what each candidate was worth at this moment (a pure
    // read of the world, which changes nothing the run does).
    let expected = match &sim.expected {
        Some(_) => {
            let world = sim.world()?;
            Some(
                prepared
                    .candidates
                    .iter()
                    .map(|c| world.expected_reward(person, sim_candidate(c), prepared.now, tips_today))
                    .collect::<Vec<f64>>(),
            )
        }
        None => None,
    };
    let served = oo_commands::serving::serve(&sim.write.tips, &sim.write.vault, prepared, decided)
        .await
        .context("recommend")?;
    if let (Some(values), Some(all)) = (expected, &sim.expected) {
        all.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(served.tip_id.to_string(), values);
    }
    let mut last = served.executed.cursor;
    if served.kind == CandidateKind::NotNow {
        return Ok(last);
    }
    let response = {
        let mut world = sim.world()?;
        world.respond(person, sim_candidate(&candidate), at, tips_today, seed)
    };
    if let Some(r) = response.reaction {
        let reaction = Reaction::parse(r)?;
        let done = sim
            .write
            .tips
            .execute(
                &served.tip_id.to_string(),
                TipCommand::React {
                    user_id: user,
                    reaction,
                    at: response.reacted_at,
                },
                Meta::new(response.reacted_at),
            )
            .await
            .context("react")?;
        if done.cursor.is_some() {
            last = done.cursor;
        }
    }
    Ok(last)
}

/// The outcome from the tip log: rewards per decision, by day, newcomers' first ten.
async fn outcome(pool: &PgPool, users: &[UserId], days: u32) -> anyhow::Result<PolicyResult> {
    let person_of: HashMap<uuid::Uuid, usize> = users.iter().enumerate().map(|(i, u)| (u.as_uuid(), i)).collect();
    let rows = sqlx::query(
        "SELECT user_id, served_at, COALESCE(reward, 0) AS reward, chosen_kind FROM tip_log ORDER BY served_at, tip_id",
    )
    .fetch_all(pool)
    .await?;
    let epoch = world::epoch();
    let mut by_day = vec![(0.0f64, 0u64); days as usize];
    let mut first: HashMap<usize, Vec<f64>> = HashMap::new();
    let (mut decisions, mut not_now) = (0u64, 0u64);
    for r in rows {
        let user: uuid::Uuid = r.try_get("user_id")?;
        let served_at: DateTime<Utc> = r.try_get("served_at")?;
        let reward: f64 = r.try_get("reward")?;
        let kind: String = r.try_get("chosen_kind")?;
        let day = (served_at - epoch).num_days();
        if let Some(slot) = usize::try_from(day).ok().and_then(|d| by_day.get_mut(d)) {
            slot.0 += reward;
            slot.1 += 1;
        }
        decisions += 1;
        if kind == "not_now" {
            not_now += 1;
        }
        if let Some(p) = person_of.get(&user)
            && join_day(*p, days) > 0
        {
            let f = first.entry(*p).or_default();
            if f.len() < 10 {
                f.push(reward);
            }
        }
    }
    let daily: Vec<f64> = by_day
        .iter()
        .map(|(s, n)| if *n > 0 { s / *n as f64 } else { 0.0 })
        .collect();
    let week_start = days.saturating_sub(7) as usize;
    let (ws, wn) = by_day[week_start..]
        .iter()
        .fold((0.0, 0u64), |(s, n), (ds, dn)| (s + ds, n + dn));
    let newcomers: Vec<f64> = first.values().flatten().copied().collect();
    Ok(PolicyResult {
        daily_mean_reward: daily,
        last_week_mean_reward: if wn > 0 { ws / wn as f64 } else { 0.0 },
        first_10_tips_mean_reward: if newcomers.is_empty() {
            0.0
        } else {
            newcomers.iter().sum::<f64>() / newcomers.len() as f64
        },
        decisions,
        not_now_share: if decisions > 0 {
            not_now as f64 / decisions as f64
        } else {
            0.0
        },
    })
}

/// An SVG line chart of the daily mean reward of every policy.
pub fn plot(report: &Report) -> String {
    use std::fmt::Write;
    let (w, h, m) = (720.0, 420.0, 50.0);
    let all: Vec<f64> = report
        .policies
        .values()
        .flat_map(|p| p.daily_mean_reward.iter().copied())
        .collect();
    let lo = all.iter().copied().fold(0.0f64, f64::min).min(-0.1);
    let hi = all.iter().copied().fold(0.0f64, f64::max).max(0.1);
    let days = report.days.max(2) as f64;
    let x = |d: f64| m + (w - 2.0 * m) * d / (days - 1.0);
    let y = |v: f64| h - m - (h - 2.0 * m) * (v - lo) / (hi - lo);
    let colours = ["#888888", "#e4572e", "#17bebb", "#76b041", "#ffc914", "#2e86ab"];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{m}" y="20">oo simulate: mean reward per decision by day ({} people, seed {})</text>"#,
        report.users, report.seed
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{m}" y1="{0}" x2="{1}" y2="{0}" stroke="#cccccc"/>"##,
        y(0.0),
        w - m
    );
    let _ = writeln!(svg, r#"<text x="5" y="{}">{hi:.2}</text>"#, y(hi) + 4.0);
    let _ = writeln!(svg, r#"<text x="5" y="{}">0</text>"#, y(0.0) + 4.0);
    let _ = writeln!(svg, r#"<text x="5" y="{}">{lo:.2}</text>"#, y(lo) + 4.0);
    let _ = writeln!(svg, r#"<text x="{}" y="{}">day</text>"#, w / 2.0, h - 10.0);
    for (i, (name, p)) in report.policies.iter().enumerate() {
        let c = colours[i % colours.len()];
        let points: Vec<String> = p
            .daily_mean_reward
            .iter()
            .enumerate()
            .map(|(d, v)| format!("{:.1},{:.1}", x(d as f64), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{c}">{name}</text>"#,
            w - m - 60.0,
            m + 16.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}
