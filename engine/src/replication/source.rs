//! The source side: one task per outgoing stream. It connects to the receiver, proves and
//! checks the shared secret, sends its history, and streams journal records from the seqno
//! the receiver asks for — first what the journal already holds (catch-up), then each new
//! commit as it happens. Acknowledgements tell it each receiver's backlog and lag. On any
//! error it reconnects with back-off; if this instance's journal is rolled back under it, it
//! reconnects so that the two sides negotiate again.
//!
//! While it runs, the stream pins the journal from the first seqno its receiver has not
//! acknowledged (from the journal's start until the receiver first says where it is), so
//! trimming leaves those records alone unless a retention limit says otherwise. A receiver
//! that needs records the journal no longer holds is told so (`needs_reseed`) and nothing is
//! streamed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Context;
use super::protocol::{
    self, Ack, Auth, Challenge, Heartbeat, Hello, Kind, Mode, ProtocolError, SeedEnd, SeedRequest, Start,
    StreamsUpdate,
};
use crate::base::error_chain;
use crate::storage::meta::{Role, SourceLink};
use crate::storage::retention::Pin;
use crate::storage::seed::{CHUNK_BYTES_MIN, CHUNK_BYTES_TARGET, Node, SeedHeader, read_snapshot};
use crate::storage::{StoreError, now_micros};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The receiver may roll back before answering; that can take a while for a big backlog.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// After a snapshot the receiver makes a file of the whole data durable and counts its keys.
const SEEDED_START_TIMEOUT: Duration = Duration::from_secs(3600);
/// A snapshot frame the receiver does not take within this long ends the seeding.
const SEED_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Sent-but-unacknowledged records remembered for the lag computation.
const INFLIGHT_TIMES_MAX: usize = 100_000;
/// Frames sent and not yet acknowledged before the source waits: while the receiver makes one
/// frame durable the next accumulates every commit made meanwhile, so frames grow to match the
/// receiver's pace instead of costing it one fsync per commit group.
const FRAMES_IN_FLIGHT_MAX: usize = 2;
/// A receiver behind (the last frame sent was full: waiting would not grow the next) is sent
/// full frames up to these bounds unacknowledged, so that it merges many into one durable
/// apply; two at a time made a catch-up pay one fsync and one round trip per frame.
const FULL_FRAMES_IN_FLIGHT_MAX: usize = 16;
const FULL_FRAMES_IN_FLIGHT_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    pub receiver: String,
    pub addr: String,
    /// An SI stream (rather than BC).
    #[serde(default)]
    pub si: bool,
    /// connecting, seeding, streaming, rollback_required, needs_reseed, error, stopped
    pub state: String,
    pub sent_seqno: u64,
    pub acked_seqno: u64,
    pub backlog: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub records_sent: u64,
    pub bytes_sent: u64,
    /// Commit times of sent, unacknowledged records (for lag).
    #[serde(skip)]
    inflight: VecDeque<(u64, u64)>,
    /// The pins' epoch this stream's acknowledgements are counted in: after a rollback they
    /// name records that may be gone, until the next connection starts afresh.
    #[serde(skip)]
    epoch: u64,
}

pub struct SourceHandle {
    status: Arc<Mutex<SourceStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub link: SourceLink,
}

