//! The operator's Prometheus metrics and its small HTTP endpoint (`/metrics`, `/healthz`).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::crd::FamilyStatus;
use crate::crd::family::ProcedureRecord;
use crate::family::LinkReport;

/// One metric as documented: name, type, help, label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDoc {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

pub struct Metrics {
    registry: Registry,
    catalog: Vec<MetricDoc>,
    /// kind (Instance, ReplicationLink), result (ok, error)
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// kind, error (a bounded kind of error)
    pub reconcile_errors: IntCounterVec,
    /// action (promote, receiver_start, …), result (ok, or the error kind)
    pub engine_calls: IntCounterVec,
    pub engine_call_errors: IntCounterVec,
    pub leader: IntGauge,
    /// kind (Switchover, Failover, Upgrade), outcome (Succeeded, Aborted, Reverted, …)
    pub procedures: IntCounterVec,
    /// kind, step: how long each step of finished procedures took
    pub procedure_step_duration: HistogramVec,
    /// namespace, family, kind, step: 1 while a switchover or failover is at that step
    pub procedure_step: IntGaugeVec,
    /// namespace, family, step: 1 while the family's image upgrade is at that step
    pub upgrade_step: IntGaugeVec,
    /// namespace, family, primary, phase: always 1
    pub family_info: IntGaugeVec,
    /// namespace, family
    pub family_term: IntGaugeVec,
    /// namespace, family, link, state: 1 for the link's current state
    pub link_state: IntGaugeVec,
    pub link_lag: GaugeVec,
    pub link_backlog: IntGaugeVec,
    /// The label sets set last per family ("namespace/family"), so changed ones go away.
    series: Mutex<HashMap<String, FamilySeries>>,
}

