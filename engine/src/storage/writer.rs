//! The writer: the single thread that commits, with group commit on the journal as the
//! write-ahead log (decision 0002).
//!
//! Connections submit transactions as closures over a [`TxnView`]. The writer takes every
//! transaction waiting in its queue (up to [`GROUP_COMMIT_TXNS_MAX`]), runs them one after
//! another — each with its own journal seqno and journal record — against the overlay over
//! the database file, writing into the overlay's active generation under its seqno (invisible
//! to readers, who read at the committed seqno). It then appends the group's records to the
//! current journal segment with one write and syncs it (one fsync for the whole group). Only
//! then is the committed seqno published and does any submitter hear back, so an
//! acknowledged transaction is always durable. The [`super::checkpoint`] thread brings the
//! database file up to date in the background.
//!
//! The writer's state sits behind a lock that the writer thread holds while it runs work.
//! A submitter that finds the writer thread idle runs its own group under that lock on its
//! own thread ([`Writer::lead`]), saving the two thread wake-ups a queued commit costs.
//!
//! A transaction that aborts (a command error inside EXEC) is undone from its before-images
//! before the next one runs and consumes no seqno. A failed group fails every transaction in
//! it; its versions leave the overlay, its frames are cut off the segment, and the seqnos are
//! handed out again.
//!
//! Received BC records are applied the same way, one frame as one group, when they change
//! no metadata. A rollback pauses the checkpointer and takes its records off the overlay,
//! the segments and, if the checkpoint is past its target, the file ([`rollback`]). Rare work
//! changes the database file directly in one durable redb commit, as before the journal
//! became the log: a metadata change, a system key, an SI apply, a BC frame that changes
//! metadata. It first checkpoints everything and removes every segment, so the file holds
//! the whole journal and recovery has nothing to replay past it.
//!
//! Disk full: before each batch the writer checks the free space of the data volume and
//! refuses the batch with [`StoreError::DiskFull`] when it is below the reserve, so redb never
//! meets ENOSPC in the common case and reads go on. If an I/O error does reach redb (redb then
//! refuses all further access), the writer closes and reopens the file, failing writes with
//! [`StoreError::Recovering`] until that succeeds.

mod rollback;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::journal::{KeyChange, Record, RecordKind};
use super::meta::{HistoryRecord, InstanceMeta, LastRollback, StreamState};
use super::overlay::Generation;
use super::retention::stored_bytes as record_bytes;
use super::segment::SegmentWriter;
use super::syncer::Syncer;
use super::{
    DATA, JOURNAL, META, META_INSTANCE, Pairs, Range, STREAMS, Snapshot, Store, StoreError, StreamSeqnos,
    now_micros, read_meta, redb_err, sync_dir,
};
use crate::base::error_chain;
use crate::limits::{
    CHECKPOINT_INTERVAL, CHECKPOINT_OVERLAY_BYTES, GROUP_COMMIT_TXNS_MAX, SEGMENT_BYTES,
    WRITER_QUEUE_TXNS_MAX,
};
use crate::metrics::Metrics;

/// Hash buckets recording the last seqno that wrote any key hashing to them; WATCH compares
/// against them. Collisions can only cause a spurious abort, never a missed conflict.
const WATCH_BUCKETS: usize = 1 << 16;
/// The WATCH bucket of a key.
fn bucket(key: &[u8]) -> usize {
    // Truncation is the point: any bits serve as a bucket index.
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize) % WATCH_BUCKETS
}

/// How often a writer with a closed database retries opening it.
const REOPEN_INTERVAL: Duration = Duration::from_millis(500);

/// Why a transaction program gave up.
#[derive(Debug)]
pub enum Abort {
    /// A command error to report to the client, e.g. "ERR value is not an integer".
    Command(String),
    /// The storage failed underneath the transaction.
    Store(StoreError),
}

impl From<StoreError> for Abort {
    fn from(e: StoreError) -> Self {
        Abort::Store(e)
    }
}

/// A transaction's body: runs inside the writer against the current state.
pub type TxnProgram<T> = Box<dyn FnOnce(&mut TxnView<'_, '_>) -> Result<T, Abort> + Send>;

/// A blocking transaction's body (BLPOP and friends): `Ok(None)` when there is nothing to
/// serve yet — it then waits, and runs again right after each transaction that writes one
/// of its keys, in the order the waiters blocked.
pub type BlockingProgram<T> = Box<dyn FnMut(&mut TxnView<'_, '_>) -> Result<Option<T>, Abort> + Send>;

/// What a queued transaction runs.
enum Program<T> {
    Once(TxnProgram<T>),
    Blocking { id: u64, keys: Vec<Vec<u8>>, program: BlockingProgram<T> },
}

/// A blocked transaction waiting for one of its keys to be written.
struct Waiter<T> {
    /// Order of blocking: waiters are served oldest first.
    seq: u64,
    id: u64,
    keys: Vec<Vec<u8>>,
    program: BlockingProgram<T>,
    reply: oneshot::Sender<Result<Committed<T>, TxnFailure>>,
    enqueued: Instant,
}

/// Blocked transactions, oldest first; shared by the writer and the handles that cancel.
type Waiters<T> = Arc<std::sync::Mutex<std::collections::VecDeque<Waiter<T>>>>;

/// A transaction that committed (or, for `WatchConflict`, was skipped as WATCH demands).
#[derive(Debug)]
pub enum Committed<T> {
    /// `seqno` is `None` when the transaction changed nothing and so wrote no journal record.
    Done {
        output: T,
        seqno: Option<u64>,
    },
    WatchConflict,
}

/// Why a transaction did not commit. Cloneable because a failed commit fails a whole batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnFailure {
    #[error("{0}")]
    Aborted(String),
    #[error("{message}")]
    Store { code: &'static str, message: String },
}

impl TxnFailure {
    fn store(e: &StoreError) -> Self {
        TxnFailure::Store { code: e.code(), message: error_chain(e) }
    }

    /// The stable error code ([`StoreError::code`], or `aborted`).
    pub fn code(&self) -> &'static str {
        match self {
            TxnFailure::Aborted(_) => "aborted",
            TxnFailure::Store { code, .. } => code,
        }
    }
}

/// A transaction ready to queue (see [`Writer::request`]).
pub struct TxnRequest<T> {
    /// Keys watched by the client, each with the committed version at the time it was watched.
    watch: Vec<(Vec<u8>, u64)>,
    program: Program<T>,
    reply: oneshot::Sender<Result<Committed<T>, TxnFailure>>,
    enqueued: Instant,
    /// The engine's own housekeeping (expiry, reclaim): not bounded by
    /// `--max-txn-image-bytes`, and its removals of elements touch nobody's WATCH.
    housekeeping: bool,
}

/// Clients read the engine's own keys but never write them.
fn system_key_guard(key: &[u8]) -> Result<(), Abort> {
    if super::format::is_system_key(key) {
        return Err(Abort::Command(format!(
            "ERR {} belongs to the engine (keys under {} are written only through its admin API)",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(super::format::SYSTEM_PREFIX)
        )));
    }
    Ok(())
}

/// A journal record without changes that a metadata update commits with it: a failover
/// record, or an SI stream's base or resync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub kind: RecordKind,
    /// 0 for a failover record; the SI stream for a base or resync record.
    pub stream: u8,
    /// For a base or resync record: the stream's position from here on.
    pub stream_seqno: u64,
}

impl Marker {
    pub fn failover() -> Self {
        Marker { kind: RecordKind::Failover, stream: 0, stream_seqno: 0 }
    }
}

/// A change to the instance metadata, optionally with a marker record committed in the same
/// transaction. Gets the metadata and the committed seqno (the marker, if any, takes the next).
pub type MetaUpdate = Box<dyn FnOnce(&mut InstanceMeta, u64) -> Result<Option<Marker>, String> + Send>;

/// What an instance was when it asked for a snapshot: the swap goes ahead only if it still is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedExpectation {
    pub seqno: u64,
    pub term: u64,
    pub receiver: Option<super::meta::ReceiverConfig>,
    pub streams: StreamSeqnos,
}

impl SeedExpectation {
    pub fn of(store: &Store) -> Self {
        let meta = store.meta();
        SeedExpectation {
            seqno: store.committed_seqno(),
            term: meta.term,
            receiver: meta.receiver,
            streams: store.stream_seqnos(),
        }
    }

    /// How the seeded file joins the instance: by its receiver's mode.
    pub fn joining(&self) -> super::seed::Joining {
        if self.receiver.as_ref().is_some_and(|r| r.si) {
            super::seed::Joining::Si { committed: self.seqno, streams: self.streams }
        } else {
            super::seed::Joining::Bc
        }
    }
}

/// How received records are applied.
#[derive(Debug, Clone)]
pub enum ApplyMode {
    /// BC: the records continue this instance's journal exactly (seqnos, stream tags, times),
    /// and the source's history and SI stream states are adopted up to what was applied.
    Bc { source_streams: Vec<StreamState> },
    /// SI into stream `stream`: each record becomes a new local transaction tagged (stream,
    /// the record's seqno), its before-images taken from this instance's own data.
    Si { stream: u8 },
}

/// Everything the writer does; each kind commits atomically.
enum Work<T> {
    /// Application transactions, in order (one connection's pipeline travels as one message):
    /// folded into group commits.
    Txns(Vec<TxnRequest<T>>),
    /// Records received from a replication source, applied as they are (seqnos, tags, times).
    Apply {
        records: Vec<Record>,
        source_history: Vec<HistoryRecord>,
        mode: ApplyMode,
        reply: oneshot::Sender<Result<u64, TxnFailure>>,
    },
    /// Roll back to `to_seqno`, writing the rolled-off transactions to a log first.
    Rollback {
        to_seqno: u64,
        new_epoch: bool,
        reason: String,
        reply: oneshot::Sender<Result<Option<LastRollback>, TxnFailure>>,
    },
    Meta {
        update: MetaUpdate,
        reply: oneshot::Sender<Result<InstanceMeta, TxnFailure>>,
    },
    /// One of the engine's own keys written as a journaled transaction: the key an upgrade
    /// needs prepared (an update), or the format key (an `Upgrade` record that also moves the
    /// data to that format).
    System {
        key: Vec<u8>,
        value: Vec<u8>,
        upgrade_to: Option<u32>,
        reply: oneshot::Sender<Result<u64, TxnFailure>>,
    },
    /// Nothing to run: the writer thread looks at its state (a leader left it a file to
    /// close, [`WriterThread::close_owed`]).
    Wake,
    /// Freeze the overlay's active generation for the checkpointer (it asks when the
    /// generation has waited a checkpoint interval).
    Freeze,
    /// Checkpoint everything (a backup reads the database file next); replies with the seqno
    /// the file now holds.
    Checkpoint {
        reply: oneshot::Sender<Result<u64, TxnFailure>>,
    },
    /// Replace the database file with a complete seeded one (storage::seed); replies with the
    /// seqno it holds.
    InstallSeed {
        path: std::path::PathBuf,
        header: Box<super::seed::SeedHeader>,
        expected: SeedExpectation,
        reply: oneshot::Sender<Result<u64, TxnFailure>>,
    },
}

/// The writer's bounds, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Groups are refused while the data volume has less free space than this.
    pub disk_reserve_bytes: u64,
    /// Most bytes of images one client transaction may journal (`--max-txn-image-bytes`).
    pub max_txn_image_bytes: usize,
    /// The active overlay generation is frozen and checkpointed past this (`--checkpoint-bytes`).
    pub checkpoint_bytes: usize,
    /// A journal segment is closed past this (`--journal-segment-bytes`).
    pub segment_bytes: u64,
    /// How much journal the database file keeps.
    pub retention: super::retention::Retention,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            disk_reserve_bytes: crate::limits::DISK_RESERVE_BYTES_DEFAULT,
            max_txn_image_bytes: crate::limits::TXN_IMAGE_BYTES_DEFAULT,
            checkpoint_bytes: CHECKPOINT_OVERLAY_BYTES,
            segment_bytes: SEGMENT_BYTES,
            retention: super::retention::Retention::default(),
        }
    }
}

