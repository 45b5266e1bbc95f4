//! The Unreplicated Transaction Log (GT.M's "lost transaction file").
//!
//! Every transaction a rollback takes off the database is written here first, with its seqno,
//! stream tags, origin, commit time and before/after images, so that an application can read
//! and reprocess it. One file per rollback, JSON lines: a header line, then one line per
//! transaction, in journal order (the order an application would reapply them in).
//!
//! Exactly-once: the file is written and fsync'd under a `.pending` name (its directory synced
//! too) *before* the rollback commits, and renamed into place after (its directory synced). At startup a pending file is renamed if
//! the instance metadata names it as the last rollback's log (the commit happened) and
//! removed otherwise (it did not). So nothing is rolled off without landing in a log, and no
//! log describes a rollback that did not happen.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::journal::Record;
use crate::storage::meta::{HistoryRecord, StreamState};

pub const FORMAT: &str = "strand-unreplicated-transactions/1";
/// Directory (inside the data directory) holding the logs.
pub const DIR: &str = "lost-transactions";
const PENDING: &str = ".pending";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    pub instance: String,
    pub creation_id: String,
    pub from_seqno: u64,
    pub to_seqno: u64,
    pub transactions: u64,
    pub rolled_back_at_micros: u64,
    pub reason: String,
}

/// One node a rolled-off transaction changed, in application terms (storage::node).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LostChange {
    /// The key as text when it is valid UTF-8 (for people), always also in hex.
    pub key: Option<String>,
    pub key_hex: String,
    /// What the node is: `string`, `hash`, `hash-field`, `set-member`, `zset-member`,
    /// `list-element`, `expiry-index`, … (a collection's head holds its element count).
    #[serde(default)]
    pub node: String,
    /// The field, member or list index the node names, as text when valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_hex: Option<String>,
    pub before_hex: Option<String>,
    pub after_hex: Option<String>,
    /// The after-image as text when it is valid UTF-8.
    pub after: Option<String>,
    /// A head's expiry after the change, in Unix milliseconds (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after_ms: Option<u64>,
    /// The command that re-applies this change by hand, where one node maps to one command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reapply: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LostTransaction {
    pub seqno: u64,
    pub kind: crate::storage::journal::RecordKind,
    pub stream: u8,
    pub stream_seqno: u64,
    /// Root primary that generated the transaction (from the history covering its seqno).
    pub origin: Option<String>,
    pub commit_time_micros: u64,
    pub changes: Vec<LostChange>,
}

impl LostTransaction {
    /// `history` and `streams` as they were when the record was committed (for its origin).
    /// A log is written by [`write_line`], which gives what serialising this gives (the
    /// reference its property test checks it against).
    #[cfg(test)]
    pub fn from_record(record: &Record, history: &[HistoryRecord], streams: &[StreamState]) -> Self {
        use crate::base::hex;
        let origin = if record.stream == 0 {
            crate::storage::meta::covering(history, record.seqno).map(|h| h.root_name.clone())
        } else {
            streams.iter().find(|s| s.stream == record.stream).and_then(|s| {
                crate::storage::meta::covering(&s.family_history(), record.stream_seqno)
                    .map(|h| h.root_name.clone())
            })
        };
        LostTransaction {
            seqno: record.seqno,
            kind: record.kind,
            stream: record.stream,
            stream_seqno: record.stream_seqno,
            origin,
            commit_time_micros: record.commit_time_micros,
            changes: record
                .changes
                .iter()
                .map(|c| {
                    let before = crate::storage::node::describe(&c.key, c.before.as_deref());
                    let after = crate::storage::node::describe(&c.key, c.after.as_deref());
                    LostChange {
                        key: String::from_utf8(after.key.clone()).ok(),
                        key_hex: hex(&after.key),
                        node: after.node.to_owned(),
                        element: after.element.as_ref().and_then(|e| String::from_utf8(e.clone()).ok()),
                        element_hex: after.element.as_deref().map(hex),
                        before_hex: before.value.as_deref().map(hex),
                        after_hex: after.value.as_deref().map(hex),
                        after: after.value.as_ref().and_then(|a| String::from_utf8(a.clone()).ok()),
                        expire_after_ms: after.expire_at_ms.filter(|_| c.after.is_some()),
                        reapply: c.after.as_ref().and_then(|_| reapply(&after)),
                    }
                })
                .collect(),
        }
    }
}

