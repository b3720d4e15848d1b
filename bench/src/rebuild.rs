//! `rebuild`: projection rebuild speed on a log of N events, beside the time to read the log.

use crate::harness::*;
use chrono::Utc;
use oo_domain::ids::SignalId;
use oo_domain::signal::{ExternalId, MoodScore, Priority, SignalData, TaskSource, Text};
use oo_domain::signals::NewSignal;
use std::time::Instant;

pub(crate) async fn rebuild(server: &str, events: usize) -> anyhow::Result<()> {
    let (db, pool) = BenchDb::create(server).await?;
    let (store, vault, repo) = repo(&pool).await?;
    let users = 100;
    let mut ids = vec![];
    for u in 0..users {
        ids.push(user(&store, &vault, &format!("r{u}@example.org")).await?);
    }
    let started = Instant::now();
    fill_log(&repo, &ids, events, rebuild_signal).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    eprintln!(
        "wrote {total} events through the command path in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT * FROM events ORDER BY tx_id, position) e")
        .fetch_one(&pool)
        .await?;
    let raw = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut cursor = oo_commands::cursor::Cursor::START;
    let mut read = 0usize;
    let mut conn = pool.acquire().await?;
    loop {
        let batch = oo_commands::store::read_after(&mut conn, cursor, 5000).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.cursor;
        read += batch.len();
    }
    drop(conn);
    let reader = started.elapsed().as_secs_f64();
    println!("log of {total} events");
    println!(
        "  Postgres reading them alone (SELECT * … ORDER BY tx_id, position): {raw:.2} s ({:.0} events/s, {rows} rows)",
        rows as f64 / raw
    );
    println!(
        "  the store's reader, batches of 5000 decoded into rows:            {reader:.2} s ({:.0} events/s)",
        read as f64 / reader
    );
    let status = oo_projections::status::Status::default();
    for p in oo_projections::all() {
        let r = oo_projections::rebuild::rebuild(&pool, p.as_ref(), &status, |_, _| {}).await?;
        println!(
            "  rebuild {:<10} {:>9} events in {:>7.2} s = {:>8.0} events/s",
            p.name(),
            r.events_applied,
            r.seconds,
            r.events_per_second()
        );
    }
    drop(store);
    db.drop_db(pool).await;
    Ok(())
}

/// A third task signals (on 50 tasks per user, some completed), the rest moods.
pub(crate) fn rebuild_signal(u: usize, i: usize) -> NewSignal {
    let data = if i.is_multiple_of(3) {
        SignalData::Task {
            source: TaskSource::Todoist,
            external_id: ExternalId::parse(&format!("t{}", i % 50)).expect("valid id"),
            title: Text::parse("title", "A task").expect("valid text"),
            priority: Priority::parse(1 + (i % 4) as i64).expect("valid priority"),
            due: None,
            completed: i.is_multiple_of(7),
            project: None,
        }
    } else {
        SignalData::Mood {
            score: MoodScore::parse((i % 5) as i64 - 2).expect("valid score"),
            note: None,
        }
    };
    NewSignal {
        id: SignalId::parse(&format!("u{u}-{i}")).expect("valid id"),
        occurred_at: Utc::now(),
        data,
    }
}