/// Handle used to submit work; cheap to clone. The writer stops when all are dropped.
pub struct Writer<T> {
    /// The writer's state. The writer thread holds it while it runs work it took from the
    /// queue; a submitter that finds it free with nothing queued runs its own group under it
    /// ([`Writer::lead`]). Declared before `tx`, so that a handle lets go of the state before
    /// its end of the queue closes: the writer thread, which stops once the queue is closed,
    /// always drops the state itself.
    state: Arc<Mutex<WriterThread<T>>>,
    tx: mpsc::Sender<Work<T>>,
    waiters: Waiters<T>,
    /// Messages sent to the queue that the writer thread has not yet taken under `state`.
    queued: Arc<AtomicUsize>,
}

impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Writer {
            state: Arc::clone(&self.state),
            tx: self.tx.clone(),
            waiters: self.waiters.clone(),
            queued: Arc::clone(&self.queued),
        }
    }
}

/// The writer thread's end of the queue. It counts what it takes in [`Writer::queued`]
/// only while it holds the state, so that a submitter holding the state and reading 0 there
/// knows that no work sent before its own is waiting to run.
struct Queue<T> {
    rx: mpsc::Receiver<Work<T>>,
    queued: Arc<AtomicUsize>,
}

impl<T> Queue<T> {
    /// Takes queued work without waiting (under the state's lock).
    fn try_recv(&mut self) -> Result<Work<T>, mpsc::error::TryRecvError> {
        let work = self.rx.try_recv()?;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        Ok(work)
    }

    /// Waits for work, without the state's lock; [`Queue::taken`] counts it once the lock
    /// is held again. `None` once every handle is gone.
    fn wait(&mut self) -> Option<Work<T>> {
        self.rx.blocking_recv()
    }

    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(state: &Mutex<WriterThread<T>>) -> Result<std::sync::MutexGuard<'_, WriterThread<T>>, ()> {
    // A panic while the state was held (in the writer thread or a leading submitter) may have
    // left it half changed: the writer thread stops without a final checkpoint, and every
    // write after fails as the writer gone; the next start replays the journal.
    state.lock().map_err(|_: PoisonError<_>| {
        tracing::error!("a commit panicked while it held the writer's state; the writer stops");
    })
}

impl<T: Send + 'static> Writer<T> {
    /// Starts the writer thread for `store`.
    pub fn spawn(
        store: Arc<Store>,
        limits: WriterLimits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Writer<T>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_TXNS_MAX);
        let queued = Arc::new(AtomicUsize::new(0));
        let streams = store.stream_seqnos();
        let supplementary = store.meta().supplementary;
        let waiters: Waiters<T> = Arc::default();
        let weak = tx.downgrade();
        let counter = Arc::clone(&queued);
        let ask_freeze = Box::new(move || {
            if let Some(Ok(permit)) = weak.upgrade().as_ref().map(mpsc::Sender::try_reserve) {
                counter.fetch_add(1, Ordering::SeqCst);
                permit.send(Work::Freeze);
            }
        });
        let checkpointer = Checkpointer::spawn(store.clone(), metrics.clone(), limits.retention, ask_freeze)?;
        let state = WriterThread {
            checkpointer,
            spare: None,
            blocked_in_group: Vec::new(),
            syncer: {
                let store = store.clone();
                Syncer::spawn(move |group, synced| finish_synced(&store, group, synced))?
            },
            segment: None,
            broken_segment: None,
            segments_exist: true,
            rollback_cut: None,
            active_since: Instant::now(),
            applied_touched: Vec::new(),
            serve_after_apply: Vec::new(),
            waiter_seq: 0,
            counted: (0, 0, 0),
            journal_grown: 0,
            waiters: waiters.clone(),
            store,
            limits,
            metrics,
            buckets: vec![0; WATCH_BUCKETS],
            version: 0,
            pending: None,
            streams,
            supplementary,
            replaced_pending: false,
            solo: true,
            leading: false,
            close_owed: false,
        };
        let state = Arc::new(Mutex::new(state));
        let queue = Queue { rx, queued: Arc::clone(&queued) };
        let thread_state = Arc::clone(&state);
        let handle = std::thread::Builder::new()
            .name("strand-writer".into())
            .spawn(move || WriterThread::run(&thread_state, queue))?;
        Ok((Writer { state, tx, waiters, queued }, handle))
    }

    /// Sends work to the writer thread's queue.
    async fn send(&self, work: Work<T>) -> Result<(), TxnFailure> {
        // The permit first: the count is raised only for work that is then sent (a
        // submitter that gives up waiting for room leaves it as it was).
        let permit = self.tx.reserve().await.map_err(|_| TxnFailure::store(&StoreError::WriterGone))?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        permit.send(work);
        Ok(())
    }

    /// Runs `requests` as one commit group on the caller's own thread when the writer thread
    /// is idle — its state free, nothing queued — and the group needs nothing of the writer
    /// thread's (see [`WriterThread::may_lead`]); else gives them back to be queued.
    ///
    /// A client that waits for each reply before it sends more (one connection, or a few)
    /// always finds the writer thread asleep: queueing would cost two thread wake-ups per
    /// commit, the writer's and then the client task's, on top of the sync. Leading the group
    /// itself, the task blocks for the sync as the writer thread would have (a single-
    /// threaded server blocks its whole loop there), and its replies are ready when it
    /// returns. Under load the state is held or work is queued, and groups form in the writer
    /// thread as before. A leader never overtakes queued work: work sent earlier by anyone
    /// is either counted in `queued` or already run when the state is taken. (A connection's
    /// own batches cannot overtake one another either way: it waits for one batch's replies
    /// before it reads the next.)
    fn lead(&self, requests: Vec<TxnRequest<T>>) -> Option<Vec<TxnRequest<T>>> {
        if requests.len() > GROUP_COMMIT_TXNS_MAX || self.queued.load(Ordering::SeqCst) != 0 {
            return Some(requests);
        }
        let Ok(mut state) = self.state.try_lock() else {
            return Some(requests);
        };
        if self.queued.load(Ordering::SeqCst) != 0 || !state.may_lead() {
            return Some(requests);
        }
        state.metrics.commit_groups_led_total.inc();
        let mut batch = requests;
        state.leading = true;
        state.commit_batch(&mut batch, None);
        state.leading = false;
        // Work queued while this group synced: submitters are not alone after all, and the
        // writer thread forms the next groups.
        state.solo = self.queued.load(Ordering::SeqCst) == 0;
        if state.close_owed {
            // The file is closed and reopened by the writer thread (closing waits for its
            // readers, which a submitter's thread must not): wake it, unless work queued
            // meanwhile does.
            if let Ok(permit) = self.tx.try_reserve() {
                self.queued.fetch_add(1, Ordering::SeqCst);
                permit.send(Work::Wake);
            }
        }
        None
    }

    /// Submits a transaction and waits until it is durable (or failed).
    pub async fn submit(
        &self,
        watch: Vec<(Vec<u8>, u64)>,
        program: TxnProgram<T>,
    ) -> Result<Committed<T>, TxnFailure> {
        let rx = self.enqueue(watch, program).await?;
        rx.await.unwrap_or_else(|_| Err(TxnFailure::store(&StoreError::WriterGone)))
    }

    /// Queues a transaction and returns where its outcome will arrive.
    pub async fn enqueue(
        &self,
        watch: Vec<(Vec<u8>, u64)>,
        program: TxnProgram<T>,
    ) -> Result<oneshot::Receiver<Result<Committed<T>, TxnFailure>>, TxnFailure> {
        let (request, rx) = Self::request(watch, program);
        self.enqueue_all(vec![request]).await?;
        Ok(rx)
    }

    /// A transaction to queue with [`Writer::enqueue_all`], and where its outcome will arrive.
    pub fn request(
        watch: Vec<(Vec<u8>, u64)>,
        program: TxnProgram<T>,
    ) -> (TxnRequest<T>, oneshot::Receiver<Result<Committed<T>, TxnFailure>>) {
        let (reply, rx) = oneshot::channel();
        (
            TxnRequest {
                watch,
                program: Program::Once(program),
                reply,
                enqueued: Instant::now(),
                housekeeping: false,
            },
            rx,
        )
    }

    /// Runs the engine's own housekeeping transaction (the expiry and reclaim cycles): it
    /// is never refused for its size (each bounds its own work), and its removal of a
    /// deleted collection's elements does not count as a write of the key for WATCH or
    /// blocked clients (a new collection of that name may exist).
    pub async fn submit_housekeeping(&self, program: TxnProgram<T>) -> Result<Committed<T>, TxnFailure> {
        let (mut request, rx) = Self::request(Vec::new(), program);
        request.housekeeping = true;
        self.enqueue_all(vec![request]).await?;
        rx.await.unwrap_or_else(|_| Err(TxnFailure::store(&StoreError::WriterGone)))
    }

    /// A blocking transaction to queue with [`Writer::enqueue_all`]: it runs once in queue
    /// order; if it has nothing to serve it waits (see [`BlockingProgram`]) until served or
    /// cancelled with [`Writer::unblock`]`(id)`.
    pub fn blocking_request(
        id: u64,
        keys: Vec<Vec<u8>>,
        program: BlockingProgram<T>,
    ) -> (TxnRequest<T>, oneshot::Receiver<Result<Committed<T>, TxnFailure>>) {
        let (reply, rx) = oneshot::channel();
        (
            TxnRequest {
                watch: Vec::new(),
                program: Program::Blocking { id, keys, program },
                reply,
                enqueued: Instant::now(),
                housekeeping: false,
            },
            rx,
        )
    }

    /// Cancels blocked transaction `id` (its timeout passed, or its client left). `false`
    /// when it is not waiting — not yet queued, or already served: its reply then arrives.
    pub fn unblock(&self, id: u64) -> bool {
        let mut waiters = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// How many transactions are blocked (INFO's `blocked_clients`).
    pub fn blocked(&self) -> usize {
        self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Queues transactions in order as one message: a pipelining connection hands the writer
    /// its whole batch at once. If the writer is gone, each request's receiver sees its
    /// sender dropped.
    pub async fn enqueue_all(&self, requests: Vec<TxnRequest<T>>) -> Result<(), TxnFailure> {
        if requests.is_empty() {
            return Ok(());
        }
        match self.lead(requests) {
            None => Ok(()),
            Some(requests) => self.send(Work::Txns(requests)).await,
        }
    }

    async fn call<R>(
        &self,
        work: Work<T>,
        rx: oneshot::Receiver<Result<R, TxnFailure>>,
    ) -> Result<R, TxnFailure> {
        self.send(work).await?;
        rx.await.unwrap_or_else(|_| Err(TxnFailure::store(&StoreError::WriterGone)))
    }

    /// Applies replicated records and adopts the source's history for them. Returns, once
    /// durable, the last seqno applied in the source's numbering: the journal seqno for BC
    /// (the same on both sides), the stream seqno for SI.
    pub async fn apply(
        &self,
        records: Vec<Record>,
        source_history: Vec<HistoryRecord>,
        mode: ApplyMode,
    ) -> Result<u64, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Apply { records, source_history, mode, reply }, rx).await
    }

    /// Rolls back to `to_seqno`. `new_epoch`: this instance stays an originating primary, so
    /// the seqnos it reuses get a new history record (the seed's A97a). `None` if there was
    /// nothing to roll back.
    pub async fn rollback(
        &self,
        to_seqno: u64,
        new_epoch: bool,
        reason: String,
    ) -> Result<Option<LastRollback>, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Rollback { to_seqno, new_epoch, reason, reply }, rx).await
    }

    /// Changes the instance metadata atomically.
    pub async fn update_meta(&self, update: MetaUpdate) -> Result<InstanceMeta, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Meta { update, reply }, rx).await
    }

    /// Checkpoints everything committed so far into the database file; the seqno it holds.
    pub async fn checkpoint(&self) -> Result<u64, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::Checkpoint { reply }, rx).await
    }

    /// Replaces the database file with the complete seeded file at `path` (built by
    /// [`super::seed::Builder`] in the data directory); the seqno the instance then holds.
    /// `expected` is the instance as it was when it asked for the snapshot: if it committed
    /// anything since, or its term or receiver changed (a promotion, a failover, a stop), the
    /// seeding is abandoned and nothing changes.
    pub async fn install_seed(
        &self,
        path: std::path::PathBuf,
        header: super::seed::SeedHeader,
        expected: SeedExpectation,
    ) -> Result<u64, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::InstallSeed { path, header: Box::new(header), expected, reply }, rx).await
    }

    /// Writes one of the engine's own keys as a journaled transaction; with `upgrade_to`, an
    /// `Upgrade` record that also moves the data to that format. The seqno it got.
    pub async fn system(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        upgrade_to: Option<u32>,
    ) -> Result<u64, TxnFailure> {
        let (reply, rx) = oneshot::channel();
        self.call(Work::System { key, value, upgrade_to, reply }, rx).await
    }
}

