//! The controllers: [`instance`] turns an Instance into the objects that run its engine and
//! reports the engine's state; [`link`] turns a ReplicationLink into the engine admin calls
//! that make it stream, and reports the stream. Both requeue periodically to refresh status
//! from the engines, and back off exponentially per object on errors.

pub mod instance;
pub mod link;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;

use crate::crd::Condition;
use crate::desired::{ADMIN_TOKEN_KEY, PORT_ADMIN, PORT_REPL, admin_secret_name};
use crate::engine_client::EngineError;
use crate::metrics::Metrics;

/// Field manager of every object the operator applies.
pub const MANAGER: &str = "strand-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    #[error("engine admin call failed")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Shared by every reconcile.
pub struct Ctx {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per object (kind/namespace/name), for back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, recorder: Recorder) -> Self {
        Ctx { client, metrics, recorder, failures: Mutex::new(HashMap::new()) }
    }

    /// Records the outcome of a reconcile; on failure, how long to wait before the next try
    /// (1 s doubling to 60 s).
    pub fn outcome(&self, key: &str, ok: bool) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            failures.remove(key);
            return Duration::ZERO;
        }
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = (*n + 1).min(6);
        Duration::from_secs(1 << (*n - 1)).min(Duration::from_secs(60))
    }
}

/// Where an instance's engine answers, once its pod runs and is ready.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub admin: String,
    pub repl: String,
    pub token: String,
}

/// The engine of Instance `name` if its pod is ready (`None` while it starts or is gone).
pub async fn endpoint(client: &kube::Client, ns: &str, name: &str) -> Result<Option<Endpoint>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Some(pod) = pods.get_opt(&format!("{name}-0")).await? else { return Ok(None) };
    let status = pod.status.unwrap_or_default();
    let ready =
        status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let Some(ip) = status.pod_ip.filter(|ip| !ip.is_empty()) else { return Ok(None) };
    if !ready || pod.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = secrets.get_opt(&admin_secret_name(name)).await? else { return Ok(None) };
    let token = secret
        .data
        .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .ok_or_else(|| {
            Error::Invalid(format!("secret {} has no {ADMIN_TOKEN_KEY}", admin_secret_name(name)))
        })?;
    Ok(Some(Endpoint { admin: format!("{ip}:{PORT_ADMIN}"), repl: format!("{ip}:{PORT_REPL}"), token }))
}

/// A condition, keeping its transition time when its status did not change.
pub fn condition(
    previous: &[Condition],
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.r#type == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string());
    Condition {
        r#type: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(since),
        observed_generation: generation,
    }
}

/// A random secret, hex-encoded (never logged).
pub fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The requeue after a reconcile: its own period on success, back-off on failure.
pub fn after(ctx: &Ctx, key: &str, result: &Result<Action, Error>) -> Option<Duration> {
    match result {
        Ok(_) => {
            ctx.outcome(key, true);
            None
        }
        Err(_) => Some(ctx.outcome(key, false)),
    }
}