/// The root primary that generated `record`: from the history covering its seqno (an SI
/// stream's: its family's history, at its stream seqno), as [`crate::storage::meta::covering`]
/// finds it.
fn origin<'a>(record: &Record, history: &'a [HistoryRecord], streams: &'a [StreamState]) -> Option<&'a str> {
    let found = if record.stream == 0 {
        crate::storage::meta::covering(history, record.seqno)
    } else {
        // [`StreamState::family_history`] without its copy: every record of a stream's
        // history is its family's, whatever stream it names.
        let s = streams.iter().find(|s| s.stream == record.stream)?;
        s.history.iter().filter(|r| r.start_seqno <= record.stream_seqno).max_by_key(|r| r.start_seqno)
    };
    found.map(|h| h.root_name.as_str())
}

/// Appends `record`'s line of the log, its newline included: byte for byte what serialising
/// the [`LostTransaction`] it describes gives (a property test checks it), written without
/// building its strings first. A rollback logs every transaction it takes off, and building
/// them was most of its time (decision 0003, "Rollback").
pub fn write_line(
    out: &mut Vec<u8>,
    record: &Record,
    history: &[HistoryRecord],
    streams: &[StreamState],
) -> Result<(), serde_json::Error> {
    use crate::storage::node::describe;
    fn json(out: &mut Vec<u8>, v: &(impl Serialize + ?Sized)) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, v)
    }
    /// `"…"` when the bytes are UTF-8, else `null`.
    fn text(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(s) => json(out, s),
            Err(_) => json(out, &()),
        }
    }
    /// `"<hex>"`, or `null`.
    fn hex_str(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                out.push(b'"');
                crate::base::hex_to(out, b);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"{\"seqno\":");
    json(out, &record.seqno)?;
    out.extend_from_slice(b",\"kind\":");
    json(out, &record.kind)?;
    out.extend_from_slice(b",\"stream\":");
    json(out, &record.stream)?;
    out.extend_from_slice(b",\"stream_seqno\":");
    json(out, &record.stream_seqno)?;
    out.extend_from_slice(b",\"origin\":");
    json(out, &origin(record, history, streams))?;
    out.extend_from_slice(b",\"commit_time_micros\":");
    json(out, &record.commit_time_micros)?;
    out.extend_from_slice(b",\"changes\":[");
    for (i, c) in record.changes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let before = describe(&c.key, c.before.as_deref());
        let after = describe(&c.key, c.after.as_deref());
        out.extend_from_slice(b"{\"key\":");
        text(out, &after.key)?;
        out.extend_from_slice(b",\"key_hex\":");
        hex_str(out, Some(&after.key));
        out.extend_from_slice(b",\"node\":");
        json(out, after.node)?;
        if let Some(element) = &after.element {
            if let Ok(e) = std::str::from_utf8(element) {
                out.extend_from_slice(b",\"element\":");
                json(out, e)?;
            }
            out.extend_from_slice(b",\"element_hex\":");
            hex_str(out, Some(element));
        }
        out.extend_from_slice(b",\"before_hex\":");
        hex_str(out, before.value.as_deref());
        out.extend_from_slice(b",\"after_hex\":");
        hex_str(out, after.value.as_deref());
        out.extend_from_slice(b",\"after\":");
        match &after.value {
            Some(v) => text(out, v)?,
            None => json(out, &())?,
        }
        if let Some(at) = after.expire_at_ms.filter(|_| c.after.is_some()) {
            out.extend_from_slice(b",\"expire_after_ms\":");
            json(out, &at)?;
        }
        if let Some(command) = c.after.as_ref().and_then(|_| reapply(&after)) {
            out.extend_from_slice(b",\"reapply\":");
            json(out, &command)?;
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
    Ok(())
}