/// The state of a transaction's own changes inside a batch.
struct Change {
    before: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
}

/// What a transaction program sees: the data as of every earlier transaction in its batch,
/// plus its own changes, with before-images captured on first touch. Its writes go into the
/// overlay's active generation under the seqno it will get, invisible to readers until the
/// group is durable.
pub struct TxnView<'a, 't> {
    /// The overlay (active generation included) over the database file, read at its newest.
    base: &'a Snapshot,
    active: &'t Generation,
    /// The seqno this transaction gets if it changes anything.
    seqno: u64,
    changes: BTreeMap<Vec<u8>, Change>,
    /// Bytes of node names and images written so far, and the most allowed.
    bytes: usize,
    bytes_max: usize,
    /// Set on a replicating secondary: the error every write gets.
    read_only: Option<&'a str>,
    /// The last node read while this transaction had not written it, and its value: commands
    /// read a node before they write it, and the write then needs no second lookup.
    last_read: std::cell::RefCell<LastRead>,
}

/// A node and the value read for it; the node's buffer is kept from read to read.
#[derive(Default)]
struct LastRead {
    node: Vec<u8>,
    /// `None`: nothing remembered; `Some(None)`: the node is absent.
    value: Option<Option<Vec<u8>>>,
}

impl LastRead {
    fn holds(&self, node: &[u8]) -> bool {
        self.value.is_some() && self.node == node
    }
}

impl TxnView<'_, '_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.after.clone());
        }
        {
            let last = self.last_read.borrow();
            if last.holds(key)
                && let Some(value) = &last.value
            {
                return Ok(value.clone());
            }
        }
        let value = self.base.get(key)?;
        let mut last = self.last_read.borrow_mut();
        last.node.clear();
        last.node.extend_from_slice(key);
        last.value = Some(value.clone());
        Ok(value)
    }

    /// Up to `limit` nodes in `range`, forwards or backwards, as this transaction sees them.
    pub fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, Abort> {
        Ok(self.base.range(range, rev, limit)?)
    }

    /// `key`'s value before a write of it: the remembered read is taken, not copied (the
    /// write makes it stale, and `changes` answers reads of `key` from now on).
    fn read_for_write(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.after.clone());
        }
        let mut last = self.last_read.borrow_mut();
        if last.holds(key)
            && let Some(value) = last.value.take()
        {
            return Ok(value);
        }
        drop(last);
        Ok(self.base.get(key)?)
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Abort> {
        self.set_owned(key, value.to_vec())
    }

    /// [`TxnView::set`] with a value the caller no longer needs (no copy is made of it).
    pub fn set_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), Abort> {
        if let Some(message) = self.read_only {
            return Err(Abort::Command(message.to_owned()));
        }
        system_key_guard(key)?;
        let previous = self.read_for_write(key)?;
        self.active.put(self.seqno, key, previous.as_deref(), Some(&value));
        self.note(key, previous, Some(value))
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Abort> {
        if let Some(message) = self.read_only {
            return Err(Abort::Command(message.to_owned()));
        }
        system_key_guard(key)?;
        let previous = self.read_for_write(key)?;
        let existed = previous.is_some();
        if existed {
            self.active.put(self.seqno, key, previous.as_deref(), None);
            self.note(key, previous, None)?;
        }
        Ok(existed)
    }

    /// Records a write for the journal record. A transaction whose images would pass
    /// `--max-txn-image-bytes` is refused here (and undone whole), before its record could
    /// outgrow memory.
    fn note(&mut self, key: &[u8], previous: Option<Vec<u8>>, after: Option<Vec<u8>>) -> Result<(), Abort> {
        self.bytes += key.len() + previous.as_ref().map_or(0, Vec::len) + after.as_ref().map_or(0, Vec::len);
        match self.changes.get_mut(key) {
            Some(change) => change.after = after,
            None => {
                self.changes.insert(key.to_vec(), Change { before: previous, after });
            }
        }
        if self.bytes > self.bytes_max {
            return Err(Abort::Command(format!(
                "ERR this command would write more than {} bytes of nodes and before-images in one transaction (--max-txn-image-bytes); nothing was changed. Work on data this large in parts (SCAN-family reads with UNLINK, HDEL, SREM, ZREM or LTRIM); deleting a large collection needs no such care",
                self.bytes_max
            )));
        }
        Ok(())
    }

    /// Takes every write of the transaction back out of the overlay (used when the program
    /// aborts or waits): the overlay keeps one version per node and seqno, so removing this
    /// transaction's leaves each node as it stood before.
    fn undo(&mut self) {
        for key in std::mem::take(&mut self.changes).into_keys() {
            self.active.unput(self.seqno, &key);
        }
    }
}

struct WriterThread<T> {
    store: Arc<Store>,
    checkpointer: Checkpointer,
    /// Keys of the clients that blocked in the group being run.
    blocked_in_group: Vec<Vec<u8>>,
    /// Zero-fills the next journal segment's blocks in the background.
    spare: Option<std::thread::JoinHandle<Result<std::path::PathBuf, super::segment::SegmentError>>>,
    /// Syncs a group's journal frames, and publishes it, while the next group runs.
    syncer: Syncer<Group<T>, SyncOutcome<T>>,
    /// The journal segment groups are appended to (`None` until the first group after
    /// start, rotation, or a direct change of the database file).
    segment: Option<SegmentWriter>,
    /// Set when a failed group's frames could not be cut off the segment: the length and
    /// chain value to cut back to before anything else is appended.
    broken_segment: Option<(u64, u32)>,
    /// Whether segments may exist on disk (so a direct change must remove them first).
    segments_exist: bool,
    /// A rollback committed and still owes the segments its cut of the records past this
    /// seqno (see [`rollback`]): nothing is appended, and the file is not changed directly,
    /// until it is done.
    rollback_cut: Option<u64>,
    /// When the active generation was last frozen.
    active_since: Instant,
    /// Keys the last SI apply changed, for blocked clients it may serve.
    applied_touched: Vec<Vec<u8>>,
    /// Keys a batch serves blocked clients on before running its own transactions.
    serve_after_apply: Vec<Vec<u8>>,
    /// Numbers blocked transactions in the order they blocked.
    waiter_seq: u64,
    /// What the commit being built changes in the key counts (see `Store::key_counts`):
    /// keys, keys with an expiry, nodes.
    counted: (i64, i64, i64),
    /// Bytes a direct apply added to the file's journal, told to the store once it commits.
    journal_grown: i64,
    /// Blocked transactions (see [`BlockingProgram`]).
    waiters: Waiters<T>,
    limits: WriterLimits,
    metrics: Arc<Metrics>,
    /// Per hash bucket of keys: the version that last wrote a key in it.
    buckets: Vec<u64>,
    /// Monotonic change counter (see `Store::committed_version`).
    version: u64,
    /// Work taken from the queue while collecting a group that must wait for the next turn.
    pending: Option<Work<T>>,
    /// Last stream seqno per stream, as committed (mirrors the `streams` table).
    streams: StreamSeqnos,
    /// A supplementary instance numbers its own transactions in stream 0 separately.
    supplementary: bool,
    /// A seeded file replaced the database file but could not be taken up: the reopen takes
    /// it up as a replacement.
    replaced_pending: bool,
    /// Submitters are few, and may lead their own groups ([`Writer::lead`]): the last group
    /// the writer thread formed held one submitter's work with nothing queued behind it, and
    /// no leader since found work queued after its own group. Under concurrent load groups
    /// gather many submitters and leading stops, so that the sync of one submitter's group
    /// does not hold back those that queue meanwhile.
    solo: bool,
    /// A submitter is running its own group on its thread.
    leading: bool,
    /// A led group met an I/O error: the writer thread closes the file (and reopens it)
    /// before anything else.
    close_owed: bool,
}

type ReplyTx<T> = oneshot::Sender<Result<Committed<T>, TxnFailure>>;
type Reply<T> = (ReplyTx<T>, Result<Committed<T>, TxnFailure>);

/// The next journal seqno and stream-0 seqno while a batch runs.
impl<T> Drop for WriterThread<T> {
    fn drop(&mut self) {
        // A spare still being zero-filled has its file open: it finishes first, so a writer
        // opened on the same directory later cannot take a file still being written.
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
    }
}

/// A commit group that ran and whose records were appended to the journal, unsynced.
struct Group<T> {
    /// The seqno committed before the group, and its last.
    committed: u64,
    last: u64,
    active: Arc<Generation>,
    records: Vec<Vec<u8>>,
    streams: StreamSeqnos,
    counted: (i64, i64, i64),
    /// The WATCH version as of its last transaction.
    version: u64,
    /// Keys of the clients that blocked in it: if it fails, they blocked on what it wrote.
    blocked: Vec<Vec<u8>>,
    replies: Vec<Reply<T>>,
    enqueued: Vec<Instant>,
    /// The segment's length and chain value before the group's frames (`None`: it has none).
    cut: Option<(u64, u32)>,
}

/// What the group run after one still syncing starts from.
struct After {
    last: u64,
    streams: StreamSeqnos,
}

impl<T> Group<T> {
    fn next_after(&self) -> After {
        After { last: self.last, streams: self.streams }
    }
}

/// A group published by [`publish_synced`], for the writer's bookkeeping.
struct Published {
    committed: u64,
    last: u64,
    streams: StreamSeqnos,
    fsync: Duration,
    transactions: usize,
    enqueued: Vec<Instant>,
}

/// What the syncer gives back: a published group, or a group whose sync failed.
type SyncOutcome<T> = Result<Published, Box<(StoreError, Group<T>)>>;

/// Publishes a group once its records are durable and answers its transactions (on the
/// syncer's thread, or the writer's): its records join its versions in the overlay, then
/// the store shows its seqno, stream seqnos and key counts.
fn publish_synced<T>(store: &Store, mut group: Group<T>, fsync: Duration) -> Published {
    group.active.add_records(group.committed + 1, group.records.drain(..));
    group.active.set_streams(group.streams);
    store.publish_streams(group.streams);
    store.adjust_counts(group.counted);
    store.publish(group.last, None, group.version);
    let published = Published {
        committed: group.committed,
        last: group.last,
        streams: group.streams,
        fsync,
        transactions: group.replies.len(),
        enqueued: group.enqueued,
    };
    for (reply, outcome) in group.replies {
        // A client that went away no longer needs its answer.
        let _ = reply.send(outcome);
    }
    published
}

/// The syncer's finish: publishes the group if its sync succeeded, else gives it back.
fn finish_synced<T>(store: &Store, group: Group<T>, (synced, took): super::syncer::Synced) -> SyncOutcome<T> {
    match synced {
        Ok(()) => Ok(publish_synced(store, group, took)),
        Err(e) => Err(Box::new((e.into(), group))),
    }
}

struct Cursor {
    next: u64,
    local: u64,
    /// The commit time of the group's records: they become durable together.
    now_micros: u64,
}

