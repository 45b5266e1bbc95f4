//! The running server: opens the store, starts the writer, the data port and the admin API,
//! and shuts them down in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::base::error_chain;
use crate::engine::{Config, Engine};
use crate::metrics::Metrics;
use crate::replication::Context;
use crate::shutdown::{self, Shutdown};
use crate::storage::writer::{Writer, WriterLimits};
use crate::storage::{CreateSpec, Store, StoreError};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("failed to open the instance")]
    Store(#[from] StoreError),
    #[error("failed to bind {what} on {addr}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("failed to start the writer thread")]
    Writer { source: std::io::Error },
    #[error("failed to set up metrics")]
    Metrics { source: prometheus::Error },
    #[error("failed to serve the admin API")]
    Admin { source: std::io::Error },
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(config: Config) -> Result<(), ServerError> {
    run_until(config, shutdown::signal()).await
}

/// Runs the server until `stop` completes.
pub async fn run_until(
    mut config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let create = config.name.clone().map(|name| CreateSpec { name, supplementary: config.supplementary });
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, create.as_ref()))
        .await
        .map_err(|e| ServerError::Admin { source: std::io::Error::other(e) })??;
    store.set_read_cache_bytes(config.read_cache_bytes);
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::new().map_err(|source| ServerError::Metrics { source })?);
    // Every command's counter exists from the start (at 0), so rates and dashboards see it.
    for spec in crate::resp::cmd::specs() {
        metrics.resp_commands_total.with_label_values(&[spec.name]).inc_by(0);
    }
    metrics.journal_seqno.set(i64::try_from(store.committed_seqno()).unwrap_or(i64::MAX));
    let (writer, writer_thread) = Writer::spawn(
        store.clone(),
        WriterLimits {
            disk_reserve_bytes: config.disk_reserve_bytes,
            max_txn_image_bytes: config.max_txn_image_bytes,
            checkpoint_bytes: config.checkpoint_bytes,
            segment_bytes: config.segment_bytes,
            retention: config.retention,
        },
        metrics.clone(),
    )
    .map_err(|source| ServerError::Writer { source })?;

    let resp = TcpListener::bind(config.resp_addr).await.map_err(|source| ServerError::Bind {
        what: "the data port",
        addr: config.resp_addr.to_string(),
        source,
    })?;
    config.resp_port = resp.local_addr().map(|a| a.port()).unwrap_or(0);
    let resp_local = resp.local_addr().ok();
    let repl = match config.repl_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ServerError::Bind {
            what: "the replication port",
            addr: addr.to_string(),
            source,
        })?),
        None => None,
    };
    let repl_local = repl.as_ref().and_then(|l| l.local_addr().ok());
    let replication = crate::replication::Replication::new(
        config.repl_secret.clone(),
        config.seed_rate_bytes,
        config.apply_interval,
    );
    let core = Arc::new(Context { store, writer, metrics, replication });
    let engine = Arc::new(Engine::new(core, config, repl_local));
    let (trigger, shutdown) = shutdown::channel();
    let admin = crate::admin::start(engine.clone(), shutdown.clone())
        .await
        .map_err(|e| ServerError::Bind { what: e.what, addr: e.addr, source: e.source })?;

    let accept = tokio::spawn(accept_loop(engine.clone(), resp, shutdown.clone()));
    let repl_task = repl.map(|l| {
        tokio::spawn(crate::replication::receiver::listen(engine.core.clone(), l, shutdown.clone()))
    });
    for link in engine.store.meta().sources {
        let handle = crate::replication::source::spawn(engine.core.clone(), link.clone());
        engine
            .replication
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(link.receiver, handle);
    }
    // Every configured stream now pins what its receiver needs: trimming may begin.
    engine.store.set_trimming(true);
    tokio::spawn(crate::expiry::run(engine.clone(), shutdown.clone()));
    engine.ready.store(true, Ordering::Release);
    tracing::info!(
        instance = %engine.store.meta().name,
        resp = ?resp_local,
        admin_socket = %crate::admin::socket_path(engine.store.data_dir()).display(),
        admin_tcp = ?engine.config.admin_addr,
        repl = ?engine.repl_local,
        "ready"
    );

    stop.await;
    tracing::info!("shutting down");
    engine.ready.store(false, Ordering::Release);
    // The streams stop below and drop their pins: the final checkpoint must not trim.
    engine.store.set_trimming(false);
    trigger.fire();
    // Connections finish the requests they have read; admin servers finish in-flight calls.
    if let Ok(connections) = accept.await {
        connections.wait().await;
    }
    admin.wait().await;
    if let Some(task) = repl_task {
        let _ = task.await;
    }
    for (_, source) in
        engine.replication.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain()
    {
        source.stop();
    }
    // Source tasks hold the replication context until they notice the stop.
    for _ in 0..200 {
        if Arc::strong_count(&engine) == 1 && Arc::strong_count(&engine.core) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    match Arc::try_unwrap(engine).map(|engine| Arc::try_unwrap(engine.core)) {
        Ok(Ok(core)) => {
            drop(core); // drops the last writer handle: the writer drains and stops
            if writer_thread.join().is_err() {
                tracing::error!("writer thread panicked");
            }
        }
        _ => tracing::warn!("some tasks still hold the engine; exiting without waiting for the writer"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tracks live connection tasks so shutdown can wait for them.
pub struct Connections(tokio::task::JoinSet<()>);

impl Connections {
    async fn wait(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

async fn accept_loop(engine: Arc<Engine>, listener: TcpListener, mut shutdown: Shutdown) -> Connections {
    let limit = Arc::new(Semaphore::new(engine.config.max_clients));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.recv() => break,
        };
        // Reap finished tasks so the set does not grow with every connection ever made.
        while tasks.try_join_next().is_some() {}
        let (mut stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: log, and keep accepting.
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            engine.metrics.rejected_clients_total.inc();
            tasks.spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        };
        let id = engine.next_client_id();
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            engine.metrics.connected_clients.inc();
            crate::resp::connection::serve(engine.clone(), stream, id, shutdown).await;
            engine.metrics.connected_clients.dec();
            drop(permit);
        });
    }
    Connections(tasks)
}

/// Logs an error with its chain of causes.
pub fn log_error(context: &str, e: &dyn std::error::Error) {
    tracing::error!(error = %error_chain(e), "{context}");
}
