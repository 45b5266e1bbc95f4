//! Links none of whose Instances exist: no family looks after them, so this reports them
//! `Blocked` and lets them go when deleted (there is no engine left to stop). Every other link
//! is the family controller's.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::family::LINK_FINALIZER;
use super::{Ctx, Error, MANAGER, condition};
use crate::crd::{Instance, ReplicationLink, ReplicationLinkStatus};
use crate::rules::MISSING_PREFIX;

fn key(link: &ReplicationLink) -> String {
    format!("ReplicationLink/{}/{}", link.namespace().unwrap_or_default(), link.name_any())
}

pub async fn reconcile(link: Arc<ReplicationLink>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&link, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .with_label_values(&["ReplicationLink"])
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .with_label_values(&["ReplicationLink", if result.is_ok() { "ok" } else { "error" }])
        .inc();
    if result.is_ok() {
        ctx.backoff().succeeded(&key(&link));
    }
    result
}

pub fn error_policy(link: Arc<ReplicationLink>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let wait = ctx.backoff().failed(&key(&link));
    ctx.metrics.reconcile_errors.with_label_values(&["ReplicationLink", err.kind()]).inc();
    tracing::warn!(link = %link.name_any(), error = %crate::error_chain(err), ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn reconcile_inner(link: &ReplicationLink, ctx: &Ctx) -> Result<Action, Error> {
    let ns = link.namespace().unwrap_or_default();
    let exists =
        |name: &str| ctx.stores.instances.get(&ObjectRef::<Instance>::new(name).within(&ns)).is_some();
    if exists(&link.spec.source) || exists(&link.spec.target) {
        return Ok(Action::await_change()); // its family looks after it
    }
    let api: Api<ReplicationLink> = Api::namespaced(ctx.client.clone(), &ns);
    if link.metadata.deletion_timestamp.is_some() {
        if link.finalizers().iter().any(|f| f == LINK_FINALIZER) {
            ctx.check_leading()?;
            let rest: Vec<&String> = link.finalizers().iter().filter(|f| *f != LINK_FINALIZER).collect();
            let patch = serde_json::json!({ "metadata": { "finalizers": rest, "resourceVersion": link.resource_version() } });
            api.patch(&link.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        return Ok(Action::await_change());
    }
    let reason = format!("{MISSING_PREFIX}{} and {} do not exist", link.spec.source, link.spec.target);
    let previous = link.status.clone().unwrap_or_default();
    let status = ReplicationLinkStatus {
        state: Some("Blocked".into()),
        reason: Some(reason.clone()),
        conditions: vec![condition(
            &previous.conditions,
            "Ready",
            Some(false),
            "Blocked",
            reason,
            link.metadata.generation,
        )],
        observed_generation: link.metadata.generation,
        ..Default::default()
    };
    if status != previous {
        ctx.check_leading()?;
        let patch = serde_json::json!({ "apiVersion": "strand.dev/v1alpha1", "kind": "ReplicationLink", "status": status });
        api.patch_status(&link.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}
