//! The `oo` subcommands other than `serve`.

use crate::config::DbConfig;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// `oo migrate`: create the database if missing and run the migrations, nothing else.
pub async fn migrate(db: &DbConfig) -> anyhow::Result<()> {
    crate::connect_and_migrate(db).await?;
    eprintln!("migrations are up to date");
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub db: DbConfig,
    /// The projection to rebuild (open_tasks, features, tip_log, bandit, reward_pending).
    pub name: Option<String>,
    /// Rebuild every projection.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
}

/// `oo rebuild <name>|--all`: blue/green rebuild with a progress bar; a running server keeps
/// serving the old tables until the swap.
pub async fn rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let pool = crate::connect_and_migrate(&args.db).await?;
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
    /// A file holding the new age identity (`age-keygen -o FILE` makes one). Afterwards, point
    /// OO_MASTER_KEY at it and destroy the old master key everywhere it is kept.
    #[arg(long)]
    pub new_key: std::path::PathBuf,
}

/// `oo keys rotate --new-key FILE`: re-wraps every data key under the new master key.
pub async fn rotate_keys(args: &RotateArgs) -> anyhow::Result<()> {
    let pool = crate::connect_and_migrate(&args.db).await?;
    let old = crate::load_master_key(&args.db)?;
    let text =
        std::fs::read_to_string(&args.new_key).with_context(|| format!("cannot read {}", args.new_key.display()))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .context("the file holds no age identity")?;
    let new = oo_commands::vault::MasterKey::parse(line)?;
    let (keys, secrets) = oo_commands::vault::rotate_master_key(&pool, &old, &new).await?;
    eprintln!(
        "re-wrapped {keys} data keys and {secrets} service secrets under {}.\n\
         Now point OO_MASTER_KEY at that file, restart oO, and destroy the old master key (and its backups):\n\
         until then, keys of deleted users that survive in old copies can still be unwrapped.",
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
    use prost::Message;
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
            .map_err(|e| anyhow::anyhow!("cannot pull: {e}"))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            let envelope =
                oo_proto::pb::EventEnvelope::decode(message.payload.as_ref()).context("not an oO event envelope")?;
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
            message.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            seen += 1;
        }
        if args.limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(())
}
