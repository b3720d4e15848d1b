//! What a benchmark watches besides its own clock: the server's histograms, how late sleeps run,
//! the machine's CPU, Postgres's writes and I/O pressure.

use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http.get(format!("{base}/metrics")).send().await?.text().await?)
}

/// One histogram's cumulative buckets, read from the Prometheus text format.
pub(crate) struct Buckets(pub(crate) Vec<(f64, u64)>);

impl Buckets {
    /// The `<name>_bucket` lines of the series whose other labels include `labels` (as written,
    /// e.g. `path="/recommend"`).
    pub(crate) fn of(text: &str, name: &str, labels: &[&str]) -> Buckets {
        let prefix = format!("{name}_bucket{{");
        Buckets(
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix.as_str()))
                .filter_map(|rest| {
                    let (set, value) = rest.split_once("} ")?;
                    let pairs: Vec<&str> = set.split(',').collect();
                    if !labels.iter().all(|l| pairs.contains(l)) {
                        return None;
                    }
                    let le = pairs.iter().find_map(|p| p.strip_prefix("le=\""))?.strip_suffix('"')?;
                    let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                    Some((bound, value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    pub(crate) fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, n)| {
                    let earlier = before.0.iter().find(|(b, _)| b == le).map_or(0, |(_, m)| *m);
                    (*le, n.saturating_sub(earlier))
                })
                .collect(),
        )
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// The smallest bound under which at least `q` of the observations fall.
    pub(crate) fn quantile_bound(&self, q: f64) -> f64 {
        let want = (self.count() as f64 * q).ceil() as u64;
        self.0.iter().find(|(_, n)| *n >= want).map_or(f64::NAN, |(le, _)| *le)
    }

    pub(crate) fn over(&self, bound: f64) -> u64 {
        let under = self.0.iter().find(|(le, _)| *le == bound).map_or(0, |(_, n)| *n);
        self.count().saturating_sub(under)
    }
}

/// Lateness of 1 ms sleeps during a measurement, seen by an OS thread of its own (what the
/// machine does to any thread: other processes, the hypervisor) and by a task on the server's
/// runtime (that, plus anything holding a worker thread). A tail that both see is the machine's;
/// one that only the runtime sees is ours.
pub(crate) struct StallProbe {
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) thread: std::thread::JoinHandle<Lateness>,
    pub(crate) task: tokio::task::JoinHandle<Lateness>,
}

#[derive(Default)]
pub(crate) struct Lateness {
    pub(crate) samples: u64,
    pub(crate) over_5ms: u64,
    pub(crate) max_ms: f64,
}

impl Lateness {
    pub(crate) fn add(&mut self, late: Duration) {
        let ms = late.as_secs_f64() * 1e3;
        self.samples += 1;
        self.over_5ms += u64::from(ms > 5.0);
        self.max_ms = self.max_ms.max(ms);
    }
}

pub(crate) struct Stalls {
    pub(crate) thread: Lateness,
    pub(crate) runtime: Lateness,
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lateness of 1 ms sleeps: an OS thread max {:.2} ms ({} of {} over 5 ms), a runtime task max {:.2} ms ({} of {} over 5 ms)",
            self.thread.max_ms,
            self.thread.over_5ms,
            self.thread.samples,
            self.runtime.max_ms,
            self.runtime.over_5ms,
            self.runtime.samples
        )
    }
}

impl StallProbe {
    const TICK: Duration = Duration::from_millis(1);

    pub(crate) fn start() -> StallProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut l = Lateness::default();
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(Self::TICK);
                l.add(t.elapsed().saturating_sub(Self::TICK));
            }
            l
        });
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut l = Lateness::default();
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Self::TICK).await;
                // The timer wheel rounds up to its 1 ms resolution: up to a further 1 ms is its
                // own, not a stall.
                l.add(t.elapsed().saturating_sub(Self::TICK * 2));
            }
            l
        });
        StallProbe { stop, thread, task }
    }

    pub(crate) async fn stop(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let runtime = self.task.await.unwrap_or_default();
        let thread = tokio::task::spawn_blocking(move || self.thread.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        Stalls { thread, runtime }
    }
}

/// The machine's CPU counters (`/proc/stat`, Linux): busy and total time over all cores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MachineCpu {
    pub(crate) busy_ticks: u64,
    pub(crate) stolen_ticks: u64,
    pub(crate) total_ticks: u64,
    pub(crate) cores: usize,
}

/// How busy the machine was between two readings.
pub(crate) struct CpuUse {
    pub(crate) busy_share: f64,
    /// The share of the time the hypervisor ran something else on our virtual cores.
    pub(crate) stolen_share: f64,
    pub(crate) busy_seconds: f64,
    pub(crate) cores: usize,
}

