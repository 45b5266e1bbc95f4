//! The operator's Prometheus metrics and its small HTTP endpoint (`/metrics`, `/healthz`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

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
}

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
            registry,
        };
        m.registry.register(Box::new(m.reconciles.clone()))?;
        m.registry.register(Box::new(m.reconcile_duration.clone()))?;
        m.registry.register(Box::new(m.reconcile_errors.clone()))?;
        m.registry.register(Box::new(m.engine_calls.clone()))?;
        m.registry.register(Box::new(m.engine_call_errors.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        Ok(m)
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
