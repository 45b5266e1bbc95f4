//! Seeding a secondary from a snapshot (decision 0002, step 7).
//!
//! The source reads one read snapshot of its database file — the data, the stream seqnos and
//! the history and SI streams as of the file's last journal seqno S (its last checkpoint) —
//! and hands it out
//! in chunks of nodes ([`read_snapshot`]). The receiver writes them into a fresh redb file
//! beside its own ([`Builder`]) and commits it durably with an empty journal whose base is S
//! (as if trimmed up to S: see [`super::retention::JournalBase`]). The writer then gives it
//! the instance metadata — its own identity and settings as they are then, with the
//! snapshot's history, stream states, format and term ([`merged`]) — and swaps it in
//! (`Writer::install_seed`: checkpoint, rename over the database file, directory sync, take
//! up its state), and the receiver streams the journal from S + 1.
//!
//! A seeding cut short at any point leaves the old file in place: the new one is built under
//! [`SEED_FILE`], which the next start (or the next seeding) removes, and only a complete,
//! durably committed file is renamed into place.
//!
//! An SI stream is seeded the same way ([`Joining::Si`]), into a supplementary instance that
//! holds nothing of its own yet: the snapshot becomes its data, its own journal goes on past
//! what it had committed, and the file it swaps in already holds the family's stream, begun
//! at the snapshot's seqno by a `stream_base` record — so the instance either has the stream
//! with its data, or neither.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::format::CATALOG;
use super::journal::{Record, RecordKind};
use super::meta::{HistoryRecord, InstanceMeta, StreamState};
use super::retention::{JournalBase, META_JOURNAL_BASE};
use super::{DATA, JOURNAL, META, META_INSTANCE, STREAMS, Store, StoreError, StreamSeqnos, redb_err};

/// Where a seeding builds the new database file, in the data directory.
pub const SEED_FILE: &str = "seed.partial";
/// Largest target size of one chunk of nodes (one replication frame); a chunk holds at least
/// one node, so it may be larger by one node.
pub const CHUNK_BYTES_TARGET: usize = 4 * 1024 * 1024;
/// Smallest target size of a chunk (a rate-limited seeding sends smaller ones).
pub const CHUNK_BYTES_MIN: usize = 64 * 1024;

/// What a snapshot is of: sent before its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedHeader {
    /// The journal seqno the snapshot reflects: the receiver streams from the next one.
    pub seqno: u64,
    /// The source's history records as of `seqno`.
    pub history: Vec<HistoryRecord>,
    /// The source's SI stream states as of `seqno` (a supplementary family).
    pub streams: Vec<StreamState>,
    /// Each stream's last seqno as of `seqno`.
    pub stream_seqnos: StreamSeqnos,
    /// Nodes the data table holds (the receiver checks it got exactly these).
    pub nodes: u64,
    /// The data's format and the release that wrote it.
    pub format_version: u32,
    pub format_written_by: Option<String>,
    /// Format 2's catalog (empty before).
    pub catalog: Vec<(String, String)>,
    /// The family's term as the source knows it.
    pub term: u64,
}

/// One node of the data table: its key and value.
pub type Node = (Vec<u8>, Vec<u8>);

/// The stream an SI seeding begins: the instance holds no stream before it, so the first.
pub const SI_SEED_STREAM: u8 = 1;

/// How a seeded file joins the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// A BC receiver becomes a copy of the source as of the snapshot: it continues the
    /// source's journal from the snapshot's seqno.
    Bc,
    /// A supplementary instance holding nothing of its own takes the source family's first SI
    /// stream. Its journal is its own: it goes on one past the `committed` seqno it had (so a
    /// member replicating it sees a gap to be seeded over, never an unchanged journal), with
    /// its stream seqnos as they were (`streams`).
    Si { committed: u64, streams: StreamSeqnos },
}

impl Joining {
    /// The empty journal the seeded file begins with (as if trimmed up to its base).
    pub fn journal_base(&self, header: &SeedHeader) -> JournalBase {
        match *self {
            Joining::Bc => JournalBase { seqno: header.seqno, streams: header.stream_seqnos },
            Joining::Si { committed, streams } => JournalBase { seqno: committed + 1, streams },
        }
    }

