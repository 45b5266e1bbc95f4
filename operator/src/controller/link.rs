//! ReplicationLink → the engine admin calls that make it stream (planned by
//! [`crate::plan`]), its status from the engines, and on deletion (finalizer) the calls that
//! stop it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};

use super::{Ctx, Endpoint, Error, condition, endpoint};
use crate::crd::{Instance, Mode, ReplicationLink, ReplicationLinkStatus};
use crate::engine_client;
use crate::engine_status::EngineStatus;
use crate::plan::{self, Action as EngineAction, LinkState, LinkView};

pub const FINALIZER: &str = "strand.dev/replication-link";
/// How often a link's state is refreshed from the engines.
const REFRESH: Duration = Duration::from_secs(5);

pub async fn reconcile(link: Arc<ReplicationLink>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = link.namespace().unwrap_or_default();
    let key = format!("ReplicationLink/{ns}/{}", link.name_any());
    let api: Api<ReplicationLink> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, link, |event| async {
        match event {
            Event::Apply(link) => apply(&link, &ctx).await,
            Event::Cleanup(link) => cleanup(&link, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(crate::error_chain(&e)));
    let m = &ctx.metrics;
    m.reconcile_duration.with_label_values(&["ReplicationLink"]).observe(started.elapsed().as_secs_f64());
    m.reconciles.with_label_values(&["ReplicationLink", if result.is_ok() { "ok" } else { "error" }]).inc();
    super::after(&ctx, &key, &result);
    result
}

pub fn error_policy(link: Arc<ReplicationLink>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = format!("ReplicationLink/{}/{}", link.namespace().unwrap_or_default(), link.name_any());
    let wait = ctx.outcome(&key, false);
    tracing::warn!(link = %link.name_any(), error = %crate::error_chain(err), ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn publish(ctx: &Ctx, link: &ReplicationLink, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &link.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

async fn set_status(ctx: &Ctx, link: &ReplicationLink, status: ReplicationLinkStatus) -> Result<(), Error> {
    let previous = link.status.clone().unwrap_or_default();
    if status.state != previous.state {
        let (kind, reason) = match status.state.as_deref() {
            Some("Blocked") => (EventType::Warning, "Blocked"),
            Some("RollbackRequired") => (EventType::Warning, "RollbackRequired"),
            _ => (EventType::Normal, "StateChanged"),
        };
        let note = format!(
            "{} → {}{}",
            previous.state.as_deref().unwrap_or("new"),
            status.state.as_deref().unwrap_or("?"),
            status.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        publish(ctx, link, kind, reason, note).await;
    }
    if status == previous {
        return Ok(());
    }
    let ns = link.namespace().unwrap_or_default();
    let api: Api<ReplicationLink> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&link.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn status(link: &ReplicationLink, state: LinkState, reason: Option<String>) -> ReplicationLinkStatus {
    let previous = link.status.clone().unwrap_or_default();
    let generation = link.metadata.generation;
    let ready = state == LinkState::Streaming || state == LinkState::CatchingUp;
    ReplicationLinkStatus {
        state: Some(state.as_str().into()),
        reason: reason.clone(),
        current_source: Some(link.spec.source.clone()),
        conditions: vec![condition(
            &previous.conditions,
            "Ready",
            ready,
            state.as_str(),
            reason.unwrap_or_else(|| state.as_str().to_owned()),
            generation,
        )],
        observed_generation: generation,
        ..previous
    }
}

async fn apply(link: &ReplicationLink, ctx: &Ctx) -> Result<Action, Error> {
    let ns = link.namespace().ok_or_else(|| Error::Invalid("ReplicationLink has no namespace".into()))?;
    let name = link.name_any();
    let instances: Vec<Instance> =
        Api::<Instance>::namespaced(ctx.client.clone(), &ns).list(&ListParams::default()).await?.items;
    let links: Vec<ReplicationLink> =
        Api::<ReplicationLink>::namespaced(ctx.client.clone(), &ns).list(&ListParams::default()).await?.items;
    let blocked = plan::check_namespace(&links, &instances, None);
    if let Some(reason) = blocked.get(&name) {
        set_status(ctx, link, status(link, LinkState::Blocked, Some(reason.clone()))).await?;
        return Ok(Action::requeue(REFRESH * 6));
    }

    let (source, target) = (&link.spec.source, &link.spec.target);
    let (Some(src), Some(tgt)) =
        (endpoint(&ctx.client, &ns, source).await?, endpoint(&ctx.client, &ns, target).await?)
    else {
        let reason = format!("waiting for the engines of {source} and {target} to be ready");
        set_status(ctx, link, status(link, LinkState::Connecting, Some(reason))).await?;
        return Ok(Action::requeue(REFRESH));
    };
    let src_status = observe(ctx, &src).await?;
    let tgt_status = observe(ctx, &tgt).await?;
    let source_receives_bc = links
        .iter()
        .any(|l| l.spec.mode == Mode::Bc && &l.spec.target == source && !blocked.contains_key(&l.name_any()));
    let view = LinkView {
        spec: &link.spec,
        source: &src_status,
        target: &tgt_status,
        target_repl_addr: &tgt.repl,
        source_repl_addr: &src.repl,
        source_receives_bc,
    };
    let planned = plan::plan_link(&view);
    for action in &planned.actions {
        let ep = if action.instance() == source.as_str() { &src } else { &tgt };
        execute(ctx, ep, action).await.map_err(|e| {
            // Reported on the link; the reconcile is retried with back-off.
            let message = format!("{}: {}", describe(action), crate::error_chain(&e));
            tracing::warn!(link = %name, error = %message, "engine admin call failed");
            Error::Invalid(message)
        })?;
        publish(ctx, link, EventType::Normal, reason_of(action), describe(action)).await;
    }
    let mut new = status(link, planned.state, planned.reason.clone());
    new.backlog = planned.backlog;
    new.lag = planned.lag_seconds.map(|l| format!("{l:.1}s"));
    new.stream = planned.stream;
    set_status(ctx, link, new).await?;
    Ok(Action::requeue(REFRESH))
}

async fn observe(ctx: &Ctx, ep: &Endpoint) -> Result<EngineStatus, Error> {
    engine_client::status(&ep.admin, &ep.token).await.map_err(|e| {
        ctx.metrics.engine_call_errors.with_label_values(&[e.kind()]).inc();
        Error::Engine(e)
    })
}

fn label(action: &EngineAction) -> &'static str {
    match action {
        EngineAction::Promote { .. } => "promote",
        EngineAction::ReceiverStart { .. } => "receiver_start",
        EngineAction::SourceStart { .. } => "source_start",
        EngineAction::SourceStop { .. } => "source_stop",
        EngineAction::ReceiverStop { .. } => "receiver_stop",
    }
}

fn reason_of(action: &EngineAction) -> &'static str {
    match action {
        EngineAction::Promote { .. } => "Promoted",
        EngineAction::ReceiverStart { .. } => "ReceiverStarted",
        EngineAction::SourceStart { .. } => "SourceStarted",
        EngineAction::SourceStop { .. } => "SourceStopped",
        EngineAction::ReceiverStop { .. } => "ReceiverStopped",
    }
}

fn describe(action: &EngineAction) -> String {
    match action {
        EngineAction::Promote { instance } => format!("promoted {instance} to originating primary"),
        EngineAction::ReceiverStart {
            instance,
            si,
            autorollback,
            noresync,
            updateresync,
            updateresync_from,
        } => {
            format!(
                "started {} receiver on {instance}{}{}{}",
                if *si { "an SI" } else { "a BC" },
                if *autorollback { " with autorollback" } else { "" },
                if *noresync { " with noresync" } else { "" },
                updateresync
                    .as_deref()
                    .or(updateresync_from.as_deref())
                    .map(|u| format!(" seeded from {u}"))
                    .unwrap_or_default()
            )
        }
        EngineAction::SourceStart { instance, receiver, addr, si } => {
            format!(
                "started {} stream from {instance} to {receiver} at {addr}",
                if *si { "an SI" } else { "a BC" }
            )
        }
        EngineAction::SourceStop { instance, receiver } => {
            format!("stopped the stream from {instance} to {receiver}")
        }
        EngineAction::ReceiverStop { instance } => format!("stopped the receiver on {instance}"),
    }
}

async fn execute(ctx: &Ctx, ep: &Endpoint, action: &EngineAction) -> Result<(), engine_client::EngineError> {
    let (method, path, body) = action.request();
    let result = engine_client::call(&ep.admin, &ep.token, method, &path, body).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.metrics.engine_calls.with_label_values(&[label(action), outcome]).inc();
    if let Err(e) = &result {
        ctx.metrics.engine_call_errors.with_label_values(&[e.kind()]).inc();
    }
    tracing::info!(action = %describe(action), outcome, "engine admin call");
    result.map(|_| ())
}

/// The link is being deleted: stop the stream and the receiver where the engines still run.
/// Engines that are gone (their Instance deleted too) have nothing left to stop.
async fn cleanup(link: &ReplicationLink, ctx: &Ctx) -> Result<Action, Error> {
    let ns = link.namespace().unwrap_or_default();
    let src = endpoint(&ctx.client, &ns, &link.spec.source).await?;
    let tgt = endpoint(&ctx.client, &ns, &link.spec.target).await?;
    let src_status = match &src {
        Some(ep) => engine_client::status(&ep.admin, &ep.token).await.ok(),
        None => None,
    };
    let tgt_status = match &tgt {
        Some(ep) => engine_client::status(&ep.admin, &ep.token).await.ok(),
        None => None,
    };
    for action in plan::plan_link_removal(&link.spec, src_status.as_ref(), tgt_status.as_ref()) {
        let ep = if action.instance() == link.spec.source { &src } else { &tgt };
        let Some(ep) = ep else { continue };
        match execute(ctx, ep, &action).await {
            Ok(()) => {}
            Err(engine_client::EngineError::Api { status: 404, .. }) => {}
            Err(e) => return Err(Error::Engine(e)),
        }
    }
    tracing::info!(link = %link.name_any(), "replication link removed");
    Ok(Action::await_change())
}
