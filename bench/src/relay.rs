//! `relay`: relay throughput on a backlog and end-to-end latency under append load, beside a
//! trivial JetStream publisher on a private nats-server.

use crate::harness::*;
use anyhow::Context;
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A private nats-server for a benchmark, killed on drop.
pub(crate) struct BenchNats {
    pub(crate) child: std::process::Child,
    pub(crate) url: String,
    pub(crate) dir: std::path::PathBuf,
}

impl BenchNats {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("oo-bench-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("nats-server (Debian's package) must be installed")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        })
    }
}

impl Drop for BenchNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn relay(server: &str, events: usize, clients: usize, seconds: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    use oo_projections::relay::{CHECKPOINT, RelayConfig};
    let nats = BenchNats::start()?;

    // 1. A trivial publisher: the ceiling.
    let client = async_nats::connect(nats.url.as_str()).await?;
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await?;
    let body = bytes_of(600);
    let raw_n = 200_000usize;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(500);
    for i in 0..raw_n {
        acks.push(js.publish(format!("raw.{}", i % 64), body.clone().into()).await?);
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks.drain(..) {
        a.await?;
    }
    let raw_rate = raw_n as f64 / started.elapsed().as_secs_f64();

    // 2. The relay on a backlog.
    let (db, pool) = BenchDb::create(server).await?;
    let (store, vault, repo) = repo(&pool).await?;
    let mut ids = vec![];
    for u in 0..100 {
        ids.push(user(&store, &vault, &format!("n{u}@example.org")).await?);
    }
    fill_log(&repo, &ids, events, |u, i| mood_signal(format!("u{u}-{i}"))).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let status = oo_projections::status::Status::default();
    let started = Instant::now();
    let relay = tokio::spawn(oo_projections::relay::run(
        pool.clone(),
        RelayConfig::new(&nats.url),
        store.appended(),
        status.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    loop {
        let applied: Option<i64> = sqlx::query_scalar("SELECT events_applied FROM checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(&pool)
            .await?;
        if applied == Some(total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backlog_rate = total as f64 / started.elapsed().as_secs_f64();
    relay.abort();
    drop(store);
    db.drop_db(pool).await;

    // 3. End to end under append load: the real server with its relay, 64 clients appending one
    // signal per request; a subscriber timestamps each event's arrival.
    let (db, pool) = BenchDb::create(server).await?;
    let (base, stop) = start_server_with(&db.url, |c| {
        c.policy = "random".into();
        c.nats_url = Some(nats.url.clone());
    })
    .await?;
    let http = self::client()?;
    let mut tokens = vec![];
    for c in 0..clients {
        tokens.push(login(&http, &base, &format!("e2e{c}@example.org")).await?);
    }
    let mut sub = client.subscribe("oo.events.v1.signals.>").await?;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let collector = {
        let latencies = latencies.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let now = Utc::now().timestamp_micros();
                if let Ok(env) = oo_proto::decode_envelope(m.payload.as_ref())
                    && let Ok(mut l) = latencies.lock()
                {
                    l.push((now - env.recorded_at_us) as f64 / 1000.0);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for (c, token) in tokens.into_iter().enumerate() {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while Instant::now() < deadline {
                k += 1;
                let body = json!({"signals": [{"id": format!("e{c}-{k}"), "kind": "mood", "occurred_at": "2026-01-05T09:00:00Z", "data": {"score": 1}}]});
                let _ = http.post(format!("{base}/signals")).bearer_auth(&token).json(&body).send().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    collector.abort();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    let _ = stop.send(());
    db.drop_db(pool).await;

    println!("NATS JetStream (Debian's nats-server 2.9, private instance, file storage)");
    println!("  trivial publisher, 600-byte messages, pipelined by 500: {raw_rate:.0} msgs/s");
    println!(
        "  relay on a backlog of {total} events (protobuf envelopes, msg-id, ordered):  {backlog_rate:.0} events/s"
    );
    println!(
        "  end to end under {clients} appending clients for {seconds} s ({} events): transaction start → message delivered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len(),
        percentile(&l, 50.0),
        percentile(&l, 99.0),
        l.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
