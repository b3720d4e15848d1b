//! Prometheus metrics: HTTP requests and latency by matched path, command latency, the writer's
//! append and batch latency (histograms the store fills), and — read at scrape time — appends,
//! commits, duplicates, conflicts, projector lag and the age of the oldest open transaction
//! (which holds every reader of the log back).

use oo_commands::store::StoreMetrics;
use oo_commands::store::latency_histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

/// Values read from the database just before a scrape.
#[derive(Debug, Clone, Default)]
pub struct ScrapeSnapshot {
    pub lag: Vec<(String, i64, f64)>,
    pub oldest_transaction_seconds: f64,
    /// Whether the relay is connected to NATS (`None`: no NATS configured).
    pub nats_up: Option<bool>,
    /// How many times the health figures were computed (they are reused for a second).
    pub health_refreshes: u64,
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<PathLabels, Histogram, fn() -> Histogram>,
    pub command_duration: Family<CommandLabels, Histogram, fn() -> Histogram>,
    pub snapshot: Arc<Mutex<ScrapeSnapshot>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

#[derive(Debug)]
struct StoreCollector {
    store: Arc<StoreMetrics>,
    snapshot: Arc<Mutex<ScrapeSnapshot>>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "oo_events_appended",
                "Events durably appended",
                &self.store.events_appended,
            ),
            (
                "oo_append_requests",
                "Append requests received by the writer",
                &self.store.append_requests,
            ),
            (
                "oo_append_commits",
                "Transactions committed by the writer (group commits)",
                &self.store.commits,
            ),
            (
                "oo_signal_duplicates",
                "Signals acknowledged as duplicates",
                &self.store.duplicates,
            ),
            (
                "oo_append_conflicts",
                "Appends refused by optimistic concurrency",
                &self.store.conflicts,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value.load(Ordering::Relaxed));
            c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        let snap = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "oo_projection_lag_events",
            "Events in the log a projection has not applied yet",
            None,
            MetricType::Gauge,
        )?;
        for (name, lag, _) in &snap.lag {
            let labels = PathLabels { path: name.clone() };
            ConstGauge::new(*lag).encode(family.encode_family(&labels)?)?;
        }
        let mut seconds = encoder.encode_descriptor(
            "oo_projection_lag_seconds",
            "Age of the oldest event a projection (or the NATS relay) has not applied yet",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, age) in &snap.lag {
            let labels = PathLabels { path: name.clone() };
            ConstGauge::new(*age).encode(seconds.encode_family(&labels)?)?;
        }
        if let Some(up) = snap.nats_up {
            ConstGauge::new(i64::from(up)).encode(encoder.encode_descriptor(
                "oo_nats_up",
                "1 when the relay is connected to NATS JetStream, 0 when it is not",
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstCounter::new(snap.health_refreshes).encode(encoder.encode_descriptor(
            "oo_health_refreshes",
            "Times the lag and oldest-transaction figures were computed (reused for a second in between)",
            None,
            MetricType::Counter,
        )?)?;
        if let Some(bytes) = crate::heap::live_bytes() {
            ConstGauge::new(bytes as i64).encode(encoder.encode_descriptor(
                "oo_heap_live_bytes",
                "Bytes of heap the process holds (allocated and not freed; the allocator's own reserve is not counted)",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let g = ConstGauge::new(snap.oldest_transaction_seconds);
        g.encode(encoder.encode_descriptor(
            "oo_oldest_transaction_age_seconds",
            "Age of the oldest open transaction on the server (it holds back readers of the log)",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

impl Metrics {
    pub fn new(store: Arc<StoreMetrics>) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "oo_http_requests",
            "HTTP requests by matched path and status",
            http_requests.clone(),
        );
        let http_duration = Family::<PathLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "oo_http_request_duration_seconds",
            "HTTP request latency by matched path",
            http_duration.clone(),
        );
        let command_duration =
            Family::<CommandLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "oo_command_duration_seconds",
            "Command latency (load, decide, durable append)",
            command_duration.clone(),
        );
        registry.register(
            "oo_append_duration_seconds",
            "Appends from the writer's queue to their durable commit",
            store.append_seconds.clone(),
        );
        registry.register(
            "oo_append_commit_duration_seconds",
            "The writer's batches on the database (insert and durable commit)",
            store.commit_seconds.clone(),
        );
        let snapshot = Arc::new(Mutex::new(ScrapeSnapshot::default()));
        registry.register_collector(Box::new(StoreCollector {
            store,
            snapshot: snapshot.clone(),
        }));
        Self {
            registry,
            http_requests,
            http_duration,
            command_duration,
            snapshot,
        }
    }

    pub fn observe_command(&self, command: &str, seconds: f64) {
        self.command_duration
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
            })
            .observe(seconds);
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
