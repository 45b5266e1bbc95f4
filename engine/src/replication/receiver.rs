//! The receiver side: the listener on `--repl-addr`. For each connecting source it checks the
//! shared secret, compares histories, and then either streams (receiver not ahead), rolls back
//! online to the common point first (receiver ahead, `autorollback`), or refuses and touches
//! nothing (receiver ahead without `autorollback`: "rollback required"). Records are applied
//! through the writer and acknowledged once durable. One source at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::history::{self, Plan};
use super::protocol::{
    self, Ack, Auth, Challenge, Hello, HistoryAnswer, Kind, Mode, ProtocolError, Refuse, Start,
};
use crate::server::Engine;
use crate::shutdown::Shutdown;
use crate::storage::journal::RecordKind;
use crate::storage::meta::Role;
use crate::storage::writer::error_chain;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A source sends at least a heartbeat every second; silence this long means it is gone.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts replication connections until shutdown.
pub async fn listen(engine: Arc<Engine>, listener: TcpListener, mut shutdown: Shutdown) {
    let active = Arc::new(AtomicBool::new(false));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.recv() => return,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let engine = engine.clone();
        let active = active.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&engine, stream, peer, &active, shutdown).await {
                let message = error_chain(&e);
                match e {
                    ProtocolError::Auth => {
                        tracing::warn!(%peer, "refused a replication connection: wrong or missing credential")
                    }
                    ProtocolError::Closed => tracing::info!(%peer, "replication source disconnected"),
                    _ => tracing::warn!(%peer, error = %message, "replication connection ended"),
                }
            }
        });
    }
}

async fn refuse(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    code: &str,
    message: String,
    common: Option<u64>,
    receiver_seqno: Option<u64>,
) {
    let _ = protocol::write_json(
        wr,
        Kind::Refuse,
        &Refuse { code: code.into(), message, common, receiver_seqno },
    )
    .await;
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(d, f).await.map_err(|_| ProtocolError::Io(std::io::Error::other("timed out")))?
}

/// Clears the "one source at a time" flag when the connection ends, however it ends.
struct ActiveGuard<'a>(&'a AtomicBool);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn serve(
    engine: &Arc<Engine>,
    stream: TcpStream,
    peer: SocketAddr,
    active: &AtomicBool,
    mut shutdown: Shutdown,
) -> Result<(), ProtocolError> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let hello: Hello = timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::Hello)).await?;
    if hello.protocol != protocol::PROTOCOL_VERSION {
        refuse(
            &mut wr,
            "protocol",
            format!("this receiver speaks protocol {}", protocol::PROTOCOL_VERSION),
            None,
            None,
        )
        .await;
        return Err(ProtocolError::Version(hello.protocol));
    }
    let Some(secret) = engine.replication.secret.clone() else {
        refuse(
            &mut wr,
            "no_secret",
            "this instance has no --repl-secret-file; it accepts no replication".into(),
            None,
            None,
        )
        .await;
        return Err(ProtocolError::Auth);
    };
    let meta = engine.store.meta();
    let nonce_r = protocol::nonce();
    let challenge = Challenge {
        protocol: protocol::PROTOCOL_VERSION,
        name: meta.name.clone(),
        creation_id: meta.creation_id.clone(),
        nonce: nonce_r.clone(),
        proof: protocol::proof(&secret, "strand-receiver", &hello.nonce, &nonce_r),
    };
    protocol::write_json(&mut wr, Kind::Challenge, &challenge).await?;
    let auth: Auth = timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::Auth)).await?;
    if !protocol::verify(&secret, "strand-source", &nonce_r, &hello.nonce, &auth.proof) {
        engine.metrics.replication_errors_total.with_label_values(&["unauthorized"]).inc();
        refuse(&mut wr, "unauthorized", "wrong replication secret".into(), None, None).await;
        return Err(ProtocolError::Auth);
    }
    if hello.mode == Mode::Query {
        let answer = HistoryAnswer { history: meta.history.clone(), seqno: engine.store.committed_seqno() };
        protocol::write_json(&mut wr, Kind::History, &answer).await?;
        return Ok(());
    }

    let Some(config) = meta.receiver.clone() else {
        refuse(
            &mut wr,
            "receiver_not_started",
            format!("{} has no receiver started; run `ctl receiver start` on it", meta.name),
            None,
            None,
        )
        .await;
        return Ok(());
    };
    if engine.store.role() != Role::Secondary {
        refuse(
            &mut wr,
            "not_secondary",
            format!("{} is {}, not a replicating secondary", meta.name, engine.store.role().as_str()),
            None,
            None,
        )
        .await;
        return Ok(());
    }
    if active.swap(true, Ordering::AcqRel) {
        let current = engine.replication.receiver_status().source.unwrap_or_default();
        refuse(&mut wr, "busy", format!("{} already receives from {current}", meta.name), None, None).await;
        return Ok(());
    }
    let _guard = ActiveGuard(active);
    let mut generation = engine.replication.receiver_generation.subscribe();
    generation.borrow_and_update();

    let seqno = engine.store.committed_seqno();
    let plan = history::plan(&meta.history, seqno, &auth.history, auth.seqno);
    let mut rolled_back_to = None;
    let from = match plan {
        Plan::Stream { from } => from,
        Plan::RollbackRequired { common, receiver_seqno } if !config.autorollback => {
            let message = format!(
                "{} holds seqnos {}..={receiver_seqno} that {} does not have (common point {common}); roll back with `ctl rollback --to-seqno {common}` or start the receiver with --autorollback",
                meta.name,
                common + 1,
                hello.name
            );
            tracing::warn!(source = %hello.name, common, receiver_seqno, "rollback required; not receiving");
            engine.metrics.replication_errors_total.with_label_values(&["rollback_required"]).inc();
            engine.replication.set_receiver(|s| {
                s.state = "rollback_required".into();
                s.source = Some(hello.name.clone());
                s.common_seqno = Some(common);
                s.last_error = Some(message.clone());
            });
            refuse(&mut wr, "rollback_required", message, Some(common), Some(receiver_seqno)).await;
            return Ok(());
        }
        Plan::RollbackRequired { common, receiver_seqno } => {
            let reason = format!(
                "autorollback: source {} does not have seqnos {}..={receiver_seqno}",
                hello.name,
                common + 1
            );
            match engine.writer.rollback(common, false, reason).await {
                Ok(done) => {
                    if let Some(done) = done {
                        engine.metrics.rollbacks_total.inc();
                        engine.metrics.rolled_back_transactions_total.inc_by(done.transactions);
                    }
                }
                Err(e) => {
                    refuse(&mut wr, "rollback_failed", e.to_string(), Some(common), Some(receiver_seqno))
                        .await;
                    return Err(ProtocolError::Io(std::io::Error::other(e.to_string())));
                }
            }
            rolled_back_to = Some(common);
            common + 1
        }
    };
    protocol::write_json(&mut wr, Kind::Start, &Start { from, rolled_back_to }).await?;
    tracing::info!(source = %hello.name, %peer, from, "receiving");
    engine.store.set_source_name(Some(hello.name.clone()));
    engine.replication.set_receiver(|s| {
        s.state = "streaming".into();
        s.source = Some(hello.name.clone());
        s.common_seqno = None;
        s.last_error = None;
        s.applied_seqno = from - 1;
    });
    let result = receive(engine, &mut rd, &mut wr, &auth, &mut generation, &mut shutdown).await;
    engine.replication.set_receiver(|s| {
        s.state = match &result {
            Ok(()) | Err(ProtocolError::Closed) => "idle".into(),
            Err(_) => "error".into(),
        };
        if let Err(e) = &result {
            s.last_error = Some(error_chain(e));
        }
    });
    result
}

