//! Storage: the journal is the write-ahead log (decision 0002); one redb file per instance
//! (the *base*) holds the data, the journal and the instance metadata as of the last
//! checkpoint.
//!
//! - [`Store`] opens or creates the file, checks it (format version, journal without holes),
//!   replays the journal segments past its last checkpoint (forward recovery), and hands out
//!   consistent read snapshots: the [`overlay`] of what was committed since the checkpoint,
//!   over the base.
//! - [`writer`] is the only code that commits: a thread that folds concurrent transactions into
//!   one group, appends the group's records to a [`segment`] and syncs it (one fsync), and
//!   acknowledges each only once it is durable. [`checkpoint`] brings the base up to date in
//!   the background.
//! - [`journal`] is the byte format of a journal record; [`meta`] the instance metadata.
//! - [`backup`] writes consistent snapshots and restores them under a new identity.
//! - [`lostlog`] is the Unreplicated Transaction Log every rollback writes before it commits.
//! - [`retention`] decides which journal records the file may drop (bounded journals), and
//!   drops them after checkpoints.

pub mod backup;
pub mod cache;
pub mod checkpoint;
pub mod format;
pub mod journal;
pub mod lostlog;
pub mod meta;
pub mod node;
pub mod overlay;
pub mod retention;
pub mod seed;
pub mod segment;
pub mod syncer;
pub mod writer;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use thiserror::Error;

use journal::{DecodeError, Record};
use meta::{FORMAT_VERSIONS_SUPPORTED, InstanceMeta};

/// Makes the names in directory `dir` durable (fsync of the directory): a file created,
/// renamed or removed there survives a power cut only after this.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Application keys and values, ordered by key bytes.
pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
/// Journal records by journal seqno.
pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Instance metadata documents by name.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Last stream seqno of each stream present (0..=15), kept in step with the journal: stream 0
/// is a supplementary instance's own counter, 1..=15 its SI streams.
pub(crate) const STREAMS: TableDefinition<u8, u64> = TableDefinition::new("streams");
/// The metadata key holding the [`InstanceMeta`] JSON document.
pub(crate) const META_INSTANCE: &str = "instance";

/// The metadata key present while a rollback still owes the journal segments its cut: the
/// seqno (8 bytes, little-endian) past which their records were rolled off. Written with the
/// rollback's metadata, removed once the segments are cut; a start that finds it cuts them
/// before it replays them.
pub(crate) const META_ROLLBACK_CUT: &str = "rollback_cut";

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "strand.redb";
/// Directory of the journal segments inside the data directory.
pub const JOURNAL_DIR: &str = "journal";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("failed to create data directory {path}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("failed to open database {path}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("storage failed while trying to {step}")]
    Redb { step: &'static str, source: redb::Error },
    #[error("data directory {path} holds no instance; start with --name to create one, or restore a backup")]
    NotCreated { path: PathBuf },
    #[error(
        "data directory holds instance {existing:?}, not {requested:?}; use the right --data-dir or --name"
    )]
    NameMismatch { existing: String, requested: String },
    #[error(
        "instance format version {found} is not supported by strand {} (it opens formats {supported:?}); run a binary that supports format {found} — the data is untouched",
        crate::VERSION
    )]
    FormatVersion { found: u32, supported: &'static [u32] },
    #[error("instance metadata is unreadable")]
    MetaDecode { source: serde_json::Error },
    #[error(
        "journal is corrupt: {reason}; the instance refuses to start rather than serve inconsistent data — restore from a backup or a replica"
    )]
    JournalCorrupt { reason: String },
    #[error("journal record {seqno} is unreadable")]
    RecordDecode { seqno: u64, source: DecodeError },
    #[error(
        "disk full: {free_bytes} bytes free on the data volume, below the reserve of {reserve_bytes}; free space or grow the volume (reads are still served)"
    )]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
    #[error("storage is recovering from an I/O error; retry shortly")]
    Recovering,
    #[error("failed to measure free space on {path}")]
    Statvfs { path: PathBuf, source: std::io::Error },
    #[error("failed to draw a random creation id")]
    Random { source: getrandom::Error },
    #[error("invalid instance: {reason}")]
    Invalid { reason: String },
    #[error("writer has stopped; the server is shutting down")]
    WriterGone,
    #[error("replication stopped: {reason}")]
    Replication { reason: String },
    #[error("the journal's write-ahead log failed")]
    Segment { source: segment::SegmentError },
    #[error(
        "the journal no longer holds seqno {wanted}: it begins at {first} (older records were trimmed by the journal's retention)"
    )]
    JournalTrimmed { wanted: u64, first: u64 },
}

impl From<segment::SegmentError> for StoreError {
    fn from(source: segment::SegmentError) -> Self {
        StoreError::Segment { source }
    }
}

impl StoreError {
    /// A stable, bounded label for metrics and admin error codes.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::CreateDir { .. } | StoreError::Open { .. } => "open",
            StoreError::Redb { .. } | StoreError::Statvfs { .. } | StoreError::Random { .. } => "io",
            StoreError::NotCreated { .. } => "not_created",
            StoreError::NameMismatch { .. } => "name_mismatch",
            StoreError::FormatVersion { .. } => "format_version",
            StoreError::MetaDecode { .. } => "meta_corrupt",
            StoreError::JournalCorrupt { .. } | StoreError::RecordDecode { .. } => "journal_corrupt",
            StoreError::DiskFull { .. } => "disk_full",
            StoreError::Recovering => "recovering",
            StoreError::Invalid { .. } => "invalid",
            StoreError::WriterGone => "shutting_down",
            StoreError::Replication { .. } => "replication",
            StoreError::Segment { source: segment::SegmentError::Io { .. } } => "io",
            StoreError::Segment { .. } => "journal_corrupt",
            StoreError::JournalTrimmed { .. } => "needs_reseed",
        }
    }
}

/// Shorthand to wrap any redb error with the step that failed.
pub(crate) fn redb_err<E: Into<redb::Error>>(step: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb { step, source: e.into() }
}

/// How to bring an instance into existence when its data directory is empty.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub name: String,
    pub supplementary: bool,
}

