//! Instance → admin Secret, the namespace's replication Secret, StatefulSet, headless Service,
//! PodDisruptionBudget (server-side apply, owned by the Instance), and the Family object of the
//! family it belongs to. It writes no status: the family controller reports every Instance of
//! a family from what its engine says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::{Ctx, Error, MANAGER, random_token};
use crate::crd::{Family, Instance};
use crate::desired::{self, ADMIN_TOKEN_KEY, REPLICATION_SECRET, REPLICATION_SECRET_KEY, admin_secret_name};

/// How often an Instance's objects are re-applied when nothing triggers it (drift repair).
const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

fn key(inst: &Instance) -> String {
    format!("Instance/{}/{}", inst.namespace().unwrap_or_default(), inst.name_any())
}

pub async fn reconcile(inst: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&inst, &ctx).await;
    let m = &ctx.metrics;
    m.reconcile_duration.with_label_values(&["Instance"]).observe(started.elapsed().as_secs_f64());
    m.reconciles.with_label_values(&["Instance", if result.is_ok() { "ok" } else { "error" }]).inc();
    if result.is_ok() {
        ctx.backoff().succeeded(&key(&inst));
    }
    result
}

pub fn error_policy(inst: Arc<Instance>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let wait = ctx.backoff().failed(&key(&inst));
    ctx.metrics.reconcile_errors.with_label_values(&["Instance", err.kind()]).inc();
    tracing::warn!(instance = %inst.name_any(), error = %crate::error_chain(err), ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn reconcile_inner(inst: &Instance, ctx: &Ctx) -> Result<Action, Error> {
    let ns = inst.namespace().ok_or_else(|| Error::Invalid("Instance has no namespace".into()))?;
    let name = inst.name_any();
    if inst.meta().deletion_timestamp.is_some() || inst.spec.paused {
        // Owner references let the garbage collector remove what the instance owned; a paused
        // instance is left exactly as it is.
        return Ok(Action::await_change());
    }
    ctx.check_leading()?;
    ensure_secrets(ctx, inst, &ns, &name).await?;
    let families = super::family::families_in(&ctx.stores, &ns);
    let family = families.of.get(&name).cloned();
    let family_status = family
        .as_deref()
        .and_then(|f| ctx.stores.families.get(&ObjectRef::new(f).within(&ns)))
        .and_then(|f| f.status.clone());
    let is_primary = family_status.as_ref().and_then(|s| s.primary.as_deref()) == Some(name.as_str());
    let running = ctx.stores.set_image(&ns, &name);
    let upgrade = family_status.as_ref().and_then(|s| s.upgrade.as_ref());
    let family_image = family_status
        .as_ref()
        .and_then(|s| s.primary.as_deref())
        .filter(|p| *p != name)
        .and_then(|p| ctx.stores.set_image(&ns, p));
    let image = crate::family::plan::image_for(
        &name,
        &inst.spec.image,
        upgrade,
        running.as_deref(),
        family_image.as_deref(),
    );
    let pp = PatchParams::apply(MANAGER).force();
    Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::statefulset(inst, &image)))
        .await?;
    replace_failed_pod(ctx, &ns, &name, &image).await?;
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::service(inst)))
        .await?;
    Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(desired::pdb(inst, is_primary)))
        .await?;
    if let Some(family) = family {
        let members: Vec<Arc<Instance>> = ctx
            .stores
            .instances_in(&ns)
            .into_iter()
            .filter(|i| families.of.get(&i.name_any()) == Some(&family))
            .collect();
        ensure_family(ctx, &ns, &family, &members).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Deletes the instance's pod when it runs another image than `image` and is not ready: a
/// StatefulSet does not replace a pod that never became ready after its template changes
/// back (Kubernetes' "forced rollback"), so going back from a bad image would stall. A
/// ready pod is left to the StatefulSet's rolling update.
async fn replace_failed_pod(ctx: &Ctx, ns: &str, name: &str, image: &str) -> Result<(), Error> {
    let pod_name = format!("{name}-0");
    let Some(pod) = ctx.stores.pods.get(&ObjectRef::new(&pod_name).within(ns)) else { return Ok(()) };
    let runs = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "engine"))
        .and_then(|c| c.image.clone());
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready || pod.metadata.deletion_timestamp.is_some() || runs.is_none() || runs.as_deref() == Some(image)
    {
        return Ok(());
    }
    ctx.check_leading()?;
    let uid = pod.metadata.uid.clone();
    let dp = kube::api::DeleteParams {
        preconditions: uid.map(|uid| kube::api::Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), ns).delete(&pod_name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %pod_name, namespace = ns, from = ?runs, to = image, "deleted a pod that never became ready on an image its StatefulSet no longer runs");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the Family object of `family` (or updates its owners when members changed). Its
/// owners are its members, so it goes with the last of them.
pub async fn ensure_family(
    ctx: &Ctx,
    ns: &str,
    family: &str,
    members: &[Arc<Instance>],
) -> Result<(), Error> {
    if members.is_empty() {
        return Ok(());
    }
    let member_refs: Vec<&Instance> = members.iter().map(|m| m.as_ref()).collect();
    let wanted = desired::family(family, ns, &member_refs);
    let existing = ctx.stores.families.get(&ObjectRef::new(family).within(ns));
    let same_owners = existing.as_ref().is_some_and(|f| {
        let names = |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            let mut v: Vec<String> = refs.iter().flatten().map(|o| o.uid.clone()).collect();
            v.sort();
            v
        };
        names(&f.metadata.owner_references) == names(&wanted.metadata.owner_references)
    });
    if same_owners {
        return Ok(());
    }
    ctx.check_leading()?;
    Api::<Family>::namespaced(ctx.client.clone(), ns)
        .patch(family, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&wanted))
        .await?;
    tracing::info!(family, namespace = ns, members = member_refs.len(), "family object applied");
    Ok(())
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
        if ctx.stores.secrets.get(&ObjectRef::new(&secret_name).within(ns)).is_some() {
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
