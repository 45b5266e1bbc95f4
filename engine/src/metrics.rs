//! Prometheus metrics. Names follow `strand_<what>_<unit>`, counters end in `_total`, and
//! every label has a bounded set of values (command names, error codes, receiver and family
//! names, roles; never keys or clients). Each metric is declared once, here, with its help
//! text: [`Metrics::catalog`] lists them for docs/observability.md (generated, CI checks it).

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// One metric as documented: name, type, help, label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDoc {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

/// Every metric the engine exports, registered in its own registry.
pub struct Metrics {
    pub registry: Registry,
    catalog: Vec<MetricDoc>,
    pub commits_total: IntCounter,
    pub commit_failures_total: IntCounterVec,
    pub commit_duration_seconds: Histogram,
    pub journal_fsync_duration_seconds: Histogram,
    pub group_commit_transactions: Histogram,
    pub commit_groups_overlapped_total: IntCounter,
    pub commit_groups_led_total: IntCounter,
    pub journal_seqno: IntGauge,
    pub journal_bytes: IntGauge,
    pub journal_first_seqno: IntGauge,
    pub journal_trimmed_records_total: IntCounter,
    pub journal_trimmed_needed_total: IntCounter,
    pub journal_trim_failures_total: IntCounter,
    pub connected_clients: IntGauge,
    pub rejected_clients_total: IntCounter,
    pub expired_keys_total: IntCounter,
    pub reclaimed_nodes_total: IntCounter,
    pub checkpoints_total: IntCounter,
    pub checkpoint_failures_total: IntCounter,
    pub checkpoint_duration_seconds: Histogram,
    pub checkpoint_seqno: IntGauge,
    pub overlay_bytes: IntGauge,
    pub read_cache_hits_total: IntCounter,
    pub read_cache_misses_total: IntCounter,
    pub read_cache_bytes: IntGauge,
    pub resp_commands_total: IntCounterVec,
    pub resp_protocol_errors_total: IntCounter,
    pub storage_bytes: IntGauge,
    pub storage_free_bytes: IntGauge,
    pub volume_size_bytes: IntGauge,
    pub storage_degraded: IntGauge,
    /// The data's on-disk format.
    pub data_format_version: IntGauge,
    /// 1 in version-mismatch mode (a newer binary on older data).
    pub version_mismatch: IntGauge,
    pub build_info: IntGaugeVec,
    /// name, family, role, supplementary: always 1 (joins an engine's series to its family).
    pub instance_info: IntGaugeVec,
    pub term: IntGauge,
    pub writable: IntGauge,
    pub replication_errors_total: IntCounterVec,
    pub replication_records_sent_total: IntCounter,
    pub replication_bytes_sent_total: IntCounter,
    pub replication_records_applied_total: IntCounter,
    pub replication_bytes_applied_total: IntCounter,
    pub replication_apply_duration_seconds: Histogram,
    pub replication_backlog_transactions: IntGaugeVec,
    pub replication_lag_seconds: GaugeVec,
    pub replication_connected: IntGaugeVec,
    pub replication_reseed_required: IntGaugeVec,
    pub replication_seeds_total: IntCounterVec,
    pub replication_seed_nodes_received_total: IntCounter,
    pub receiver_state: IntGaugeVec,
    pub stream_seqno: IntGaugeVec,
    pub rollbacks_total: IntCounter,
    pub rolled_back_transactions_total: IntCounter,
}

/// The receiver states `strand_receiver_state` reports (one series each, 1 for the current).
pub const RECEIVER_STATES: [&str; 7] =
    ["idle", "seeding", "streaming", "rollback_required", "needs_reseed", "error", "stopped"];

/// Registers metrics and writes down what each is.
struct Declare {
    registry: Registry,
    catalog: Vec<MetricDoc>,
}