    /// SI: the `stream_base` record that begins the family's stream in the seeded file, right
    /// after its journal base, at the snapshot's seqno.
    pub fn stream_base(&self, header: &SeedHeader) -> Option<Record> {
        match self {
            Joining::Bc => None,
            Joining::Si { .. } => Some(Record {
                kind: RecordKind::StreamBase,
                seqno: self.journal_base(header).seqno + 1,
                stream: SI_SEED_STREAM,
                stream_seqno: header.seqno,
                commit_time_micros: super::now_micros(),
                changes: Vec::new(),
            }),
        }
    }
}

/// Reads a consistent snapshot of `store`'s database file: calls `header` once, then `chunk`
/// with every node in key order, in chunks of about `chunk_bytes`. Either returning `false`
/// stops the read (the peer went away). Returns the number of nodes handed out.
pub fn read_snapshot(
    store: &Store,
    chunk_bytes: usize,
    header: impl FnOnce(SeedHeader) -> bool,
    mut chunk: impl FnMut(Vec<Node>) -> bool,
) -> Result<u64, StoreError> {
    let db = store.db()?;
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    let meta = super::meta_in(&txn)?
        .ok_or_else(|| StoreError::Invalid { reason: "instance has no metadata".into() })?;
    let base = super::retention::base_in(&txn)?;
    let journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
    let seqno = journal.last().map_err(redb_err("read the journal"))?.map_or(base.seqno, |(k, _)| k.value());
    drop(journal);
    let stream_seqnos = super::stream_seqnos_in(&txn)?;
    let mut catalog = Vec::new();
    match txn.open_table(CATALOG) {
        Ok(table) => {
            for entry in table.iter().map_err(redb_err("read the catalog"))? {
                let (k, v) = entry.map_err(redb_err("read the catalog"))?;
                catalog.push((k.value().to_owned(), v.value().to_owned()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(redb_err("open the catalog")(e)),
    }
    let data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
    let nodes = data.len().map_err(redb_err("count nodes"))?;
    // The metadata may be ahead of the data: a rollback within the overlay commits it at its
    // target before the checkpointer brings the data there.
    let (history, streams) = super::meta::as_of(&meta.history, &meta.streams, seqno);
    let head = SeedHeader {
        seqno,
        history,
        streams,
        stream_seqnos,
        nodes,
        format_version: meta.format_version,
        format_written_by: meta.format_written_by,
        catalog,
        term: meta.term,
    };
    if !header(head) {
        return Ok(0);
    }
    let mut sent = 0u64;
    let mut pending: Vec<Node> = Vec::new();
    let mut bytes = 0usize;
    for entry in data.iter().map_err(redb_err("read the data"))? {
        let (k, v) = entry.map_err(redb_err("read the data"))?;
        let (k, v) = (k.value().to_vec(), v.value().to_vec());
        bytes += 8 + k.len() + v.len();
        pending.push((k, v));
        if bytes >= chunk_bytes {
            // The writer closes the file after an I/O error and waits for every reader of it:
            // a snapshot (which may be long) lets go at once.
            if store.is_closing() {
                return Err(StoreError::Recovering);
            }
            sent += pending.len() as u64;
            bytes = 0;
            if !chunk(std::mem::take(&mut pending)) {
                return Ok(sent);
            }
        }
    }
    if !pending.is_empty() {
        sent += pending.len() as u64;
        if !chunk(pending) {
            return Ok(sent);
        }
    }
    Ok(sent)
}

/// A new database file being filled from a snapshot.
pub struct Builder {
    db: Database,
    path: PathBuf,
    nodes: u64,
}

impl Builder {
    /// Starts a new file in `data_dir`, replacing what an earlier seeding left.
    pub fn create(data_dir: &Path) -> Result<Builder, StoreError> {
        let path = data_dir.join(SEED_FILE);
        remove_partial(data_dir)?;
        let db = Database::create(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Builder { db, path, nodes: 0 })
    }

    /// Nodes written so far.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Writes one chunk (in key order, as [`read_snapshot`] gives them). Not durable on its
    /// own: [`Builder::finish`] makes everything durable at once.
    pub fn add(&mut self, chunk: &[Node]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(redb_err("begin a write transaction"))?;
        txn.set_durability(Durability::None).map_err(|e| StoreError::Invalid { reason: e.to_string() })?;
        {
            let mut table = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            for (k, v) in chunk {
                table.insert(k.as_slice(), v.as_slice()).map_err(redb_err("write a seeded node"))?;
            }
        }
        txn.commit().map_err(redb_err("commit seeded nodes"))?;
        self.nodes += chunk.len() as u64;
        Ok(())
    }

    /// Completes the data of the file: the journal is empty, based as `joining` says, with
    /// the stream seqnos there and the snapshot's catalog. Committed durably; returns the
    /// file's path. The instance metadata is the writer's to add, at the swap ([`write_meta`]).
    pub fn finish(self, header: &SeedHeader, joining: Joining) -> Result<PathBuf, StoreError> {
        if self.nodes != header.nodes {
            return Err(StoreError::Invalid {
                reason: format!("the snapshot promised {} nodes but {} arrived", header.nodes, self.nodes),
            });
        }
        let base = joining.journal_base(header);
        let txn = self.db.begin_write().map_err(redb_err("begin a write transaction"))?;
        {
            let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
            if base.seqno > 0 {
                let bytes = serde_json::to_vec(&base).map_err(|source| StoreError::MetaDecode { source })?;
                table
                    .insert(META_JOURNAL_BASE, bytes.as_slice())
                    .map_err(redb_err("write the journal base"))?;
            }
            txn.open_table(DATA).map_err(redb_err("create the data table"))?;
            txn.open_table(JOURNAL).map_err(redb_err("create the journal table"))?;
            let mut streams = txn.open_table(STREAMS).map_err(redb_err("create the streams table"))?;
            for (stream, seqno) in base.streams.iter().enumerate() {
                if *seqno > 0 {
                    let stream = u8::try_from(stream).unwrap_or(u8::MAX);
                    streams.insert(stream, *seqno).map_err(redb_err("write the streams table"))?;
                }
            }
            if !header.catalog.is_empty() {
                let mut catalog = txn.open_table(CATALOG).map_err(redb_err("create the catalog"))?;
                for (k, v) in &header.catalog {
                    catalog.insert(k.as_str(), v.as_str()).map_err(redb_err("write the catalog"))?;
                }
            }
        }
        txn.commit().map_err(redb_err("commit the seeded file"))?;
        drop(self.db);
        Ok(self.path)
    }
}

/// The metadata of an instance seeded from the snapshot `header` describes: its own
/// identity, role and replication settings as they are now (`local`), with the snapshot's
/// history, SI stream states and data format, and the higher of the two terms.
pub fn merged(local: InstanceMeta, header: &SeedHeader) -> InstanceMeta {
    InstanceMeta {
        history: header.history.clone(),
        streams: header.streams.clone(),
        format_version: header.format_version,
        format_written_by: header.format_written_by.clone(),
        term: local.term.max(header.term),
        ..local
    }
}

/// The metadata of a supplementary instance seeded for an SI stream from the snapshot
/// `header` describes: its own identity, history (its own family's) and settings as they are
/// now (`local`), the snapshot's data format, and the source family's stream begun at the
/// snapshot's seqno by the record at journal seqno `at`, at the source's term.
pub fn merged_si(local: InstanceMeta, header: &SeedHeader, at: u64) -> Result<InstanceMeta, StoreError> {
    let stream = StreamState::begin(SI_SEED_STREAM, &header.history, header.seqno, at, header.term)
        .ok_or_else(|| StoreError::Invalid { reason: "the snapshot carries no history records".into() })?;
    Ok(InstanceMeta {
        streams: vec![stream],
        format_version: header.format_version,
        format_written_by: header.format_written_by.clone(),
        ..local
    })
}

/// Writes the instance metadata into the seeded file at `path`, durably, before the swap;
/// with an SI stream's `stream_base` record, that record too (the stream's position with it).
pub(crate) fn write_meta(
    path: &Path,
    meta: &InstanceMeta,
    stream_base: Option<&Record>,
) -> Result<(), StoreError> {
    // `open`, not `create`: a file that is not there is an error, never a new empty instance.
    let db = Database::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
    {
        let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
        let bytes = serde_json::to_vec(meta).map_err(|source| StoreError::MetaDecode { source })?;
        table.insert(META_INSTANCE, bytes.as_slice()).map_err(redb_err("write instance metadata"))?;
        if let Some(record) = stream_base {
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            journal
                .insert(record.seqno, record.encode().as_slice())
                .map_err(redb_err("append the stream's base record"))?;
            let mut streams = txn.open_table(STREAMS).map_err(redb_err("open the streams table"))?;
            streams
                .insert(record.stream, record.stream_seqno)
                .map_err(redb_err("write the streams table"))?;
        }
    }
    txn.commit().map_err(redb_err("commit the seeded file's metadata"))
}

/// Removes what a seeding cut short left in `data_dir` (at start, and before a new one).
pub fn remove_partial(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(SEED_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed an unfinished seeding's file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::CreateDir { path, source }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use super::*;
    use crate::storage::meta::{ReceiverConfig, Role};
    use crate::storage::writer::{Marker, SeedExpectation, Writer, WriterLimits};
    use crate::storage::{CreateSpec, StreamSeqnos};

    fn header(seqno: u64, nodes: u64, from: &InstanceMeta) -> SeedHeader {
        SeedHeader {
            seqno,
            history: from.history.clone(),
            streams: Vec::new(),
            stream_seqnos: StreamSeqnos::default(),
            nodes,
            format_version: from.format_version,
            format_written_by: None,
            catalog: Vec::new(),
            term: 7,
        }
    }

    fn built(store: &Store, seqno: u64, joining: Joining) -> (PathBuf, SeedHeader) {
        let mut b = Builder::create(store.data_dir()).unwrap();
        b.add(&[(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]).unwrap();
        let header = header(seqno, 2, &store.meta());
        (b.finish(&header, joining).unwrap(), header)
    }

    async fn install(writer: &Writer<()>, store: &Store, asked: SeedExpectation) -> Result<u64, String> {
        let (path, header) = built(store, 500, asked.joining());
        writer.install_seed(path, header, asked).await.map_err(|e| e.to_string())
    }

    type Instance = (Arc<Store>, Writer<()>, std::thread::JoinHandle<()>);

    /// A new instance in `dir` with its writer, given `role` and `receiver` (with `marker`
    /// committed alongside), as a receiver that may be seeded is.
    async fn instance(
        dir: &std::path::Path,
        name: &str,
        supplementary: bool,
        role: Role,
        receiver: ReceiverConfig,
        marker: Option<Marker>,
    ) -> Instance {
        let spec = CreateSpec { name: name.into(), supplementary };
        let store = Arc::new(Store::open(dir, Some(&spec)).unwrap());
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let (writer, thread) = Writer::<()>::spawn(store.clone(), WriterLimits::default(), metrics).unwrap();
        writer
            .update_meta(Box::new(move |m, _| {
                m.role = role;
                m.receiver = Some(receiver);
                Ok(marker)
            }))
            .await
            .unwrap();
        (store, writer, thread)
    }

    /// An SI seeding swaps in a file that holds the source family's stream, begun at the
    /// snapshot's seqno by the record after the instance's own journal base (one past what it
    /// had committed); the instance keeps its own family. Abandoned when it holds data of its
    /// own by the time of the swap (a write after the receiver found it empty), or a stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_si_seeding_installs_the_stream_with_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let source = InstanceMeta::new("ardmore".into(), false, "ardmore-id".into(), 0);
        let receiver = ReceiverConfig { autorollback: true, si: true, noresync: false, seed: true };
        let malvern = |dir| {
            instance(
                dir,
                "malvern",
                true,
                Role::SupplementaryPrimary,
                receiver.clone(),
                Some(Marker::failover()),
            )
        };
        let (store, writer, _thread) = malvern(dir.path()).await;
        let asked = SeedExpectation::of(&store);
        let (path, mut header) = built(&store, 500, asked.joining());
        header.history = source.history.clone();
        let seeding = (path, header);

        // A write of its own, committed after the receiver found it empty but before it
        // took what the swap expects: abandoned on the writer's own check, the write kept.
        writer.system(b"own".to_vec(), b"1".to_vec(), None).await.unwrap();
        let late = SeedExpectation::of(&store);
        let err = install(&writer, &store, late).await.unwrap_err();
        assert!(err.contains("holds data of its own"), "{err}");
        assert_eq!(store.snapshot().unwrap().get(b"own").unwrap(), Some(b"1".to_vec()));
        assert!(store.meta().streams.is_empty());

        // As it asked, before that write: abandoned too (it committed since); and from an
        // instance holding nothing, installed.
        let (path, header) = seeding;
        assert!(writer.install_seed(path, header.clone(), asked).await.is_err());
        let dir = tempfile::tempdir().unwrap();
        let (store, writer, _thread) = malvern(dir.path()).await;
        let own = store.meta().history.clone();
        let asked = SeedExpectation::of(&store);
        let (path, _) = built(&store, 500, asked.joining());
        assert_eq!(writer.install_seed(path, header, asked).await.unwrap(), 3);
        let meta = store.meta();
        assert_eq!((meta.name.as_str(), meta.role), ("malvern", Role::SupplementaryPrimary));
        assert_eq!(meta.history, own, "its own family's history");
        assert_eq!(meta.streams.len(), 1);
        let stream = &meta.streams[0];
        assert_eq!((stream.stream, stream.family.as_str(), stream.since_journal_seqno), (1, "ardmore", 3));
        assert_eq!(stream.term, 7, "the source's term");
        assert_eq!(store.journal_first(), 3, "its journal goes on past the 1 it had, from the base record");
        assert_eq!(store.stream_seqnos()[1], 500);
        assert_eq!(store.snapshot().unwrap().get(b"a").unwrap(), Some(b"1".to_vec()));
        let records = store.journal_view().unwrap().journal(3, 3).unwrap();
        assert_eq!(records[0].kind, crate::storage::journal::RecordKind::StreamBase);

        // Holding a stream now, it is not seeded over again.
        let asked = SeedExpectation::of(&store);
        let err = install(&writer, &store, asked).await.unwrap_err();
        assert!(err.contains("holds an SI stream"), "{err}");
        assert_eq!(store.committed_seqno(), 3);
    }

    /// The writer swaps a seeded file in only over the instance as it was when it asked: a
    /// commit, a new term or a changed receiver since then abandons the swap and changes
    /// nothing; otherwise the instance holds the snapshot and its journal begins after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seeded_file_replaces_only_the_instance_that_asked_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = ReceiverConfig { autorollback: false, si: false, noresync: false, seed: true };
        let (store, writer, _thread) =
            instance(dir.path(), "brynmawr", false, Role::Secondary, receiver.clone(), None).await;
        let asked = SeedExpectation::of(&store);

        // Something committed since (a failover record here): abandoned.
        writer.update_meta(Box::new(|_, _| Ok(Some(Marker::failover())))).await.unwrap();
        let err = install(&writer, &store, asked.clone()).await.unwrap_err();
        assert!(err.to_string().contains("abandoned"), "{err}");
        assert_eq!(store.committed_seqno(), 1);
        assert_eq!(store.journal_first(), 1);

        // A new term since: abandoned.
        let asked = SeedExpectation::of(&store);
        writer
            .update_meta(Box::new(|m, _| {
                m.term += 1;
                Ok(None)
            }))
            .await
            .unwrap();
        assert!(install(&writer, &store, asked).await.is_err());
        assert_eq!(store.committed_seqno(), 1);

        // The receiver started again without seeding: abandoned.
        let asked = SeedExpectation::of(&store);
        let off = ReceiverConfig { seed: false, ..receiver.clone() };
        writer
            .update_meta(Box::new(move |m, _| {
                m.receiver = Some(off);
                Ok(None)
            }))
            .await
            .unwrap();
        assert!(install(&writer, &store, asked).await.is_err());
        assert_eq!(store.snapshot().unwrap().get(b"a").unwrap(), None);

        // As it was: installed.
        writer
            .update_meta(Box::new(move |m, _| {
                m.receiver = Some(receiver);
                Ok(None)
            }))
            .await
            .unwrap();
        let asked = SeedExpectation::of(&store);
        assert_eq!(install(&writer, &store, asked).await.unwrap(), 500);
        assert_eq!(store.committed_seqno(), 500);
        assert_eq!(store.journal_first(), 501);
        assert_eq!(store.snapshot().unwrap().get(b"b").unwrap(), Some(b"2".to_vec()));
        let meta = store.meta();
        assert_eq!((meta.name.as_str(), meta.role, meta.term), ("brynmawr", Role::Secondary, 7));
        assert!(!dir.path().join(SEED_FILE).exists());
    }
}