/// An open instance database, shared by readers and the writer thread.
#[derive(Debug)]
pub struct Store {
    data_dir: PathBuf,
    db_path: PathBuf,
    /// Nodes recently read from the base (the database file), and the view of the file its
    /// readers share. Declared before `db`, so dropped before it: the file closes with no
    /// read transaction of the store's own still open.
    read_cache: cache::ReadCache<FileView>,
    /// `None` while the writer reopens the file after an I/O error.
    db: RwLock<Option<Arc<Database>>>,
    /// Highest journal seqno whose commit is durable. Readers see at least this much.
    committed_seqno: AtomicU64,
    /// Cached copy of the metadata document, replaced after each commit that changes it.
    meta: RwLock<InstanceMeta>,
    /// Set when the last commit failed on I/O; cleared by a successful commit.
    degraded: AtomicBool,
    /// The role, mirrored from the metadata for a lock-free check on every write.
    role: AtomicU8,
    /// Whether the data's format is older than this binary's (version-mismatch mode),
    /// mirrored from the metadata for a lock-free check on every command.
    format_behind: AtomicBool,
    /// Monotonic change counter (never goes back, unlike seqnos after a rollback): WATCH
    /// compares against it.
    committed_version: AtomicU64,
    /// Publishes the committed seqno to replication sources waiting for new transactions.
    seqno_tx: tokio::sync::watch::Sender<u64>,
    /// Name of the source this secondary currently receives from (for READONLY errors).
    source_name: RwLock<Option<String>>,
    /// Counts rollbacks since start, so a source streaming from this journal notices one.
    rollbacks: AtomicU64,
    /// Last stream seqno per stream (see [`STREAMS`]), as of the committed seqno.
    stream_seqnos: RwLock<StreamSeqnos>,
    /// Bumped whenever `meta.streams` changes (a BC source then sends the new states).
    streams_version: AtomicU64,
    /// Bumped whenever the history records change (a promotion, or a secondary adopting its
    /// source's new record): a source then negotiates again, so its receivers learn the new
    /// record before any transaction under it.
    history_version: AtomicU64,
    /// Mirror of `meta.lease_required` for a lock-free check on every write.
    lease_required: AtomicBool,
    /// When the role lease runs out, in nanoseconds of [`Store::clock`] (monotonic, this
    /// process); 0 while no lease has been granted since start.
    lease_until_nanos: AtomicU64,
    /// Origin of the monotonic clock the lease is measured on.
    clock: std::time::Instant,
    /// Keys and keys with an expiry, as of the committed seqno (DBSIZE, INFO keyspace): counted
    /// once at open, then kept in step by the writer at each commit.
    counts: std::sync::Mutex<KeyCounts>,
    /// What was committed since the base's checkpoint.
    pub(crate) overlay: overlay::Overlay,
    /// Where the journal segments live.
    journal_dir: PathBuf,
    /// Where the file's journal begins, and its size.
    journal: JournalExtent,
    /// Readers that still need the journal from some seqno on (replication sources).
    pins: Arc<retention::Pins>,
    /// Whether checkpoints may trim the journal: only while every configured replication
    /// stream holds its pin (not before the streams start, nor once they stop).
    trimming: AtomicBool,
}

/// The extent of the file's journal (its records up to the checkpoint).
#[derive(Debug)]
struct JournalExtent {
    /// What trimming has taken off its start.
    base: RwLock<retention::JournalBase>,
    /// Bytes its records take ([`retention::stored_bytes`] each).
    bytes: AtomicU64,
}

/// How many keys the data holds, and how many of them have an expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub keys: u64,
    pub expiring: u64,
    /// Nodes of the data table (heads, elements, expiry index and the engine's own).
    pub nodes: u64,
}

/// Writes stop this long before the role lease ends, so a group started just before the end
/// commits inside it.
const LEASE_MARGIN_NANOS: u64 = 250_000_000;

/// Last stream seqno of streams 0..=15.
pub type StreamSeqnos = [u64; journal::STREAMS_MAX as usize];

/// An encoded journal record with its seqno and commit time (what a replication source sends).
pub type RawRecord = (u64, u64, Vec<u8>);