impl Declare {
    fn add<C: Collector + Clone + 'static>(
        &mut self,
        kind: &'static str,
        c: C,
        labels: &[&str],
    ) -> Result<C, prometheus::Error> {
        for d in c.desc() {
            self.catalog.push(MetricDoc {
                name: d.fq_name.clone(),
                kind,
                help: d.help.clone(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            });
        }
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&mut self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add("counter", IntCounter::new(name, help)?, &[])
    }

    fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add("counter", IntCounterVec::new(Opts::new(name, help), labels)?, labels)
    }

    fn gauge(&mut self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add("gauge", IntGauge::new(name, help)?, &[])
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add("gauge", IntGaugeVec::new(Opts::new(name, help), labels)?, labels)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> Result<Histogram, prometheus::Error> {
        self.add("histogram", Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?, &[])
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let mut d = Declare { registry: Registry::new(), catalog: Vec::new() };
        let latency = || {
            vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5,
            ]
        };
        let m = Metrics {
            commits_total: d.counter("strand_commits_total", "Transactions committed (journal records written).")?,
            commit_failures_total: d.counter_vec(
                "strand_commit_failures_total",
                "Group commits that failed, by error code.",
                &["error"],
            )?,
            commit_duration_seconds: d.histogram(
                "strand_commit_duration_seconds",
                "Time from a transaction's submission to its durable commit.",
                latency(),
            )?,
            journal_fsync_duration_seconds: d.histogram(
                "strand_journal_fsync_duration_seconds",
                "Duration of one commit group's journal sync (fdatasync of the segment its records were appended to).",
                latency(),
            )?,
            group_commit_transactions: d.histogram(
                "strand_group_commit_transactions",
                "Transactions sharing one durable commit.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            )?,
            commit_groups_overlapped_total: d.counter(
                "strand_commit_groups_overlapped_total",
                "Commit groups handed to the sync thread so that the transactions queued behind them ran while they synced.",
            )?,
            commit_groups_led_total: d.counter(
                "strand_commit_groups_led_total",
                "Commit groups a client's own task ran and synced because the writer thread had nothing queued (no thread hop each way).",
            )?,
            journal_seqno: d.gauge("strand_journal_seqno", "Highest durable journal sequence number.")?,
            journal_bytes: d.gauge(
                "strand_journal_bytes",
                "Bytes the journal's records take in the database file and the overlay.",
            )?,
            journal_first_seqno: d.gauge(
                "strand_journal_first_seqno",
                "The oldest journal seqno kept (1 until the journal is trimmed).",
            )?,
            journal_trimmed_records_total: d.counter(
                "strand_journal_trimmed_records_total",
                "Journal records trimmed off the journal's start (acknowledged by every receiver, or past a retention limit).",
            )?,
            journal_trim_failures_total: d.counter(
                "strand_journal_trim_failures_total",
                "Journal trims that failed (tried again after the next checkpoint; the journal grows meanwhile).",
            )?,
            journal_trimmed_needed_total: d.counter(
                "strand_journal_trimmed_needed_total",
                "Journal records a retention limit trimmed although a receiver still needed them (that receiver needs re-seeding).",
            )?,
            connected_clients: d.gauge("strand_connected_clients", "Open data-port connections.")?,
            rejected_clients_total: d.counter(
                "strand_rejected_clients_total",
                "Data-port connections refused because the client limit was reached.",
            )?,
            expired_keys_total: d.counter(
                "strand_expired_keys_total",
                "Keys the primary removed because their expiry passed (each removal is a journaled transaction).",
            )?,
            reclaimed_nodes_total: d.counter(
                "strand_reclaimed_nodes_total",
                "Element nodes of deleted large collections the primary's reclaim cycle removed (in bounded, journaled transactions).",
            )?,
            checkpoints_total: d.counter(
                "strand_checkpoints_total",
                "Checkpoints: overlay generations applied to the database file in one durable commit.",
            )?,
            checkpoint_failures_total: d.counter(
                "strand_checkpoint_failures_total",
                "Checkpoints that failed (retried; commits go on in the journal until the overlay's bound).",
            )?,
            checkpoint_duration_seconds: d.histogram(
                "strand_checkpoint_duration_seconds",
                "Duration of one checkpoint (applying a generation to the database file and syncing it).",
                latency(),
            )?,
            checkpoint_seqno: d.gauge(
                "strand_checkpoint_seqno",
                "Highest journal seqno the database file holds; later ones are in the journal segments and the overlay.",
            )?,
            overlay_bytes: d.gauge(
                "strand_overlay_bytes",
                "Memory held by transactions committed since the last checkpoint (the overlay).",
            )?,
            read_cache_hits_total: d.counter(
                "strand_read_cache_hits_total",
                "Point reads of the database file answered by the read cache.",
            )?,
            read_cache_misses_total: d.counter(
                "strand_read_cache_misses_total",
                "Point reads of the database file that the read cache, in use, did not hold (they read the file).",
            )?,
            read_cache_bytes: d.gauge(
                "strand_read_cache_bytes",
                "Memory held by the read cache of the database file's nodes (emptied by each checkpoint).",
            )?,
            resp_commands_total: d.counter_vec(
                "strand_resp_commands_total",
                "RESP commands executed, by command.",
                &["command"],
            )?,
            resp_protocol_errors_total: d.counter(
                "strand_resp_protocol_errors_total",
                "Connections closed because of malformed RESP input.",
            )?,
            storage_bytes: d.gauge("strand_storage_bytes", "Size of the database file (data and journal).")?,
            storage_free_bytes: d.gauge("strand_storage_free_bytes", "Free bytes on the data volume.")?,
            volume_size_bytes: d.gauge("strand_volume_size_bytes", "Size of the data volume.")?,
            storage_degraded: d.gauge(
                "strand_storage_degraded",
                "1 while commits fail for lack of disk space or an I/O error, else 0.",
            )?,
            data_format_version: d.gauge("strand_data_format_version", "The on-disk format of the data.")?,
            version_mismatch: d.gauge(
                "strand_version_mismatch",
                "1 while a newer binary runs on older data (replication and admin only).",
            )?,
            build_info: d.gauge_vec(
                "strand_build_info",
                "Binary version, the format it writes and the replication protocol it speaks; always 1.",
                &["version", "format_version", "protocol_version"],
            )?,
            instance_info: d.gauge_vec(
                "strand_instance_info",
                "The instance's name, family (its history's root), role and kind; always 1.",
                &["name", "family", "role", "supplementary"],
            )?,
            term: d.gauge("strand_term", "The family term this instance last learned.")?,
            writable: d.gauge(
                "strand_writable",
                "1 while the instance takes application writes (writable role, lease running, no version mismatch).",
            )?,
            replication_errors_total: d.counter_vec(
                "strand_replication_errors_total",
                "Replication connections ended or refused, by cause.",
                &["error"],
            )?,
            replication_seeds_total: d.counter_vec(
                "strand_replication_seeds_total",
                "Seedings of this instance from a source's snapshot, by result (installed, failed).",
                &["result"],
            )?,
            replication_seed_nodes_received_total: d.counter(
                "strand_replication_seed_nodes_received_total",
                "Data nodes received in snapshots (seeding progress).",
            )?,
            replication_records_sent_total: d.counter(
                "strand_replication_records_sent_total",
                "Journal records sent to receivers.",
            )?,
            replication_bytes_sent_total: d.counter(
                "strand_replication_bytes_sent_total",
                "Bytes of journal records and snapshots sent to receivers.",
            )?,
            replication_records_applied_total: d.counter(
                "strand_replication_records_applied_total",
                "Journal records received and applied.",
            )?,
            replication_bytes_applied_total: d.counter(
                "strand_replication_bytes_applied_total",
                "Bytes of journal records received and applied.",
            )?,
            replication_apply_duration_seconds: d.histogram(
                "strand_replication_apply_duration_seconds",
                "Time to apply one batch of received records durably.",
                latency(),
            )?,
            replication_backlog_transactions: d.gauge_vec(
                "strand_replication_backlog_transactions",
                "Transactions committed here and not yet acknowledged by the receiver.",
                &["receiver"],
            )?,
            replication_lag_seconds: d.add(
                "gauge",
                GaugeVec::new(
                    Opts::new(
                        "strand_replication_lag_seconds",
                        "Age of the oldest transaction sent to the receiver and not yet acknowledged.",
                    ),
                    &["receiver"],
                )?,
                &["receiver"],
            )?,
            replication_connected: d.gauge_vec(
                "strand_replication_connected",
                "1 while the stream to the receiver is streaming.",
                &["receiver"],
            )?,
            replication_reseed_required: d.gauge_vec(
                "strand_replication_reseed_required",
                "1 while the receiver needs records this instance's journal no longer holds: it must be re-seeded.",
                &["receiver"],
            )?,
            receiver_state: d.gauge_vec(
                "strand_receiver_state",
                "The receiver's state (idle, seeding, streaming, rollback_required, needs_reseed, error, stopped): 1 for the current one; absent without a receiver.",
                &["state"],
            )?,
            stream_seqno: d.gauge_vec(
                "strand_stream_seqno",
                "Last stream seqno held per stream (supplementary instances and their BC secondaries).",
                &["stream", "source_family"],
            )?,
            rollbacks_total: d.counter("strand_rollbacks_total", "Rollbacks performed.")?,
            rolled_back_transactions_total: d.counter(
                "strand_rolled_back_transactions_total",
                "Transactions rolled off into unreplicated-transaction logs.",
            )?,
            registry: d.registry,
            catalog: d.catalog,
        };
        m.build_info
            .with_label_values(&[
                crate::VERSION,
                &crate::version::FORMAT.to_string(),
                &crate::version::PROTOCOL.to_string(),
            ])
            .set(1);
        // Every outcome is known in advance: exported from the start, at 0 (rate() and
        // increase() then see the first seeding).
        for result in ["installed", "failed"] {
            m.replication_seeds_total.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Every metric this engine exports, in declaration order.
    pub fn catalog(&self) -> &[MetricDoc] {
        &self.catalog
    }

    /// Renders all metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The catalog as a Markdown table (docs/observability.md holds it between
/// `<!-- engine-metrics -->` markers; a test fails when they differ).
pub fn catalog_markdown(catalog: &[MetricDoc]) -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for d in catalog {
        let labels = if d.labels.is_empty() { "—".to_owned() } else { d.labels.join(", ") };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name,
            d.kind,
            labels,
            d.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// docs/observability.md lists exactly the metrics declared here
    /// (`STRAND_UPDATE_DOCS=1 cargo test -p strand-engine metrics` rewrites it).
    #[test]
    fn the_docs_list_every_metric() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let table = catalog_markdown(Metrics::new().unwrap().catalog());
        let (begin, end) = ("<!-- engine-metrics:begin -->\n", "<!-- engine-metrics:end -->");
        let a = doc.find(begin).unwrap() + begin.len();
        let b = doc.find(end).unwrap();
        if doc.get(a..b) != Some(table.as_str()) {
            if std::env::var_os("STRAND_UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &doc[..a], &doc[b..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "docs/observability.md's engine metrics differ from the code: run STRAND_UPDATE_DOCS=1 cargo test -p strand-engine metrics"
                );
            }
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new().unwrap();
        for d in m.catalog() {
            assert!(d.name.starts_with("strand_"), "{}", d.name);
            assert_eq!(
                d.kind == "counter",
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
            assert!(!d.help.is_empty(), "{}", d.name);
            for l in &d.labels {
                assert!(!["key", "client", "addr"].contains(&l.as_str()), "{}: unbounded label {l}", d.name);
            }
        }
    }
}
