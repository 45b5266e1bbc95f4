//! Instance → admin Secret, the namespace's replication Secret, StatefulSet, headless Service,
//! PodDisruptionBudget (server-side apply, owned by the Instance); status from the engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::{Ctx, Error, MANAGER, condition, endpoint, random_token};
use crate::crd::instance::{LastRollback, StreamStatus};
use crate::crd::{Instance, InstanceStatus};
use crate::desired::{self, ADMIN_TOKEN_KEY, REPLICATION_SECRET, REPLICATION_SECRET_KEY, admin_secret_name};
use crate::engine_client;
use crate::engine_status::EngineStatus;

/// How often a healthy instance's status is refreshed from its engine.
const REFRESH: Duration = Duration::from_secs(5);

pub async fn reconcile(inst: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = format!("Instance/{}/{}", inst.namespace().unwrap_or_default(), inst.name_any());
    let result = reconcile_inner(&inst, &ctx).await;
    let m = &ctx.metrics;
    m.reconcile_duration.with_label_values(&["Instance"]).observe(started.elapsed().as_secs_f64());
    m.reconciles.with_label_values(&["Instance", if result.is_ok() { "ok" } else { "error" }]).inc();
    super::after(&ctx, &key, &result);
    result
}

pub fn error_policy(inst: Arc<Instance>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = format!("Instance/{}/{}", inst.namespace().unwrap_or_default(), inst.name_any());
    let wait = ctx.outcome(&key, false);
    tracing::warn!(instance = %inst.name_any(), error = %crate::error_chain(err), ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn reconcile_inner(inst: &Instance, ctx: &Ctx) -> Result<Action, Error> {
    let ns = inst.namespace().ok_or_else(|| Error::Invalid("Instance has no namespace".into()))?;
    let name = inst.name_any();
    if inst.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove what the instance owned.
        return Ok(Action::await_change());
    }
    if inst.spec.paused {
        patch_status(ctx, &ns, &name, &paused_status(inst)).await?;
        return Ok(Action::requeue(REFRESH * 6));
    }
    ensure_secrets(ctx, inst, &ns, &name).await?;
    let pp = PatchParams::apply(MANAGER).force();
    Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::statefulset(inst)))
        .await?;
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::service(inst)))
        .await?;
    Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::pdb(inst)))
        .await?;

    let observed = match endpoint(&ctx.client, &ns, &name).await? {
        None => Observed::Starting,
        Some(ep) => match engine_client::status(&ep.admin, &ep.token).await {
            Ok(status) => Observed::Running(Box::new(status)),
            Err(e) => {
                ctx.metrics.engine_call_errors.with_label_values(&[e.kind()]).inc();
                Observed::Unreachable(crate::error_chain(&e))
            }
        },
    };
    let previous = inst.status.clone().unwrap_or_default();
    let status = status_of(inst, &previous, &observed);
    if status.role != previous.role
        && let Some(role) = &status.role
    {
        let note = format!("{name} is now {role} (was {})", previous.role.as_deref().unwrap_or("unknown"));
        publish(ctx, inst, EventType::Normal, "RoleChanged", "ObserveRole", note).await;
    }
    if let Observed::Unreachable(e) = &observed
        && previous.phase.as_deref() != Some("Unreachable")
    {
        publish(ctx, inst, EventType::Warning, "EngineUnreachable", "ObserveEngine", e.clone()).await;
    }
    if status != previous {
        patch_status(ctx, &ns, &name, &status).await?;
    }
    Ok(Action::requeue(REFRESH))
}

enum Observed {
    Starting,
    Running(Box<EngineStatus>),
    Unreachable(String),
}