/// Checks an encoded record's header against the seqno it is stored under. Only the header is
/// decoded (its checksum covers the whole record): the receiver decodes the rest.
fn raw_record(seqno: u64, bytes: Vec<u8>) -> Result<RawRecord, StoreError> {
    let head = Record::head(&bytes).map_err(|source| StoreError::RecordDecode { seqno, source })?;
    if head.seqno != seqno {
        return Err(StoreError::JournalCorrupt {
            reason: format!("record stored under {seqno} says it is {}", head.seqno),
        });
    }
    Ok((seqno, head.commit_time_micros, bytes))
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Opens the instance in `data_dir`, creating it from `create` if the directory is empty.
    pub fn open(data_dir: &Path, create: Option<&CreateSpec>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::CreateDir { path: data_dir.to_owned(), source })?;
        // A seeding cut short leaves its unfinished file; the instance is the one in place.
        seed::remove_partial(data_dir)?;
        let db_path = data_dir.join(DB_FILE);
        let db = Database::create(&db_path)
            .map_err(|source| StoreError::Open { path: db_path.clone(), source })?;
        // The database file's name (and the data directory's, if just made) must be durable
        // before the first commit is acknowledged: a power cut may otherwise take the whole
        // file with it, synced commits and all (found by engine/tests/power_cut.rs).
        sync_dir(data_dir).map_err(|source| StoreError::CreateDir { path: data_dir.to_owned(), source })?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|source| StoreError::CreateDir { path: parent.to_owned(), source })?;
        }
        let meta = load_or_create_meta(&db, data_dir, create)?;
        let base = retention::read_base(&db)?;
        let checkpoint = check_journal(&db, &base)?;
        let journal_dir = data_dir.join(JOURNAL_DIR);
        if let Some(seqno) = rollback_cut_owed(&db)? {
            // A rollback committed, and stopped before it cut the segments: the records
            // past its target must not be replayed.
            if journal_dir.exists() {
                cut_segments_past(&journal_dir, seqno)?;
            }
            clear_rollback_cut(&db)?.commit().map_err(redb_err("commit the rollback's cut"))?;
            tracing::info!(past = seqno, "finished a rollback's cut of the journal segments");
        }
        let committed = replay_segments(&db, data_dir, &journal_dir, &meta, checkpoint)?;
        let stream_seqnos = read_stream_seqnos(&db)?;
        let counts = count_keys(&db)?;
        let journal_bytes = measure_journal(&db)?;
        let meta_lease_required = meta.lease_required;
        tracing::info!(
            instance = %meta.name, journal_seqno = committed, role = meta.role.as_str(),
            "opened instance"
        );
        crate::storage::lostlog::resolve_pending(
            data_dir,
            meta.last_rollback.as_ref().map(|r| r.log_path.as_str()),
        );
        Ok(Store {
            data_dir: data_dir.to_owned(),
            db_path,
            db: RwLock::new(Some(Arc::new(db))),
            committed_seqno: AtomicU64::new(committed),
            role: AtomicU8::new(meta.role.to_u8()),
            format_behind: AtomicBool::new(meta.format_version < crate::version::FORMAT),
            meta: RwLock::new(meta),
            degraded: AtomicBool::new(false),
            committed_version: AtomicU64::new(0),
            seqno_tx: tokio::sync::watch::Sender::new(committed),
            source_name: RwLock::new(None),
            rollbacks: AtomicU64::new(0),
            stream_seqnos: RwLock::new(stream_seqnos),
            streams_version: AtomicU64::new(0),
            history_version: AtomicU64::new(0),
            lease_required: AtomicBool::new(meta_lease_required),
            lease_until_nanos: AtomicU64::new(0),
            clock: std::time::Instant::now(),
            counts: std::sync::Mutex::new(counts),
            overlay: overlay::Overlay::new(committed),
            read_cache: cache::ReadCache::new(crate::limits::READ_CACHE_BYTES_DEFAULT),
            journal_dir,
            journal: JournalExtent { base: RwLock::new(base), bytes: AtomicU64::new(journal_bytes) },
            pins: Arc::new(retention::Pins::default()),
            trimming: AtomicBool::new(false),
        })
    }

    /// Allows (or stops) journal trimming after checkpoints.
    pub fn set_trimming(&self, on: bool) {
        self.trimming.store(on, Ordering::Release);
    }

    pub(crate) fn trimming(&self) -> bool {
        self.trimming.load(Ordering::Acquire)
    }

    /// Lowers every pin to at most `from`: after a rollback to `from - 1`, the records its
    /// receivers had acknowledged past it are gone and will be sent again.
    pub(crate) fn lower_pins(&self, from: u64) {
        self.pins.lower(from);
    }

    /// Reads the journal's extent from `db` again (after reopening it): checks the journal and
    /// returns its last seqno.
    pub(crate) fn reload_journal(&self, db: &Database) -> Result<u64, StoreError> {
        let base = retention::read_base(db)?;
        let last = check_journal(db, &base)?;
        let bytes = measure_journal(db)?;
        *self.journal.base.write().unwrap_or_else(std::sync::PoisonError::into_inner) = base;
        self.journal.bytes.store(bytes, Ordering::Release);
        Ok(last)
    }

    /// What trimming has taken off the journal's start.
    pub fn journal_base(&self) -> retention::JournalBase {
        *self.journal.base.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first seqno the journal holds (1 until the journal is trimmed).
    pub fn journal_first(&self) -> u64 {
        self.journal_base().first()
    }

    /// Bytes the journal's records take: the file's and those committed since its checkpoint.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.bytes.load(Ordering::Acquire) + self.overlay.pin_with(|| ()).0.record_bytes()
    }

    /// Bytes the file's journal records take.
    pub(crate) fn journal_file_bytes(&self) -> u64 {
        self.journal.bytes.load(Ordering::Acquire)
    }

    /// Records of `delta` bytes were added to (or, negative, taken off) the file's journal.
    pub(crate) fn journal_resized(&self, delta: i64) {
        if delta >= 0 {
            self.journal.bytes.fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
        } else {
            let _ = self.journal.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(delta.unsigned_abs()))
            });
        }
    }

    /// A trim took records off the journal's start.
    pub(crate) fn journal_trimmed(&self, trimmed: &retention::Trimmed) {
        *self.journal.base.write().unwrap_or_else(std::sync::PoisonError::into_inner) = trimmed.base;
        self.journal_resized(-i64::try_from(trimmed.bytes).unwrap_or(i64::MAX));
    }

    /// Claims the journal from `from` on for `holder` until the pin is dropped: records it
    /// needs are trimmed only past a retention limit.
    pub fn pin_journal(&self, holder: &str, from: u64) -> retention::Pin {
        retention::Pin::new(&self.pins, holder, from)
    }

    /// Every pin on the journal, as (holder, lowest seqno needed).
    pub fn journal_pins(&self) -> Vec<(String, u64)> {
        self.pins.all()
    }

    /// The pins' epoch: bumped by every rollback (see [`retention::Pin::set_at`]).
    pub fn pins_epoch(&self) -> u64 {
        self.pins.epoch()
    }

    pub(crate) fn lowest_pin(&self) -> Option<(String, u64)> {
        self.pins.lowest()
    }

    /// Where the journal segments live.
    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    fn clock_nanos(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Grants (or renews) the role lease for `duration` from now, by this process's monotonic
    /// clock (which keeps running while the process is stopped, so a frozen primary wakes up
    /// with its lease expired).
    pub fn grant_lease(&self, duration: std::time::Duration) {
        let until = self.clock_nanos().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        self.lease_until_nanos.store(until, Ordering::Release);
    }

    /// Ends the role lease at once.
    pub fn revoke_lease(&self) {
        self.lease_until_nanos.store(0, Ordering::Release);
    }

    /// Time left on the role lease: `None` when none was granted since start.
    pub fn lease_remaining(&self) -> Option<std::time::Duration> {
        let until = self.lease_until_nanos.load(Ordering::Acquire);
        (until != 0).then(|| std::time::Duration::from_nanos(until.saturating_sub(self.clock_nanos())))
    }

    /// Version-mismatch mode: this binary writes a newer format than the data has (a newer
    /// binary on an older instance, during a hot-standby upgrade). It then serves replication
    /// and admin only, as the seed's standby does until its image is upgraded. The message
    /// names both versions.
    pub fn version_mismatch(&self) -> Option<String> {
        if !self.format_behind.load(Ordering::Acquire) {
            return None;
        }
        let meta = self.meta.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let data = meta.format_version;
        (data < crate::version::FORMAT).then(|| {
            let by = meta.format_written_by.as_deref().map(|v| format!(" (written by strand {v})")).unwrap_or_default();
            format!(
                "MISMATCH strand {} (format {}) runs here on data of format {data}{by}: it replicates but serves no clients until its family's upgrade reaches it (`ctl upgrade-format` on the family's primary); connect to the primary",
                crate::VERSION,
                crate::version::FORMAT
            )
        })
    }

    /// Why an application write is refused right now, as the RESP error to send: a replicating
    /// secondary (`READONLY` naming its source), or a primary whose role lease is required and
    /// not running (the operator has not confirmed it is still its family's primary), or any
    /// instance in version-mismatch mode.
    pub fn write_refusal(&self) -> Option<String> {
        self.version_mismatch().or_else(|| self.role_refusal())
    }

    /// The role and lease part of [`Store::write_refusal`]: what keeps even the engine's own
    /// writes (an upgrade, a preparation) from a replicating secondary or a deposed primary.
    pub fn role_refusal(&self) -> Option<String> {
        match self.role() {
            meta::Role::Secondary => Some(self.readonly_message()),
            meta::Role::Standalone => None,
            meta::Role::Primary | meta::Role::SupplementaryPrimary => {
                if !self.lease_required.load(Ordering::Acquire) {
                    return None;
                }
                let until = self.lease_until_nanos.load(Ordering::Acquire);
                let now = self.clock_nanos();
                // A batch that starts must be able to commit before the lease ends.
                if until > now.saturating_add(LEASE_MARGIN_NANOS) {
                    return None;
                }
                let meta = self.meta.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                Some(if until == 0 {
                    format!(
                        "READONLY {} waits for its role lease (term {}): it takes writes once the operator confirms it is still its family's primary",
                        meta.name, meta.term
                    )
                } else if until > now {
                    format!(
                        "READONLY role lease of {} (term {}) expires in {:.2}s, too soon to start a write: it may no longer be its family's primary; writes resume if the operator renews the lease",
                        meta.name,
                        meta.term,
                        std::time::Duration::from_nanos(until - now).as_secs_f64()
                    )
                } else {
                    format!(
                        "READONLY role lease of {} (term {}) expired {:.1}s ago: it may no longer be its family's primary; writes resume if the operator renews the lease",
                        meta.name,
                        meta.term,
                        std::time::Duration::from_nanos(now - until).as_secs_f64()
                    )
                })
            }
        }
    }

    /// Last stream seqno of every stream, as of the committed seqno.
    pub fn stream_seqnos(&self) -> StreamSeqnos {
        *self.stream_seqnos.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes new stream seqnos (writer only; call before [`Store::publish`]).
    pub(crate) fn publish_streams(&self, seqnos: StreamSeqnos) {
        *self.stream_seqnos.write().unwrap_or_else(std::sync::PoisonError::into_inner) = seqnos;
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Keys (heads, expired or not, as Redis's DBSIZE) and keys with an expiry, committed.
    pub fn key_counts(&self) -> KeyCounts {
        *self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies what a commit changed to the counts (the writer calls it once the commit is
    /// durable, before anyone hears of it).
    pub(crate) fn adjust_counts(&self, (keys, expiring, nodes): (i64, i64, i64)) {
        let mut c = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.keys = c.keys.saturating_add_signed(keys);
        c.expiring = c.expiring.saturating_add_signed(expiring);
        c.nodes = c.nodes.saturating_add_signed(nodes);
    }

    /// Takes the node count from the file, O(1) (after a direct change of the file, with
    /// nothing in the overlay).
    pub(crate) fn recount_nodes(&self) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
        let nodes = txn
            .open_table(DATA)
            .map_err(redb_err("open the data table"))?
            .len()
            .map_err(redb_err("count nodes"))?;
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).nodes = nodes;
        Ok(())
    }

    /// Counts keys anew from the file (at open, and after the file was reopened).
    pub(crate) fn recount(&self, db: &Database) -> Result<(), StoreError> {
        let counts = count_keys(db)?;
        *self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
        Ok(())
    }

    /// What this instance holds that a snapshot would replace, for an SI seeding (which
    /// takes only an instance holding none of it): an SI stream, keys, or transactions of
    /// its own. `None` when it holds nothing.
    pub fn own_data(&self) -> Option<String> {
        if let Some(s) = self.meta().streams.first() {
            return Some(format!("an SI stream (stream {} from family {})", s.stream, s.family));
        }
        let (keys, own) = (self.key_counts().keys, self.stream_seqnos()[0]);
        (keys > 0 || own > 0).then(|| format!("data of its own ({keys} keys, {own} transactions)"))
    }

    pub fn committed_seqno(&self) -> u64 {
        self.committed_seqno.load(Ordering::Acquire)
    }

    pub fn meta(&self) -> InstanceMeta {
        self.meta.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn role(&self) -> meta::Role {
        meta::Role::from_u8(self.role.load(Ordering::Acquire))
    }

    pub fn committed_version(&self) -> u64 {
        self.committed_version.load(Ordering::Acquire)
    }

    /// Notifies on every change of the committed seqno.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.seqno_tx.subscribe()
    }

    /// The error a write gets on a replicating secondary, naming where to write instead.
    pub fn readonly_message(&self) -> String {
        let name = self.meta.read().unwrap_or_else(std::sync::PoisonError::into_inner).name.clone();
        match self.source_name() {
            Some(source) => format!(
                "READONLY You can't write against a read only replica. {name} replicates from {source}; write there"
            ),
            None => format!(
                "READONLY You can't write against a read only replica. {name} is a replicating secondary; write to its primary"
            ),
        }
    }

    pub fn rollbacks(&self) -> u64 {
        self.rollbacks.load(Ordering::Acquire)
    }

    pub(crate) fn note_rollback(&self) {
        self.rollbacks.fetch_add(1, Ordering::AcqRel);
    }

    pub fn source_name(&self) -> Option<String> {
        self.source_name.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_source_name(&self, name: Option<String>) {
        *self.source_name.write().unwrap_or_else(std::sync::PoisonError::into_inner) = name;
    }

    /// Publishes a committed state: seqno, metadata and version (writer only). The metadata
    /// goes first, so whoever sees the new seqno sees metadata at least as new.
    pub(crate) fn publish(&self, seqno: u64, meta: Option<InstanceMeta>, version: u64) {
        if let Some(meta) = meta {
            self.role.store(meta.role.to_u8(), Ordering::Release);
            self.lease_required.store(meta.lease_required, Ordering::Release);
            self.format_behind.store(meta.format_version < crate::version::FORMAT, Ordering::Release);
            let mut current = self.meta.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.streams != meta.streams {
                self.streams_version.fetch_add(1, Ordering::AcqRel);
            }
            if current.history != meta.history {
                self.history_version.fetch_add(1, Ordering::AcqRel);
            }
            // A lease is for one role at one term: a demotion, a promotion or a new term ends
            // it (a re-promoted instance waits for a new grant).
            if current.role != meta.role || current.term != meta.term {
                self.lease_until_nanos.store(0, Ordering::Release);
            }
            *current = meta;
        }
        self.committed_seqno.store(seqno, Ordering::Release);
        self.committed_version.store(version, Ordering::Release);
        self.seqno_tx.send_replace(seqno);
    }

    /// Changes whenever the history records change.
    pub fn history_version(&self) -> u64 {
        self.history_version.load(Ordering::Acquire)
    }

    /// Changes whenever the SI stream states in the metadata change.
    pub fn streams_version(&self) -> u64 {
        self.streams_version.load(Ordering::Acquire)
    }

    /// Whether the last commit failed on I/O (disk full, or the file being reopened).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Whether the writer has taken the file away to reopen it (it waits for the readers that
    /// hold it: a long one lets go).
    pub fn is_closing(&self) -> bool {
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_none()
    }

    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Recovering)
    }

    /// A consistent read-only view of everything committed so far: the overlay pinned as of
    /// the committed seqno, over the view of the file its readers share (see
    /// [`cache::ReadCache::open`]), taken while it is pinned. It reads the data; what reads
    /// the journal is a [`JournalView`].
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (sv, (seqno, (cache, file))) =
            self.overlay.pin_with(|| (self.committed_seqno(), self.read_cache.open(|| self.begin_read())));
        Ok(Snapshot { file: file?, sv, seqno, cache, fill: true })
    }

    /// The writer's view: like [`Store::snapshot`], but reading the overlay at its newest,
    /// versions not yet durable included (the group being formed reads its own writes). It
    /// reads the read cache but does not fill it: what the writer reads it is about to write,
    /// and the overlay then answers for the node until the next checkpoint empties the cache.
    pub(crate) fn snapshot_latest(&self) -> Result<Snapshot, StoreError> {
        let (sv, (cache, file)) = self.overlay.pin_with(|| self.read_cache.open(|| self.begin_read()));
        Ok(Snapshot { file: file?, sv, seqno: u64::MAX, cache, fill: false })
    }

    /// A view of everything committed so far, like [`Store::snapshot`], for reading the
    /// journal: its read transaction is its own, begun while the overlay is pinned, so it
    /// sees every table of the file as of then — the shared one is current for the data
    /// table only: a commit that changes no data (a journal trim, the metadata) is no base
    /// change, and a reader that took the shared one before it does not see it.
    pub fn journal_view(&self) -> Result<JournalView, StoreError> {
        let (sv, (seqno, file)) =
            self.overlay.pin_with(|| (self.committed_seqno(), self.begin_read().map(Arc::new)));
        Ok(JournalView(Snapshot { file: file?, sv, seqno, cache: None, fill: false }))
    }

    /// A read transaction of the database file in place now. The file is taken inside the
    /// read cache's [`cache::ReadCache::open`], not before it: a reader holding the file that
    /// a seeded one has just replaced would otherwise fill the new file's cache.
    fn begin_read(&self) -> Result<FileView, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
        #[cfg(debug_assertions)]
        let db = Arc::downgrade(&db);
        Ok(FileView {
            txn,
            data: OnceLock::new(),
            #[cfg(debug_assertions)]
            db,
        })
    }

    /// Commits `txn`, a write of the database file that changes no data (journal records
    /// taken off, the metadata), and lets go of the readers' shared view
    /// ([`cache::ReadCache::forget_view`]): redb reuses the pages such a commit frees only
    /// once no read transaction from before it is left. Every such commit made while the
    /// store serves readers goes through here.
    pub(crate) fn commit_without_data(&self, txn: redb::WriteTransaction) -> Result<(), redb::CommitError> {
        let committed = txn.commit();
        self.read_cache.forget_view();
        committed
    }

    /// Puts `db` in place of the file the readers use (a seeded file, or the file reopened
    /// after an I/O error): a base change, like a commit to the data table.
    pub(crate) fn put_db(&self, db: Database) {
        let _change = self.base_change();
        *self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(db));
    }

    /// Marks a change of the database file's data as under way until the guard is dropped:
    /// every commit that writes the data table, or puts another file in place, holds one
    /// (the read cache starts over after it).
    pub(crate) fn base_change(&self) -> cache::BaseChange<'_, FileView> {
        self.read_cache.change()
    }

    /// The read cache's counts and size.
    pub fn read_cache_stats(&self) -> cache::CacheStats {
        self.read_cache.stats()
    }

    /// Sets the read cache's bound in bytes (`--read-cache-bytes`; 0 turns it off).
    pub fn set_read_cache_bytes(&self, bytes: usize) {
        self.read_cache.set_bytes_max(bytes);
    }

    /// [`Snapshot::journal_raw`] of committed records `from..=to` (within `bytes_max` as it
    /// is), when the overlay holds them (the newest records, past the last checkpoint): read
    /// from memory, without a database read transaction, so a replication source sending what
    /// was just committed need not leave its task. `None` when any of them is in the database
    /// file (or not committed): read them from a snapshot.
    pub fn recent_journal_raw(
        &self,
        from: u64,
        to: u64,
        bytes_max: usize,
    ) -> Option<Result<Vec<RawRecord>, StoreError>> {
        let (sv, to) = self.overlay.pin_with(|| to.min(self.committed_seqno()));
        if from > to || from <= sv.checkpoint_seqno() {
            return None;
        }
        let records = sv.records_within(from, to, bytes_max);
        let last = records.last().map(|(s, _)| *s);
        let whole = records.first().map(|(s, _)| *s) == Some(from)
            && last.is_some_and(|last| last - from + 1 == records.len() as u64);
        whole.then(|| records.into_iter().map(|(seqno, bytes)| raw_record(seqno, bytes)).collect())
    }

    /// Size of the database file in bytes.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.db_path).map(|m| m.len()).unwrap_or(0)
    }

    /// Free bytes on the volume holding the data directory.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        free_bytes(&self.data_dir)
    }

    /// The data volume: bytes available, and its size.
    pub fn volume(&self) -> Result<(u64, u64), StoreError> {
        volume(&self.data_dir)
    }
}

