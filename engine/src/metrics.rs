//! Prometheus metrics. Names follow `strand_<what>_<unit>`, counters end in `_total`, and
//! every label has a bounded set of values (command names, error codes; never keys or peers).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the engine exports, registered in its own registry.
pub struct Metrics {
    pub registry: Registry,
    pub commits_total: IntCounter,
    pub commit_failures_total: IntCounterVec,
    pub commit_duration_seconds: Histogram,
    pub journal_fsync_duration_seconds: Histogram,
    pub group_commit_transactions: Histogram,
    pub journal_seqno: IntGauge,
    pub connected_clients: IntGauge,
    pub rejected_clients_total: IntCounter,
    pub resp_commands_total: IntCounterVec,
    pub resp_protocol_errors_total: IntCounter,
    pub storage_bytes: IntGauge,
    pub storage_free_bytes: IntGauge,
    pub storage_degraded: IntGauge,
    /// The data's on-disk format.
    pub data_format_version: IntGauge,
    /// 1 in version-mismatch mode (a newer binary on older data).
    pub version_mismatch: IntGauge,
    pub build_info: IntGaugeVec,
    pub replication_errors_total: IntCounterVec,
    pub replication_records_sent_total: IntCounter,
    pub replication_bytes_sent_total: IntCounter,
    pub replication_records_applied_total: IntCounter,
    pub replication_bytes_applied_total: IntCounter,
    pub replication_backlog_transactions: IntGaugeVec,
    pub replication_lag_seconds: prometheus::GaugeVec,
    pub replication_connected: IntGaugeVec,
    pub stream_seqno: IntGaugeVec,
    pub rollbacks_total: IntCounter,
    pub rolled_back_transactions_total: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let m = Metrics {
            commits_total: IntCounter::new(
                "strand_commits_total",
                "Transactions committed (journal records written).",
            )?,
            commit_failures_total: IntCounterVec::new(
                Opts::new("strand_commit_failures_total", "Group commits that failed, by error code."),
                &["error"],
            )?,
            commit_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "strand_commit_duration_seconds",
                    "Time from a transaction's submission to its durable commit.",
                )
                .buckets(latency_buckets.clone()),
            )?,
            journal_fsync_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "strand_journal_fsync_duration_seconds",
                    "Duration of one durable redb commit (write and fsync) of a group.",
                )
                .buckets(latency_buckets),
            )?,
            group_commit_transactions: Histogram::with_opts(
                HistogramOpts::new(
                    "strand_group_commit_transactions",
                    "Transactions sharing one durable commit.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            journal_seqno: IntGauge::new("strand_journal_seqno", "Highest durable journal sequence number.")?,
            connected_clients: IntGauge::new("strand_connected_clients", "Open data-port connections.")?,
            rejected_clients_total: IntCounter::new(
                "strand_rejected_clients_total",
                "Data-port connections refused because the client limit was reached.",
            )?,
            resp_commands_total: IntCounterVec::new(
                Opts::new("strand_resp_commands_total", "RESP commands executed, by command."),
                &["command"],
            )?,
            resp_protocol_errors_total: IntCounter::new(
                "strand_resp_protocol_errors_total",
                "Connections closed because of malformed RESP input.",
            )?,
            storage_bytes: IntGauge::new("strand_storage_bytes", "Size of the database file.")?,
            storage_free_bytes: IntGauge::new("strand_storage_free_bytes", "Free bytes on the data volume.")?,
            data_format_version: IntGauge::new(
                "strand_data_format_version",
                "The on-disk format of the data.",
            )?,
            version_mismatch: IntGauge::new(
                "strand_version_mismatch",
                "1 while a newer binary runs on older data (replication and admin only).",
            )?,
            storage_degraded: IntGauge::new(
                "strand_storage_degraded",
                "1 while commits fail for lack of disk space or an I/O error, else 0.",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "strand_build_info",
                    "Binary version, the format it writes and the replication protocol it speaks; always 1.",
                ),
                &["version", "format_version", "protocol_version"],
            )?,
            replication_errors_total: IntCounterVec::new(
                Opts::new(
                    "strand_replication_errors_total",
                    "Replication connections ended or refused, by cause.",
                ),
                &["error"],
            )?,
            replication_records_sent_total: IntCounter::new(
                "strand_replication_records_sent_total",
                "Journal records sent to receivers.",
            )?,
            replication_bytes_sent_total: IntCounter::new(
                "strand_replication_bytes_sent_total",
                "Bytes of journal records sent to receivers.",
            )?,
            replication_records_applied_total: IntCounter::new(
                "strand_replication_records_applied_total",
                "Journal records received and applied.",
            )?,
            replication_bytes_applied_total: IntCounter::new(
                "strand_replication_bytes_applied_total",
                "Bytes of journal records received and applied.",
            )?,
            replication_backlog_transactions: IntGaugeVec::new(
                Opts::new(
                    "strand_replication_backlog_transactions",
                    "Transactions committed here and not yet acknowledged by the receiver.",
                ),
                &["receiver"],
            )?,
            replication_lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "strand_replication_lag_seconds",
                    "Age of the oldest transaction sent to the receiver and not yet acknowledged.",
                ),
                &["receiver"],
            )?,
            replication_connected: IntGaugeVec::new(
                Opts::new("strand_replication_connected", "1 while the stream to the receiver is streaming."),
                &["receiver"],
            )?,
            stream_seqno: IntGaugeVec::new(
                Opts::new(
                    "strand_stream_seqno",
                    "Last stream seqno held per stream (supplementary instances and their BC secondaries).",
                ),
                &["stream", "source_family"],
            )?,
            rollbacks_total: IntCounter::new("strand_rollbacks_total", "Rollbacks performed.")?,
            rolled_back_transactions_total: IntCounter::new(
                "strand_rolled_back_transactions_total",
                "Transactions rolled off into unreplicated-transaction logs.",
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.commits_total.clone()))?;
        r.register(Box::new(m.commit_failures_total.clone()))?;
        r.register(Box::new(m.commit_duration_seconds.clone()))?;
        r.register(Box::new(m.journal_fsync_duration_seconds.clone()))?;
        r.register(Box::new(m.group_commit_transactions.clone()))?;
        r.register(Box::new(m.journal_seqno.clone()))?;
        r.register(Box::new(m.connected_clients.clone()))?;
        r.register(Box::new(m.rejected_clients_total.clone()))?;
        r.register(Box::new(m.resp_commands_total.clone()))?;
        r.register(Box::new(m.resp_protocol_errors_total.clone()))?;
        r.register(Box::new(m.storage_bytes.clone()))?;
        r.register(Box::new(m.storage_free_bytes.clone()))?;
        r.register(Box::new(m.storage_degraded.clone()))?;
        r.register(Box::new(m.data_format_version.clone()))?;
        r.register(Box::new(m.version_mismatch.clone()))?;
        r.register(Box::new(m.build_info.clone()))?;
        r.register(Box::new(m.replication_errors_total.clone()))?;
        r.register(Box::new(m.replication_records_sent_total.clone()))?;
        r.register(Box::new(m.replication_bytes_sent_total.clone()))?;
        r.register(Box::new(m.replication_records_applied_total.clone()))?;
        r.register(Box::new(m.replication_bytes_applied_total.clone()))?;
        r.register(Box::new(m.replication_backlog_transactions.clone()))?;
        r.register(Box::new(m.replication_lag_seconds.clone()))?;
        r.register(Box::new(m.replication_connected.clone()))?;
        r.register(Box::new(m.stream_seqno.clone()))?;
        r.register(Box::new(m.rollbacks_total.clone()))?;
        r.register(Box::new(m.rolled_back_transactions_total.clone()))?;
        m.build_info
            .with_label_values(&[
                crate::VERSION,
                &crate::version::FORMAT.to_string(),
                &crate::version::PROTOCOL.to_string(),
            ])
            .set(1);
        Ok(m)
    }

    /// Renders all metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
