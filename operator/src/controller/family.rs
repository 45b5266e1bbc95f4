//! Family → one step of its lifecycle (planned by [`crate::family::plan`]): reads the stores,
//! asks every member's engine for its status (concurrently, with a short deadline, so an
//! unreachable engine delays only its own family by that much), persists the family's status
//! *before* acting, carries out the engine calls, and writes the status of the family's
//! Instances and links. Families reconcile concurrently; one family never twice at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::{
    ANNOTATION_DRAIN, ANNOTATION_FAILOVER, ANNOTATION_ROLLBACK, ANNOTATION_SWITCHOVER, Ctx, Endpoint, Error,
    MANAGER, Stores, condition,
};
use crate::crd::instance::{LastRollback, PrimaryUpdateMethod, PrimaryUpdateStrategy, StreamStatus};
use crate::crd::{
    Family, FamilyStatus, Instance, InstanceStatus, Mode, ReplicationLink, ReplicationLinkStatus,
};
use crate::engine_client::{self, QUICK_TIMEOUT};
use crate::engine_status::EngineStatus;
use crate::family::plan::{LinkView, Requests, Subject};
use crate::family::topology::{self, BcEdge, Families};
use crate::family::{self as lifecycle, Action, FamilyView, LinkReport, MemberView, SiPeer};
use crate::rules;

/// How soon a family with a procedure running is looked at again.
const BUSY_REFRESH: Duration = Duration::from_millis(200);
pub const LINK_FINALIZER: &str = "strand.dev/replication-link";

fn key(ns: &str, name: &str) -> String {
    format!("Family/{ns}/{name}")
}