impl MachineCpu {
    pub(crate) fn since(&self, before: &MachineCpu) -> CpuUse {
        let busy = self.busy_ticks.saturating_sub(before.busy_ticks) as f64;
        let total = self.total_ticks.saturating_sub(before.total_ticks).max(1) as f64;
        // The kernel counts in USER_HZ, 100 per second on Linux.
        CpuUse {
            busy_share: busy / total,
            stolen_share: self.stolen_ticks.saturating_sub(before.stolen_ticks) as f64 / total,
            busy_seconds: busy / 100.0,
            cores: self.cores,
        }
    }
}

pub(crate) fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...; busy is ours, steal is not.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let stolen = ticks.get(7).copied().unwrap_or(0);
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    Some(MachineCpu {
        busy_ticks: total - idle - stolen,
        stolen_ticks: stolen,
        total_ticks: total,
        cores,
    })
}

/// What Postgres wrote during a measurement, from its cumulative statistics (`pg_stat_wal`,
/// `pg_stat_bgwriter`): server-wide, so only meaningful while the bench is all that runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgWrites {
    pub(crate) wal_bytes: f64,
    pub(crate) wal_records: i64,
    pub(crate) wal_fpi: i64,
    pub(crate) wal_syncs: i64,
    pub(crate) checkpoints: i64,
    pub(crate) buffers_checkpoint: i64,
    pub(crate) buffers_clean: i64,
    pub(crate) buffers_backend: i64,
}

impl PgWrites {
    pub(crate) async fn read(pool: &PgPool) -> anyhow::Result<PgWrites> {
        let (wal_bytes, wal_records, wal_fpi, wal_syncs): (f64, i64, i64, i64) =
            sqlx::query_as("SELECT wal_bytes::float8, wal_records, wal_fpi, wal_sync FROM pg_stat_wal")
                .fetch_one(pool)
                .await?;
        let (checkpoints, buffers_checkpoint, buffers_clean, buffers_backend): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend \
                 FROM pg_stat_bgwriter",
        )
        .fetch_one(pool)
        .await?;
        Ok(PgWrites {
            wal_bytes,
            wal_records,
            wal_fpi,
            wal_syncs,
            checkpoints,
            buffers_checkpoint,
            buffers_clean,
            buffers_backend,
        })
    }

    /// One line: per request, and the data pages written by whom.
    pub(crate) fn report_since(&self, before: &PgWrites, requests: u64) -> String {
        let per = |d: i64| d as f64 / requests.max(1) as f64;
        format!(
            "Postgres during the open loop (pg_stat_wal, pg_stat_bgwriter): {:.2} KB of WAL per request in {:.1} records \
             ({:.2} full-page images), {:.2} WAL flushes per request, {} checkpoints; data pages written by the \
             checkpointer {}, the background writer {}, backends {}",
            (self.wal_bytes - before.wal_bytes) / requests.max(1) as f64 / 1024.0,
            per(self.wal_records - before.wal_records),
            per(self.wal_fpi - before.wal_fpi),
            per(self.wal_syncs - before.wal_syncs),
            self.checkpoints - before.checkpoints,
            self.buffers_checkpoint - before.buffers_checkpoint,
            self.buffers_clean - before.buffers_clean,
            self.buffers_backend - before.buffers_backend,
        )
    }
}

/// The machine's I/O pressure stall counters (Linux PSI): microseconds in which some task, and in
/// which every non-idle task, waited on I/O.
pub(crate) fn io_pressure() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/pressure/io").ok()?;
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((total("some")?, total("full")?))
}

#[cfg(test)]
mod tests {
    use super::Buckets;

    #[test]
    fn buckets_are_read_from_the_text_format_by_labels_and_subtracted() {
        let before = "x_bucket{le=\"0.001\",path=\"/a\"} 1\nx_bucket{le=\"0.008\",path=\"/a\"} 2\nx_bucket{le=\"+Inf\",path=\"/a\"} 2\nx_bucket{le=\"0.001\",path=\"/b\"} 7\n";
        let after = "x_bucket{le=\"0.001\",path=\"/a\"} 50\nx_bucket{le=\"0.008\",path=\"/a\"} 100\nx_bucket{le=\"+Inf\",path=\"/a\"} 102\nx_bucket{le=\"0.001\",path=\"/b\"} 9\nx_sum{path=\"/a\"} 3\n";
        let a = [r#"path="/a""#];
        let h = Buckets::of(after, "x", &a).since(&Buckets::of(before, "x", &a));
        assert_eq!(h.0, vec![(0.001, 49), (0.008, 98), (f64::INFINITY, 100)]);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_bound(0.49), 0.001);
        assert_eq!(h.quantile_bound(0.98), 0.008);
        assert_eq!(h.quantile_bound(0.99), f64::INFINITY);
        assert_eq!(h.over(0.008), 2);
    }
}