/// What a group's transactions read, and where they write.
struct Out<'a> {
    view: &'a Snapshot,
    active: &'a Generation,
    /// The group's encoded journal records, in seqno order.
    records: &'a mut Vec<Vec<u8>>,
    cursor: &'a mut Cursor,
}

/// How one transaction program ran inside a batch.
enum Ran<T> {
    Done {
        output: T,
        seqno: Option<u64>,
        touched: Vec<Vec<u8>>,
    },
    /// A blocking program with nothing to serve yet.
    Waiting,
    Aborted(String),
}

fn fail_work<T>(work: Work<T>, failure: &TxnFailure) {
    match work {
        Work::Txns(requests) => {
            for r in requests {
                drop(r.reply.send(Err(failure.clone())));
            }
        }
        Work::Apply { reply, .. } => drop(reply.send(Err(failure.clone()))),
        Work::Rollback { reply, .. } => drop(reply.send(Err(failure.clone()))),
        Work::Meta { reply, .. } => drop(reply.send(Err(failure.clone()))),
        Work::System { reply, .. } => drop(reply.send(Err(failure.clone()))),
        Work::Checkpoint { reply } | Work::InstallSeed { reply, .. } => {
            drop(reply.send(Err(failure.clone())))
        }
        Work::Freeze | Work::Wake => {}
    }
}

/// Writes the stream seqnos that changed from `old` to `new`.
fn save_streams(
    txn: &redb::WriteTransaction,
    old: &StreamSeqnos,
    new: &StreamSeqnos,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    let mut table = txn.open_table(STREAMS).map_err(redb_err("open the streams table"))?;
    for (k, (a, b)) in old.iter().zip(new).enumerate() {
        if a != b {
            let stream = u8::try_from(k).unwrap_or(0);
            table.insert(stream, *b).map_err(redb_err("write the streams table"))?;
        }
    }
    Ok(())
}

/// A received record whose before-image of `key` differs from this instance's data.
fn diverged(record: &Record, key: &[u8]) -> StoreError {
    StoreError::Replication {
        reason: format!(
            "record {} does not apply: key {} differs from its before-image; this instance diverged from its source",
            record.seqno,
            String::from_utf8_lossy(key)
        ),
    }
}

/// Moves `requests` into the group being formed, up to [`GROUP_COMMIT_TXNS_MAX`]; what does not
/// fit comes back as the work to start the next group with.
fn fill<T>(batch: &mut Vec<TxnRequest<T>>, mut requests: Vec<TxnRequest<T>>) -> Option<Work<T>> {
    let room = GROUP_COMMIT_TXNS_MAX.saturating_sub(batch.len());
    if requests.len() <= room {
        batch.append(&mut requests);
        return None;
    }
    let rest = requests.split_off(room);
    batch.append(&mut requests);
    Some(Work::Txns(rest))
}

fn put_meta(txn: &redb::WriteTransaction, meta: &InstanceMeta) -> Result<(), StoreError> {
    let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
    let bytes = serde_json::to_vec(meta).map_err(|source| StoreError::MetaDecode { source })?;
    table.insert(META_INSTANCE, bytes.as_slice()).map_err(redb_err("write instance metadata"))?;
    Ok(())
}

/// What the writer thread does next.
enum Turn<T> {
    Run(Work<T>),
    /// Wait for work, without the state's lock.
    Wait,
    /// Look again (after a reopen or a failure).
    Again,
    Stop,
}