/// The Redis command that puts one node back as its after-image says, quoted for
/// redis-cli; `None` for nodes a single command cannot set alone (a collection's head,
/// a sorted set's order node, the expiry index) — their element nodes carry the data.
fn reapply(d: &crate::storage::node::Described) -> Option<String> {
    let q = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let key = q(&d.key);
    let value = d.value.as_deref().map(q);
    let element = d.element.as_deref().map(q);
    match (d.node, element, value) {
        ("string", _, Some(v)) => Some(match d.expire_at_ms {
            Some(at) if at > 0 => format!("SET {key} {v} PXAT {at}"),
            _ => format!("SET {key} {v}"),
        }),
        ("hash-field", Some(f), Some(v)) => Some(format!("HSET {key} {f} {v}")),
        ("set-member", Some(m), _) => Some(format!("SADD {key} {m}")),
        ("zset-member", Some(m), Some(score)) => Some(format!("ZADD {key} {score} {m}")),
        ("list-element", _, Some(v)) => Some(format!("RPUSH {key} {v}")),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LostLogError {
    #[error("failed to write the unreplicated-transaction log {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read the unreplicated-transaction log {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line} is not a valid unreplicated-transaction log entry")]
    Parse { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("{path} is not an unreplicated-transaction log (format {found:?}, expected {FORMAT:?})")]
    Format { path: PathBuf, found: String },
}

/// The final path of a log, relative names decided once per rollback.
pub fn final_path(data_dir: &Path, instance: &str, from: u64, to: u64, at_micros: u64) -> PathBuf {
    data_dir.join(DIR).join(format!("{instance}-{at_micros}-{from}-{to}.jsonl"))
}

pub fn pending_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(PENDING);
    PathBuf::from(s)
}

/// Writes the log under its pending name and makes it durable.
pub fn write_pending(
    path: &Path,
    header: &Header,
    records: &[Record],
    history: &[HistoryRecord],
    streams: &[StreamState],
) -> Result<PathBuf, LostLogError> {
    /// Lines gathered before a write: few system calls for a log of many transactions.
    const CHUNK: usize = 1 << 20;
    let pending = pending_path(path);
    let err = |source| LostLogError::Write { path: pending.clone(), source };
    let format_err = |e| LostLogError::Write { path: pending.clone(), source: std::io::Error::other(e) };
    if let Some(dir) = pending.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut file = std::fs::File::create(&pending).map_err(err)?;
    let written = (|| {
        let mut buf = Vec::with_capacity(CHUNK + CHUNK / 4);
        serde_json::to_writer(&mut buf, header).map_err(format_err)?;
        buf.push(b'\n');
        for record in records {
            write_line(&mut buf, record, history, streams).map_err(format_err)?;
            if buf.len() >= CHUNK {
                file.write_all(&buf).map_err(err)?;
                buf.clear();
            }
        }
        file.write_all(&buf).map_err(err)?;
        file.sync_all().map_err(err)
    })();
    if let Err(e) = written {
        // A log cut short (a full disk) is no log: the rollback does not happen.
        let _ = std::fs::remove_file(&pending);
        return Err(e);
    }
    // The pending file's name, and the log directory's own (it may have been made just now),
    // must be durable before the rollback commits: otherwise a power cut keeps the commit and
    // loses the log (found by engine/tests/power_cut.rs).
    if let Some(dir) = pending.parent() {
        crate::storage::sync_dir(dir)
            .map_err(|source| LostLogError::Write { path: dir.to_owned(), source })?;
        if let Some(data_dir) = dir.parent() {
            crate::storage::sync_dir(data_dir)
                .map_err(|source| LostLogError::Write { path: data_dir.to_owned(), source })?;
        }
    }
    Ok(pending)
}

/// Renames a pending log into place after its rollback committed.
pub fn finalize(path: &Path) -> Result<(), LostLogError> {
    let pending = pending_path(path);
    std::fs::rename(&pending, path)
        .map_err(|source| LostLogError::Write { path: path.to_owned(), source })?;
    if let Some(dir) = path.parent() {
        crate::storage::sync_dir(dir)
            .map_err(|source| LostLogError::Write { path: dir.to_owned(), source })?;
    }
    Ok(())
}

/// Whether the pending log at `pending` is the one of the committed rollback whose log path
/// was `committed_log`. By file name: the data directory may be mounted elsewhere now than
/// when the rollback recorded its path (another pod, a restored volume).
fn is_committed(pending: &Path, committed_log: Option<&str>) -> bool {
    let committed = committed_log.and_then(|c| Path::new(c).file_name());
    let name = pending.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(PENDING));
    matches!((committed, name), (Some(c), Some(n)) if c == std::ffi::OsStr::new(n))
}