/// Most records merged into one durable apply when frames queue up (receiver behind).
const APPLY_RECORDS_MAX: usize = 16 * 1000;

async fn receive(
    engine: &Arc<Engine>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    auth: &Auth,
    generation: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> Result<(), ProtocolError> {
    // Frames are read by their own loop into a bounded queue, so that while one apply is being
    // made durable the next frames arrive, and a receiver that fell behind merges everything
    // queued into one commit instead of paying one fsync per frame.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(Kind, Vec<u8>), ProtocolError>>(64);
    let reader = async {
        loop {
            let frame = tokio::time::timeout(SILENCE_TIMEOUT, protocol::read_frame(rd))
                .await
                .map_err(|_| ProtocolError::Io(std::io::Error::other("source silent for too long")))
                .and_then(|r| r);
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() {
                return;
            }
            if failed {
                // The applier reports the error (with its cause); nothing more to read.
                std::future::pending::<()>().await;
            }
        }
    };
    let applier = async {
        loop {
            let first = tokio::select! {
                f = rx.recv() => f,
                _ = generation.changed() => return Ok(()),
                _ = shutdown.recv() => return Ok(()),
            };
            let Some(first) = first else { return Err(ProtocolError::Closed) };
            let mut records = Vec::new();
            let mut bytes = 0usize;
            let mut frames = 0usize;
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                frames += 1;
                match frame? {
                    (Kind::Records, payload) => {
                        bytes += payload.len();
                        records.extend(protocol::decode_records(&payload)?);
                    }
                    (Kind::Heartbeat, _) => {}
                    (kind, _) => {
                        return Err(ProtocolError::Unexpected { expected: Kind::Records, got: kind });
                    }
                }
                if records.len() < APPLY_RECORDS_MAX {
                    next = rx.try_recv().ok();
                }
            }
            tracing::debug!(frames, records = records.len(), queued = rx.len(), "applying");
            let applied = if records.is_empty() {
                engine.store.committed_seqno()
            } else {
                let n = records.len() as u64;
                let failover = records.iter().rev().find(|r| r.kind == RecordKind::Failover).map(|r| r.seqno);
                let applied = engine
                    .writer
                    .apply(records, auth.history.clone())
                    .await
                    .map_err(|e| ProtocolError::Io(std::io::Error::other(e.to_string())))?;
                engine.metrics.replication_records_applied_total.inc_by(n);
                engine.metrics.replication_bytes_applied_total.inc_by(bytes as u64);
                engine.replication.set_receiver(|s| {
                    s.applied_seqno = applied;
                    if failover.is_some() {
                        s.failover_seqno = failover;
                    }
                });
                if let Some(seqno) = failover {
                    tracing::info!(seqno, "received a failover record: the primary has handed over");
                }
                applied
            };
            protocol::write_json(wr, Kind::Ack, &Ack { seqno: applied }).await?;
        }
    };
    tokio::select! {
        () = reader => Err(ProtocolError::Closed),
        r = applier => r,
    }
}