fn load_or_create_meta(
    db: &Database,
    data_dir: &Path,
    create: Option<&CreateSpec>,
) -> Result<InstanceMeta, StoreError> {
    let existing = read_meta(db)?;
    let meta = match (existing, create) {
        (Some(meta), Some(spec)) if meta.name != spec.name => {
            return Err(StoreError::NameMismatch { existing: meta.name, requested: spec.name.clone() });
        }
        (Some(meta), _) => meta,
        (None, None) => return Err(StoreError::NotCreated { path: data_dir.to_owned() }),
        (None, Some(spec)) => {
            meta::validate_name(&spec.name).map_err(|reason| StoreError::Invalid { reason })?;
            let id = meta::new_creation_id().map_err(|source| StoreError::Random { source })?;
            let meta = InstanceMeta::new(spec.name.clone(), spec.supplementary, id, now_micros());
            write_meta_now(db, &meta)?;
            tracing::info!(instance = %meta.name, supplementary = meta.supplementary, "created instance");
            meta
        }
    };
    if !FORMAT_VERSIONS_SUPPORTED.contains(&meta.format_version) {
        return Err(StoreError::FormatVersion {
            found: meta.format_version,
            supported: FORMAT_VERSIONS_SUPPORTED,
        });
    }
    Ok(meta)
}

