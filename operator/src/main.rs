//! `strand-operator`: waits for the leader Lease, then runs the Instance, Family and
//! ReplicationLink controllers over shared reflector stores until SIGTERM (graceful: in-flight
//! reconciles finish, the Lease is released) or until it stops leading.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use strand_operator::controller::triggers::{
    self, Seen, changed, family_print, pod_print, request_print, set_print, spec_print,
};
use strand_operator::controller::{self, Config, Ctx, Stores};
use strand_operator::crd::{Family, Instance, ReplicationLink};
use strand_operator::desired::LABEL_INSTANCE;
use strand_operator::leader::{self, Leadership};
use strand_operator::{error_chain, metrics::Metrics, webhook};
use tokio::sync::watch;

struct Args {
    metrics_addr: SocketAddr,
    log_format_json: bool,
    webhook_addr: Option<SocketAddr>,
    webhook_service: String,
    webhook_secret: String,
    webhook_configuration: String,
    /// Namespaces to watch; empty: the whole cluster.
    namespaces: Vec<String>,
    config: Config,
}

fn seconds(flag: &str, v: Option<String>) -> Result<Duration, String> {
    let v = v.ok_or(format!("{flag} needs a number of seconds"))?;
    v.parse::<u64>().map(Duration::from_secs).map_err(|e| format!("{flag} {v:?}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
        log_format_json: true,
        webhook_addr: None,
        webhook_service: "strand-operator-webhook".into(),
        webhook_secret: "strand-operator-webhook-tls".into(),
        webhook_configuration: "strand-operator".into(),
        namespaces: Vec::new(),
        config: Config::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--metrics-addr" => {
                let v = it.next().ok_or("--metrics-addr needs HOST:PORT")?;
                args.metrics_addr = v.parse().map_err(|e| format!("--metrics-addr {v:?}: {e}"))?;
            }
            "--webhook-addr" => {
                let v = it.next().ok_or("--webhook-addr needs HOST:PORT")?;
                args.webhook_addr = Some(v.parse().map_err(|e| format!("--webhook-addr {v:?}: {e}"))?);
            }
            "--webhook-service" => {
                args.webhook_service = it.next().ok_or("--webhook-service needs a name")?
            }
            "--webhook-secret" => args.webhook_secret = it.next().ok_or("--webhook-secret needs a name")?,
            "--webhook-configuration" => {
                args.webhook_configuration = it.next().ok_or("--webhook-configuration needs a name")?
            }
            "--namespaces" => {
                let v = it.next().ok_or("--namespaces needs a comma-separated list of namespaces")?;
                // Each namespace once: two controller sets on one namespace would act twice.
                let mut seen = HashSet::new();
                args.namespaces = v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty() && seen.insert(n.to_owned()))
                    .map(str::to_owned)
                    .collect();
                if args.namespaces.is_empty() {
                    return Err("--namespaces needs at least one namespace".into());
                }
            }
            "--failover-delay-seconds" => args.config.timing.failover_delay = seconds(&arg, it.next())?,
            "--switchover-timeout-seconds" => {
                let d = seconds(&arg, it.next())?;
                args.config.timing.fence_deadline = d;
                args.config.timing.catch_up_deadline = d;
                args.config.timing.repoint_deadline = d;
            }
            "--upgrade-step-deadline-seconds" => {
                args.config.timing.upgrade_step_deadline = seconds(&arg, it.next())?
            }
            "--role-lease-seconds" => args.config.lease = seconds(&arg, it.next())?,
            "--refresh-seconds" => args.config.refresh = seconds(&arg, it.next())?,
            "--log-format" => match it.next().as_deref() {
                Some("json") => args.log_format_json = true,
                Some("text") => args.log_format_json = false,
                other => return Err(format!("--log-format must be json or text, not {other:?}")),
            },
            "--version" | "-V" => {
                println!("strand-operator {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--help" | "-h" => {
                return Err("usage: strand-operator [--version] [--metrics-addr HOST:PORT] [--log-format json|text]\n\
                     [--webhook-addr HOST:PORT --webhook-service NAME --webhook-secret NAME --webhook-configuration NAME]\n\
                     [--namespaces NS,NS... (default: the whole cluster)]\n\
                     [--failover-delay-seconds N (30)] [--switchover-timeout-seconds N (60)]\n\
                     [--upgrade-step-deadline-seconds N (300)] [--role-lease-seconds N (15)] [--refresh-seconds N (5)]\n\
                     Log level from RUST_LOG (default info). Identity from POD_NAME, Lease namespace from POD_NAMESPACE."
                    .into());
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    let c = &args.config;
    if c.lease < c.refresh * 2 {
        return Err(format!(
            "--role-lease-seconds ({}) must be at least twice --refresh-seconds ({}): a lease must outlive a missed renewal",
            c.lease.as_secs(),
            c.refresh.as_secs()
        ));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        // Colours only on a terminal: a pod's log, or a file, gets plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn sub<T>(handle: Option<T>) -> Result<T, String> {
    handle.ok_or_else(|| "a shared store gave no subscriber".to_owned())
}

async fn run(args: Args) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {}", error_chain(&e)))?;
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    // The Lease holder's identity: the pod's name (the chart sets POD_NAME); elsewhere a
    // random one, so two replicas never share it.
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let mut b = [0u8; 6];
        let _ = getrandom::fill(&mut b);
        format!("strand-operator-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    });
    let lease_ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let scopes: Vec<Scope> = if args.namespaces.is_empty() {
        vec![Scope::Cluster]
    } else {
        args.namespaces.iter().cloned().map(Scope::Namespace).collect()
    };
    tracing::info!(scopes = ?scopes, "watching");

    // Every replica serves the admission webhook, set up before it reports ready.
    if let Some(addr) = args.webhook_addr {
        let setup = webhook::Setup {
            namespace: lease_ns.clone(),
            service: args.webhook_service.clone(),
            secret: args.webhook_secret.clone(),
            configuration: args.webhook_configuration.clone(),
        };
        let pem = webhook::ensure_certificate(&client, &setup)
            .await
            .map_err(|e| format!("webhook setup failed: {}", error_chain(&e)))?;
        // Its own watches of Instances and links, on every replica (the controllers' stores
        // exist only on the leader): admissions read them instead of listing the namespace.
        let mut cache = webhook::Cache::default();
        for scope in &scopes {
            let (instances, inst_w) = reflector::store::<Instance>();
            let (links, link_w) = reflector::store::<ReplicationLink>();
            let i = watcher(scope.api::<Instance>(&client), watcher::Config::default())
                .default_backoff()
                .reflect(inst_w)
                .for_each(|_| std::future::ready(()));
            let l = watcher(scope.api::<ReplicationLink>(&client), watcher::Config::default())
                .default_backoff()
                .reflect(link_w)
                .for_each(|_| std::future::ready(()));
            tokio::spawn(async move {
                tokio::join!(i, l);
            });
            cache.scopes.push((instances, links));
        }
        for (instances, links) in &cache.scopes {
            instances
                .wait_until_ready()
                .await
                .map_err(|e| format!("the webhook's watches did not start: {e}"))?;
            links
                .wait_until_ready()
                .await
                .map_err(|e| format!("the webhook's watches did not start: {e}"))?;
        }
        let webhook_client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = webhook::serve(addr, webhook_client, cache, pem).await {
                tracing::error!(error = %error_chain(&e), "admission webhook failed");
            }
        });
    }
    let served = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = strand_operator::metrics::serve(args.metrics_addr, served).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_ns);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let leadership = Arc::new(Leadership::new(&identity));
    tracing::info!(%identity, namespace = %lease_ns, "waiting for the leader lease");
    loop {
        match leader::round(&leases, &identity, &leadership).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %error_chain(&e), "cannot read the leader lease"),
        }
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(leader::RETRY) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    metrics.leader.set(1);
    tracing::info!(%identity, "leading");

    // Renew the Lease; once the renew deadline passes without a renewal this replica stops
    // (every action checks the deadline too, so nothing is done meanwhile).
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let renew_leases = leases.clone();
    let renew_identity = identity.clone();
    let renew_leadership = leadership.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(leader::RETRY).await;
            if let Err(e) = leader::round(&renew_leases, &renew_identity, &renew_leadership).await {
                tracing::warn!(error = %error_chain(&e), "cannot renew the leader lease");
            }
            if !renew_leadership.leading(Instant::now()) {
                let _ = lost_tx.send(true);
                return;
            }
        }
    });

    // One set of watches, stores and controllers per scope; they share the metrics and the
    // leadership.
    let drives = scopes.into_iter().map(|scope| {
        let task = tokio::spawn(run_scope(
            scope,
            client.clone(),
            args.config.clone(),
            metrics.clone(),
            leadership.clone(),
            identity.clone(),
            stop_rx.clone(),
        ));
        async move { task.await.map_err(|e| format!("a controller task failed: {e}"))? }
    });
    let all = futures::future::try_join_all(drives);
    tokio::select! {
        done = all => {
            leader::release(&leases, &identity).await;
            done?;
            tracing::info!("stopped; lease released");
            Ok(())
        }
        _ = lost_rx.wait_for(|lost| *lost) => Err("lost the leader lease; stopping so that only one replica acts".into()),
    }
}