impl SourceHandle {
    pub fn status(&self) -> SourceStatus {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The seqno acknowledged, if counted in the pins' `epoch` (no rollback since).
    pub fn acked_in(&self, epoch: u64) -> Option<u64> {
        let status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (status.epoch == epoch).then_some(status.acked_seqno)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the stream and waits until its task has ended: nothing is sent after this.
    pub async fn stop_and_wait(self) {
        self.stop();
        let _ = self.task.await;
    }
}

/// Starts the task for `link`; it runs until stopped.
pub fn spawn(ctx: Arc<Context>, link: SourceLink) -> SourceHandle {
    let status = Arc::new(Mutex::new(SourceStatus {
        receiver: link.receiver.clone(),
        addr: link.addr.clone(),
        si: link.si,
        state: "connecting".into(),
        ..Default::default()
    }));
    let (stop, stop_rx) = watch::channel(false);
    let pin = Arc::new(
        ctx.store.pin_journal(&format!("the stream to {}", link.receiver), ctx.store.journal_first()),
    );
    let task = tokio::spawn(run(ctx, link.clone(), status.clone(), pin, stop_rx));
    SourceHandle { status, stop, task, link }
}

fn update(status: &Mutex<SourceStatus>, f: impl FnOnce(&mut SourceStatus)) {
    f(&mut status.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
}

async fn run(
    ctx: Arc<Context>,
    link: SourceLink,
    status: Arc<Mutex<SourceStatus>>,
    pin: Arc<Pin>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            break;
        }
        update(&status, |s| s.state = "connecting".into());
        // Stop first: once asked to stop, nothing more is streamed.
        let outcome = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = stream_once(&ctx, &link, &status, &pin) => r,
        };
        match outcome {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                if let ProtocolError::Refused { code, term: Some(term), .. } = &e
                    && code == "stale_term"
                {
                    step_down(&ctx, *term).await;
                }
                if let ProtocolError::HistoryChanged = e {
                    // Not an error: reconnect at once with the new history.
                    tracing::info!(receiver = %link.receiver, "history changed; negotiating again");
                    backoff = Duration::from_millis(100);
                    continue;
                }
                let message = error_chain(&e);
                let state = match &e {
                    ProtocolError::Refused { code, .. } if code == "rollback_required" => "rollback_required",
                    ProtocolError::Refused { code, .. } if code == "needs_reseed" => "needs_reseed",
                    ProtocolError::NeedsReseed(_) => "needs_reseed",
                    _ => "error",
                };
                if state == "needs_reseed" {
                    tracing::error!(receiver = %link.receiver, addr = %link.addr, error = %message, "the receiver needs re-seeding: this journal no longer holds what it needs");
                } else {
                    tracing::warn!(receiver = %link.receiver, addr = %link.addr, error = %message, "replication stream interrupted");
                }
                ctx.metrics.replication_errors_total.with_label_values(&[state]).inc();
                update(&status, |s| {
                    s.state = state.into();
                    s.last_error = Some(message);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
    update(&status, |s| s.state = "stopped".into());
}

/// A receiver has seen a higher term of this instance's family: another instance has been
/// promoted since. Adopt the term and, if this instance still takes writes as a primary,
/// stop (turn replicating secondary) — at most one writable primary per family.
async fn step_down(ctx: &Context, term: u64) {
    let result = ctx
        .writer
        .update_meta(Box::new(move |meta, _| {
            if meta.term >= term {
                return Ok(None);
            }
            meta.term = term;
            if matches!(meta.role, Role::Primary | Role::SupplementaryPrimary) {
                tracing::warn!(
                    term,
                    "a receiver has seen a higher term: this primary was replaced; turning read-only"
                );
                crate::storage::meta::to_secondary(meta);
            }
            Ok(None)
        }))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record the higher term");
    }
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(d, f).await.map_err(|_| ProtocolError::other("timed out"))?
}

/// One connection: handshake, then stream until an error or a rollback under us.
async fn stream_once(
    ctx: &Arc<Context>,
    link: &SourceLink,
    status: &Arc<Mutex<SourceStatus>>,
    pin: &Arc<Pin>,
) -> Result<(), ProtocolError> {
    let (mut rd, mut wr, secret, nonce_s, challenge) =
        handshake(ctx, &link.addr, Mode::Source, link.si).await?;
    let meta = ctx.store.meta();
    if challenge.name != link.receiver {
        return Err(ProtocolError::Malformed {
            kind: Kind::Challenge,
            reason: format!(
                "{} answers as instance {:?}, not {:?}",
                link.addr, challenge.name, link.receiver
            ),
        });
    }
    // Capture the journal's state before announcing it: a rollback after this point is seen
    // by the generation check below.
    let rollbacks = ctx.store.rollbacks();
    // Positions this connection learns (the receiver's start, its acknowledgements) move the
    // pin only while no rollback has lowered the pins since (it also bumps `rollbacks`).
    let epoch = ctx.store.pins_epoch();
    let history_version = ctx.store.history_version();
    let mut streams_version = ctx.store.streams_version();
    let seqno = ctx.store.committed_seqno();
    let auth = Auth {
        proof: protocol::proof(&secret, "strand-source", &challenge.nonce, &nonce_s),
        history: meta.history.clone(),
        seqno,
        streams: if link.si { Vec::new() } else { meta.streams.clone() },
        journal_first: ctx.store.journal_first(),
        snapshots: !link.si,
        si_snapshots: link.si,
    };
    protocol::write_json(&mut wr, Kind::Auth, &auth).await?;
    let (kind, payload) = timed(START_TIMEOUT, protocol::read_reply(&mut rd)).await?;
    let start: Start = match kind {
        Kind::Start => protocol::parse(kind, &payload)?,
        Kind::Seed => {
            let request: SeedRequest = protocol::parse(kind, &payload)?;
            send_snapshot(ctx, link, status, pin, (epoch, rollbacks), &mut wr, &request).await?;
            // The receiver completes the file and swaps it in before it answers.
            timed(SEEDED_START_TIMEOUT, protocol::expect(&mut rd, Kind::Start)).await?
        }
        got => return Err(ProtocolError::Unexpected { expected: Kind::Start, got }),
    };
    tracing::info!(receiver = %link.receiver, from = start.from, rolled_back_to = ?start.rolled_back_to, "streaming");
    if !pin.set_at(epoch, start.from) {
        return Err(ProtocolError::other("this instance rolled back; negotiating again"));
    }
    let first = ctx.store.journal_first();
    if start.from < first {
        // A retention limit trimmed what it needs since the handshake.
        return Err(ProtocolError::NeedsReseed(format!(
            "{} asks for seqno {} but this journal begins at {first} now; re-seed it",
            link.receiver, start.from
        )));
    }
    update(status, |s| {
        s.state = "streaming".into();
        s.last_error = None;
        s.sent_seqno = start.from.saturating_sub(1);
        s.acked_seqno = start.from.saturating_sub(1);
        s.inflight.clear();
        s.epoch = epoch;
    });

    // Acknowledgements arrive on the read half.
    let ack_status = status.clone();
    let ack_engine = ctx.clone();
    let acked_notify = Arc::new(tokio::sync::Notify::new());
    let ack_wake = acked_notify.clone();
    let ack_pin = pin.clone();
    // Aborted however this connection ends, so that a late acknowledgement of this
    // connection never moves the pin or the status of the next one.
    let mut acks = AbortOnDrop(tokio::spawn(async move {
        loop {
            let ack: Ack = protocol::expect(&mut rd, Kind::Ack).await?;
            if !ack_pin.set_at(epoch, ack.seqno + 1) {
                // Acknowledges records a rollback took off: neither the pin nor WAIT may
                // count them. The main loop ends this connection.
                ack_wake.notify_one();
                continue;
            }
            update(&ack_status, |s| {
                s.acked_seqno = s.acked_seqno.max(ack.seqno);
                while s.inflight.front().is_some_and(|(q, _)| *q <= ack.seqno) {
                    s.inflight.pop_front();
                }
            });
            ack_engine.replication.acks.notify_waiters();
            ack_wake.notify_one();
        }
        #[allow(unreachable_code)]
        Ok::<(), ProtocolError>(())
    }));

    let mut seqno_rx = ctx.store.subscribe();
    let mut next = start.from;
    // Last seqno and bytes of each frame sent and not yet acknowledged.
    let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
    let mut last_frame_full = false;
    loop {
        if ctx.store.rollbacks() != rollbacks {
            return Err(ProtocolError::other("this instance rolled back; negotiating again"));
        }
        let acked = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).acked_seqno;
        while in_flight.front().is_some_and(|(last, _)| *last <= acked) {
            in_flight.pop_front();
        }
        let behind = last_frame_full
            && in_flight.len() < FULL_FRAMES_IN_FLIGHT_MAX
            && in_flight.iter().map(|(_, bytes)| bytes).sum::<usize>() < FULL_FRAMES_IN_FLIGHT_BYTES_MAX;
        if in_flight.len() >= FRAMES_IN_FLIGHT_MAX && !behind {
            tokio::select! {
                _ = acked_notify.notified() => continue,
                // A long apply must not read as a silent source.
                _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                    let beat = Heartbeat { seqno: ctx.store.committed_seqno(), time_micros: now_micros() };
                    protocol::write_json(&mut wr, Kind::Heartbeat, &beat).await?;
                    continue;
                }
                r = &mut acks.0 => {
                    return match r {
                        Ok(Err(e)) => Err(e),
                        _ => Err(ProtocolError::Closed),
                    };
                }
            }
        }
        let committed = *seqno_rx.borrow_and_update();
        if !link.si && ctx.store.streams_version() != streams_version {
            // Metadata is published before the seqno: these states cover every record up
            // to `committed`, which the receiver filters by what it has applied.
            streams_version = ctx.store.streams_version();
            let update = StreamsUpdate { streams: ctx.store.meta().streams };
            protocol::write_json(&mut wr, Kind::Streams, &update).await?;
        }
        if ctx.store.rollbacks() != rollbacks || committed + 1 < next {
            acks.0.abort();
            return Err(ProtocolError::other("this instance rolled back; negotiating again"));
        }
        // Metadata is published before the seqno: records up to `committed` are covered by
        // the history read here. A new record (this instance was promoted, or adopted its own
        // source's new record) must reach the receiver before any transaction under it, or
        // the receiver would file them under the old one and later roll them back.
        if ctx.store.history_version() != history_version {
            acks.0.abort();
            return Err(ProtocolError::HistoryChanged);
        }
        if committed >= next {
            let to = committed.min(next + protocol::BATCH_RECORDS_MAX as u64 - 1);
            // What was just committed is in memory: read here. Older records (a receiver
            // behind the last checkpoint) come from the database file, off this task.
            // A frame holds about BATCH_BYTES_TARGET: a large transaction goes alone.
            let budget = protocol::BATCH_BYTES_TARGET;
            let recent = ctx.store.recent_journal_raw(next, to, budget);
            let read = match recent {
                Some(read) => read,
                None => {
                    let store = ctx.store.clone();
                    tokio::task::spawn_blocking(move || {
                        store.journal_view().and_then(|s| s.journal_raw(next, to, budget))
                    })
                    .await
                    .map_err(ProtocolError::other)?
                }
            };
            let raw = read.map_err(|e| match e {
                StoreError::JournalTrimmed { .. } => ProtocolError::NeedsReseed(format!(
                    "{}; {} must be re-seeded",
                    error_chain(&e),
                    link.receiver
                )),
                e => ProtocolError::other(error_chain(&e)),
            })?;
            // A rollback during the read may have given records it replaced: none are sent.
            if ctx.store.rollbacks() != rollbacks {
                acks.0.abort();
                return Err(ProtocolError::other("this instance rolled back; negotiating again"));
            }
            if raw.is_empty() {
                continue;
            }
            let n = raw.len() as u64;
            let read_bytes: usize = raw.iter().map(|(_, _, b)| b.len()).sum();
            last_frame_full = raw.len() >= protocol::BATCH_RECORDS_MAX || read_bytes >= budget;
            let times: Vec<(u64, u64)> = raw.iter().map(|(s, t, _)| (*s, *t)).collect();
            let payload = protocol::encode_records(&raw.into_iter().map(|(_, _, b)| b).collect::<Vec<_>>());
            protocol::write_frame(&mut wr, Kind::Records, &payload).await?;
            ctx.metrics.replication_records_sent_total.inc_by(n);
            ctx.metrics.replication_bytes_sent_total.inc_by(payload.len() as u64);
            update(status, |s| {
                s.sent_seqno = next + n - 1;
                s.records_sent += n;
                s.bytes_sent += payload.len() as u64;
                for t in times {
                    if s.inflight.len() < INFLIGHT_TIMES_MAX {
                        s.inflight.push_back(t);
                    }
                }
            });
            next += n;
            in_flight.push_back((next - 1, payload.len()));
            continue;
        }
        tokio::select! {
            changed = seqno_rx.changed() => {
                if changed.is_err() {
                    acks.0.abort();
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                protocol::write_json(&mut wr, Kind::Heartbeat, &Heartbeat { seqno: committed, time_micros: now_micros() }).await?;
            }
            r = &mut acks.0 => {
                return match r {
                    Ok(Err(e)) => Err(e),
                    _ => Err(ProtocolError::Closed),
                };
            }
        }
    }
}

/// What the snapshot reader hands the connection.
enum Part {
    Header(Box<SeedHeader>),
    Nodes(Vec<Node>),
}

/// Sends a snapshot of this instance's database file to a receiver that asked to be seeded:
/// its header, its nodes in chunks, and its end. The journal is pinned from the snapshot's
/// seqno on first, so the records that follow it stay for the stream.
async fn send_snapshot(
    ctx: &Arc<Context>,
    link: &SourceLink,
    status: &Arc<Mutex<SourceStatus>>,
    pin: &Arc<Pin>,
    (epoch, rollbacks): (u64, u64),
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    request: &SeedRequest,
) -> Result<(), ProtocolError> {
    let rolled_back =
        || ProtocolError::other("this instance rolled back during the seeding; negotiating again");
    update(status, |s| {
        s.state = "seeding".into();
        s.last_error = None;
    });
    let first = ctx.store.journal_first();
    tracing::info!(receiver = %link.receiver, wanted = request.wanted, journal_first = first, "seeding the receiver from a snapshot");
    let started = std::time::Instant::now();
    let rate = ctx.replication.seed_rate_bytes;
    // Smaller chunks under a rate limit, so that it is kept smoothly.
    let chunk_bytes = rate.map_or(CHUNK_BYTES_TARGET, |r| {
        usize::try_from(r / 8).unwrap_or(usize::MAX).clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_TARGET)
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(4);
    let store = ctx.store.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let chunks = tx.clone();
        read_snapshot(
            &store,
            chunk_bytes,
            |header| tx.blocking_send(Part::Header(Box::new(header))).is_ok(),
            |nodes| chunks.blocking_send(Part::Nodes(nodes)).is_ok(),
        )
    });
    let mut seqno = 0;
    let mut bytes = 0u64;
    let closing = || ProtocolError::other("this instance's database is being reopened");
    while let Some(part) = rx.recv().await {
        // The writer closing the file (after an I/O error) waits for the snapshot's reader:
        // dropping the channel lets it go at once.
        if ctx.store.is_closing() {
            return Err(closing());
        }
        match part {
            Part::Header(header) => {
                seqno = header.seqno;
                if !pin.set_at(epoch, header.seqno + 1) {
                    return Err(rolled_back());
                }
                seed_write(protocol::write_json(wr, Kind::SeedHeader, &*header)).await?;
            }
            Part::Nodes(nodes) => {
                let payload = protocol::encode_nodes(&nodes);
                bytes += payload.len() as u64;
                seed_write(protocol::write_frame(wr, Kind::SeedNodes, &payload)).await?;
                ctx.metrics.replication_bytes_sent_total.inc_by(payload.len() as u64);
                if let Some(rate) = rate {
                    // Not ahead of the rate: sent bytes take at least bytes / rate seconds.
                    // Heartbeats meanwhile, so a slow rate never reads as a silent source.
                    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                    while let Some(wait) = due.checked_sub(started.elapsed()).filter(|w| !w.is_zero()) {
                        tokio::time::sleep(wait.min(HEARTBEAT_INTERVAL)).await;
                        if ctx.store.is_closing() {
                            return Err(closing());
                        }
                        let beat = Heartbeat { seqno, time_micros: now_micros() };
                        seed_write(protocol::write_json(wr, Kind::Heartbeat, &beat)).await?;
                    }
                }
            }
        }
    }
    let nodes =
        reader.await.map_err(ProtocolError::other)?.map_err(|e| ProtocolError::other(error_chain(&e)))?;
    // A rollback since the handshake may have taken records the snapshot holds: the receiver
    // must not install it (it would hold transactions the family no longer has).
    if ctx.store.rollbacks() != rollbacks || ctx.store.pins_epoch() != epoch {
        return Err(rolled_back());
    }
    seed_write(protocol::write_json(wr, Kind::SeedEnd, &SeedEnd { nodes })).await?;
    update(status, |s| s.bytes_sent += bytes);
    tracing::info!(
        receiver = %link.receiver, seqno, nodes, bytes, seconds = started.elapsed().as_secs_f64(),
        "snapshot sent"
    );
    Ok(())
}

/// Writes one frame of a seeding, giving up on a receiver that does not take it.
async fn seed_write(
    write: impl std::future::Future<Output = Result<(), ProtocolError>>,
) -> Result<(), ProtocolError> {
    tokio::time::timeout(SEED_WRITE_TIMEOUT, write)
        .await
        .map_err(|_| ProtocolError::other("the receiver stopped taking the snapshot"))?
}

/// A task aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fills in backlog and lag from the committed seqno.
pub fn finish_status(mut s: SourceStatus, committed: u64) -> SourceStatus {
    s.backlog = committed.saturating_sub(s.acked_seqno);
    s.lag_seconds =
        s.inflight.front().map(|(_, t)| now_micros().saturating_sub(*t) as f64 / 1e6).unwrap_or(0.0);
    s
}

type Handshaken =
    (tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf, Vec<u8>, String, Challenge);

/// Connects, says hello and checks that the receiver proves the shared secret. Returns the
/// connection halves, the secret, our nonce and the receiver's challenge (for our proof).
async fn handshake(ctx: &Context, addr: &str, mode: Mode, si: bool) -> Result<Handshaken, ProtocolError> {
    let secret = ctx.replication.secret.clone().ok_or(ProtocolError::Auth)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ProtocolError::other(format!("connecting to {addr} timed out")))??;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let meta = ctx.store.meta();
    let nonce_s = protocol::nonce();
    let hello = Hello {
        protocol: protocol::PROTOCOL_VERSION,
        mode,
        name: meta.name.clone(),
        creation_id: meta.creation_id.clone(),
        nonce: nonce_s.clone(),
        si,
        supplementary: meta.supplementary,
        term: meta.term,
        binary_version: crate::VERSION.to_owned(),
    };
    protocol::write_json(&mut wr, Kind::Hello, &hello).await?;
    let challenge: Challenge = timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::Challenge)).await?;
    if !crate::version::protocol_compatible(challenge.protocol) {
        return Err(ProtocolError::Version(crate::version::protocol_refusal(
            &challenge.name,
            &challenge.binary_version,
            challenge.protocol,
        )));
    }
    if !protocol::verify(&secret, "strand-receiver", &nonce_s, &challenge.nonce, &challenge.proof) {
        tracing::warn!(addr, "receiver failed to prove the replication secret; not streaming to it");
        return Err(ProtocolError::Auth);
    }
    Ok((rd, wr, secret, nonce_s, challenge))
}

/// Asks the instance whose replication listener is at `addr` for its history and seqno
/// (rollback -fetchresync).
pub async fn query(ctx: &Context, addr: &str) -> Result<protocol::HistoryAnswer, ProtocolError> {
    let (mut rd, mut wr, secret, nonce_s, challenge) = handshake(ctx, addr, Mode::Query, false).await?;
    let meta = ctx.store.meta();
    let auth = Auth {
        proof: protocol::proof(&secret, "strand-source", &challenge.nonce, &nonce_s),
        history: meta.history,
        seqno: ctx.store.committed_seqno(),
        streams: Vec::new(),
        journal_first: ctx.store.journal_first(),
        snapshots: false,
        si_snapshots: false,
    };
    protocol::write_json(&mut wr, Kind::Auth, &auth).await?;
    timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::History)).await
}