#[derive(Default)]
struct FamilySeries {
    info: Option<[String; 2]>,
    procedure: Option<[String; 2]>,
    upgrade: Option<String>,
    /// link → its state
    links: BTreeMap<String, String>,
    /// (kind, outcome) of the procedures counted for this family
    procedures: std::collections::BTreeSet<(String, String)>,
}

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

    fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add("counter", IntCounterVec::new(Opts::new(name, help), labels)?, labels)
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add("gauge", IntGaugeVec::new(Opts::new(name, help), labels)?, labels)
    }

    fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> Result<HistogramVec, prometheus::Error> {
        self.add(
            "histogram",
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
            labels,
        )
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let mut d = Declare { registry: Registry::new(), catalog: Vec::new() };
        let m = Metrics {
            reconciles: d.counter_vec(
                "strand_operator_reconciles_total",
                "Reconciles by kind and result.",
                &["kind", "result"],
            )?,
            reconcile_duration: d.histogram_vec(
                "strand_operator_reconcile_duration_seconds",
                "Duration of one reconcile.",
                vec![0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                &["kind"],
            )?,
            reconcile_errors: d.counter_vec(
                "strand_operator_reconcile_errors_total",
                "Failed reconciles by kind and error kind.",
                &["kind", "error"],
            )?,
            engine_calls: d.counter_vec(
                "strand_operator_engine_calls_total",
                "Engine admin calls by action and result.",
                &["action", "result"],
            )?,
            engine_call_errors: d.counter_vec(
                "strand_operator_engine_call_errors_total",
                "Failed engine admin calls by error kind.",
                &["error"],
            )?,
            leader: d.add(
                "gauge",
                IntGauge::new("strand_operator_leader", "1 while this replica holds the leader Lease.")?,
                &[],
            )?,
            procedures: d.counter_vec(
                "strand_operator_procedures_total",
                "Finished family procedures (switchovers, failovers, upgrades) by family, kind and outcome.",
                &["namespace", "family", "kind", "outcome"],
            )?,
            procedure_step_duration: d.histogram_vec(
                "strand_operator_procedure_step_duration_seconds",
                "How long each step of a finished procedure took, by kind and step.",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
                &["kind", "step"],
            )?,
            procedure_step: d.gauge_vec(
                "strand_operator_procedure_step",
                "1 while the family's switchover or failover is at this step (Fencing, CatchingUp, Promoting, Repointing).",
                &["namespace", "family", "kind", "step"],
            )?,
            upgrade_step: d.gauge_vec(
                "strand_operator_upgrade_step",
                "1 while the family's image upgrade is at this step (Preparing, Secondaries, Primary, UpgradingFormat, Finishing).",
                &["namespace", "family", "step"],
            )?,
            family_info: d.gauge_vec(
                "strand_operator_family_info",
                "The family's primary and phase as the operator records them; always 1.",
                &["namespace", "family", "primary", "phase"],
            )?,
            family_term: d.gauge_vec(
                "strand_operator_family_term",
                "The family's term as the operator records it.",
                &["namespace", "family"],
            )?,
            link_state: d.gauge_vec(
                "strand_operator_link_state",
                "The ReplicationLink's state (Streaming, CatchingUp, Connecting, RollbackRequired, ReseedRequired, …): 1 for the current one.",
                &["namespace", "family", "link", "state"],
            )?,
            link_lag: d.add(
                "gauge",
                GaugeVec::new(
                    Opts::new(
                        "strand_operator_link_lag_seconds",
                        "Age of the oldest transaction the link's source sent and its target has not acknowledged.",
                    ),
                    &["namespace", "family", "link"],
                )?,
                &["namespace", "family", "link"],
            )?,
            link_backlog: d.gauge_vec(
                "strand_operator_link_backlog_transactions",
                "Transactions the link's source holds that its target has not acknowledged.",
                &["namespace", "family", "link"],
            )?,
            series: Mutex::default(),
            registry: d.registry,
            catalog: d.catalog,
        };
        Ok(m)
    }

    /// Every metric the operator exports, in declaration order.
    pub fn catalog(&self) -> &[MetricDoc] {
        &self.catalog
    }

    /// Records what a family's new status and link reports say: procedures it finished since
    /// `old` (count and step durations), its primary, phase and term, the step of a running
    /// procedure or upgrade, and each link's state, lag and backlog. Series whose labels
    /// changed go away.
    pub fn family(
        &self,
        ns: &str,
        family: &str,
        old: &[ProcedureRecord],
        new: &FamilyStatus,
        links: &BTreeMap<String, LinkReport>,
    ) {
        let mut all = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = all.entry(format!("{ns}/{family}")).or_default();
        for r in new.history.iter().filter(|r| !old.contains(r)) {
            self.procedures.with_label_values(&[ns, family, r.kind.as_str(), r.outcome.as_str()]).inc();
            seen.procedures.insert((r.kind.clone(), r.outcome.clone()));
            for (step, secs) in step_durations(r) {
                self.procedure_step_duration.with_label_values(&[r.kind.as_str(), step]).observe(secs);
            }
        }
        let info = [new.primary.clone().unwrap_or_default(), new.phase.clone().unwrap_or_default()];
        if let Some([p, ph]) = seen.info.take().filter(|i| *i != info) {
            let _ = self.family_info.remove_label_values(&[ns, family, &p, &ph]);
        }
        self.family_info.with_label_values(&[ns, family, &info[0], &info[1]]).set(1);
        seen.info = Some(info);
        self.family_term.with_label_values(&[ns, family]).set(i64::try_from(new.term).unwrap_or(i64::MAX));

        let procedure = new.procedure.as_ref().map(|p| [p.kind.clone(), p.step.clone()]);
        if let Some([k, st]) = seen.procedure.take().filter(|p| Some(p) != procedure.as_ref()) {
            let _ = self.procedure_step.remove_label_values(&[ns, family, &k, &st]);
        }
        if let Some([k, st]) = &procedure {
            self.procedure_step.with_label_values(&[ns, family, k, st]).set(1);
        }
        seen.procedure = procedure;

        let upgrade = new.upgrade.as_ref().map(|u| u.step.clone());
        if let Some(st) = seen.upgrade.take().filter(|s| Some(s) != upgrade.as_ref()) {
            let _ = self.upgrade_step.remove_label_values(&[ns, family, &st]);
        }
        if let Some(st) = &upgrade {
            self.upgrade_step.with_label_values(&[ns, family, st]).set(1);
        }
        seen.upgrade = upgrade;

        for (link, state) in std::mem::take(&mut seen.links) {
            match links.get(&link) {
                Some(r) if r.state == state => {}
                Some(_) => {
                    let _ = self.link_state.remove_label_values(&[ns, family, &link, &state]);
                }
                None => self.remove_link(ns, family, &link, &state),
            }
        }
        for (link, r) in links {
            self.link_state.with_label_values(&[ns, family, link, &r.state]).set(1);
            match r.lag_seconds {
                Some(lag) => self.link_lag.with_label_values(&[ns, family, link]).set(lag),
                None => {
                    let _ = self.link_lag.remove_label_values(&[ns, family, link]);
                }
            }
            match r.backlog {
                Some(b) => self
                    .link_backlog
                    .with_label_values(&[ns, family, link])
                    .set(i64::try_from(b).unwrap_or(i64::MAX)),
                None => {
                    let _ = self.link_backlog.remove_label_values(&[ns, family, link]);
                }
            }
            seen.links.insert(link.clone(), r.state.clone());
        }
    }

    fn remove_link(&self, ns: &str, family: &str, link: &str, state: &str) {
        let _ = self.link_state.remove_label_values(&[ns, family, link, state]);
        let _ = self.link_lag.remove_label_values(&[ns, family, link]);
        let _ = self.link_backlog.remove_label_values(&[ns, family, link]);
    }

    /// Drops the series of families `live` does not know ("namespace/family").
    pub fn retain_families(&self, live: impl Fn(&str) -> bool) {
        let mut all = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|key, seen| {
            if live(key) {
                return true;
            }
            let (ns, family) = key.split_once('/').unwrap_or(("", key));
            if let Some([p, ph]) = &seen.info {
                let _ = self.family_info.remove_label_values(&[ns, family, p, ph]);
            }
            let _ = self.family_term.remove_label_values(&[ns, family]);
            if let Some([k, st]) = &seen.procedure {
                let _ = self.procedure_step.remove_label_values(&[ns, family, k, st]);
            }
            if let Some(st) = &seen.upgrade {
                let _ = self.upgrade_step.remove_label_values(&[ns, family, st]);
            }
            for (link, state) in &seen.links {
                self.remove_link(ns, family, link, state);
            }
            for (kind, outcome) in &seen.procedures {
                let _ = self.procedures.remove_label_values(&[ns, family, kind, outcome]);
            }
            false
        });
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Each step of a finished procedure and how long it took (to the next step's time).
fn step_durations(r: &ProcedureRecord) -> Vec<(&str, f64)> {
    let at = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().ok();
    r.steps
        .windows(2)
        .filter_map(|w| {
            let [first, next] = w else { return None };
            let secs = at(&next.at)?.duration_since(at(&first.at)?).as_secs_f64();
            (secs >= 0.0).then_some((first.step.as_str(), secs))
        })
        .collect()
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends (a replica waiting for
/// the Lease is a healthy standby; `strand_operator_leader` says which one leads).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (200, metrics.render()),
                        "/healthz" | "/readyz" => (200, b"ok".to_vec()),
                        _ => (404, b"not found".to_vec()),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The catalog as a Markdown table (docs/observability.md holds it between
/// `<!-- operator-metrics -->` markers; a test fails when they differ).
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
    use crate::crd::family::{Procedure, StepTime, Upgrade};

    fn render(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    fn link(state: &str, lag: Option<f64>) -> BTreeMap<String, LinkReport> {
        BTreeMap::from([(
            "a-to-b".to_owned(),
            LinkReport {
                state: state.into(),
                lag_seconds: lag,
                backlog: lag.map(|_| 3),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn a_family_shows_its_primary_steps_and_links_and_changed_series_go_away() {
        let m = Metrics::new().unwrap();
        let mut st = FamilyStatus {
            primary: Some("a".into()),
            phase: Some("SwitchingOver".into()),
            term: 2,
            procedure: Some(Procedure {
                kind: "Switchover".into(),
                step: "Fencing".into(),
                ..Default::default()
            }),
            upgrade: Some(Upgrade { image: "i:2".into(), step: "Primary".into(), ..Default::default() }),
            ..Default::default()
        };
        m.family("ns", "fam", &[], &st, &link("Streaming", Some(0.25)));
        let text = render(&m);
        for series in [
            r#"strand_operator_family_info{family="fam",namespace="ns",phase="SwitchingOver",primary="a"} 1"#,
            r#"strand_operator_family_term{family="fam",namespace="ns"} 2"#,
            r#"strand_operator_procedure_step{family="fam",kind="Switchover",namespace="ns",step="Fencing"} 1"#,
            r#"strand_operator_upgrade_step{family="fam",namespace="ns",step="Primary"} 1"#,
            r#"strand_operator_link_state{family="fam",link="a-to-b",namespace="ns",state="Streaming"} 1"#,
            r#"strand_operator_link_lag_seconds{family="fam",link="a-to-b",namespace="ns"} 0.25"#,
            r#"strand_operator_link_backlog_transactions{family="fam",link="a-to-b",namespace="ns"} 3"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
        // The switchover finished: its record counts, its steps' durations are observed, the
        // old series go away.
        let t = |s: &str| format!("2026-11-26T00:00:{s}Z");
        let done = ProcedureRecord {
            kind: "Switchover".into(),
            outcome: "Succeeded".into(),
            steps: vec![
                StepTime { step: "Fencing".into(), at: t("00") },
                StepTime { step: "CatchingUp".into(), at: t("00.2") },
                StepTime { step: "Done".into(), at: t("01") },
            ],
            ..Default::default()
        };
        st.procedure = None;
        st.upgrade = None;
        st.primary = Some("b".into());
        st.phase = Some("Healthy".into());
        st.history.push(done.clone());
        m.family("ns", "fam", &[], &st, &link("CatchingUp", None));
        let text = render(&m);
        assert!(
            text.contains(r#"strand_operator_procedures_total{family="fam",kind="Switchover",namespace="ns",outcome="Succeeded"} 1"#)
        );
        assert!(text.contains(
            r#"strand_operator_procedure_step_duration_seconds_count{kind="Switchover",step="CatchingUp"} 1"#
        ));
        assert!(text.contains(r#"primary="b""#) && !text.contains(r#"primary="a""#), "{text}");
        assert!(
            !text.contains("strand_operator_procedure_step{")
                && !text.contains("strand_operator_upgrade_step{")
        );
        assert!(text.contains(r#"state="CatchingUp""#) && !text.contains(r#"state="Streaming""#));
        assert!(!text.contains("strand_operator_link_lag_seconds{"), "no lag known: no series");
        // Seen again: not counted twice.
        m.family("ns", "fam", &[done], &st, &link("CatchingUp", None));
        assert!(
            render(&m)
                .contains(r#"strand_operator_procedures_total{family="fam",kind="Switchover",namespace="ns",outcome="Succeeded"} 1"#)
        );
        // The link goes, then the family.
        m.family("ns", "fam", &st.history.clone(), &st, &BTreeMap::new());
        assert!(!render(&m).contains("strand_operator_link_state{"));
        m.retain_families(|k| k != "ns/fam");
        let text = render(&m);
        assert!(
            !text.contains("strand_operator_family_info{")
                && !text.contains("strand_operator_family_term{")
                && !text.contains("strand_operator_procedures_total{")
        );
    }

    /// docs/observability.md lists exactly the metrics declared here
    /// (`STRAND_UPDATE_DOCS=1 cargo test -p strand-operator metrics` rewrites it).
    #[test]
    fn the_docs_list_every_metric() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let table = catalog_markdown(Metrics::new().unwrap().catalog());
        let (begin, end) = ("<!-- operator-metrics:begin -->\n", "<!-- operator-metrics:end -->");
        let a = doc.find(begin).unwrap() + begin.len();
        let b = doc.find(end).unwrap();
        if doc.get(a..b) != Some(table.as_str()) {
            if std::env::var_os("STRAND_UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &doc[..a], &doc[b..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "docs/observability.md's operator metrics differ from the code: run STRAND_UPDATE_DOCS=1 cargo test -p strand-operator metrics"
                );
            }
        }
    }

    #[test]
    fn the_catalog_lists_every_registered_metric() {
        let m = Metrics::new().unwrap();
        let names: Vec<&str> = m.catalog().iter().map(|d| d.name.as_str()).collect();
        assert!(names.contains(&"strand_operator_link_lag_seconds"));
        let unique: std::collections::BTreeSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a metric declared twice");
        assert!(m.catalog().iter().all(|d| !d.help.is_empty() && d.name.starts_with("strand_operator_")));
    }
}