/// What one set of controllers watches: the whole cluster, or one namespace (`--namespaces`
/// runs one set per namespace, so the operator needs no cluster-wide grants).
#[derive(Clone, Debug)]
enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self {
            Scope::Cluster => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    /// Whether the object keyed `namespace/name` is in this scope.
    fn covers(&self, key: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespace(ns) => key.split_once('/').is_some_and(|(n, _)| n == ns),
        }
    }
}

/// Runs the Instance, Family and link controllers over one scope until they stop (SIGTERM) or
/// its watches end.
async fn run_scope(
    scope: Scope,
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    leadership: Arc<Leadership>,
    identity: String,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), String> {
    // One watch per kind, shared by every controller through the stores.
    let (instances, inst_w) = reflector::store_shared::<Instance>(1024);
    let (links, link_w) = reflector::store_shared::<ReplicationLink>(1024);
    let (families, fam_w) = reflector::store_shared::<Family>(1024);
    let (pods, pod_w) = reflector::store_shared::<Pod>(1024);
    let (secrets, secret_w) = reflector::store::<Secret>();
    let (statefulsets, set_w) = reflector::store_shared::<StatefulSet>(1024);
    let inst_for_ic = sub(inst_w.subscribe())?;
    let inst_for_fc = sub(inst_w.subscribe())?;
    let link_for_ic = sub(link_w.subscribe())?;
    let link_for_fc = sub(link_w.subscribe())?;
    let link_for_lc = sub(link_w.subscribe())?;
    let fam_for_fc = sub(fam_w.subscribe())?;
    let fam_for_ic = sub(fam_w.subscribe())?;
    let pod_for_fc = sub(pod_w.subscribe())?;
    let set_for_fc = sub(set_w.subscribe())?;
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=strand-operator");
    let drive = {
        let c = client.clone();
        let i = watcher(scope.api::<Instance>(&c), watcher::Config::default())
            .default_backoff()
            .reflect_shared(inst_w)
            .for_each(|_| std::future::ready(()));
        let l = watcher(scope.api::<ReplicationLink>(&c), watcher::Config::default())
            .default_backoff()
            .reflect_shared(link_w)
            .for_each(|_| std::future::ready(()));
        let f = watcher(scope.api::<Family>(&c), watcher::Config::default())
            .default_backoff()
            .reflect_shared(fam_w)
            .for_each(|_| std::future::ready(()));
        let p = watcher(scope.api::<Pod>(&c), managed.clone())
            .default_backoff()
            .reflect_shared(pod_w)
            .for_each(|_| std::future::ready(()));
        let s = watcher(scope.api::<Secret>(&c), managed.clone())
            .default_backoff()
            .reflect(secret_w)
            .for_each(|_| std::future::ready(()));
        let ss = watcher(scope.api::<StatefulSet>(&c), managed)
            .default_backoff()
            .reflect_shared(set_w)
            .for_each(|_| std::future::ready(()));
        async move {
            tokio::join!(i, l, f, p, s, ss);
        }
    };
    let drive = tokio::spawn(drive);
    let stores = Stores { instances, links, families, pods, secrets, statefulsets };
    // Nothing is decided on a half-filled cache.
    let ready = async {
        stores.instances.wait_until_ready().await?;
        stores.links.wait_until_ready().await?;
        stores.families.wait_until_ready().await?;
        stores.pods.wait_until_ready().await?;
        stores.statefulsets.wait_until_ready().await?;
        stores.secrets.wait_until_ready().await
    };
    ready.await.map_err(|e| format!("the watches did not start: {e}"))?;
    tracing::info!("caches filled");

    let reporter = Reporter { controller: "strand-operator".into(), instance: Some(identity.clone()) };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        stores: stores.clone(),
        config,
        leader: leadership.clone(),
        backoff: Mutex::new(Default::default()),
        book: Mutex::new(Default::default()),
        events: Mutex::new(Default::default()),
    });
    let seen = Seen::default();
    let shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Instances: their objects and their Family object. Triggered by spec changes, by links
    // (family membership), by a family's primary changing (the PodDisruptionBudget) or its
    // upgrade releasing a member (the image), and by their StatefulSets (deleted or changed).
    let instance_controller = Controller::for_shared_stream(
        changed(seen.clone(), inst_for_ic, spec_print::<Instance>),
        stores.instances.clone(),
    )
    .owns(scope.api::<StatefulSet>(&client), watcher::Config::default())
    .watches_shared_stream(changed(seen.clone(), link_for_ic, spec_print::<ReplicationLink>), |link| {
        let ns = link.namespace().unwrap_or_default();
        [&link.spec.source, &link.spec.target]
            .into_iter()
            .map(|name| ObjectRef::<Instance>::new(name).within(&ns))
            .collect::<Vec<_>>()
    })
    .watches_shared_stream(changed(seen.clone(), fam_for_ic, family_print), move |fam| {
        let ns = fam.namespace().unwrap_or_default();
        fam.status
            .as_ref()
            .map(|st| st.members.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|m| ObjectRef::<Instance>::new(&m).within(&ns))
            .collect::<Vec<_>>()
    })
    .graceful_shutdown_on(shutdown(stop_rx.clone()))
    .run(controller::instance::reconcile, controller::instance::error_policy, ctx.clone())
    .for_each(|_| async {});

    // Families: each a unit of lifecycle, concurrently. Triggered by members' specs and
    // requests, their pods' readiness and image, their StatefulSets' image, their links, and a
    // timer.
    let (s1, s2, s3, s4) = (stores.clone(), stores.clone(), stores.clone(), stores.clone());
    let family_controller = Controller::for_shared_stream(
        changed(seen.clone(), fam_for_fc, spec_print::<Family>),
        stores.families.clone(),
    )
    .watches_shared_stream(changed(seen.clone(), inst_for_fc, request_print), move |inst| {
        let ns = inst.namespace().unwrap_or_default();
        controller::family::family_of(&s1, &ns, &inst.name_any())
            .map(|f| ObjectRef::<Family>::new(&f).within(&ns))
    })
    .watches_shared_stream(changed(seen.clone(), link_for_fc, spec_print::<ReplicationLink>), move |link| {
        let ns = link.namespace().unwrap_or_default();
        let f = controller::family::families_in(&s2, &ns);
        [&link.spec.source, &link.spec.target]
            .into_iter()
            .filter_map(|i| f.of.get(i).cloned())
            .map(|name| ObjectRef::<Family>::new(&name).within(&ns))
            .collect::<Vec<_>>()
    })
    .watches_shared_stream(changed(seen.clone(), pod_for_fc, pod_print), move |pod| {
        let ns = pod.namespace().unwrap_or_default();
        pod.labels()
            .get(LABEL_INSTANCE)
            .and_then(|i| controller::family::family_of(&s3, &ns, i))
            .map(|f| ObjectRef::<Family>::new(&f).within(&ns))
    })
    .watches_shared_stream(changed(seen.clone(), set_for_fc, set_print), move |set| {
        let ns = set.namespace().unwrap_or_default();
        controller::family::family_of(&s4, &ns, &set.name_any())
            .map(|f| ObjectRef::<Family>::new(&f).within(&ns))
    })
    .graceful_shutdown_on(shutdown(stop_rx.clone()))
    .run(controller::family::reconcile, controller::family::error_policy, ctx.clone())
    .for_each(|_| async {});

    // Links none of whose Instances exist.
    let link_controller = Controller::for_shared_stream(
        changed(seen.clone(), link_for_lc, spec_print::<ReplicationLink>),
        stores.links.clone(),
    )
    .graceful_shutdown_on(shutdown(stop_rx.clone()))
    .run(controller::link::reconcile, controller::link::error_policy, ctx.clone())
    .for_each(|_| async {});

    // Forget back-off, bookkeeping and trigger fingerprints of objects that are gone.
    let prune_ctx = ctx.clone();
    let prune_seen = seen.clone();
    let prune_scope = scope.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let st = &prune_ctx.stores;
            let live_families: Vec<String> = st
                .families
                .state()
                .iter()
                .map(|f| format!("{}/{}", f.namespace().unwrap_or_default(), f.name_any()))
                .collect();
            let live_instances: Vec<String> = st
                .instances
                .state()
                .iter()
                .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
                .collect();
            let live_links: Vec<String> = st
                .links
                .state()
                .iter()
                .map(|l| format!("{}/{}", l.namespace().unwrap_or_default(), l.name_any()))
                .collect();
            prune_ctx.backoff().retain(|k| {
                let (kind, rest) = k.split_once('/').unwrap_or(("", k));
                match kind {
                    "Family" => live_families.iter().any(|f| f == rest),
                    "Instance" => live_instances.iter().any(|i| i == rest),
                    _ => live_links.iter().any(|l| l == rest),
                }
            });
            prune_ctx.book().retain(|k| live_instances.iter().any(|i| i == k));
            // The metrics are shared by every scope: only this scope's families are judged here.
            prune_ctx
                .metrics
                .retain_families(|k| !prune_scope.covers(k) || live_families.iter().any(|f| f == k));
            let mut live_uids: HashSet<String> = HashSet::new();
            live_uids.extend(st.instances.state().iter().map(|o| triggers::identity(o.as_ref())));
            live_uids.extend(st.links.state().iter().map(|o| triggers::identity(o.as_ref())));
            live_uids.extend(st.families.state().iter().map(|o| triggers::identity(o.as_ref())));
            live_uids.extend(st.pods.state().iter().map(|o| triggers::identity(o.as_ref())));
            live_uids.extend(st.statefulsets.state().iter().map(|o| triggers::identity(o.as_ref())));
            prune_seen.retain(&live_uids);
        }
    });

    let all = async { tokio::join!(instance_controller, family_controller, link_controller) };
    tokio::select! {
        _ = all => Ok(()),
        _ = drive => Err(format!("the watches of {scope:?} ended")),
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
