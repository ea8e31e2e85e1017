//! Prometheus metrics of the hub, rendered at `GET /api/v1/metrics`.

use std::sync::atomic::AtomicU64;

use mimamori_protocol::native::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabel {
    pub severity: String,
}

/// Buckets of time to acknowledge, in seconds: the 60 s target sits on a boundary.
const ACK_BUCKETS: [f64; 10] = [
    5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
    pub reason: String,
}

/// Every counter the hub keeps.
pub struct Metrics {
    registry: Registry,
    pub accepted: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connects_refused: Family<CodeLabel, Counter>,
    /// Connections a listener closed before serving them (full, source over its share,
    /// silent past the timeout).
    pub connections_refused: Family<ListenerLabel, Counter>,
    /// Logins refused by the back-off without a password check, by listener and limit.
    pub logins_limited: Family<ListenerLabel, Counter>,
    pub batches: Counter,
    pub batch_failures: Counter,
    /// Seconds each ingest transaction took to write and commit.
    pub batch_seconds: Histogram,
    /// Items (accepted and refused messages) in each ingest transaction.
    pub batch_items: Histogram,
    pub alerts_changed: Counter<u64, AtomicU64>,
    /// Rows retention removed, by data class.
    pub retention_purged: Family<ClassLabel, Counter>,
    /// Reads written to the access log, and reads lost because its queue was full.
    pub access_logged: Counter,
    pub access_dropped: Counter,
    /// Seconds from an alert opening to its acknowledgement, by severity.
    pub ack_seconds: Family<SeverityLabel, Histogram, fn() -> Histogram>,
    /// LINE push messages accepted by LINE since the hub started.
    pub line_messages: Counter,
    /// LINE push messages accepted this calendar month (Japan time), resumed from the
    /// store at start.
    pub line_messages_month: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Cluster mode: partitions this hub owns now.
    pub cluster_partitions: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Cluster mode: hubs that reported within a lease.
    pub cluster_nodes: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Cluster mode: commits refused because the partition had changed hands.
    pub cluster_fenced: Counter,
    /// Cluster mode: events this hub's edge appended to the event log.
    pub cluster_appended: Counter,
    /// 1 for each once-per-installation job (`tts`, `retention`) running on this hub.
    pub job_running: Family<JobLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Web Push messages accepted by a browser's push service.
    pub push_messages: Counter,
    /// Web Push subscriptions removed because their push service answered 404 or 410.
    pub push_subscriptions_expired: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mimamori");
        let accepted = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let connections = Gauge::default();
        let connects_refused = Family::<CodeLabel, Counter>::default();
        let connections_refused = Family::<ListenerLabel, Counter>::default();
        let logins_limited = Family::<ListenerLabel, Counter>::default();
        let batches = Counter::default();
        let batch_failures = Counter::default();
        let alerts_changed = Counter::default();
        let line_messages = Counter::default();
        let line_messages_month = Gauge::default();
        let cluster_partitions = Gauge::default();
        let cluster_nodes = Gauge::default();
        let cluster_fenced = Counter::default();
        let cluster_appended = Counter::default();
        registry.register(
            "cluster_partitions_owned",
            "Cluster mode: partitions this hub owns",
            cluster_partitions.clone(),
        );
        registry.register(
            "cluster_nodes_alive",
            "Cluster mode: hubs that renewed within a lease",
            cluster_nodes.clone(),
        );
        registry.register(
            "cluster_fenced_commits",
            "Cluster mode: commits refused because the partition had changed hands",
            cluster_fenced.clone(),
        );
        registry.register(
            "cluster_events_appended",
            "Cluster mode: events appended to the JetStream event log by this hub's edge",
            cluster_appended.clone(),
        );
        let job_running = Family::<JobLabel, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "job_running",
            "1 for each once-per-installation job running on this hub (in cluster mode on one hub at a time)",
            job_running.clone(),
        );
        let push_messages = Counter::default();
        let push_subscriptions_expired = Counter::default();
        let batch_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        let batch_items = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let ack_seconds = Family::<SeverityLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(ACK_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "alert_ack_seconds",
            "Time from an alert opening to its acknowledgement by staff",
            ack_seconds.clone(),
        );
        registry.register(
            "messages_accepted",
            "Device messages validated and stored",
            accepted.clone(),
        );
        registry.register(
            "messages_rejected",
            "Device messages refused, by reason",
            rejected.clone(),
        );
        registry.register(
            "mqtt_connections",
            "Open device and client MQTT connections",
            connections.clone(),
        );
        registry.register(
            "mqtt_connects_refused",
            "CONNECTs refused, by CONNACK return code",
            connects_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections a listener refused or closed unserved, by listener and reason",
            connections_refused.clone(),
        );
        registry.register(
            "logins_limited",
            "Logins refused by the back-off before any password check, by listener and limit",
            logins_limited.clone(),
        );
        registry.register(
            "ingest_batches",
            "Ingest transactions committed",
            batches.clone(),
        );
        registry.register(
            "ingest_batch_failures",
            "Ingest transactions that failed and were not acknowledged",
            batch_failures.clone(),
        );
        registry.register(
            "ingest_batch_seconds",
            "Time to write and commit one ingest transaction",
            batch_seconds.clone(),
        );
        registry.register(
            "ingest_batch_items",
            "Messages in one ingest transaction",
            batch_items.clone(),
        );
        registry.register(
            "alert_changes",
            "Alert openings, updates and resolutions written",
            alerts_changed.clone(),
        );
        registry.register(
            "line_messages",
            "LINE push messages accepted by LINE",
            line_messages.clone(),
        );
        registry.register(
            "line_messages_this_month",
            "LINE push messages accepted this month (Japan time)",
            line_messages_month.clone(),
        );
        registry.register(
            "push_messages",
            "Web Push messages accepted by a browser's push service",
            push_messages.clone(),
        );
        registry.register(
            "push_subscriptions_expired",
            "Web Push subscriptions removed after their push service answered 404 or 410",
            push_subscriptions_expired.clone(),
        );
        let retention_purged = Family::<ClassLabel, Counter>::default();
        registry.register(
            "retention_purged_rows",
            "Rows removed by retention, by data class",
            retention_purged.clone(),
        );
        let access_logged = Counter::default();
        registry.register(
            "access_log_rows",
            "Reads of residents' data written to the access log",
            access_logged.clone(),
        );
        let access_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Reads not logged because the access log's queue was full or the store failed",
            access_dropped.clone(),
        );
        // Every reason appears from the start, so a dashboard sees zeros rather than gaps.
        for r in RejectReason::ALL {
            let _ = rejected.get_or_create(&ReasonLabel {
                reason: r.as_str().to_string(),
            });
        }
        Metrics {
            registry,
            accepted,
            rejected,
            connections,
            connects_refused,
            connections_refused,
            logins_limited,
            batches,
            batch_failures,
            batch_seconds,
            batch_items,
            alerts_changed,
            retention_purged,
            access_logged,
            access_dropped,
            ack_seconds,
            line_messages,
            line_messages_month,
            cluster_partitions,
            cluster_nodes,
            cluster_fenced,
            cluster_appended,
            job_running,
            push_messages,
            push_subscriptions_expired,
        }
    }

    pub fn observe_ack(&self, severity: mimamori_protocol::Severity, seconds: f64) {
        self.ack_seconds
            .get_or_create(&SeverityLabel {
                severity: severity.as_str().to_string(),
            })
            .observe(seconds);
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    pub fn refuse_connect(&self, code: &str) {
        self.connects_refused
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// A connection `listener` (`http`, `mqtt`) refused or closed before serving it.
    pub fn refuse_connection(&self, listener: &str, reason: &str) {
        self.connections_refused
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A login on `listener` held back by the `by` (`source`, `account`) limit.
    pub fn limit_login(&self, listener: &str, by: &str) {
        self.logins_limited
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
                reason: by.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