/// The stream seqno of the latest record of `stream` at or before journal seqno `seqno` (0 if
/// there is none): what a rollback to `seqno` leaves as the stream's position. Before the
/// journal's first record, the journal base says.
pub(crate) fn last_of_stream<T>(
    journal: &T,
    base: &retention::JournalBase,
    stream: u8,
    seqno: u64,
) -> Result<u64, StoreError>
where
    T: ReadableTable<u64, &'static [u8]>,
{
    for entry in journal.range(..=seqno).map_err(redb_err("read the journal"))?.rev() {
        let (at, bytes) = entry.map_err(redb_err("read the journal"))?;
        let record = Record::decode(bytes.value())
            .map_err(|source| StoreError::RecordDecode { seqno: at.value(), source })?;
        if record.stream == stream {
            return Ok(record.stream_seqno);
        }
    }
    Ok(base.streams.get(usize::from(stream)).copied().unwrap_or(0))
}

/// Reads the stream seqno table (all zero when it does not exist yet).
pub(crate) fn read_stream_seqnos(db: &Database) -> Result<StreamSeqnos, StoreError> {
    stream_seqnos_in(&db.begin_read().map_err(redb_err("begin a read transaction"))?)
}

/// The stream seqno table as of a read transaction.
pub(crate) fn stream_seqnos_in(txn: &redb::ReadTransaction) -> Result<StreamSeqnos, StoreError> {
    let mut out = [0u64; journal::STREAMS_MAX as usize];
    let table = match txn.open_table(STREAMS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(redb_err("open the streams table")(e)),
    };
    for entry in table.iter().map_err(redb_err("read the streams table"))? {
        let (stream, seqno) = entry.map_err(redb_err("read the streams table"))?;
        if let Some(slot) = out.get_mut(usize::from(stream.value())) {
            *slot = seqno.value();
        }
    }
    Ok(out)
}

pub(crate) fn read_meta(db: &Database) -> Result<Option<InstanceMeta>, StoreError> {
    meta_in(&db.begin_read().map_err(redb_err("begin a read transaction"))?)
}

/// The instance metadata as of a read transaction.
pub(crate) fn meta_in(txn: &redb::ReadTransaction) -> Result<Option<InstanceMeta>, StoreError> {
    meta_value(txn, META_INSTANCE, "read instance metadata", |bytes| {
        serde_json::from_slice(bytes).map_err(|source| StoreError::MetaDecode { source })
    })
}

/// The metadata table's value under `key`, decoded by `decode` (`None` if absent).
fn meta_value<R>(
    txn: &redb::ReadTransaction,
    key: &str,
    reading: &'static str,
    decode: impl FnOnce(&[u8]) -> Result<R, StoreError>,
) -> Result<Option<R>, StoreError> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb_err("open the metadata table")(e)),
    };
    let Some(bytes) = table.get(key).map_err(redb_err(reading))? else {
        return Ok(None);
    };
    decode(bytes.value()).map(Some)
}

/// Writes the metadata in its own durable commit, creating all tables (used at creation and
/// by offline restore, never while a writer thread runs).
pub(crate) fn write_meta_now(db: &Database, meta: &InstanceMeta) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
    {
        let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
        let bytes = serde_json::to_vec(meta).map_err(|source| StoreError::MetaDecode { source })?;
        table.insert(META_INSTANCE, bytes.as_slice()).map_err(redb_err("write instance metadata"))?;
        txn.open_table(DATA).map_err(redb_err("create the data table"))?;
        txn.open_table(JOURNAL).map_err(redb_err("create the journal table"))?;
    }
    format::create(&txn, meta.format_version, 0)?;
    txn.commit().map_err(redb_err("commit instance metadata"))
}

