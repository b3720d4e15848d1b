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
    /// The projection to rebuild (open_tasks, features, tip_log).
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