/// The families of namespace `ns` as the stores show them now.
pub fn families_in(stores: &Stores, ns: &str) -> Families {
    let instances = stores.instances_in(ns);
    let links = stores.links_in(ns);
    let link_refs: Vec<&ReplicationLink> = links.iter().map(|l| l.as_ref()).collect();
    let inst_refs: Vec<&Instance> = instances.iter().map(|i| i.as_ref()).collect();
    let blocked = rules::check_namespace(&link_refs, &inst_refs, None);
    let edges: Vec<BcEdge> = links
        .iter()
        .filter(|l| l.spec.mode == Mode::Bc && !blocked.contains_key(&l.name_any()))
        .map(|l| BcEdge { link: l.name_any(), source: l.spec.source.clone(), target: l.spec.target.clone() })
        .collect();
    let names: Vec<String> = instances.iter().map(|i| i.name_any()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    topology::families(&name_refs, &edges)
}

/// The family Instance `instance` belongs to.
pub fn family_of(stores: &Stores, ns: &str, instance: &str) -> Option<String> {
    families_in(stores, ns).of.get(instance).cloned()
}

pub async fn reconcile(fam: Arc<Family>, ctx: Arc<Ctx>) -> Result<KubeAction, Error> {
    let started = Instant::now();
    let ns = fam.namespace().unwrap_or_default();
    let result = reconcile_inner(&fam, &ctx).await;
    let m = &ctx.metrics;
    m.reconcile_duration.with_label_values(&["Family"]).observe(started.elapsed().as_secs_f64());
    m.reconciles.with_label_values(&["Family", if result.is_ok() { "ok" } else { "error" }]).inc();
    if result.is_ok() {
        ctx.backoff().succeeded(&key(&ns, &fam.name_any()));
    }
    result
}

pub fn error_policy(fam: Arc<Family>, err: &Error, ctx: Arc<Ctx>) -> KubeAction {
    let wait = ctx.backoff().failed(&key(&fam.namespace().unwrap_or_default(), &fam.name_any()));
    ctx.metrics.reconcile_errors.with_label_values(&["Family", err.kind()]).inc();
    tracing::warn!(family = %fam.name_any(), error = %crate::error_chain(err), ?wait, "reconcile failed");
    KubeAction::requeue(wait)
}

/// What one member's engine said.
struct Observed {
    endpoint: Option<Endpoint>,
    engine: Result<EngineStatus, String>,
}

/// Whose engine is observed: a member of the family being reconciled, or the receiving end of
/// one of its SI links (a member of another family).
#[derive(Clone, Copy, PartialEq)]
enum Whose {
    Member,
    Peer,
}

async fn observe(ctx: &Ctx, ns: &str, inst: &Instance, whose: Whose) -> Observed {
    let name = inst.name_any();
    let key = format!("{ns}/{name}");
    let Some(endpoint) = ctx.stores.endpoint(ns, &name) else {
        return Observed { endpoint: None, engine: Err("the engine pod is not ready".into()) };
    };
    // An SI peer that its own family found unreachable on its last pass is taken as such: the
    // peer's family pays the admin timeout, this one does not (an unreachable engine delays
    // only its own family). Unreachable is the cautious reading: nothing is done to the peer.
    if whose == Whose::Peer
        && let Some(ago) = ctx.book().recently_unreachable(&key, Instant::now(), ctx.config.refresh * 2)
    {
        return Observed {
            endpoint: Some(endpoint),
            engine: Err(format!("unreachable: its family's last status call failed {}s ago", ago.as_secs())),
        };
    }
    let engine = match engine_client::status(&endpoint.admin, &endpoint.token).await {
        Ok(s) => Ok(s),
        Err(e) => {
            ctx.metrics.engine_call_errors.with_label_values(&[e.kind()]).inc();
            Err(crate::error_chain(&e))
        }
    };
    ctx.book().reached(&key, engine.is_ok(), Instant::now());
    Observed { endpoint: Some(endpoint), engine }
}

fn requests(inst: &Instance) -> Requests {
    let a = inst.annotations();
    Requests {
        switchover: a.get(ANNOTATION_SWITCHOVER).cloned(),
        failover: a.get(ANNOTATION_FAILOVER).cloned(),
        rollback: a.get(ANNOTATION_ROLLBACK).cloned(),
        drain: a.get(ANNOTATION_DRAIN).cloned(),
    }
}

async fn reconcile_inner(fam: &Family, ctx: &Ctx) -> Result<KubeAction, Error> {
    let ns = fam.namespace().ok_or_else(|| Error::Invalid("Family has no namespace".into()))?;
    let name = fam.name_any();
    let families = families_in(&ctx.stores, &ns);
    let Some(member_names) = families.members.get(&name).cloned() else {
        // Merged into another family, renamed, or emptied. Kept until every member it listed
        // that still exists is listed by the Family that has it now (which inherits this one's
        // term and handled requests first), then deleted.
        let listed = fam.status.as_ref().map(|s| s.members.clone()).unwrap_or_default();
        let pending: Vec<&String> = listed
            .iter()
            .filter(|m| families.of.contains_key(*m))
            .filter(|m| {
                let Some(now) = families.of.get(*m) else { return false };
                !ctx.stores
                    .families
                    .get(&ObjectRef::new(now).within(&ns))
                    .and_then(|f| f.status.clone())
                    .is_some_and(|s| s.members.contains(m))
            })
            .collect();
        if !pending.is_empty() {
            tracing::debug!(family = %name, ?pending, "waiting for the members' new family to take over");
            return Ok(KubeAction::requeue(ctx.config.refresh));
        }
        ctx.check_leading()?;
        tracing::info!(family = %name, namespace = %ns, "family has no members any more; deleting its object");
        match Api::<Family>::namespaced(ctx.client.clone(), &ns).delete(&name, &DeleteParams::default()).await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(KubeAction::await_change());
    };
    let instances = ctx.stores.instances_in(&ns);
    let members: Vec<Arc<Instance>> =
        instances.iter().filter(|i| member_names.contains(&i.name_any())).cloned().collect();
    let links = ctx.stores.links_in(&ns);
    let link_refs: Vec<&ReplicationLink> = links.iter().map(|l| l.as_ref()).collect();
    let inst_refs: Vec<&Instance> = instances.iter().map(|i| i.as_ref()).collect();
    let blocked = rules::check_namespace(&link_refs, &inst_refs, None);

    // The links this family looks at, and which it owns (reports on, releases).
    let owner_of = |l: &ReplicationLink| -> Option<&String> {
        families.of.get(&l.spec.source).or_else(|| families.of.get(&l.spec.target))
    };
    let relevant: Vec<&Arc<ReplicationLink>> = links
        .iter()
        .filter(|l| member_names.contains(&l.spec.source) || member_names.contains(&l.spec.target))
        .collect();

    // The receiving end of each SI link this family sources: the target family's primary.
    let mut peer_targets: Vec<(String, String, &Arc<Instance>)> = Vec::new();
    for l in &relevant {
        if l.spec.mode != Mode::Si
            || !member_names.contains(&l.spec.source)
            || blocked.contains_key(&l.name_any())
        {
            continue;
        }
        let target_family = families.of.get(&l.spec.target);
        let primary = target_family
            .and_then(|f| ctx.stores.families.get(&ObjectRef::new(f).within(&ns)))
            .and_then(|f| f.status.as_ref().and_then(|s| s.primary.clone()))
            .unwrap_or_else(|| l.spec.target.clone());
        let Some(inst) = instances.iter().find(|i| i.name_any() == primary) else { continue };
        peer_targets.push((l.name_any(), primary, inst));
    }

    // Every member's engine and every peer, all at once: an unreachable one costs its timeout
    // once, not once per engine.
    let (observed, peer_observed) = futures::join!(
        join_all(members.iter().map(|m| observe(ctx, &ns, m, Whose::Member))),
        join_all(peer_targets.iter().map(|(_, _, inst)| observe(ctx, &ns, inst, Whose::Peer)))
    );
    let observed: BTreeMap<String, Observed> = members.iter().map(|m| m.name_any()).zip(observed).collect();
    let peers: BTreeMap<String, (String, Observed)> = peer_targets
        .into_iter()
        .zip(peer_observed)
        .map(|((link, primary, _), obs)| (link, (primary, obs)))
        .collect();

    // The family's status: this replica's last write if the cache has not caught up; for a
    // new Family object (a rename, a merge), what the Family objects its members come from
    // knew — their term, primary and handled requests.
    let key_ = format!("{ns}/{name}");
    let mut status = ctx.book().freshest(&key_, fam.status.clone().unwrap_or_default());
    if status.primary.is_none() && status.term == 0 {
        inherit(&mut status, &ctx.stores.families_in(&ns), &name, &member_names);
    }

    // The primary's availability and lease, by this replica's clock.
    let now = Instant::now();
    let (unavailable_for, lease_lapsed, presumed_gone) = match &status.primary {
        Some(p) => {
            let available = observed
                .get(p)
                .and_then(|o| o.engine.as_ref().ok())
                .is_some_and(|e| e.writable_role() && e.term >= status.term);
            let k = format!("{ns}/{p}");
            let mut book = ctx.book();
            if observed.get(p).and_then(|o| o.engine.as_ref().ok()).is_some_and(|e| e.lease.required) {
                book.lease_required(&k);
            }
            let down = book.availability(&k, available, now);
            let since = ctx.leader.leading_since();
            let lapsed = book.lease_lapsed(&k, now, since, ctx.config.lease, QUICK_TIMEOUT);
            let gone = book.presumed_gone(&k, now, since, ctx.config.lease, QUICK_TIMEOUT);
            (down, lapsed, gone)
        }
        None => (Duration::ZERO, true, true),
    };

    let images: BTreeMap<String, (Option<String>, Option<String>)> = members
        .iter()
        .map(|m| {
            let n = m.name_any();
            let images = (ctx.stores.set_image(&ns, &n), ctx.stores.pod_image(&ns, &n));
            (n, images)
        })
        .collect();
    let member_views: Vec<MemberView<'_>> = members
        .iter()
        .filter_map(|m| observed.get(&m.name_any()).map(|o| (m, o)))
        .map(|(m, o)| MemberView {
            spec_image: &m.spec.image,
            set_image: images.get(&m.name_any()).and_then(|i| i.0.as_deref()),
            pod_image: images.get(&m.name_any()).and_then(|i| i.1.as_deref()),
            supervised: m.spec.primary_update_strategy == PrimaryUpdateStrategy::Supervised,
            restart: m.spec.primary_update_method == PrimaryUpdateMethod::Restart,
            name: m.metadata.name.as_deref().unwrap_or_default(),
            paused: m.spec.paused,
            repl_addr: o.endpoint.as_ref().map(|e| e.repl.as_str()),
            engine: o.engine.as_ref().ok(),
            last_term: m.status.as_ref().and_then(|s| s.term),
            lease_over: ctx.book().presumed_gone(
                &format!("{ns}/{}", m.name_any()),
                now,
                ctx.leader.leading_since(),
                ctx.config.lease,
                QUICK_TIMEOUT,
            ),
            requests: requests(m),
        })
        .collect();
    let link_views: Vec<LinkView<'_>> = relevant
        .iter()
        .map(|l| LinkView {
            name: l.metadata.name.as_deref().unwrap_or_default(),
            spec: &l.spec,
            deleting: l.metadata.deletion_timestamp.is_some(),
            blocked: blocked.get(&l.name_any()).map(String::as_str),
            owned: owner_of(l) == Some(&name),
        })
        .collect();
    let si_peers: BTreeMap<String, SiPeer<'_>> = peers
        .iter()
        .map(|(link, (primary, o))| {
            (
                link.clone(),
                SiPeer {
                    name: primary,
                    repl_addr: o.endpoint.as_ref().map(|e| e.repl.as_str()),
                    engine: o.engine.as_ref().ok(),
                },
            )
        })
        .collect();
    let view = FamilyView {
        name: &name,
        members: member_views,
        links: link_views,
        si_peers,
        status: &status,
        now: k8s_openapi::jiff::Timestamp::now(),
        primary_unavailable_for: unavailable_for,
        primary_lease_lapsed: lease_lapsed,
        primary_presumed_gone: presumed_gone,
        timing: &ctx.config.timing,
    };
    let plan = lifecycle::plan(&view);

    // Persist first: a crash from here on repeats this step.
    let mut new_status = plan.status.clone();
    new_status.conditions = vec![ready_condition(&new_status, fam.metadata.generation)];
    if new_status != status || fam.status.is_none() {
        write_family_status(ctx, &ns, &name, &mut new_status).await?;
    }

    // Act.
    let endpoints: BTreeMap<&str, &Endpoint> = observed
        .iter()
        .filter_map(|(n, o)| o.endpoint.as_ref().map(|e| (n.as_str(), e)))
        .chain(peers.values().filter_map(|(n, o)| o.endpoint.as_ref().map(|e| (n.as_str(), e))))
        .collect();
    let mut failure: Option<(String, String)> = None;
    for action in &plan.actions {
        ctx.check_leading()?;
        let instance = action.instance();
        let Some(ep) = endpoints.get(instance) else {
            failure = Some((
                instance.to_owned(),
                format!("{}: {instance}'s engine is not ready", action.describe()),
            ));
            break;
        };
        if let Action::Lease { .. } = action {
            ctx.book().lease_sent(&format!("{ns}/{instance}"), Instant::now());
        }
        match execute(ctx, ep, action).await {
            Ok(()) => {
                if let Action::Lease { .. } = action {
                    ctx.book().lease_required(&format!("{ns}/{instance}"));
                }
                if let Some(reason) = action.reason()
                    && let Some(inst) = instances.iter().find(|i| i.name_any() == instance)
                {
                    ctx.publish(&inst.object_ref(&()), false, reason, action.describe()).await;
                }
            }
            Err(e) => {
                let message = format!("{} failed: {}", action.describe(), crate::error_chain(&e));
                tracing::warn!(family = %name, %message, "engine admin call failed");
                failure = Some((instance.to_owned(), message));
                break;
            }
        }
    }
    if failure.is_none() && !plan.handled_after.is_empty() {
        for h in &plan.handled_after {
            new_status.handled.retain(|x| !(x.instance == h.instance && x.kind == h.kind));
            new_status.handled.push(h.clone());
        }
        write_family_status(ctx, &ns, &name, &mut new_status).await?;
    }

    // Report.
    for note in &plan.notes {
        let object = match &note.subject {
            Subject::Family => Some(fam.object_ref(&())),
            Subject::Instance(i) => instances.iter().find(|x| &x.name_any() == i).map(|x| x.object_ref(&())),
            Subject::Link(l) => links.iter().find(|x| &x.name_any() == l).map(|x| x.object_ref(&())),
        };
        if let Some(object) = object {
            ctx.publish(&object, note.warning, note.reason, note.message.clone()).await;
        }
    }
    let mut reported: BTreeMap<String, LinkReport> = BTreeMap::new();
    for l in relevant.iter().filter(|l| owner_of(l) == Some(&name)) {
        let mut report = plan.links.get(&l.name_any()).cloned().unwrap_or_else(|| LinkReport {
            state: "Connecting".into(),
            reason: Some("waiting for the family to have a primary".into()),
            ..Default::default()
        });
        if let Some((instance, message)) = &failure
            && (report.current_source.as_deref() == Some(instance)
                || report.current_target.as_deref() == Some(instance)
                || l.spec.source == *instance
                || l.spec.target == *instance)
        {
            report.reason = Some(message.clone());
        }
        let release = failure.is_none() && plan.release.contains(&l.name_any());
        reported.insert(l.name_any(), report.clone());
        write_link(ctx, l, &name, report, release).await?;
    }
    ctx.metrics.family(&ns, &name, &status.history, &new_status, &reported);
    let primary = new_status.primary.clone();
    for m in &members {
        if let Some(o) = observed.get(&m.name_any()) {
            write_instance(ctx, m, o, &name, primary.as_deref()).await?;
        }
    }
    if let Some((_, message)) = failure {
        return Err(Error::Invalid(message));
    }
    Ok(KubeAction::requeue(if plan.busy { BUSY_REFRESH } else { ctx.config.refresh }))
}

async fn execute(ctx: &Ctx, ep: &Endpoint, action: &Action) -> Result<(), engine_client::EngineError> {
    // A grant never outlives this replica's own right to act, nor the lease it counts on.
    let wall_ms = u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
    )
    .unwrap_or(u64::MAX);
    let bound = ctx.config.lease.min(ctx.leader.remaining(Instant::now()));
    let not_after = wall_ms.saturating_add(u64::try_from(bound.as_millis()).unwrap_or(u64::MAX));
    let (method, path, body, timeout) = engine_client::request(action, ctx.config.lease, not_after);
    let result = engine_client::call(&ep.admin, &ep.token, method, &path, body, timeout).await;
    // A stream already gone is what stopping it wants.
    let result = match result {
        Err(engine_client::EngineError::Api { status: 404, .. })
            if matches!(action, Action::SourceStop { .. }) =>
        {
            Ok(serde_json::Value::Null)
        }
        other => other,
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.metrics.engine_calls.with_label_values(&[action.label(), outcome]).inc();
    if let Err(e) = &result {
        ctx.metrics.engine_call_errors.with_label_values(&[e.kind()]).inc();
    }
    if matches!(action, Action::Lease { .. }) && result.is_ok() {
        tracing::debug!(action = %action.describe(), outcome, "engine admin call");
    } else {
        tracing::info!(action = %action.describe(), outcome, "engine admin call");
    }
    result.map(|_| ())
}

async fn write_family_status(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    status: &mut FamilyStatus,
) -> Result<(), Error> {
    ctx.check_leading()?;
    status.revision = status.revision.saturating_add(1);
    let patch = serde_json::json!({
        "apiVersion": "strand.dev/v1alpha1",
        "kind": "Family",
        "status": status,
    });
    Api::<Family>::namespaced(ctx.client.clone(), ns)
        .patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    ctx.book().wrote(&format!("{ns}/{name}"), status);
    Ok(())
}

/// A new Family object takes over from the Family objects its members were listed in (a
/// rename, a merge): the highest term, their handled requests, and the primary if it is one
/// of this family's members — so nothing restarts from zero and a request kept in YAML does
/// not act again.
pub fn inherit(
    status: &mut FamilyStatus,
    families: &[Arc<Family>],
    name: &str,
    members: &std::collections::BTreeSet<String>,
) {
    for f in families.iter().filter(|f| f.name_any() != name) {
        let Some(old) = &f.status else { continue };
        if !old.members.iter().any(|m| members.contains(m)) {
            continue;
        }
        status.term = status.term.max(old.term);
        if let Some(p) = old.primary.as_ref().filter(|p| members.contains(*p)) {
            status.primary = Some(p.clone());
        }
        for h in old.handled.iter().filter(|h| members.contains(&h.instance)) {
            if !status.handled.iter().any(|x| x.instance == h.instance && x.kind == h.kind) {
                status.handled.push(h.clone());
            }
        }
        // An upgrade in progress goes on, and the data's format stays known (an older image
        // than the one that moved it stays refused).
        if status.upgrade.is_none() {
            status.upgrade = old.upgrade.clone();
        }
        if let Some(image) = &old.format_image
            && status.format_image.as_ref().is_none_or(|mine| crate::family::plan::older(mine, image))
        {
            status.format_image = Some(image.clone());
        }
    }
}

/// A link's status (and its finalizer: added while it lives, removed once released).
async fn write_link(
    ctx: &Ctx,
    link: &ReplicationLink,
    family: &str,
    report: LinkReport,
    release: bool,
) -> Result<(), Error> {
    let ns = link.namespace().unwrap_or_default();
    let name = link.name_any();
    let api: Api<ReplicationLink> = Api::namespaced(ctx.client.clone(), &ns);
    let finalizers = link.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == LINK_FINALIZER);
    let deleting = link.metadata.deletion_timestamp.is_some();
    if release && has {
        ctx.check_leading()?;
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != LINK_FINALIZER).collect();
        let patch = serde_json::json!({
            "metadata": { "finalizers": rest, "resourceVersion": link.resource_version() }
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(link = %name, namespace = %ns, "replication link removed");
        return Ok(());
    }
    if !has && !deleting {
        ctx.check_leading()?;
        let mut all = finalizers.clone();
        all.push(LINK_FINALIZER.to_owned());
        let patch = serde_json::json!({ "metadata": { "finalizers": all, "resourceVersion": link.resource_version() } });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let previous = link.status.clone().unwrap_or_default();
    let generation = link.metadata.generation;
    let ready = match report.state.as_str() {
        "Streaming" | "CatchingUp" => Some(true),
        "Connecting" | "Seeding" => None,
        _ => Some(false),
    };
    let status = ReplicationLinkStatus {
        state: Some(report.state.clone()),
        reason: report.reason.clone(),
        current_source: report.current_source,
        current_target: report.current_target,
        family: Some(family.to_owned()),
        backlog: report.backlog,
        lag: report.lag_seconds.map(|l| format!("{l:.3}s")),
        stream: report.stream,
        conditions: vec![condition(
            &previous.conditions,
            "Ready",
            ready,
            &report.state,
            report.reason.clone().unwrap_or_else(|| report.state.clone()),
            generation,
        )],
        observed_generation: generation,
    };
    if status.state != previous.state
        && matches!(status.state.as_deref(), Some("Blocked" | "RollbackRequired" | "ReseedRequired"))
    {
        let note = format!(
            "{} → {}{}",
            previous.state.as_deref().unwrap_or("new"),
            report.state,
            report.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        ctx.publish(&link.object_ref(&()), true, status.state.as_deref().unwrap_or("Blocked"), note).await;
    }
    if status == previous {
        return Ok(());
    }
    ctx.check_leading()?;
    let patch = serde_json::json!({ "apiVersion": "strand.dev/v1alpha1", "kind": "ReplicationLink", "status": status });
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// An Instance's status from what its engine said, with its family.
pub fn instance_status(
    inst: &Instance,
    observed_endpoint: bool,
    engine: &Result<EngineStatus, String>,
    family: &str,
    primary: Option<&str>,
) -> InstanceStatus {
    let previous = inst.status.clone().unwrap_or_default();
    let generation = inst.metadata.generation;
    let prev = &previous.conditions;
    let mut status = InstanceStatus {
        observed_generation: generation,
        family: Some(family.to_owned()),
        family_primary: primary.map(str::to_owned),
        ..previous.clone()
    };
    let unknown =
        |kind: &str, why: &str| condition(prev, kind, None, "EngineNotObserved", why.to_owned(), generation);
    match engine {
        Err(why) => {
            status.phase = Some(
                if inst.spec.paused {
                    "Paused"
                } else if observed_endpoint {
                    "Unreachable"
                } else {
                    "Pending"
                }
                .into(),
            );
            let reason = if observed_endpoint { "EngineUnreachable" } else { "PodNotReady" };
            status.conditions = vec![
                condition(prev, "Ready", Some(false), reason, why.clone(), generation),
                unknown("Replicating", why),
                unknown("RollbackRequired", why),
                unknown("VersionMismatch", why),
            ];
        }
        Ok(engine) => {
            status.phase = Some("Running".into());
            status.role = Some(engine.role.clone());
            status.term = Some(engine.term);
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
            // The image its spec asks for, when the engine runs another (it moves when its
            // family's upgrade reaches it).
            let asks = crate::family::plan::image_version(&inst.spec.image)
                .map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
                .filter(|v| *v != engine.binary_version);
            let ready_message = match &engine.lease.writes_refused {
                Some(refused) if engine.writable_role() => {
                    format!("{} answers as {}; {refused}", engine.name, engine.role)
                }
                _ => format!("{} answers as {}", engine.name, engine.role),
            };
            status.conditions = vec![
                condition(prev, "Ready", Some(true), "EngineRunning", ready_message, generation),
                condition(
                    prev,
                    "Replicating",
                    Some(receiver_state == "streaming"),
                    if receiver_state.is_empty() { "NoReceiver" } else { "ReceiverState" },
                    format!("receiver: {}", if receiver_state.is_empty() { "none" } else { receiver_state }),
                    generation,
                ),
                condition(
                    prev,
                    "RollbackRequired",
                    Some(receiver_state == "rollback_required"),
                    "ReceiverState",
                    if receiver_state == "rollback_required" {
                        format!(
                            "{rollback_message}; roll it back with `kubectl strand rollback {}`",
                            engine.name
                        )
                    } else {
                        rollback_message
                    },
                    generation,
                ),
                // Version-mismatch mode (the seed's step 3): a newer binary on older data
                // replicates but serves no client until the format is upgraded.
                condition(
                    prev,
                    "VersionMismatch",
                    Some(engine.version_mismatch.is_some()),
                    if engine.version_mismatch.is_some() { "FormatBehindBinary" } else { "FormatCurrent" },
                    {
                        let mut m = engine.version_mismatch.clone().unwrap_or_else(|| {
                            format!("engine {} on format {}", engine.binary_version, engine.format_version)
                        });
                        if let Some(v) = asks {
                            m.push_str(&format!(
                                "; its spec asks for {v}, which it gets when its family's upgrade reaches it"
                            ));
                        }
                        m
                    },
                    generation,
                ),
            ];
        }
    }
    status
}

async fn write_instance(
    ctx: &Ctx,
    inst: &Instance,
    o: &Observed,
    family: &str,
    primary: Option<&str>,
) -> Result<(), Error> {
    let previous = inst.status.clone().unwrap_or_default();
    let status = instance_status(inst, o.endpoint.is_some(), &o.engine, family, primary);
    let name = inst.name_any();
    let object = inst.object_ref(&());
    events_for_instance(ctx, &object, &name, &previous, &status).await;
    if status == previous {
        return Ok(());
    }
    ctx.check_leading()?;
    let patch =
        serde_json::json!({ "apiVersion": "strand.dev/v1alpha1", "kind": "Instance", "status": status });
    Api::<Instance>::namespaced(ctx.client.clone(), &inst.namespace().unwrap_or_default())
        .patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Events for what changed on an Instance: its role, a new rollback (with where its
/// unreplicated transactions are), its engine going unreachable.
async fn events_for_instance(
    ctx: &Ctx,
    object: &ObjectReference,
    name: &str,
    previous: &InstanceStatus,
    status: &InstanceStatus,
) {
    if status.role != previous.role
        && let Some(role) = &status.role
    {
        let note = format!("{name} is now {role} (was {})", previous.role.as_deref().unwrap_or("unknown"));
        ctx.publish(object, false, "RoleChanged", note).await;
    }
    if status.last_rollback != previous.last_rollback
        && let Some(r) = &status.last_rollback
    {
        let note = format!(
            "{name} rolled off seqnos {}..={} ({} transactions) into {}: {}; `kubectl strand lost-transactions {name}` prints them",
            r.from_seqno, r.to_seqno, r.transactions, r.log_path, r.reason
        );
        ctx.publish(object, true, "RolledBack", note).await;
    }
    if status.phase.as_deref() == Some("Unreachable") && previous.phase.as_deref() != Some("Unreachable") {
        let why = status.conditions.first().and_then(|c| c.message.clone()).unwrap_or_default();
        ctx.publish(object, true, "EngineUnreachable", why).await;
    }
}

/// `Ready`: True while the family runs as configured (`Healthy`, or `Standalone` for a lone
/// instance), False with the phase as reason while it does not, Unknown until its members
/// have been seen (`Pending`).
fn ready_condition(status: &FamilyStatus, generation: Option<i64>) -> crate::crd::Condition {
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let ready = match phase {
        "Healthy" | "Standalone" => Some(true),
        "Pending" => None,
        _ => Some(false),
    };
    let message = status.message.clone().unwrap_or_else(|| format!("the family is {phase}"));
    condition(&status.conditions, "Ready", ready, phase, message, generation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn condition_of<'s>(status: &'s InstanceStatus, kind: &str) -> &'s crate::crd::Condition {
        status.conditions.iter().find(|c| c.r#type == kind).unwrap()
    }

    #[test]
    fn a_family_is_ready_when_it_runs_as_configured_and_unknown_before_it_is_seen() {
        let with =
            |phase: Option<&str>| FamilyStatus { phase: phase.map(Into::into), ..FamilyStatus::default() };
        let ready = |phase| ready_condition(&with(phase), Some(1));
        assert_eq!(ready(None).status, "Unknown");
        assert_eq!(ready(Some("Pending")).status, "Unknown");
        assert_eq!(ready(Some("Healthy")).status, "True");
        assert_eq!(ready(Some("Standalone")).status, "True");
        for phase in ["Degraded", "NoPrimary", "SwitchingOver", "FailingOver", "Upgrading"] {
            let c = ready(Some(phase));
            assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(phase)));
        }
        // The transition time stays while the status does not change.
        let mut status = with(Some("Healthy"));
        status.conditions = vec![ready_condition(&status, Some(1))];
        let since = status.conditions[0].last_transition_time.clone();
        status.message = Some("all members stream".into());
        assert_eq!(ready_condition(&status, Some(2)).last_transition_time, since);
    }

    #[test]
    fn version_mismatch_is_the_engines_mode_and_names_the_image_still_to_come() {
        let inst: Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "strand.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "brynmawr", "namespace": "ns"},
            "spec": {"image": "strand-engine:0.2.0", "storage": {"size": "1Gi"}}
        }))
        .unwrap();
        let mut engine = EngineStatus {
            name: "brynmawr".into(),
            role: "secondary".into(),
            binary_version: "0.2.0".into(),
            format_version: 1,
            version_mismatch: Some("version mismatch: binary 0.2.0 (format 2) on format-1 data".into()),
            ..Default::default()
        };
        let status = instance_status(&inst, true, &Ok(engine.clone()), "ardmore", Some("ardmore"));
        let c = condition_of(&status, "VersionMismatch");
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("FormatBehindBinary")));
        assert!(c.message.as_deref().unwrap().contains("binary 0.2.0"), "{c:?}");
        // Upgraded by replay; an old binary whose spec asks for the new image says so.
        engine.version_mismatch = None;
        engine.format_version = 2;
        let status = instance_status(&inst, true, &Ok(engine.clone()), "ardmore", Some("ardmore"));
        assert_eq!(condition_of(&status, "VersionMismatch").status, "False");
        engine.binary_version = "0.1.0".into();
        engine.format_version = 1;
        let status = instance_status(&inst, true, &Ok(engine), "ardmore", Some("ardmore"));
        let c = condition_of(&status, "VersionMismatch");
        assert_eq!(c.status, "False");
        assert!(c.message.as_deref().unwrap().contains("spec asks for 0.2.0"), "{c:?}");
    }
}