async fn publish(ctx: &Ctx, inst: &Instance, type_: EventType, reason: &str, action: &str, note: String) {
    let event =
        Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &inst.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

async fn patch_status(ctx: &Ctx, ns: &str, name: &str, status: &InstanceStatus) -> Result<(), Error> {
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn paused_status(inst: &Instance) -> InstanceStatus {
    let mut status = inst.status.clone().unwrap_or_default();
    status.phase = Some("Paused".into());
    status.observed_generation = inst.metadata.generation;
    status
}

/// The admin token Secret (owned by the instance) and the namespace's replication Secret
/// (shared by every instance there, so it has no owner). Created once, never rewritten.
async fn ensure_secrets(ctx: &Ctx, inst: &Instance, ns: &str, name: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let wanted = [
        (REPLICATION_SECRET.to_owned(), REPLICATION_SECRET_KEY, None),
        (admin_secret_name(name), ADMIN_TOKEN_KEY, desired::owner(inst)),
    ];
    for (secret_name, key, owner) in wanted {
        if secrets.get_opt(&secret_name).await?.is_some() {
            continue;
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(ns.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                )])),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(key.to_owned(), ByteString(random_token()?.into_bytes()))])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(secret = %secret_name, namespace = ns, "generated secret"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The image's tag, when it names a version (`strand-engine:0.1.0` → `0.1.0`).
fn image_version(image: &str) -> Option<&str> {
    let tag = image.rsplit_once(':').map(|(_, t)| t)?;
    (tag.chars().next().is_some_and(|c| c.is_ascii_digit()) && !tag.contains('/')).then_some(tag)
}

fn status_of(inst: &Instance, previous: &InstanceStatus, observed: &Observed) -> InstanceStatus {
    let generation = inst.metadata.generation;
    let prev = &previous.conditions;
    let mut status = InstanceStatus { observed_generation: generation, ..previous.clone() };
    match observed {
        Observed::Starting => {
            status.phase = Some("Pending".into());
            status.conditions = vec![condition(
                prev,
                "Ready",
                false,
                "PodNotReady",
                "the engine pod is not ready yet".into(),
                generation,
            )];
        }
        Observed::Unreachable(e) => {
            status.phase = Some("Unreachable".into());
            status.conditions =
                vec![condition(prev, "Ready", false, "EngineUnreachable", e.clone(), generation)];
        }
        Observed::Running(engine) => {
            status.phase = Some("Running".into());
            status.role = Some(engine.role.clone());
            status.journal_seqno = Some(engine.journal_seqno);
            status.streams = engine
                .streams
                .iter()
                .map(|s| StreamStatus {
                    stream: s.stream,
                    source_family: s.source_family.clone(),
                    seqno: s.seqno,
                })
                .collect();
            status.binary_version = Some(engine.binary_version.clone());
            status.format_version = Some(engine.format_version);
            status.last_rollback = engine.last_rollback.as_ref().map(|r| LastRollback {
                log_path: r.log_path.clone(),
                from_seqno: r.from_seqno,
                to_seqno: r.to_seqno,
                transactions: r.transactions,
                reason: r.reason.clone(),
            });
            let receiver_state = engine.receiver.as_ref().map(|r| r.state.as_str()).unwrap_or("");
            let rollback_message = engine
                .receiver
                .as_ref()
                .and_then(|r| r.last_error.clone())
                .unwrap_or_else(|| "not ahead of its source".into());
            let mismatch = image_version(&inst.spec.image).filter(|v| *v != engine.binary_version);
            status.conditions = vec![
                condition(
                    prev,
                    "Ready",
                    true,
                    "EngineRunning",
                    format!("{} answers as {}", engine.name, engine.role),
                    generation,
                ),
                condition(
                    prev,
                    "Replicating",
                    receiver_state == "streaming",
                    if receiver_state.is_empty() { "NoReceiver" } else { "ReceiverState" },
                    format!("receiver: {}", if receiver_state.is_empty() { "none" } else { receiver_state }),
                    generation,
                ),
                condition(
                    prev,
                    "RollbackRequired",
                    receiver_state == "rollback_required",
                    "ReceiverState",
                    rollback_message,
                    generation,
                ),
                condition(
                    prev,
                    "VersionMismatch",
                    mismatch.is_some(),
                    "BinaryVersion",
                    match mismatch {
                        Some(v) => format!("image says {v}, engine runs {}", engine.binary_version),
                        None => format!("engine runs {}", engine.binary_version),
                    },
                    generation,
                ),
            ];
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_versions() {
        assert_eq!(image_version("strand-engine:0.1.0"), Some("0.1.0"));
        assert_eq!(image_version("registry:5000/strand-engine"), None);
        assert_eq!(image_version("strand-engine:latest"), None);
    }
}