/// At startup: complete the pending log of the committed rollback, drop any other (a rollback
/// that never committed).
pub fn resolve_pending(data_dir: &Path, committed_log: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(data_dir.join(DIR)) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.to_str() else { continue };
        let Some(final_name) = name.strip_suffix(PENDING) else { continue };
        if is_committed(&path, committed_log) {
            match finalize(Path::new(final_name)) {
                Ok(()) => tracing::info!(
                    log = final_name,
                    "completed the log of a rollback interrupted after commit"
                ),
                Err(e) => tracing::error!(error = %e, "cannot finalize a rollback log"),
            }
        } else {
            let _ = std::fs::remove_file(&path);
            tracing::info!(log = name, "removed the log of a rollback that never committed");
        }
    }
}

/// Before a rollback: the log of the last committed rollback (`committed_log`), if renaming
/// it into place failed when it committed, is renamed now. An error means the next rollback
/// must not run: it would become the committed one, and the pending log of this one would be
/// taken for a log that never committed.
pub fn complete_committed(data_dir: &Path, committed_log: Option<&str>) -> Result<(), LostLogError> {
    let Some(committed) = committed_log.and_then(|c| Path::new(c).file_name()) else { return Ok(()) };
    let path = data_dir.join(DIR).join(committed);
    if !pending_path(&path).exists() {
        return Ok(());
    }
    finalize(&path)?;
    tracing::info!(log = %path.display(), "completed the log of the last rollback");
    Ok(())
}

