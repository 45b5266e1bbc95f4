//! The operator's Prometheus metrics and its small HTTP endpoint (`/metrics`, `/healthz`).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::family::plan::{UP_FINISHING, UP_FORMAT, UP_PREPARING, UP_PRIMARY, UP_SECONDARIES};

pub struct Metrics {
    registry: Registry,
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
    /// namespace, family, step: 1 while the family's image upgrade is at that step
    pub upgrade_step: IntGaugeVec,
    /// Families with an `upgrade_step` series: "namespace/family".
    upgrading: Mutex<BTreeSet<String>>,
}

/// The steps `strand_operator_upgrade_step` reports.
const UPGRADE_STEPS: [&str; 5] = [UP_PREPARING, UP_SECONDARIES, UP_PRIMARY, UP_FORMAT, UP_FINISHING];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            reconciles: IntCounterVec::new(
                Opts::new("strand_operator_reconciles_total", "Reconciles by kind and result."),
                &["kind", "result"],
            )?,
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new(
                    "strand_operator_reconcile_duration_seconds",
                    "Duration of one reconcile.",
                )
                .buckets(vec![0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["kind"],
            )?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "strand_operator_reconcile_errors_total",
                    "Failed reconciles by kind and error kind.",
                ),
                &["kind", "error"],
            )?,
            engine_calls: IntCounterVec::new(
                Opts::new("strand_operator_engine_calls_total", "Engine admin calls by action and result."),
                &["action", "result"],
            )?,
            engine_call_errors: IntCounterVec::new(
                Opts::new(
                    "strand_operator_engine_call_errors_total",
                    "Failed engine admin calls by error kind.",
                ),
                &["error"],
            )?,
            leader: IntGauge::new("strand_operator_leader", "1 while this replica holds the leader Lease.")?,
            procedures: IntCounterVec::new(
                Opts::new(
                    "strand_operator_procedures_total",
                    "Finished family procedures (switchovers, failovers, upgrades) by kind and outcome.",
                ),
                &["kind", "outcome"],
            )?,
            upgrade_step: IntGaugeVec::new(
                Opts::new(
                    "strand_operator_upgrade_step",
                    "1 while the family's image upgrade is at this step (Preparing, Secondaries, Primary, UpgradingFormat, Finishing).",
                ),
                &["namespace", "family", "step"],
            )?,
            upgrading: Mutex::default(),
            registry,
        };
        m.registry.register(Box::new(m.reconciles.clone()))?;
        m.registry.register(Box::new(m.reconcile_duration.clone()))?;
        m.registry.register(Box::new(m.reconcile_errors.clone()))?;
        m.registry.register(Box::new(m.engine_calls.clone()))?;
        m.registry.register(Box::new(m.engine_call_errors.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.procedures.clone()))?;
        m.registry.register(Box::new(m.upgrade_step.clone()))?;
        Ok(m)
    }

    /// Records what a family's new status says: procedures it finished since `old`, and the
    /// step its upgrade is at (`None`: no upgrade, the family's series go away).
    pub fn family(
        &self,
        ns: &str,
        family: &str,
        old: &[crate::crd::family::ProcedureRecord],
        new: &crate::crd::FamilyStatus,
    ) {
        for r in new.history.iter().filter(|r| !old.contains(r)) {
            self.procedures.with_label_values(&[r.kind.as_str(), r.outcome.as_str()]).inc();
        }
        let at = new.upgrade.as_ref().map(|u| u.step.as_str());
        let key = format!("{ns}/{family}");
        let mut upgrading = self.upgrading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if at.is_some() {
            upgrading.insert(key);
        } else if !upgrading.remove(&key) {
            return;
        }
        for step in UPGRADE_STEPS {
            if Some(step) == at {
                self.upgrade_step.with_label_values(&[ns, family, step]).set(1);
            } else {
                let _ = self.upgrade_step.remove_label_values(&[ns, family, step]);
            }
        }
    }

    /// Drops the series of families `live` does not know ("namespace/family").
    pub fn retain_families(&self, live: impl Fn(&str) -> bool) {
        let mut upgrading = self.upgrading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        upgrading.retain(|key| {
            if live(key) {
                return true;
            }
            let (ns, family) = key.split_once('/').unwrap_or(("", key));
            for step in UPGRADE_STEPS {
                let _ = self.upgrade_step.remove_label_values(&[ns, family, step]);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::FamilyStatus;
    use crate::crd::family::{ProcedureRecord, Upgrade};

    fn render(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    #[test]
    fn a_family_upgrade_shows_its_step_and_goes_away_when_done() {
        let m = Metrics::new().unwrap();
        let mut st = FamilyStatus {
            upgrade: Some(Upgrade { image: "i:2".into(), step: UP_SECONDARIES.into(), ..Default::default() }),
            ..Default::default()
        };
        m.family("ns", "ardmore", &[], &st);
        let series = r#"strand_operator_upgrade_step{family="ardmore",namespace="ns",step="Secondaries"} 1"#;
        assert!(render(&m).contains(series), "{}", render(&m));
        let done =
            ProcedureRecord { kind: "Upgrade".into(), outcome: "Succeeded".into(), ..Default::default() };
        st.upgrade = None;
        st.history.push(done.clone());
        m.family("ns", "ardmore", &[], &st);
        let text = render(&m);
        assert!(!text.contains("strand_operator_upgrade_step{"), "{text}");
        assert!(text.contains(r#"strand_operator_procedures_total{kind="Upgrade",outcome="Succeeded"} 1"#));
        // The same record seen again is not counted twice.
        m.family("ns", "ardmore", &[done], &st);
        assert!(
            render(&m).contains(r#"strand_operator_procedures_total{kind="Upgrade",outcome="Succeeded"} 1"#)
        );
        // A family deleted mid-upgrade loses its series.
        st.upgrade = Some(Upgrade { step: UP_PRIMARY.into(), ..Default::default() });
        m.family("ns", "gone", &[], &st);
        m.retain_families(|k| k != "ns/gone");
        assert!(!render(&m).contains("strand_operator_upgrade_step{"));
    }
}