/// Takes every record past `seqno` off the journal segments in `dir`: the segments that
/// begin past it are removed, newest first, and the one holding it is cut after it (and
/// synced). Run again, it changes nothing. A segment whose frames do not run from its first
/// seqno is corruption.
pub(crate) fn cut_segments_past(dir: &Path, seqno: u64) -> Result<(), StoreError> {
    let segments = segment::list(dir)?;
    let mut removed = false;
    for (first, path) in segments.iter().rev() {
        if *first > seqno {
            match std::fs::remove_file(path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(
                        segment::SegmentError::Io { action: "remove", path: path.clone(), source }.into()
                    );
                }
            }
            continue;
        }
        let contents = match segment::read(path) {
            Ok(contents) => contents,
            // Removed by a checkpoint meanwhile: its records were all at or below one, and so
            // at or below `seqno` (the base never passes a rollback's target before its cut).
            Err(segment::SegmentError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let keep = usize::try_from(seqno + 1 - first).unwrap_or(usize::MAX);
        // The frames at the cut must be the seqnos they stand for.
        for (at, expected) in [(keep.wrapping_sub(1), seqno), (keep, seqno + 1)] {
            let Some(body) = contents.frames.get(at) else { continue };
            let found = Record::decode(body)
                .map_err(|source| StoreError::RecordDecode { seqno: expected, source })?
                .seqno;
            if found != expected {
                return Err(StoreError::JournalCorrupt {
                    reason: format!(
                        "segment {} holds seqno {found} where {expected} was expected",
                        path.display()
                    ),
                });
            }
        }
        segment::keep_frames(path, &contents, keep)?;
        break;
    }
    if removed {
        sync_dir(dir).map_err(|source| segment::SegmentError::Io {
            action: "sync",
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The seqno past which a rollback still owes the journal segments their cut, if one does
/// (see [`META_ROLLBACK_CUT`]).
pub(crate) fn rollback_cut_owed(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    meta_value(&txn, META_ROLLBACK_CUT, "read the owed rollback cut", |bytes| {
        bytes.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)).ok_or_else(|| StoreError::JournalCorrupt {
            reason: "the owed rollback cut is not a seqno".into(),
        })
    })
}

/// A write that records the segments as cut (see [`META_ROLLBACK_CUT`]) once committed.
pub(crate) fn clear_rollback_cut(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
    {
        let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
        table.remove(META_ROLLBACK_CUT).map_err(redb_err("clear the owed rollback cut"))?;
    }
    Ok(txn)
}

/// Forward recovery (GT.M's `mupip journal -recover -forward`, in small): replays the records
/// of the journal segments in `dir` past `checkpoint` — the last seqno the database holds —
/// into the database in one durable commit, then removes the segments (the database now holds
/// all of it). The last segment's torn tail (a group whose write was cut short, never
/// acknowledged) is cut off; a gap in the seqnos, damage followed by whole frames, or another
/// instance's segment refuses the start. Returns the last seqno.
fn replay_segments(
    db: &Database,
    data_dir: &Path,
    dir: &Path,
    meta: &InstanceMeta,
    checkpoint: u64,
) -> Result<u64, StoreError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        sync_dir(data_dir).map_err(|source| StoreError::CreateDir { path: data_dir.to_owned(), source })?;
    }
    segment::remove_unfinished(dir)?;
    let segments = segment::list(dir)?;
    let mut records: Vec<(Record, Vec<u8>)> = Vec::new();
    let mut next = checkpoint + 1;
    for (i, (_, path)) in segments.iter().enumerate() {
        let contents = if i + 1 == segments.len() {
            segment::recover(path, &meta.creation_id)?.0
        } else {
            let contents = segment::read(path)?;
            if contents.creation_id != meta.creation_id {
                return Err(segment::SegmentError::Foreign {
                    path: path.clone(),
                    found: contents.creation_id,
                    expected: meta.creation_id.clone(),
                }
                .into());
            }
            contents
        };
        for body in contents.frames {
            let record =
                Record::decode(&body).map_err(|source| StoreError::RecordDecode { seqno: next, source })?;
            if record.seqno < next {
                continue; // the database holds it already
            }
            if record.seqno != next {
                return Err(StoreError::JournalCorrupt {
                    reason: format!(
                        "segment {} holds seqno {} where {next} was expected: a hole in the journal",
                        path.display(),
                        record.seqno
                    ),
                });
            }
            records.push((record, body));
            next += 1;
        }
    }
    if !records.is_empty() {
        let mut streams = read_stream_seqnos(db)?;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        {
            let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            let mut table = txn.open_table(STREAMS).map_err(redb_err("open the streams table"))?;
            for (record, body) in &records {
                for change in &record.changes {
                    if !redo_change(&mut data, change)? {
                        return Err(StoreError::JournalCorrupt {
                            reason: format!(
                                "replaying record {}: key {} differs from its before-image",
                                record.seqno,
                                String::from_utf8_lossy(&change.key)
                            ),
                        });
                    }
                }
                journal.insert(record.seqno, body.as_slice()).map_err(redb_err("replay a journal record"))?;
                let marker = matches!(
                    record.kind,
                    journal::RecordKind::StreamBase | journal::RecordKind::StreamResync
                );
                if (record.stream != 0 || marker || meta.supplementary)
                    && let Some(slot) = streams.get_mut(usize::from(record.stream))
                {
                    *slot = record.stream_seqno;
                }
            }
            for (stream, seqno) in streams.iter().enumerate() {
                let stream = u8::try_from(stream).unwrap_or(0);
                table.insert(stream, *seqno).map_err(redb_err("write the streams table"))?;
            }
        }
        txn.commit().map_err(redb_err("commit the replayed journal"))?;
        tracing::info!(from = checkpoint + 1, to = next - 1, "replayed the journal past the last checkpoint");
    }
    remove_segments(dir, u64::MAX)?;
    Ok(next - 1)
}

/// Writes `change`'s after-image into `data` if the node holds its before-image; `false`,
/// changing nothing, if it does not (the caller says what that means).
pub(crate) fn redo_change(
    data: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    change: &journal::KeyChange,
) -> Result<bool, StoreError> {
    let current =
        data.get(change.key.as_slice()).map_err(redb_err("read a key"))?.map(|v| v.value().to_vec());
    if current != change.before {
        return Ok(false);
    }
    match &change.after {
        Some(v) => data.insert(change.key.as_slice(), v.as_slice()).map(drop),
        None => data.remove(change.key.as_slice()).map(drop),
    }
    .map_err(redb_err("write a key"))?;
    Ok(true)
}

/// Removes, oldest first, the segments in `dir` whose records all lie at or below `upto`. A
/// segment's records end where the next one's begin, so the newest (the one the writer
/// appends to) stays, unless `upto` is `u64::MAX`, which removes every one.
pub(crate) fn remove_segments(dir: &Path, upto: u64) -> Result<usize, StoreError> {
    let segments = segment::list(dir)?;
    let mut removed = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        let whole = match segments.get(i + 1) {
            // A segment's records end where the next one's begin.
            Some((next_first, _)) => next_first.saturating_sub(1) <= upto,
            None => upto == u64::MAX,
        };
        if !whole {
            break;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(segment::SegmentError::Io { action: "remove", path: path.clone(), source }.into());
            }
        }
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir).map_err(|source| segment::SegmentError::Io {
            action: "sync",
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(removed)
}

/// Checks that the journal's seqnos run without holes from just past `base` and returns the
/// last one (0 if empty).
pub(crate) fn check_journal(db: &Database, base: &retention::JournalBase) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    let journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
    let len = journal.len().map_err(redb_err("count journal records"))?;
    let first = journal.first().map_err(redb_err("read the first journal record"))?;
    let last = journal.last().map_err(redb_err("read the last journal record"))?;
    match (first, last) {
        // Empty, or every record rolled back down to the trimmed start.
        (None, None) => Ok(base.seqno),
        (Some((first, _)), Some((last, last_bytes))) => {
            let (first, last) = (first.value(), last.value());
            if first != base.first() {
                return Err(StoreError::JournalCorrupt {
                    reason: format!(
                        "first record is {first}, not {} (trimmed up to {})",
                        base.first(),
                        base.seqno
                    ),
                });
            }
            if last - first + 1 != len {
                return Err(StoreError::JournalCorrupt {
                    reason: format!("{len} records for seqnos {first}..={last}: there is a hole"),
                });
            }
            let record = Record::decode(last_bytes.value())
                .map_err(|source| StoreError::RecordDecode { seqno: last, source })?;
            if record.seqno != last {
                return Err(StoreError::JournalCorrupt {
                    reason: format!("record stored under {last} says it is {}", record.seqno),
                });
            }
            Ok(last)
        }
        _ => Err(StoreError::JournalCorrupt { reason: "journal table is inconsistent".into() }),
    }
}