/// Reads a log: its header and transactions.
pub fn read(path: &Path) -> Result<(Header, Vec<LostTransaction>), LostLogError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LostLogError::Read { path: path.to_owned(), source })?;
    let mut lines = text.lines().enumerate();
    let parse_err = |line, source| LostLogError::Parse { path: path.to_owned(), line, source };
    let (_, first) =
        lines.next().ok_or_else(|| LostLogError::Format { path: path.to_owned(), found: String::new() })?;
    let header: Header = serde_json::from_str(first).map_err(|e| parse_err(1, e))?;
    if header.format != FORMAT {
        return Err(LostLogError::Format { path: path.to_owned(), found: header.format });
    }
    let mut txns = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        txns.push(serde_json::from_str(line).map_err(|e| parse_err(i + 1, e))?);
    }
    Ok((header, txns))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    mod lines {
        use proptest::prelude::*;

        use super::super::*;
        use crate::storage::journal::{KeyChange, RecordKind};
        use crate::storage::node::{self, Head, Kind};

        /// Bytes that are text, text JSON must escape, or not UTF-8 at all.
        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<char>(), 0..6)
                    .prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
                proptest::collection::vec(
                    prop_oneof![
                        Just(b'"'),
                        Just(b'\\'),
                        Just(b'\n'),
                        Just(0u8),
                        Just(0x7f),
                        Just(0xff),
                        b'a'..=b'z'
                    ],
                    0..8
                ),
                proptest::collection::vec(any::<u8>(), 0..8),
            ]
        }

        /// Every kind of node a record may change, with a value of its kind.
        fn change() -> impl Strategy<Value = KeyChange> {
            let value = prop_oneof![
                (bytes(), any::<u64>())
                    .prop_map(|(v, at)| Head::encode_string(&v, if at % 3 == 0 { 0 } else { at })),
                (0usize..5, any::<u64>()).prop_map(|(k, len)| {
                    let kind = [Kind::Hash, Kind::Set, Kind::ZSet, Kind::List, Kind::String][k];
                    Head { len, ..Head::collection(kind) }.encode()
                }),
                bytes(),
                any::<f64>().prop_map(|x| x.to_bits().to_be_bytes().to_vec()),
            ];
            let tag = prop_oneof![
                Just(node::HASH_FIELD),
                Just(node::SET_MEMBER),
                Just(node::ZSET_SCORE),
                Just(node::ZSET_ORDER),
                Just(node::ZSET_RANK),
                Just(node::LIST_ITEM),
                Just(b'?'),
            ];
            let key = prop_oneof![
                bytes().prop_map(|k| node::head(&k)),
                (bytes(), any::<u64>(), tag, bytes())
                    .prop_map(|(k, g, t, sub)| node::element(&k, g, t, &sub)),
                (bytes(), any::<u64>()).prop_map(|(k, g)| node::garbage(&k, g)),
                (bytes(), any::<u64>()).prop_map(|(k, at)| node::expiry(at, &k)),
                bytes(),
            ];
            (key, proptest::option::of(value.clone()), proptest::option::of(value))
                .prop_map(|(key, before, after)| KeyChange { key, before, after })
        }

        fn history(stream: u8) -> impl Strategy<Value = Vec<HistoryRecord>> {
            proptest::collection::vec((0u64..20, "[a-z]{1,3}"), 0..3).prop_map(move |h| {
                h.into_iter()
                    .map(|(start_seqno, root_name)| HistoryRecord {
                        stream,
                        start_seqno,
                        root_creation_id: format!("{root_name}-id"),
                        root_name,
                        journal_seqno: start_seqno,
                    })
                    .collect()
            })
        }

        proptest! {
            /// The line a rollback writes is what serialising the transaction it describes
            /// gives, byte for byte, and reads back as it.
            #[test]
            fn a_line_is_its_transaction_serialised(
                seqno in 0u64..30,
                stream in 0u8..3,
                stream_seqno in 0u64..30,
                kind in 0usize..5,
                commit_time_micros in any::<u64>(),
                changes in proptest::collection::vec(change(), 0..4),
                own in history(0),
                family in history(1),
            ) {
                let kind = [RecordKind::Update, RecordKind::Failover, RecordKind::Upgrade, RecordKind::StreamBase, RecordKind::StreamResync][kind];
                let record = Record { kind, seqno, stream, stream_seqno, commit_time_micros, changes };
                let streams = vec![StreamState {
                    stream: 1,
                    family: "ardmore".into(),
                    family_id: "ardmore-id".into(),
                    history: family,
                    since_journal_seqno: 1,
                    term: 0,
                }];
                let expected = LostTransaction::from_record(&record, &own, &streams);
                let mut line = b"earlier\n".to_vec();
                write_line(&mut line, &record, &own, &streams).unwrap();
                let mut want = b"earlier\n".to_vec();
                serde_json::to_writer(&mut want, &expected).unwrap();
                want.push(b'\n');
                prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
                prop_assert_eq!(&line, &want);
                let read: LostTransaction = serde_json::from_slice(&line[b"earlier\n".len()..]).unwrap();
                prop_assert_eq!(read, expected);
            }
        }
    }

    fn pending(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(DIR).join(name);
        std::fs::create_dir_all(dir.join(DIR)).unwrap();
        std::fs::write(pending_path(&path), b"{}\n").unwrap();
        path
    }

    /// A log larger than the writes it is made of reads back whole: its header, then every
    /// transaction as it was rolled off, in order.
    #[test]
    fn a_log_of_many_writes_reads_back_whole() {
        use crate::storage::journal::{KeyChange, RecordKind};
        let dir = tempfile::tempdir().unwrap();
        let path = final_path(dir.path(), "malvern", 11, 3010, 7);
        let header = Header {
            format: FORMAT.into(),
            instance: "malvern".into(),
            creation_id: "c".into(),
            from_seqno: 11,
            to_seqno: 3010,
            transactions: 3000,
            rolled_back_at_micros: 7,
            reason: "a test".into(),
        };
        let history = vec![HistoryRecord {
            stream: 0,
            start_seqno: 1,
            root_name: "malvern".into(),
            root_creation_id: "c".into(),
            journal_seqno: 0,
        }];
        let records: Vec<Record> = (11..=3010u64)
            .map(|seqno| Record {
                kind: RecordKind::Update,
                seqno,
                stream: 0,
                stream_seqno: seqno,
                commit_time_micros: seqno * 10,
                changes: vec![KeyChange {
                    key: crate::storage::node::head(format!("key:{seqno}").as_bytes()),
                    before: None,
                    after: Some(crate::storage::node::Head::encode_string(&[b'v'; 1000], 0)),
                }],
            })
            .collect();
        let pending = write_pending(&path, &header, &records, &history, &[]).unwrap();
        assert!(std::fs::metadata(&pending).unwrap().len() > 4 << 20, "more than a few writes' worth");
        finalize(&path).unwrap();
        let (read_header, txns) = read(&path).unwrap();
        assert_eq!(read_header, header);
        let expected: Vec<_> =
            records.iter().map(|r| LostTransaction::from_record(r, &history, &[])).collect();
        assert_eq!(txns, expected);
        assert_eq!(txns[2999].origin.as_deref(), Some("malvern"));
    }

    /// The committed rollback's pending log is recognised by its file name, wherever the data
    /// directory was when the rollback recorded its path; others are dropped.
    #[test]
    fn the_committed_log_is_kept_though_the_directory_moved() {
        let dir = tempfile::tempdir().unwrap();
        let kept = pending(dir.path(), "malvern-1-5-9.jsonl");
        let dropped = pending(dir.path(), "malvern-2-5-7.jsonl");
        let recorded = format!("/somewhere/else/{DIR}/malvern-1-5-9.jsonl");
        resolve_pending(dir.path(), Some(&recorded));
        assert!(kept.exists(), "the committed rollback's log is completed");
        assert!(!pending_path(&kept).exists());
        assert!(!dropped.exists() && !pending_path(&dropped).exists(), "a log that never committed goes");
    }

    /// Before a rollback, the last one's pending log is completed; one that cannot be is an
    /// error (the rollback is refused), and nothing else is touched.
    #[test]
    fn the_last_rollbacks_pending_log_is_completed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        assert!(complete_committed(dir.path(), None).is_ok());
        let path = pending(dir.path(), "malvern-1-5-9.jsonl");
        let other = pending(dir.path(), "malvern-2-5-7.jsonl");
        let recorded = path.to_str().unwrap().to_owned();
        complete_committed(dir.path(), Some(&recorded)).unwrap();
        assert!(path.exists() && !pending_path(&path).exists());
        assert!(pending_path(&other).exists(), "not this one's to judge");
        complete_committed(dir.path(), Some(&recorded)).unwrap();

        // A directory where the log should go cannot be replaced by a rename.
        let blocked = pending(dir.path(), "malvern-3-5-6.jsonl");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = complete_committed(dir.path(), blocked.to_str()).unwrap_err();
        assert!(err.to_string().contains("malvern-3-5-6"), "{err}");
        assert!(pending_path(&blocked).exists(), "the pending log is kept");
    }
}
