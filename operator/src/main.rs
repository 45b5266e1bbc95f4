//! `strand-operator`: waits for the leader Lease, then runs the Instance and ReplicationLink
//! controllers until SIGTERM (graceful: in-flight reconciles finish, the Lease is released).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use strand_operator::controller::{self, Ctx};
use strand_operator::crd::{Instance, ReplicationLink};
use strand_operator::{error_chain, leader, metrics::Metrics, webhook};
use tokio::sync::watch;

struct Args {
    metrics_addr: SocketAddr,
    log_format_json: bool,
    webhook_addr: Option<SocketAddr>,
    webhook_service: String,
    webhook_secret: String,
    webhook_configuration: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
        log_format_json: true,
        webhook_addr: None,
        webhook_service: "strand-operator-webhook".into(),
        webhook_secret: "strand-operator-webhook-tls".into(),
        webhook_configuration: "strand-operator".into(),
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
            "--log-format" => match it.next().as_deref() {
                Some("json") => args.log_format_json = true,
                Some("text") => args.log_format_json = false,
                other => return Err(format!("--log-format must be json or text, not {other:?}")),
            },
            "--help" | "-h" => {
                return Err("usage: strand-operator [--metrics-addr HOST:PORT] [--log-format json|text]\n\
                     [--webhook-addr HOST:PORT --webhook-service NAME --webhook-secret NAME --webhook-configuration NAME]\n\
                     Log level from RUST_LOG (default info). Identity from POD_NAME, Lease namespace from POD_NAMESPACE."
                    .into());
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
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
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {}", error_chain(&e)))?;
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("strand-operator-{}", std::process::id()));
    let lease_ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());

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
        let webhook_client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = webhook::serve(addr, webhook_client, pem).await {
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

    tracing::info!(%identity, namespace = %lease_ns, "waiting for the leader lease");
    loop {
        match leader::try_acquire(&leases, &identity).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %error_chain(&e), "cannot read the leader lease"),
        }
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(leader::RENEW_EVERY) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    metrics.leader.set(1);
    tracing::info!(%identity, "leading");

    // Renew the Lease; losing it stops this replica (another one leads).
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let renew_leases = leases.clone();
    let renew_identity = identity.clone();
    tokio::spawn(async move {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(leader::RENEW_EVERY).await;
            match leader::try_acquire(&renew_leases, &renew_identity).await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    let _ = lost_tx.send(true);
                    return;
                }
                Err(e) => tracing::warn!(error = %error_chain(&e), "cannot renew the leader lease"),
            }
            if last_ok.elapsed() > leader::LEASE_DURATION {
                let _ = lost_tx.send(true);
                return;
            }
        }
    });

    let reporter = Reporter { controller: "strand-operator".into(), instance: Some(identity.clone()) };
    let ctx = Arc::new(Ctx::new(client.clone(), metrics.clone(), Recorder::new(client.clone(), reporter)));
    let shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let instances = Controller::new(Api::<Instance>::all(client.clone()), watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), watcher::Config::default())
        // A link's status changes right after it acted on its engines: refresh both instances.
        .watches(Api::<ReplicationLink>::all(client.clone()), watcher::Config::default(), |link| {
            let ns = link.metadata.namespace.clone().unwrap_or_default();
            [&link.spec.source, &link.spec.target]
                .into_iter()
                .map(|name| ObjectRef::<Instance>::new(name).within(&ns))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown(stop_rx.clone()))
        .run(controller::instance::reconcile, controller::instance::error_policy, ctx.clone())
        .for_each(|_| async {});
    // Links are reconciled one at a time: two links of one source must not both see it
    // standalone and both promote it.
    let links = Controller::new(Api::<ReplicationLink>::all(client.clone()), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(1))
        .graceful_shutdown_on(shutdown(stop_rx.clone()))
        .run(controller::link::reconcile, controller::link::error_policy, ctx.clone())
        .for_each(|_| async {});
    let both = async { tokio::join!(instances, links) };
    tokio::select! {
        _ = both => {
            leader::release(&leases, &identity).await;
            tracing::info!("stopped; lease released");
            Ok(())
        }
        _ = lost_rx.wait_for(|lost| *lost) => Err("lost the leader lease; stopping so that only one replica acts".into()),
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