/// Bytes the file's journal records take (walks the journal's tree: once per open).
fn measure_journal(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    match txn.open_table(JOURNAL) {
        Ok(table) => Ok(table.stats().map_err(redb_err("measure the journal"))?.stored_bytes()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(redb_err("open the journal table")(e)),
    }
}

pub(crate) fn free_bytes(path: &Path) -> Result<u64, StoreError> {
    volume(path).map(|(free, _)| free)
}

/// The volume holding `path`: bytes available to this process, and its size.
pub(crate) fn volume(path: &Path) -> Result<(u64, u64), StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| StoreError::Invalid {
        reason: format!("data directory path {} contains a NUL byte", path.display()),
    })?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory of
    // the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(StoreError::Statvfs { path: path.to_owned(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
    let (avail, blocks, frsize) = (stat.f_bavail as u64, stat.f_blocks as u64, stat.f_frsize as u64);
    Ok((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

/// A read transaction of the database file, and its data table once a read opened it.
pub(crate) struct FileView {
    txn: redb::ReadTransaction,
    /// The data table of `txn`, opened at the first read that the overlay and the read
    /// cache do not answer: opening it reads the file's table tree, which showed in the
    /// profile of point reads at 50 clients (decision 0003, "The allocator, and reads that
    /// never open the table").
    data: OnceLock<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    /// The file it reads, for the debug builds' check that a shared view is still the
    /// file's state (weak: the writer's close after an I/O error waits for strong holders).
    #[cfg(debug_assertions)]
    db: std::sync::Weak<Database>,
}

/// A consistent, read-only view of the committed state: the overlay as of `seqno` over the
/// base.
pub struct Snapshot {
    file: Arc<FileView>,
    sv: Arc<overlay::SuperVersion>,
    /// The committed seqno the view reflects.
    seqno: u64,
    /// The read cache of the base state `file` reads, if it is certain which that is.
    cache: Option<Arc<cache::Cache>>,
    /// Whether reads from the base are added to `cache`.
    fill: bool,
}

/// A [`Snapshot`] that also reads the journal (see [`Store::journal_view`]).
pub struct JournalView(Snapshot);

impl Snapshot {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.sv.get(key, self.seqno) {
            return Ok(value);
        }
        if let Some(cached) = self.cache.as_ref().and_then(|c| c.get(key)) {
            // Every test runs in a debug build: each hit is checked against the file.
            #[cfg(debug_assertions)]
            assert_eq!(cached, self.base_get(key)?, "the read cache disagrees with the file for {key:?}");
            return Ok(cached);
        }
        let value = self.base_get(key)?;
        if let Some(cache) = self.cache.as_ref().filter(|_| self.fill) {
            cache.insert(key, value.as_deref());
        }
        Ok(value)
    }

    /// The data table as this view's file state holds it.
    fn data(&self) -> Result<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>, StoreError> {
        if let Some(data) = self.file.data.get() {
            return Ok(data);
        }
        let data = self.file.txn.open_table(DATA).map_err(redb_err("open the data table"))?;
        Ok(self.file.data.get_or_init(|| data))
    }

    /// `key`'s node as the database file holds it.
    fn base_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.data()?.get(key).map_err(redb_err("read a key"))?.map(|v| v.value().to_vec());
        #[cfg(debug_assertions)]
        self.check_still_the_file(key, value.as_deref())?;
        Ok(value)
    }

    /// Every test runs in a debug build: while no base change has begun since this view's
    /// state was current, a transaction begun now must read what it reads. A commit that
    /// changed the data without a base change would leave the shared view and the read
    /// cache behind the file, and fail here.
    #[cfg(debug_assertions)]
    fn check_still_the_file(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let (Some(cache), Some(db)) = (self.cache.as_ref(), self.file.db.upgrade()) else { return Ok(()) };
        if cache.superseded() {
            return Ok(());
        }
        let now = db.begin_read().map_err(redb_err("begin a read transaction"))?;
        drop(db);
        let table = now.open_table(DATA).map_err(redb_err("open the data table"))?;
        let in_file = table.get(key).map_err(redb_err("read a key"))?.map(|v| v.value().to_vec());
        if !cache.superseded() {
            assert_eq!(
                value,
                in_file.as_deref(),
                "the readers' shared view is behind the file for {key:?}: a commit changed the data without a base change"
            );
        }
        Ok(())
    }

    /// The committed seqno this view reflects.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// Nodes of the data table as of this view (walks what the overlay holds).
    pub fn nodes(&self) -> Result<u64, StoreError> {
        let data = self.data()?;
        let mut nodes = data.len().map_err(redb_err("count keys"))?;
        for key in self.sv.node_keys() {
            let now = self.sv.get(&key, self.seqno).is_some_and(|v| v.is_some());
            let in_base = data.get(key.as_slice()).map_err(redb_err("read a key"))?.is_some();
            match (now, in_base) {
                (true, false) => nodes += 1,
                (false, true) => nodes = nodes.saturating_sub(1),
                _ => {}
            }
        }
        Ok(nodes)
    }

    /// Up to `limit` nodes in `range`, forwards or backwards.
    pub fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let base = self.data()?.range::<&[u8]>(range).map_err(redb_err("read a range"))?;
        let base: Box<dyn Iterator<Item = _>> = if rev { Box::new(base.rev()) } else { Box::new(base) };
        let base = base.map(|entry| {
            entry.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(redb_err("read a range"))
        });
        self.sv.range(self.seqno, range, rev, limit, base)
    }
}

