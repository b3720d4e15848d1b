//! Blue/green rebuilds: a projection is rebuilt from the start of the log into fresh copies of
//! its tables (in a schema of their own) while the live tables keep serving; once caught up, the
//! last events are applied and the tables swapped in one transaction that holds the live
//! checkpoint's lock, so the live projector resumes on the new tables exactly where the rebuild
//! stopped.

use crate::ApplyError;
use crate::Projection;
use crate::projector::{BATCH, step, step_in};
use crate::status::{RebuildProgress, Status};
use std::time::Instant;

/// The outcome of a rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebuilt {
    pub events_applied: u64,
    pub seconds: f64,
}

impl Rebuilt {
    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events_applied as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Rebuilds `projection`; `on_progress(applied, total)` is called after every batch.
pub async fn rebuild(
    pool: &sqlx::PgPool,
    projection: &dyn Projection,
    status: &Status,
    mut on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Rebuilt, ApplyError> {
    let name = projection.name();
    // One rebuild of a projection at a time, across processes (CLI and server alike). The lock
    // lives as long as this connection: a crashed rebuild releases it.
    let mut guard = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('oo.rebuild.' || $1))")
        .bind(name)
        .fetch_one(&mut *guard)
        .await?;
    if !locked {
        return Err(ApplyError::Busy(name.to_owned()));
    }
    let result = rebuild_locked(pool, projection, status, &mut on_progress).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('oo.rebuild.' || $1))")
        .bind(name)
        .execute(&mut *guard)
        .await;
    result
}

async fn rebuild_locked(
    pool: &sqlx::PgPool,
    projection: &dyn Projection,
    status: &Status,
    on_progress: &mut (impl FnMut(u64, u64) + Send),
) -> Result<Rebuilt, ApplyError> {
    let name = projection.name();
    let schema = format!("rebuild_{name}");
    let old_schema = format!("retired_{name}");
    let checkpoint = format!("{name}#rebuild");
    let started = Instant::now();
    crate::projector::ensure_checkpoint(pool, name).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for t in projection.tables() {
        sqlx::query(&format!("CREATE TABLE {schema}.{t} (LIKE public.{t} INCLUDING ALL)"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM checkpoints WHERE name = $1")
        .bind(&checkpoint)
        .execute(&mut *tx)
        .await?;
    // The live checkpoint is left as it is: a rebuild shows as its own checkpoint, which goes
    // stale if the rebuilding process dies (`Checkpoint::is_running_rebuild_of`).
    sqlx::query("INSERT INTO checkpoints (name, status) VALUES ($1, 'rebuilding')")
        .bind(&checkpoint)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let mut applied: u64 = 0;
    let mut progress = RebuildProgress {
        events_applied: 0,
        events_total: total as u64,
        started,
    };
    status.set_rebuild(name, Some(progress));

    let result: Result<(), ApplyError> = async {
        loop {
            let (n, _) = step(pool, projection, &checkpoint, Some(&schema), BATCH).await?;
            applied += n as u64;
            progress.events_applied = applied;
            progress.events_total = progress.events_total.max(applied);
            status.set_rebuild(name, Some(progress));
            on_progress(applied, progress.events_total);
            if (n as i64) < BATCH {
                break;
            }
        }
        // Swap: hold the live checkpoint, apply what is left, move the tables, hand over.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT 1 FROM checkpoints WHERE name = $1 FOR UPDATE").bind(name).execute(&mut *tx).await?;
        loop {
            let (n, _) = step_in(&mut tx, projection, &checkpoint, Some(&schema), BATCH).await?;
            applied += n as u64;
            if n == 0 {
                break;
            }
        }
        sqlx::query("SET LOCAL search_path TO public").execute(&mut *tx).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {old_schema} CASCADE")).execute(&mut *tx).await?;
        sqlx::query(&format!("CREATE SCHEMA {old_schema}")).execute(&mut *tx).await?;
        for t in projection.tables() {
            sqlx::query(&format!("ALTER TABLE public.{t} SET SCHEMA {old_schema}")).execute(&mut *tx).await?;
            sqlx::query(&format!("ALTER TABLE {schema}.{t} SET SCHEMA public")).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE checkpoints AS live SET tx_id = r.tx_id, position = r.position, events_applied = r.events_applied, \
             status = 'live', last_error = NULL, updated_at = now() FROM checkpoints AS r WHERE live.name = $1 AND r.name = $2",
        )
        .bind(name)
        .bind(&checkpoint)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM checkpoints WHERE name = $1").bind(&checkpoint).execute(&mut *tx).await?;
        sqlx::query(&format!("DROP SCHEMA {old_schema} CASCADE")).execute(&mut *tx).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    status.set_rebuild(name, None);
    if let Err(e) = result {
        let _ = sqlx::query("DELETE FROM checkpoints WHERE name = $1")
            .bind(&checkpoint)
            .execute(pool)
            .await;
        return Err(e);
    }
    on_progress(applied, applied.max(progress.events_total));
    Ok(Rebuilt {
        events_applied: applied,
        seconds: started.elapsed().as_secs_f64(),
    })
}