impl<T: Send + 'static> WriterThread<T> {
    /// The writer thread: takes work from the queue and runs it, holding the state while it
    /// does (and only then).
    fn run(state: &Mutex<WriterThread<T>>, mut queue: Queue<T>) {
        let mut batch = Vec::with_capacity(GROUP_COMMIT_TXNS_MAX);
        loop {
            let Ok(mut this) = lock(state) else { return };
            let work = match this.turn(&mut queue) {
                Turn::Run(work) => work,
                Turn::Again => continue,
                Turn::Stop => return,
                Turn::Wait => {
                    drop(this);
                    let work = queue.wait();
                    let Ok(again) = lock(state) else { return };
                    this = again;
                    match work {
                        Some(work) => {
                            // Through `turn` first: a leader may have left the file to close
                            // while the lock was free. (Nothing was pending, or there would
                            // have been no wait, and a leader leaves nothing pending.)
                            queue.taken();
                            debug_assert!(this.pending.is_none());
                            this.pending = Some(work);
                            continue;
                        }
                        None => {
                            // A clean stop leaves the database file complete: nothing to replay.
                            if let Err(e) = this.checkpoint_all() {
                                tracing::warn!(error = %error_chain(&e), "final checkpoint failed; the next start replays the journal");
                            }
                            tracing::debug!("writer queue closed; writer stops");
                            return;
                        }
                    }
                }
            };
            this.handle(work, &mut batch, &mut queue);
        }
    }

    /// What the writer thread does next: recover the file, run work owed from the last turn,
    /// or wait for more.
    fn turn(&mut self, queue: &mut Queue<T>) -> Turn<T> {
        if self.close_owed {
            self.close_after_io_error();
        }
        if self.store.db().is_err() {
            // The file is closed after an I/O error: fail writes fast and retry the open.
            self.reopen();
            if let Some(work) = self.pending.take() {
                fail_work(work, &TxnFailure::store(&StoreError::Recovering));
            }
            loop {
                match queue.try_recv() {
                    Ok(work) => fail_work(work, &TxnFailure::store(&StoreError::Recovering)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Turn::Stop,
                }
            }
            if self.store.db().is_err() {
                std::thread::sleep(REOPEN_INTERVAL);
            }
            return Turn::Again;
        }
        if self.checkpointer.take_io_failure() {
            // redb refuses every write after an I/O error until the file is reopened.
            self.close_after_io_error();
            return Turn::Again;
        }
        match self.pending.take() {
            Some(work) => Turn::Run(work),
            None => Turn::Wait,
        }
    }

    /// Whether a submitter may run its own group now ([`Writer::lead`]): nothing is owed from
    /// an earlier turn, the file is open, and the group will neither start a segment nor
    /// wait for room in the overlay.
    fn may_lead(&self) -> bool {
        self.pending.is_none()
            && self.serve_after_apply.is_empty()
            && self.rollback_cut.is_none()
            && !self.close_owed
            && self.solo
            && self.store.db().is_ok()
            && !self.checkpointer.io_failed()
            && self.may_overlap()
    }

    fn handle(&mut self, work: Work<T>, batch: &mut Vec<TxnRequest<T>>, queue: &mut Queue<T>) {
        match work {
            Work::Txns(requests) => {
                self.pending = fill(batch, requests);
                let mut more = false;
                while self.pending.is_none() && batch.len() < GROUP_COMMIT_TXNS_MAX {
                    match queue.try_recv() {
                        Ok(Work::Txns(requests)) => self.pending = fill(batch, requests),
                        Ok(other) => self.pending = Some(other),
                        Err(_) => break,
                    }
                    more = true;
                }
                // One submitter alone in the queue: submitters may lead their own groups.
                self.solo = !more && self.pending.is_none();
                self.commit_batch(batch, Some(queue));
            }
            Work::Apply { records, source_history, mode, reply } => {
                let result = match mode {
                    ApplyMode::Bc { source_streams } => {
                        self.apply_bc(records, source_history, source_streams)
                    }
                    ApplyMode::Si { stream } => self.direct(|w| w.apply_si(stream, records, source_history)),
                };
                let _ = reply.send(self.settle(result));
                // Records applied on an instance that takes writes of its own (SI) can
                // make blocked clients servable: serve them in a commit of their own.
                let touched = std::mem::take(&mut self.applied_touched);
                if !touched.is_empty() && self.store.write_refusal().is_none() {
                    self.serve_after_apply = touched;
                    self.commit_batch(batch, Some(queue));
                }
            }
            Work::Rollback { to_seqno, new_epoch, reason, reply } => {
                let result = self.rollback(to_seqno, new_epoch, &reason);
                let _ = reply.send(self.settle(result));
            }
            Work::Meta { update, reply } => {
                let result = self.direct(|w| w.meta(update));
                let _ = reply.send(self.settle(result));
            }
            Work::System { key, value, upgrade_to, reply } => {
                let result = self.direct(|w| w.system(key, value, upgrade_to));
                let _ = reply.send(self.settle(result));
            }
            Work::Freeze => self.freeze(),
            Work::Wake => {}
            Work::Checkpoint { reply } => {
                let result = self.checkpoint_all();
                let _ = reply.send(self.settle(result));
            }
            Work::InstallSeed { path, header, expected, reply } => {
                let result = self.install_seed(&path, &header, &expected);
                let _ = reply.send(self.settle(result));
            }
        }
    }

    /// Runs work that changes the database file directly (see the module's documentation).
    fn direct<R>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.checkpoint_all()?;
        let result = change(self);
        self.store.overlay.reset(self.store.committed_seqno());
        if let Err(e) = self.store.recount_nodes() {
            tracing::warn!(error = %error_chain(&e), "cannot count nodes");
        }
        result
    }

    /// Logs and counts a failed commit and closes the file after an I/O error.
    fn settle<R>(&mut self, result: Result<R, StoreError>) -> Result<R, TxnFailure> {
        result.map_err(|e| {
            tracing::error!(error = %error_chain(&e), "commit failed");
            self.metrics.commit_failures_total.with_label_values(&[e.code()]).inc();
            if matches!(e, StoreError::Redb { .. }) {
                self.close_after_io_error();
            }
            TxnFailure::store(&e)
        })
    }

    /// Commits the batch, and while its journal sync runs, the transactions queued behind it
    /// (see [`super::syncer`]): each group is published and answered once its own sync
    /// returns, in order.
    /// `queue`: where the next group may take transactions from while this one syncs
    /// (`None` for a submitter's own group, which is run and synced alone).
    fn commit_batch(&mut self, batch: &mut Vec<TxnRequest<T>>, mut queue: Option<&mut Queue<T>>) {
        let mut group = self.run_batch(batch, None);
        let mut served_again = false;
        loop {
            let Some(current) = group.take() else {
                // Clients that blocked in a failed group are run again now, once (if that
                // fails too, the next batch runs them first).
                if served_again || self.serve_after_apply.is_empty() || self.store.db().is_err() {
                    return;
                }
                served_again = true;
                group = self.run_batch(batch, None);
                continue;
            };
            let overlap = current.cut.is_some()
                && self.may_overlap()
                && queue.as_deref_mut().is_some_and(|queue| self.take_txns(batch, queue));
            self.solo &= !overlap;
            let Some(handle) = self.segment.as_ref().filter(|_| overlap).map(SegmentWriter::sync_handle)
            else {
                self.sync_inline(current);
                if batch.is_empty() {
                    continue;
                }
                group = self.run_batch(batch, None);
                continue;
            };
            let next_after = current.next_after();
            let (committed, cut, active) = (current.committed, current.cut, Arc::clone(&current.active));
            let current = match self.syncer.start(handle, current) {
                Ok(()) => {
                    self.metrics.commit_groups_overlapped_total.inc();
                    None
                }
                Err((_, current)) => Some(current),
            };
            if let Some(current) = current {
                // The sync thread is gone: sync here, then run what was taken.
                self.sync_inline(current);
                group = self.run_batch(batch, None);
                continue;
            }
            let next = self.run_batch(batch, Some(&next_after));
            match self.syncer.wait() {
                Some(Ok(published)) => {
                    self.note_published(published, next.is_none(), next.is_some());
                    group = next;
                }
                Some(Err(failed)) => {
                    let (e, failed) = *failed;
                    self.cut_off(failed.cut);
                    self.fail_groups(&e, failed, next);
                }
                None => {
                    // The group went down with the thread. If it was not published, nothing of
                    // it may stay: its versions leave the overlay, its frames the segment (its
                    // clients see the writer's answer channel close). Then start over from the
                    // file and the journal, as after an I/O error.
                    tracing::error!("the journal's sync thread stopped; the instance reopens its file");
                    if self.store.committed_seqno() < next_after.last {
                        active.discard_above(committed);
                        self.cut_off(cut);
                    }
                    if let Some(next) = next {
                        self.cut_off(next.cut);
                        self.fail_groups(&StoreError::Recovering, next, None);
                    }
                    self.close_after_io_error();
                }
            }
        }
    }

    /// Syncs and publishes `group` on this thread (or fails it).
    fn sync_inline(&mut self, group: Group<T>) {
        match self.sync_segment(group.cut) {
            Ok(took) => {
                let published = publish_synced(&self.store, group, took);
                self.note_published(published, true, true);
            }
            Err(e) => self.fail_groups(&e, group, None),
        }
    }

    /// Fails `group` and `next` (which read what `group` wrote, and whose frames follow its
    /// own), leaving nothing of either in the overlay; their frames were cut off already.
    fn fail_groups(&mut self, e: &StoreError, group: Group<T>, next: Option<Group<T>>) {
        group.active.discard_above(group.committed);
        // Clients that blocked in either group blocked on writes that are now gone: they
        // are run again before the next batch (or right away, below).
        self.serve_after_apply.extend(group.blocked);
        let mut replies: Vec<_> = group.replies.into_iter().map(|(reply, _)| reply).collect();
        if let Some(next) = next {
            self.serve_after_apply.extend(next.blocked);
            replies.extend(next.replies.into_iter().map(|(reply, _)| reply));
        }
        self.fail_replies(e, replies);
    }

    /// Runs a batch and appends its records to the journal, unsynced; `after` is the group
    /// still syncing that it follows. On failure every transaction of the batch is answered
    /// with the error, and nothing of it is left in the overlay or the journal.
    fn run_batch(&mut self, batch: &mut Vec<TxnRequest<T>>, after: Option<&After>) -> Option<Group<T>> {
        let mut replies = Vec::with_capacity(batch.len());
        match self.try_run_batch(batch, &mut replies, after) {
            Ok(group) => Some(group),
            Err(e) => {
                let pending =
                    replies.into_iter().map(|(reply, _)| reply).chain(batch.drain(..).map(|r| r.reply));
                self.fail_replies(&e, pending.collect());
                None
            }
        }
    }

    /// Logs and counts a failed commit, answers every one of `replies` with it, and closes
    /// the file after an I/O error.
    fn fail_replies(&mut self, e: &StoreError, replies: Vec<ReplyTx<T>>) {
        if matches!(e, StoreError::DiskFull { .. }) {
            tracing::warn!(error = %error_chain(e), transactions = replies.len(), "commit refused");
        } else {
            tracing::error!(error = %error_chain(e), transactions = replies.len(), "commit failed");
        }
        self.metrics.commit_failures_total.with_label_values(&[e.code()]).inc();
        if matches!(e, StoreError::Redb { .. }) {
            self.close_after_io_error();
        }
        // Nothing of the batch committed: every transaction in it, whether it already ran
        // or not, fails with the same error.
        let failure = TxnFailure::store(e);
        for reply in replies {
            // A client that went away no longer needs its answer.
            let _ = reply.send(Err(failure.clone()));
        }
    }

    /// Runs the batch into the overlay and appends its records to the journal segment.
    fn try_run_batch(
        &mut self,
        batch: &mut Vec<TxnRequest<T>>,
        replies: &mut Vec<Reply<T>>,
        after: Option<&After>,
    ) -> Result<Group<T>, StoreError> {
        self.counted = (0, 0, 0);
        self.blocked_in_group.clear();
        self.check_space()?;
        if after.is_none() {
            self.make_room()?;
        }
        let committed = after.map_or_else(|| self.store.committed_seqno(), |a| a.last);
        let mut streams = after.map_or(self.streams, |a| a.streams);
        let active = self.store.overlay.active();
        let mut enqueued = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut cursor = Cursor { next: committed + 1, local: streams[0], now_micros: now_micros() };
        let ran = self.run_group(batch, replies, &active, &mut records, &mut cursor, &mut enqueued);
        let cut = match ran.and_then(|()| self.append(committed + 1, &records)) {
            Ok(cut) => cut,
            Err(e) => {
                active.discard_above(committed);
                return Err(e);
            }
        };
        streams[0] = cursor.local;
        Ok(Group {
            committed,
            last: cursor.next - 1,
            active,
            records,
            streams,
            counted: std::mem::take(&mut self.counted),
            version: self.version,
            blocked: std::mem::take(&mut self.blocked_in_group),
            replies: std::mem::take(replies),
            enqueued,
            cut,
        })
    }

    /// The writer's part of publishing a group (the store's was done by [`publish_synced`]):
    /// its stream seqnos, metrics, and a freeze when due and nothing runs under it.
    /// `clear_degraded`: no group after it failed (its failure set the flag).
    fn note_published(&mut self, published: Published, may_freeze: bool, clear_degraded: bool) {
        if clear_degraded {
            self.store.degraded.store(false, Ordering::Release);
        }
        self.streams = published.streams;
        let m = &self.metrics;
        m.group_commit_transactions.observe(published.transactions as f64);
        for at in published.enqueued {
            m.commit_duration_seconds.observe(at.elapsed().as_secs_f64());
        }
        self.published(published.committed, published.last, published.fsync, may_freeze);
    }

    /// Whether the next group may run while this one syncs: only while nothing would freeze
    /// the active generation or start a new segment under the group in flight.
    fn may_overlap(&self) -> bool {
        let overlay = &self.store.overlay;
        self.broken_segment.is_none()
            && self.segment.as_ref().is_some_and(|s| s.bytes() < self.limits.segment_bytes)
            && overlay.active().bytes() < self.limits.checkpoint_bytes
            && overlay.bytes() < self.limits.checkpoint_bytes.saturating_mul(2)
            && self.active_since.elapsed() < CHECKPOINT_INTERVAL
    }

    /// Fills `batch` with transactions already queued, up to other work; whether it got any.
    fn take_txns(&mut self, batch: &mut Vec<TxnRequest<T>>, queue: &mut Queue<T>) -> bool {
        match self.pending.take() {
            Some(Work::Txns(requests)) => self.pending = fill(batch, requests),
            Some(other) => {
                self.pending = Some(other);
                return false;
            }
            None => {}
        }
        while self.pending.is_none() && batch.len() < GROUP_COMMIT_TXNS_MAX {
            match queue.try_recv() {
                Ok(Work::Txns(requests)) => self.pending = fill(batch, requests),
                Ok(other) => self.pending = Some(other),
                Err(_) => break,
            }
        }
        !batch.is_empty()
    }

    /// Appends a group that `ran` into the active generation to the journal and syncs it;
    /// on any failure, its versions and records leave the overlay. How long the sync took.
    fn make_durable(
        &mut self,
        ran: Result<(), StoreError>,
        committed: u64,
        active: &Generation,
        records: &mut Vec<Vec<u8>>,
    ) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let durable = ran
            .and_then(|()| self.append(committed + 1, records))
            .and_then(|cut| self.sync_segment(cut).map(|_| ()));
        if let Err(e) = durable {
            active.discard_above(committed);
            return Err(e);
        }
        let synced = started.elapsed();
        // The records join their versions only now: nothing reads a group's records before it
        // is durable, and they are moved, not copied.
        active.add_records(committed + 1, records.drain(..));
        Ok(synced)
    }

    /// Publishes a durable group ending at `last`: stream seqnos, key counts, the committed
    /// seqno, metrics; freezes the active generation when it is due for a checkpoint.
    fn publish_group(
        &mut self,
        active: &Generation,
        committed: u64,
        last: u64,
        streams: StreamSeqnos,
        fsync: Duration,
    ) {
        self.set_streams(streams);
        active.set_streams(streams);
        self.store.adjust_counts(std::mem::take(&mut self.counted));
        self.store.publish(last, None, self.version);
        self.store.degraded.store(false, Ordering::Release);
        self.published(committed, last, fsync, true);
    }

    /// Metrics of a published group, and the freeze of the active generation when due —
    /// not under a group still in flight, whose versions are in it.
    fn published(&mut self, committed: u64, last: u64, fsync: Duration, may_freeze: bool) {
        let m = &self.metrics;
        m.journal_fsync_duration_seconds.observe(fsync.as_secs_f64());
        m.commits_total.inc_by(last - committed);
        m.journal_seqno.set(i64::try_from(last).unwrap_or(i64::MAX));
        let active = self.store.overlay.active();
        if may_freeze
            && (active.bytes() >= self.limits.checkpoint_bytes
                || self.active_since.elapsed() >= CHECKPOINT_INTERVAL)
        {
            self.freeze();
        }
        self.metrics.overlay_bytes.set(i64::try_from(self.store.overlay.bytes()).unwrap_or(i64::MAX));
    }

    /// Runs the batch's transactions (and the blocked ones they serve) into the overlay's
    /// active generation, collecting their encoded journal records.
    fn run_group(
        &mut self,
        batch: &mut Vec<TxnRequest<T>>,
        replies: &mut Vec<Reply<T>>,
        active: &Generation,
        records: &mut Vec<Vec<u8>>,
        cursor: &mut Cursor,
        enqueued: &mut Vec<Instant>,
    ) -> Result<(), StoreError> {
        let view = self.store.snapshot_latest()?;
        let mut out = Out { view: &view, active, records, cursor };
        let read_only_message = self.store.write_refusal();
        let read_only = read_only_message.as_deref();
        let pre = std::mem::take(&mut self.serve_after_apply);
        if !pre.is_empty() {
            self.serve_waiters(&mut out, pre, read_only, replies, enqueued)?;
        }
        for request in batch.drain(..) {
            enqueued.push(request.enqueued);
            if request
                .watch
                .iter()
                .any(|(key, seqno)| self.buckets.get(bucket(key)).is_some_and(|b| b > seqno))
            {
                replies.push((request.reply, Ok(Committed::WatchConflict)));
                continue;
            }
            let housekeeping = request.housekeeping;
            let touched = match request.program {
                Program::Once(program) => {
                    let mut program = Some(program);
                    let mut once = |view: &mut TxnView<'_, '_>| match program.take() {
                        Some(p) => p(view).map(Some),
                        None => Ok(None),
                    };
                    match self.run_txn(&mut out, &mut once, read_only, housekeeping)? {
                        Ran::Done { output, seqno, touched } => {
                            replies.push((request.reply, Ok(Committed::Done { output, seqno })));
                            touched
                        }
                        Ran::Waiting => Vec::new(),
                        Ran::Aborted(message) => {
                            replies.push((request.reply, Err(TxnFailure::Aborted(message))));
                            Vec::new()
                        }
                    }
                }
                Program::Blocking { id, keys, mut program } => {
                    match self.run_txn(&mut out, &mut program, read_only, false)? {
                        Ran::Done { output, seqno, touched } => {
                            replies.push((request.reply, Ok(Committed::Done { output, seqno })));
                            touched
                        }
                        Ran::Waiting => {
                            self.waiter_seq += 1;
                            self.blocked_in_group.extend(keys.iter().cloned());
                            let waiter = Waiter {
                                seq: self.waiter_seq,
                                id,
                                keys,
                                program,
                                reply: request.reply,
                                enqueued: request.enqueued,
                            };
                            self.waiters
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push_back(waiter);
                            Vec::new()
                        }
                        Ran::Aborted(message) => {
                            replies.push((request.reply, Err(TxnFailure::Aborted(message))));
                            Vec::new()
                        }
                    }
                }
            };
            self.serve_waiters(&mut out, touched, read_only, replies, enqueued)?;
        }
        Ok(())
    }

    /// Appends a group's records to the journal segment with one write, unsynced; where the
    /// segment stood before them (`None`: no records). On failure the group's frames are cut
    /// off again, so the next group follows the last durable frame (if even the cut fails,
    /// every group retries it first).
    fn append(&mut self, first_seqno: u64, records: &[Vec<u8>]) -> Result<Option<(u64, u32)>, StoreError> {
        if records.is_empty() {
            return Ok(None);
        }
        self.finish_rollback_cut()?;
        if let (Some((len, crc)), Some(segment)) = (self.broken_segment, self.segment.as_mut()) {
            segment.cut_back(len, crc)?;
            self.broken_segment = None;
        }
        if self.segment.as_ref().is_none_or(|s| s.bytes() >= self.limits.segment_bytes) {
            let store = Arc::clone(&self.store);
            let dir = store.journal_dir();
            let creation_id = store.meta().creation_id;
            self.segments_exist = true;
            let from_spare = self.take_spare().and_then(|spare| {
                SegmentWriter::create_from_spare(dir, &spare, first_seqno, &creation_id)
                    .inspect_err(|e| tracing::debug!(error = %error_chain(e), "spare segment not used"))
                    .ok()
            });
            self.segment = match from_spare {
                Some(segment) => Some(segment),
                None => {
                    Some(SegmentWriter::create(dir, first_seqno, &creation_id, self.limits.segment_bytes)?)
                }
            };
        }
        // The next segment's blocks are zero-filled once this one is half full: not at a start
        // or a rotation, where they would compete with the writes that follow for the disk
        // (the first segment after a start is `fallocate`d).
        if self.spare.is_none()
            && self.segment.as_ref().is_some_and(|s| s.bytes() >= self.limits.segment_bytes / 2)
        {
            self.prepare_spare();
        }
        let Some(segment) = self.segment.as_mut() else { return Err(StoreError::Recovering) };
        let cut = (segment.bytes(), segment.last_crc());
        if let Err(e) = segment.append(records) {
            self.cut_off(Some(cut));
            return Err(e.into());
        }
        Ok(Some(cut))
    }

    /// Starts zero-filling the next segment's blocks in the background
    /// ([`super::segment::prepare_spare`]), unless one is under way or the volume has too
    /// little room to spare a segment's size beside the reserve.
    fn prepare_spare(&mut self) {
        let bytes = self.limits.segment_bytes;
        let room = self.store.free_bytes().unwrap_or(0);
        if self.spare.is_some()
            || room < bytes.saturating_mul(2).saturating_add(self.limits.disk_reserve_bytes)
        {
            return;
        }
        let dir = self.store.journal_dir().to_owned();
        let spawned = std::thread::Builder::new()
            .name("strand-spare".into())
            .spawn(move || super::segment::prepare_spare(&dir, bytes));
        match spawned {
            Ok(handle) => self.spare = Some(handle),
            Err(e) => tracing::debug!(error = %e, "cannot start preparing a spare segment"),
        }
    }

    /// The spare segment, if it is ready. A preparation still running is left to finish for
    /// the segment after: no commit waits for zeros to be written.
    fn take_spare(&mut self) -> Option<std::path::PathBuf> {
        if !self.spare.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            return None;
        }
        match self.spare.take()?.join() {
            Ok(Ok(path)) => Some(path),
            Ok(Err(e)) => {
                tracing::debug!(error = %error_chain(&e), "no spare segment");
                None
            }
            Err(_) => None,
        }
    }

    /// Syncs the segment after [`WriterThread::append`] gave `cut`; on failure the frames
    /// after `cut` are cut off. How long the sync took.
    fn sync_segment(&mut self, cut: Option<(u64, u32)>) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let Some(segment) = self.segment.as_ref().filter(|_| cut.is_some()) else {
            return Ok(Duration::ZERO);
        };
        if let Err(e) = segment.sync() {
            self.cut_off(cut);
            return Err(e.into());
        }
        Ok(started.elapsed())
    }

    /// Cuts the segment back to `cut`: the frames of groups that failed.
    fn cut_off(&mut self, cut: Option<(u64, u32)>) {
        let (Some((len, crc)), Some(segment)) = (cut, self.segment.as_mut()) else { return };
        match segment.cut_back(len, crc) {
            // A cut still owed past this one (a later group's) is covered by it.
            Ok(()) if self.broken_segment.is_some_and(|(owed, _)| owed >= len) => self.broken_segment = None,
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot cut a failed group off the journal segment");
                // Of two cuts owed, the shorter one covers both.
                if self.broken_segment.is_none_or(|(owed, _)| len < owed) {
                    self.broken_segment = Some((len, crc));
                }
            }
        }
    }

    /// Freezes the active generation for the checkpointer.
    fn freeze(&mut self) {
        if self.store.overlay.freeze().is_some() {
            self.checkpointer.wake();
        }
        self.active_since = Instant::now();
    }

    /// Past twice the overlay's bound, freezes what is active and waits until the
    /// checkpointer has brought the overlay back under it before taking more.
    fn make_room(&mut self) -> Result<(), StoreError> {
        let bound = self.limits.checkpoint_bytes.saturating_mul(2);
        if self.store.overlay.bytes() >= bound {
            self.freeze();
            self.checkpointer.wait_below(bound)?;
        }
        Ok(())
    }

    /// Checkpoints everything and removes every journal segment: the database file then holds
    /// the whole journal, and may be changed directly.
    fn checkpoint_all(&mut self) -> Result<u64, StoreError> {
        self.finish_rollback_cut()?;
        self.freeze();
        self.checkpointer.drain()?;
        if self.segments_exist {
            self.segment = None;
            self.broken_segment = None;
            super::remove_segments(self.store.journal_dir(), u64::MAX)?;
            self.segments_exist = false;
        }
        Ok(self.store.committed_seqno())
    }

    /// Runs one transaction program inside the batch and journals what it changed.
    fn run_txn(
        &mut self,
        out: &mut Out<'_>,
        program: &mut dyn FnMut(&mut TxnView<'_, '_>) -> Result<Option<T>, Abort>,
        read_only: Option<&str>,
        housekeeping: bool,
    ) -> Result<Ran<T>, StoreError> {
        let cursor = &mut *out.cursor;
        let mut view = TxnView {
            base: out.view,
            active: out.active,
            seqno: cursor.next,
            changes: BTreeMap::new(),
            bytes: 0,
            bytes_max: if housekeeping { usize::MAX } else { self.limits.max_txn_image_bytes },
            read_only,
            last_read: std::cell::RefCell::default(),
        };
        let outcome = program(&mut view);
        // A node created and removed again inside the transaction is no change: its version
        // leaves the overlay too.
        let (seqno, active) = (view.seqno, view.active);
        view.changes.retain(|key, c| {
            let changed = c.before.is_some() || c.after.is_some();
            if !changed {
                active.unput(seqno, key);
            }
            changed
        });
        match outcome {
            Ok(None) => {
                view.undo();
                Ok(Ran::Waiting)
            }
            Ok(Some(output)) if view.changes.is_empty() => {
                Ok(Ran::Done { output, seqno: None, touched: Vec::new() })
            }
            Ok(Some(output)) => {
                // The record must fit one journal frame (the images, plus a little per node).
                let size: usize = view
                    .changes
                    .iter()
                    .map(|(k, c)| {
                        64 + k.len()
                            + c.before.as_ref().map_or(0, Vec::len)
                            + c.after.as_ref().map_or(0, Vec::len)
                    })
                    .sum();
                if size > super::segment::FRAME_BYTES_MAX {
                    view.undo();
                    return Ok(Ran::Aborted(format!(
                        "ERR this transaction would journal about {size} bytes, more than one journal record holds ({}); nothing was changed",
                        super::segment::FRAME_BYTES_MAX
                    )));
                }
                let seqno = cursor.next;
                cursor.next += 1;
                let changes = std::mem::take(&mut view.changes);
                for (key, c) in &changes {
                    self.count(key, c.before.is_some(), c.after.is_some());
                }
                // Housekeeping touches keys through their heads only: its element removals
                // belong to deleted generations.
                let user_keys = || {
                    changes
                        .keys()
                        .filter(|key| !housekeeping || super::node::is_head(key))
                        .map(|key| super::node::user_key(key))
                };
                self.touch(user_keys());
                // Blocked clients are served by the keys a transaction wrote (only the writer
                // adds waiters, so none can appear before the next transaction).
                let touched: Vec<Vec<u8>> =
                    if self.has_waiters() { user_keys().map(<[u8]>::to_vec).collect() } else { Vec::new() };
                // A supplementary instance counts its own transactions in stream 0 apart
                // from the journal seqno (the seed's M34, M35 …).
                let stream_seqno = if self.supplementary {
                    cursor.local += 1;
                    cursor.local
                } else {
                    seqno
                };
                let head = super::journal::Head {
                    kind: RecordKind::Update,
                    seqno,
                    stream: 0,
                    stream_seqno,
                    commit_time_micros: cursor.now_micros,
                };
                let images =
                    changes.iter().map(|(key, c)| (key.as_slice(), c.before.as_deref(), c.after.as_deref()));
                out.records.push(Record::encode_parts(head, images));
                Ok(Ran::Done { output, seqno: Some(seqno), touched })
            }
            Err(Abort::Command(message)) => {
                view.undo();
                Ok(Ran::Aborted(message))
            }
            Err(Abort::Store(e)) => Err(e),
        }
    }

    /// Serves blocked transactions waiting on keys just written, oldest first, each right
    /// after the write that made it servable; what one serves can serve the next.
    fn serve_waiters(
        &mut self,
        out: &mut Out<'_>,
        mut touched: Vec<Vec<u8>>,
        read_only: Option<&str>,
        replies: &mut Vec<Reply<T>>,
        enqueued: &mut Vec<Instant>,
    ) -> Result<(), StoreError> {
        if touched.is_empty() {
            return Ok(());
        }
        let mut touched: std::collections::HashSet<Vec<u8>> = touched.drain(..).collect();
        while !touched.is_empty() {
            let ready: Vec<Waiter<T>> = {
                let mut waiters = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if waiters.is_empty() {
                    return Ok(());
                }
                let all = std::mem::take(&mut *waiters);
                let (ready, rest): (Vec<_>, Vec<_>) =
                    all.into_iter().partition(|w| w.keys.iter().any(|k| touched.contains(k)));
                *waiters = rest.into();
                ready
            };
            touched.clear();
            let mut unserved = Vec::new();
            for mut waiter in ready {
                match self.run_txn(out, &mut waiter.program, read_only, false)? {
                    Ran::Done { output, seqno, touched: more } => {
                        enqueued.push(waiter.enqueued);
                        replies.push((waiter.reply, Ok(Committed::Done { output, seqno })));
                        touched.extend(more);
                    }
                    Ran::Waiting => unserved.push(waiter),
                    Ran::Aborted(message) => replies.push((waiter.reply, Err(TxnFailure::Aborted(message)))),
                }
            }
            // Still-blocked waiters keep their place among the others: oldest first.
            if !unserved.is_empty() {
                let mut waiters = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                waiters.extend(unserved);
                waiters.make_contiguous().sort_by_key(|w| w.seq);
            }
        }
        Ok(())
    }

    fn has_waiters(&self) -> bool {
        !self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Notes a node's change for the key counts of the commit being built.
    fn count(&mut self, node: &[u8], before: bool, after: bool) {
        let (k, e) = super::node::count_delta(node, before, after);
        self.counted.0 += k;
        self.counted.1 += e;
        self.counted.2 += i64::from(after) - i64::from(before);
    }

    /// Marks keys as written by a new version (for WATCH).
    fn touch<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>) {
        self.touch_buckets(keys.map(bucket));
    }

    /// Marks WATCH buckets ([`bucket`]) as written by a new version.
    fn touch_buckets(&mut self, buckets: impl IntoIterator<Item = usize>) {
        self.version += 1;
        for i in buckets {
            if let Some(b) = self.buckets.get_mut(i) {
                *b = self.version;
            }
        }
    }

    fn check_space(&self) -> Result<(), StoreError> {
        let free = self.store.free_bytes()?;
        if free < self.limits.disk_reserve_bytes {
            self.store.degraded.store(true, Ordering::Release);
            return Err(StoreError::DiskFull {
                free_bytes: free,
                reserve_bytes: self.limits.disk_reserve_bytes,
            });
        }
        Ok(())
    }

    /// Applies received BC records: on the journal like a group of local transactions when
    /// they change no metadata (the steady state of a stream), else directly in the file.
    fn apply_bc(
        &mut self,
        records: Vec<Record>,
        source_history: Vec<HistoryRecord>,
        source_streams: Vec<StreamState>,
    ) -> Result<u64, StoreError> {
        let meta = self.store.meta();
        // A stream whose handshake raced a promotion must not apply into a primary.
        if meta.role != super::meta::Role::Secondary || meta.receiver.is_none() {
            return Err(StoreError::Replication {
                reason: format!(
                    "{} is {} without a BC receiver; it applies no received records",
                    meta.name,
                    meta.role.as_str()
                ),
            });
        }
        let last = self.store.committed_seqno() + records.len() as u64;
        let (history, streams) = super::meta::as_of(&source_history, &source_streams, last);
        let on_log = history == meta.history
            && streams == meta.streams
            && records.iter().all(|r| r.kind != RecordKind::Upgrade);
        if on_log {
            self.apply_on_log(records)
        } else {
            self.direct(|w| w.apply(records, source_history, source_streams))
        }
    }

    /// Appends received records to the journal and the overlay as one group: each record's
    /// before-images checked against this instance's data, its seqno the next one.
    fn apply_on_log(&mut self, records: Vec<Record>) -> Result<u64, StoreError> {
        self.counted = (0, 0, 0);
        self.check_space()?;
        self.make_room()?;
        let committed = self.store.committed_seqno();
        let active = self.store.overlay.active();
        let mut streams = self.streams;
        let mut touched: Vec<usize> = Vec::new();
        let mut encoded = Vec::with_capacity(records.len());
        let ran = self.place_records(&records, committed, &active, &mut streams, &mut touched, &mut encoded);
        let last = committed + encoded.len() as u64;
        let fsync = self.make_durable(ran, committed, &active, &mut encoded)?;
        self.touch_buckets(touched);
        self.publish_group(&active, committed, last, streams, fsync);
        Ok(last)
    }

    /// Checks received records against the data and writes them into the active generation.
    fn place_records(
        &mut self,
        records: &[Record],
        committed: u64,
        active: &Generation,
        streams: &mut StreamSeqnos,
        touched: &mut Vec<usize>,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let view = self.store.snapshot_latest()?;
        for (next, record) in (committed + 1..).zip(records) {
            if record.seqno != next {
                return Err(StoreError::Replication {
                    reason: format!("received seqno {} but the next expected is {next}", record.seqno),
                });
            }
            for change in &record.changes {
                let current = view.get(&change.key)?;
                if current != change.before {
                    return Err(diverged(record, &change.key));
                }
                active.put(record.seqno, &change.key, current.as_deref(), change.after.as_deref());
                self.count(&change.key, change.before.is_some(), change.after.is_some());
                touched.push(bucket(super::node::user_key(&change.key)));
            }
            encoded.push(record.encode());
            let marker = matches!(record.kind, RecordKind::StreamBase | RecordKind::StreamResync);
            if (record.stream != 0 || marker || self.supplementary)
                && let Some(slot) = streams.get_mut(usize::from(record.stream))
            {
                *slot = record.stream_seqno;
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        records: Vec<Record>,
        source_history: Vec<HistoryRecord>,
        source_streams: Vec<StreamState>,
    ) -> Result<u64, StoreError> {
        self.counted = (0, 0, 0);
        self.journal_grown = 0;
        self.check_space()?;
        let db = self.store.db()?;
        let committed = self.store.committed_seqno();
        let mut next = committed + 1;
        // apply_bc checked the role on this thread, the only one that changes it.
        let mut meta = self.store.meta();
        let mut streams = self.streams;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut upgrade: Option<(u32, u64)> = None;
        {
            let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            for record in &records {
                if record.seqno != next {
                    return Err(StoreError::Replication {
                        reason: format!("received seqno {} but the next expected is {next}", record.seqno),
                    });
                }
                for change in &record.changes {
                    if !super::redo_change(&mut data, change)? {
                        return Err(diverged(record, &change.key));
                    }
                    self.count(&change.key, change.before.is_some(), change.after.is_some());
                    touched.push(super::node::user_key(&change.key).to_vec());
                }
                if record.kind == RecordKind::Upgrade {
                    // The family's format moves: so does this instance's, in this commit — or
                    // nothing is applied if this binary cannot write that format.
                    let to = record
                        .changes
                        .iter()
                        .find(|c| c.key.as_slice() == super::format::FORMAT_KEY)
                        .and_then(|c| c.after.as_deref())
                        .and_then(super::format::parse_format)
                        .ok_or_else(|| StoreError::Replication {
                            reason: format!("upgrade record {} names no format", record.seqno),
                        })?;
                    if !crate::version::FORMATS_SUPPORTED.contains(&to) {
                        return Err(StoreError::Replication {
                            reason: format!(
                                "record {} upgrades the family to format {to}, which strand {} cannot write (it writes {:?}); nothing was applied — restart this instance on a newer binary",
                                record.seqno,
                                crate::VERSION,
                                crate::version::FORMATS_SUPPORTED
                            ),
                        });
                    }
                    upgrade = Some((to, record.seqno));
                }
                let bytes = record.encode();
                self.journal_grown += record_bytes(&bytes);
                journal
                    .insert(record.seqno, bytes.as_slice())
                    .map_err(redb_err("append a journal record"))?;
                // Stream tags travel unchanged down a BC chain (the seed's Newtown), so that
                // this instance can later take over the SI stream itself.
                let marker = matches!(record.kind, RecordKind::StreamBase | RecordKind::StreamResync);
                if (record.stream != 0 || marker || self.supplementary)
                    && let Some(slot) = streams.get_mut(usize::from(record.stream))
                {
                    *slot = record.stream_seqno;
                }
                next += 1;
            }
            // The source's history records and SI streams, as far as this instance applied them.
            (meta.history, meta.streams) = super::meta::as_of(&source_history, &source_streams, next - 1);
        }
        if let Some((to, seqno)) = upgrade.filter(|(to, _)| *to > meta.format_version) {
            super::format::migrate(&txn, meta.format_version, to, seqno)?;
            tracing::info!(
                from = meta.format_version,
                to,
                seqno,
                "format upgraded by replaying the family's upgrade record"
            );
            meta.format_version = to;
            meta.format_written_by = Some(crate::VERSION.to_owned());
        }
        self.commit_applied(txn, committed, next - 1, &touched, streams, meta)?;
        Ok(next - 1)
    }

    /// SI apply: every received record becomes a new local transaction of `stream`, tagged
    /// with the record's seqno in its family, its before-images read from this instance's own
    /// data (local transactions interleave with the stream). Returns the last stream seqno.
    fn apply_si(
        &mut self,
        stream: u8,
        records: Vec<Record>,
        source_history: Vec<HistoryRecord>,
    ) -> Result<u64, StoreError> {
        self.counted = (0, 0, 0);
        self.journal_grown = 0;
        self.check_space()?;
        let db = self.store.db()?;
        let committed = self.store.committed_seqno();
        let mut next = committed + 1;
        let mut meta = self.store.meta();
        // An SI stream applies only into a supplementary primary still receiving SI (not one
        // demoted since the handshake).
        if meta.role != super::meta::Role::SupplementaryPrimary
            || !meta.receiver.as_ref().is_some_and(|r| r.si)
        {
            return Err(StoreError::Replication {
                reason: format!(
                    "{} is {} without an SI receiver; it applies no SI records",
                    meta.name,
                    meta.role.as_str()
                ),
            });
        }
        let slot = usize::from(stream);
        let mut streams = self.streams;
        let mut last = *streams.get(slot).ok_or_else(|| StoreError::Replication {
            reason: format!("stream {stream} is outside 1..=15"),
        })?;
        let state = meta.streams.iter_mut().find(|s| s.stream == stream).ok_or_else(|| {
            StoreError::Replication { reason: format!("stream {stream} is not set up on this instance") }
        })?;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        let mut touched: Vec<Vec<u8>> = Vec::new();
        // (stream seqno, local journal seqno) of every record applied, for the history below.
        let mut placed: Vec<(u64, u64)> = Vec::with_capacity(records.len());
        {
            let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            for record in records {
                if record.stream != 0 {
                    return Err(StoreError::Replication {
                        reason: format!(
                            "record {} is tagged stream {}: an SI source must not be supplementary",
                            record.seqno, record.stream
                        ),
                    });
                }
                if record.seqno != last + 1 {
                    return Err(StoreError::Replication {
                        reason: format!(
                            "received family seqno {} but stream {stream} expects {}",
                            record.seqno,
                            last + 1
                        ),
                    });
                }
                let mut changes = Vec::with_capacity(record.changes.len());
                // The source family's own keys (its format) are not this instance's.
                for change in record.changes.into_iter().filter(|c| !super::format::is_system_key(&c.key)) {
                    let before = data
                        .get(change.key.as_slice())
                        .map_err(redb_err("read a key"))?
                        .map(|v| v.value().to_vec());
                    match &change.after {
                        Some(v) => {
                            data.insert(change.key.as_slice(), v.as_slice())
                                .map_err(redb_err("write a key"))?;
                        }
                        None => {
                            data.remove(change.key.as_slice()).map_err(redb_err("delete a key"))?;
                        }
                    }
                    self.count(&change.key, before.is_some(), change.after.is_some());
                    touched.push(super::node::user_key(&change.key).to_vec());
                    // A local collection the source's change replaces without knowing it (both
                    // sides created the key): its elements become garbage, as a local DEL's.
                    let orphaned = super::node::replaced_generation(
                        &change.key,
                        before.as_deref(),
                        change.before.as_deref(),
                        change.after.as_deref(),
                    );
                    changes.push(KeyChange { key: change.key, before, after: change.after });
                    if let Some(garbage) = orphaned {
                        let was = data
                            .insert(garbage.as_slice(), &b""[..])
                            .map_err(redb_err("write a key"))?
                            .map(|v| v.value().to_vec());
                        changes.push(KeyChange { key: garbage, before: was, after: Some(Vec::new()) });
                    }
                }
                let local = Record {
                    kind: RecordKind::Update,
                    seqno: next,
                    stream,
                    stream_seqno: record.seqno,
                    commit_time_micros: record.commit_time_micros,
                    changes,
                };
                let bytes = local.encode();
                self.journal_grown += record_bytes(&bytes);
                journal.insert(next, bytes.as_slice()).map_err(redb_err("append a journal record"))?;
                placed.push((record.seqno, next));
                last = record.seqno;
                next += 1;
            }
            // Adopt the family's history up to what this instance now holds. A record new to
            // this instance takes effect at the first local transaction it covers.
            let old = std::mem::take(&mut state.history);
            state.history = source_history
                .into_iter()
                .filter(|h| h.stream == 0 && h.start_seqno <= last.max(1))
                .map(|h| {
                    let known = old.iter().find(|o| {
                        o.start_seqno == h.start_seqno
                            && o.root_name == h.root_name
                            && o.root_creation_id == h.root_creation_id
                    });
                    let journal_seqno = match known {
                        Some(o) => o.journal_seqno,
                        None => {
                            placed.iter().find(|(q, _)| *q >= h.start_seqno).map_or(committed, |(_, l)| *l)
                        }
                    };
                    HistoryRecord { stream, journal_seqno, ..h }
                })
                .collect();
            if let Some(s) = streams.get_mut(slot) {
                *s = last;
            }
        }
        self.commit_applied(txn, committed, next - 1, &touched, streams, meta)?;
        self.applied_touched = touched;
        Ok(last)
    }

    /// Commits an apply (BC or SI) that took the journal from `committed` to `last`, with its
    /// metadata and stream positions, and publishes it.
    fn commit_applied(
        &mut self,
        txn: redb::WriteTransaction,
        committed: u64,
        last: u64,
        touched: &[Vec<u8>],
        streams: StreamSeqnos,
        meta: InstanceMeta,
    ) -> Result<(), StoreError> {
        put_meta(&txn, &meta)?;
        save_streams(&txn, &self.streams, &streams)?;
        let started = Instant::now();
        let change = self.store.base_change();
        txn.commit().map_err(redb_err("commit replicated records"))?;
        drop(change);
        self.store.journal_resized(std::mem::take(&mut self.journal_grown));
        self.store.adjust_counts(std::mem::take(&mut self.counted));
        self.metrics.journal_fsync_duration_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.commits_total.inc_by(last - committed);
        self.metrics.journal_seqno.set(i64::try_from(last).unwrap_or(i64::MAX));
        self.touch(touched.iter().map(Vec::as_slice));
        self.set_streams(streams);
        self.store.publish(last, Some(meta), self.version);
        Ok(())
    }

    fn set_streams(&mut self, streams: StreamSeqnos) {
        if streams != self.streams {
            self.streams = streams;
            self.store.publish_streams(streams);
        }
    }

    fn meta(&mut self, update: MetaUpdate) -> Result<InstanceMeta, StoreError> {
        let db = self.store.db()?;
        let committed = self.store.committed_seqno();
        let mut meta = self.store.meta();
        let marker = update(&mut meta, committed).map_err(|reason| StoreError::Invalid { reason })?;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        let mut grown = 0;
        let mut seqno = committed;
        let mut streams = self.streams;
        {
            if let Some(marker) = marker {
                seqno += 1;
                let stream_seqno = match marker.kind {
                    RecordKind::StreamBase | RecordKind::StreamResync => {
                        let slot = streams.get_mut(usize::from(marker.stream)).ok_or_else(|| {
                            StoreError::Invalid {
                                reason: format!("stream {} is outside 0..=15", marker.stream),
                            }
                        })?;
                        *slot = marker.stream_seqno;
                        marker.stream_seqno
                    }
                    // Other markers take the stream-0 position they are committed at.
                    _ if self.supplementary => streams[0],
                    _ => seqno,
                };
                let record = Record {
                    kind: marker.kind,
                    seqno,
                    stream: marker.stream,
                    stream_seqno,
                    commit_time_micros: now_micros(),
                    changes: Vec::new(),
                };
                let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
                let bytes = record.encode();
                grown += record_bytes(&bytes);
                journal.insert(seqno, bytes.as_slice()).map_err(redb_err("append a journal record"))?;
            }
            put_meta(&txn, &meta)?;
            save_streams(&txn, &self.streams, &streams)?;
        }
        self.store.commit_without_data(txn).map_err(redb_err("commit instance metadata"))?;
        self.store.journal_resized(grown);
        self.metrics.journal_seqno.set(i64::try_from(seqno).unwrap_or(i64::MAX));
        self.set_streams(streams);
        self.store.publish(seqno, Some(meta.clone()), self.version);
        Ok(meta)
    }

    fn system(&mut self, key: Vec<u8>, value: Vec<u8>, upgrade_to: Option<u32>) -> Result<u64, StoreError> {
        self.check_space()?;
        let db = self.store.db()?;
        let committed = self.store.committed_seqno();
        let seqno = committed + 1;
        let mut meta = self.store.meta();
        if let Some(to) = upgrade_to {
            let prepared = self.store.snapshot()?.get(super::format::PREPARED_KEY)?.is_some();
            if let Some(why) = super::format::upgrade_blocker(meta.format_version, to, prepared) {
                return Err(StoreError::Invalid { reason: why });
            }
        }
        let mut streams = self.streams;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        let grown;
        {
            let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            let before = data
                .insert(key.as_slice(), value.as_slice())
                .map_err(redb_err("write a key"))?
                .map(|v| v.value().to_vec());
            // A supplementary instance counts its own transactions in stream 0.
            let stream_seqno = if self.supplementary {
                streams[0] += 1;
                streams[0]
            } else {
                seqno
            };
            let record = Record {
                kind: if upgrade_to.is_some() { RecordKind::Upgrade } else { RecordKind::Update },
                seqno,
                stream: 0,
                stream_seqno,
                commit_time_micros: now_micros(),
                changes: vec![KeyChange { key: key.clone(), before, after: Some(value) }],
            };
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            let bytes = record.encode();
            grown = record_bytes(&bytes);
            journal.insert(seqno, bytes.as_slice()).map_err(redb_err("append a journal record"))?;
        }
        if let Some(to) = upgrade_to {
            super::format::migrate(&txn, meta.format_version, to, seqno)?;
            meta.format_version = to;
            meta.format_written_by = Some(crate::VERSION.to_owned());
            put_meta(&txn, &meta)?;
        }
        save_streams(&txn, &self.streams, &streams)?;
        let change = self.store.base_change();
        txn.commit().map_err(redb_err("commit a system write"))?;
        drop(change);
        self.store.journal_resized(grown);
        self.touch(std::iter::once(key.as_slice()));
        self.version += 1;
        self.metrics.journal_seqno.set(i64::try_from(seqno).unwrap_or(i64::MAX));
        self.set_streams(streams);
        self.store.publish(seqno, upgrade_to.map(|_| meta), self.version);
        Ok(seqno)
    }

    /// Swaps a seeded file in: everything committed so far is checkpointed (so no journal
    /// segment can replay onto the new file), the seeded file is renamed over the database
    /// file and the directory synced, and the store takes up the new file's state. Readers
    /// that opened the old file finish on it.
    fn install_seed(
        &mut self,
        path: &std::path::Path,
        header: &super::seed::SeedHeader,
        expected: &SeedExpectation,
    ) -> Result<u64, StoreError> {
        // Nothing may have happened here since the snapshot was asked for that the swap would
        // discard: no commit, no change of role or receiver.
        let current = self.store.meta();
        let abandoned = |why: String| StoreError::Invalid {
            reason: format!("{}: the seeding is abandoned, the data is unchanged", why),
        };
        let joining = expected.joining();
        let (role, what) = match joining {
            super::seed::Joining::Bc => (super::meta::Role::Secondary, "a replicating secondary"),
            super::seed::Joining::Si { .. } => {
                (super::meta::Role::SupplementaryPrimary, "a supplementary primary receiving an SI stream")
            }
        };
        if current.role != role {
            return Err(abandoned(format!(
                "{} is {} now, no longer {what}",
                current.name,
                current.role.as_str()
            )));
        }
        // An SI seeding replaces only an instance holding nothing of its own: checked here, on
        // the thread that commits, so that no write can slip in after the receiver's check.
        if matches!(joining, super::seed::Joining::Si { .. })
            && let Some(holds) = self.store.own_data()
        {
            return Err(abandoned(format!("{} holds {holds} now", current.name)));
        }
        // It asked with the receiver it has now (a BC receiver that may be seeded, or an SI
        // receiver for a family's first stream).
        if current.receiver != expected.receiver {
            return Err(abandoned(format!("{}'s receiver was stopped or started again", current.name)));
        }
        if current.term != expected.term {
            return Err(abandoned(format!(
                "{}'s family moved to term {} since it asked for the snapshot (at term {})",
                current.name, current.term, expected.term
            )));
        }
        let committed = self.store.committed_seqno();
        if committed != expected.seqno || self.streams != expected.streams {
            return Err(abandoned(format!(
                "{} committed since it asked for the snapshot (seqno {} then, {committed} now)",
                current.name, expected.seqno
            )));
        }
        // The metadata as it is now, with the snapshot's history, streams and format (BC), or
        // with the family's new stream and its base record (SI). A failure here is the new
        // file's, never a reason to close the instance's own.
        let stream_base = joining.stream_base(header);
        let meta = match &stream_base {
            None => Ok(super::seed::merged(current.clone(), header)),
            Some(record) => super::seed::merged_si(current.clone(), header, record.seqno),
        };
        meta.and_then(|meta| super::seed::write_meta(path, &meta, stream_base.as_ref()))
            .map_err(|e| abandoned(format!("the seeded file cannot be completed ({})", error_chain(&e))))?;
        self.checkpoint_all()?;
        let db_path = self.store.db_path().to_owned();
        let data_dir = self.store.data_dir().to_owned();
        std::fs::rename(path, &db_path)
            .map_err(|source| StoreError::CreateDir { path: db_path.clone(), source })?;
        // From here the seeded file is the instance's (after a crash too, once the directory
        // is synced): should taking it up fail, the file is closed and the writer reopens it.
        let taken = sync_dir(&data_dir)
            .map_err(|source| StoreError::CreateDir { path: data_dir.clone(), source })
            .and_then(|()| {
                Database::create(&db_path)
                    .map_err(|source| StoreError::Open { path: db_path.clone(), source })
            })
            .and_then(|db| self.take_up(db, true));
        match taken {
            Ok(seqno) => {
                tracing::info!(journal_seqno = seqno, "seeded file installed");
                Ok(seqno)
            }
            Err(e) => {
                // The reopen takes the new file up as a replacement.
                self.replaced_pending = true;
                self.close_after_io_error();
                Err(e)
            }
        }
    }

    /// Takes up the state of the database file (nothing in the overlay, no journal segments):
    /// metadata, journal extent, stream seqnos, key counts; WATCH sees every key changed. With
    /// `replaced` (a seeded file took the old one's place) the instance's own sources also see
    /// a rollback and negotiate again.
    fn take_up(&mut self, db: Database, replaced: bool) -> Result<u64, StoreError> {
        let meta = read_meta(&db)?.ok_or_else(|| StoreError::Invalid {
            reason: "the database file has no instance metadata".into(),
        })?;
        let streams = super::read_stream_seqnos(&db)?;
        self.store.recount(&db)?;
        let seqno = self.store.reload_journal(&db)?;
        self.store.put_db(db);
        self.store.overlay.reset(seqno);
        self.set_streams(streams);
        self.supplementary = meta.supplementary;
        self.metrics.journal_seqno.set(i64::try_from(seqno).unwrap_or(i64::MAX));
        // A commit that reported an error may have reached the file: WATCH sees every key
        // changed either way.
        self.version += 1;
        self.buckets.fill(self.version);
        if replaced {
            self.store.note_rollback();
            self.store.lower_pins(seqno + 1);
        }
        self.store.publish(seqno, Some(meta), self.version);
        Ok(seqno)
    }

    /// redb refuses all access after an I/O error: close the file so it can be reopened.
    fn close_after_io_error(&mut self) {
        self.store.degraded.store(true, Ordering::Release);
        if self.leading {
            self.close_owed = true;
            return;
        }
        self.close_owed = false;
        let taken = {
            // A base change: the readers' shared view of the file goes with it (its last
            // reader drops it), and none is shared again until the file is back.
            let _change = self.store.base_change();
            self.store.db.write().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        };
        if let Some(mut db) = taken {
            // Readers hold clones only for the span of one command; wait for them to finish.
            let db = loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => break db,
                    Err(shared) => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            drop(db);
        }
        tracing::warn!("database closed after an I/O error; reopening");
    }

    fn reopen(&mut self) {
        match Database::create(self.store.db_path()) {
            // A commit that reported an error may still have reached the disk (the error can
            // come from the last fsync): take the state from the file, not from memory. With
            // commits since the last checkpoint in the overlay and the journal segments, the
            // file's own state is not the news: only its journal extent is read again.
            Ok(db) if self.store.overlay.is_empty() => match self.take_up(db, self.replaced_pending) {
                Ok(seqno) => {
                    self.replaced_pending = false;
                    tracing::info!(journal_seqno = seqno, "database reopened after an I/O error");
                }
                Err(e) => tracing::error!(error = %error_chain(&e), "reopened database fails its check"),
            },
            Ok(db) => match self.store.reload_journal(&db) {
                Ok(seqno) => {
                    self.store.put_db(db);
                    tracing::info!(journal_seqno = seqno, "database reopened after an I/O error");
                }
                Err(e) => tracing::error!(error = %error_chain(&e), "reopened database fails its check"),
            },
            Err(e) => tracing::warn!(error = %error_chain(&e), "database still cannot be reopened"),
        }
    }
}