impl JournalView {
    /// Journal records with seqnos in `from..=to`, decoded and checked.
    pub fn journal(&self, from: u64, to: u64) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.for_each_record(from, to, |_, record, _| {
            out.push(record);
            Ok(())
        })?;
        Ok(out)
    }

    /// Encoded journal records `from..=to` with their seqno and commit time, checksums
    /// verified (what a replication source sends), stopping after the record that brings
    /// their bytes to `bytes_max` (at least one, however large).
    pub fn journal_raw(&self, from: u64, to: u64, bytes_max: usize) -> Result<Vec<RawRecord>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.for_each_raw(from, to, |seqno, raw| {
            if !out.is_empty() && bytes >= bytes_max {
                return Ok(false);
            }
            bytes = bytes.saturating_add(raw.len());
            out.push(raw_record(seqno, raw.into_owned())?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `f` with records `from..=to` (as far as this view reaches), each checksum
    /// verified, in seqno order: the base's first, then the overlay's past them.
    fn for_each_record(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, Record, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_raw(from, to, |seqno, bytes| {
            let record =
                Record::decode(&bytes).map_err(|source| StoreError::RecordDecode { seqno, source })?;
            f(seqno, record, &bytes).map(|()| true)
        })
    }

    /// Calls `f` with the encoded records `from..=to` (as far as this view reaches), in
    /// seqno order: the base's first (borrowed from redb), then the overlay's past them; until
    /// `f` says `false`.
    fn for_each_raw(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, std::borrow::Cow<'_, [u8]>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let to = to.min(self.0.seqno);
        if from > to {
            return Ok(());
        }
        let mut next = from;
        let table = self.0.file.txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
        let first = retention::base_in(&self.0.file.txn)?.first();
        if from < first {
            return Err(StoreError::JournalTrimmed { wanted: from, first });
        }
        for entry in table.range(from..=to).map_err(redb_err("read the journal"))? {
            let (seqno, bytes) = entry.map_err(redb_err("read the journal"))?;
            let seqno = seqno.value();
            if !f(seqno, std::borrow::Cow::Borrowed(bytes.value()))? {
                return Ok(());
            }
            next = seqno + 1;
        }
        self.0.sv.visit_records(next, to, |seqno, bytes| f(seqno, std::borrow::Cow::Borrowed(bytes)))
    }

    /// Records from `at` (capped at this view) backwards, until `f` says stop. Reaching the
    /// start of a trimmed journal first is an error: what `f` looks for may have been there.
    fn for_each_record_back(
        &self,
        at: u64,
        mut f: impl FnMut(&Record) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let at = at.min(self.0.seqno);
        let mut below = at.saturating_add(1);
        for (seqno, bytes) in self.0.sv.records(1, at).iter().rev() {
            let record =
                Record::decode(bytes).map_err(|source| StoreError::RecordDecode { seqno: *seqno, source })?;
            below = *seqno;
            if f(&record)? {
                return Ok(());
            }
        }
        let table = self.0.file.txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
        for entry in table.range(..below).map_err(redb_err("read the journal"))?.rev() {
            let (seqno, bytes) = entry.map_err(redb_err("read the journal"))?;
            let seqno = seqno.value();
            let record =
                Record::decode(bytes.value()).map_err(|source| StoreError::RecordDecode { seqno, source })?;
            below = seqno;
            if f(&record)? {
                return Ok(());
            }
        }
        if below > 1 {
            return Err(StoreError::JournalTrimmed { wanted: below - 1, first: below });
        }
        Ok(())
    }

    /// Journal entries (seqno, stream, stream seqno, kind) from the end backwards, up to and
    /// including the first one `stop` accepts (or the start of the journal), in journal order.
    /// What SI negotiation reads: only the suffix that can be in question.
    pub fn entries_back_to(
        &self,
        mut stop: impl FnMut(&Record) -> bool,
    ) -> Result<Vec<crate::storage::journal::StreamEntry>, StoreError> {
        let mut out = Vec::new();
        self.for_each_record_back(self.0.seqno, |record| {
            out.push(crate::storage::journal::StreamEntry::of(record));
            Ok(stop(record))
        })?;
        out.reverse();
        Ok(out)
    }

    /// Full check of the journal against the data: seqnos contiguous from the journal's start,
    /// each record's checksum, each before-image equal to the previous after-image of its key,
    /// and the last after-image of every key equal to the stored data (and no stored key the
    /// journal never wrote). A trimmed journal no longer holds the first image of every key: a
    /// key's first before-image there is taken as given, and stored keys it never touches are
    /// counted (`keys_before_journal`) instead of refused.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let base = retention::base_in(&self.0.file.txn)?;
        let trimmed = base.seqno > 0;
        let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut expected = base.first();
        self.for_each_record(base.first(), self.0.seqno, |seqno, record, _| {
            if seqno != expected {
                return Err(StoreError::JournalCorrupt {
                    reason: format!("expected seqno {expected}, found {seqno}"),
                });
            }
            if record.seqno != seqno {
                return Err(StoreError::JournalCorrupt {
                    reason: format!("record stored under {seqno} says it is {}", record.seqno),
                });
            }
            for change in record.changes {
                let previous = match latest.get(&change.key) {
                    Some(previous) => previous.clone(),
                    None if trimmed => change.before.clone(),
                    None => None,
                };
                if previous != change.before {
                    return Err(StoreError::JournalCorrupt {
                        reason: format!(
                            "record {seqno}: before-image of key {} differs from the value the journal last wrote",
                            String::from_utf8_lossy(&change.key)
                        ),
                    });
                }
                latest.insert(change.key, change.after);
            }
            expected += 1;
            Ok(())
        })?;
        if expected - 1 != self.0.seqno {
            return Err(StoreError::JournalCorrupt {
                reason: format!(
                    "the journal ends at {} but the committed seqno is {}",
                    expected - 1,
                    self.0.seqno
                ),
            });
        }
        let mut keys = 0u64;
        for (key, value) in &latest {
            let stored = self.0.get(key)?;
            if &stored != value {
                return Err(StoreError::JournalCorrupt {
                    reason: format!(
                        "key {}: data differs from the journal's last after-image",
                        String::from_utf8_lossy(key)
                    ),
                });
            }
            if value.is_some() {
                keys += 1;
            }
        }
        let stored_keys = self.0.nodes()?;
        let keys_before_journal = stored_keys.saturating_sub(keys);
        if stored_keys < keys || (!trimmed && keys_before_journal > 0) {
            return Err(StoreError::JournalCorrupt {
                reason: format!("data holds {stored_keys} keys but the journal accounts for {keys}"),
            });
        }
        Ok(VerifyReport {
            journal_seqno: expected - 1,
            journal_first_seqno: base.first(),
            keys,
            keys_before_journal,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub journal_seqno: u64,
    /// Where the journal begins (1 unless trimmed).
    pub journal_first_seqno: u64,
    /// Keys whose every change the journal holds.
    pub keys: u64,
    /// Keys (nodes) the data holds that no retained journal record touches: written before
    /// the journal's start (0 unless trimmed).
    pub keys_before_journal: u64,
}

/// Nodes with their values, or any other pairs of byte strings.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Walks the head and expiry-index nodes (once per open: O(keys)).
fn count_keys(db: &Database) -> Result<KeyCounts, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    let data = match txn.open_table(DATA) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(KeyCounts::default()),
        Err(e) => return Err(redb_err("open the data table")(e)),
    };
    let count = |lo: &[u8], hi: &[u8]| -> Result<u64, StoreError> {
        let mut n = 0u64;
        for entry in data.range::<&[u8]>(lo..hi).map_err(redb_err("count keys"))? {
            entry.map_err(redb_err("count keys"))?;
            n += 1;
        }
        Ok(n)
    };
    Ok(KeyCounts {
        keys: count(node::HEADS_START, node::HEADS_END)?,
        expiring: count(b"X", b"Y")?,
        nodes: data.len().map_err(redb_err("count nodes"))?,
    })
}

/// Node bounds of a range read.
pub type Range<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers of one state share a view of the file; a commit that changes no data lets it
    /// go, so that the next reader's view is new and redb may reuse what the commit freed.
    #[test]
    fn a_commit_without_data_lets_the_readers_shared_view_go() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CreateSpec { name: "Ardmore".into(), supplementary: false };
        let store = Store::open(dir.path(), Some(&spec)).unwrap();
        let (a, b) = (store.snapshot().unwrap(), store.snapshot().unwrap());
        assert!(Arc::ptr_eq(&a.file, &b.file), "readers of one state share its view");
        let txn = store.db().unwrap().begin_write().unwrap();
        store.commit_without_data(txn).unwrap();
        let c = store.snapshot().unwrap();
        assert!(!Arc::ptr_eq(&a.file, &c.file), "a view from before the commit is still shared");
        assert!(Arc::ptr_eq(&c.file, &store.snapshot().unwrap().file), "the new view is shared in turn");
    }
}
