//! Rollback (GT.M's `mupip journal -rollback`): takes the transactions past a seqno off the
//! instance, writing them first into a lost-transaction log ([`crate::storage::lostlog`]).
//!
//! Two ways, one outcome (decision 0002, step 4), both with the checkpointer paused and
//! neither opened by a checkpoint:
//!
//! - *Within the overlay*, when the target is at or past the checkpoint (the records rolled
//!   off were committed since the last checkpoint). Every record past the target is then in
//!   the overlay and in the journal segments. The overlay's generations are copied without
//!   the rolled-off versions and records; the instance metadata is committed with a note that
//!   the segments owe a cut ([`META_ROLLBACK_CUT`]); the segments are cut at the target, the
//!   note removed, and the copies published. The base is never written with what is then
//!   undone: the checkpointer brings it up to the target later, as after any commit.
//! - *In the file*, when the checkpoint is past the target: one redb transaction takes the
//!   base's records past the target off its journal, restores every node they changed and
//!   commits the metadata with the same note; every record the overlay holds lies past the
//!   checkpoint, so the overlay starts over empty, published as the transaction commits
//!   (with the list locked against readers); then the segments are cut as above. Only when a
//!   segment owes a cut already does a rollback checkpoint everything first.
//!
//! Either way the lost-transaction log is written and synced, on a second thread, before the
//! rollback commits: nothing is rolled off unlogged.
//!
//! A crash between the metadata commit and the cut leaves the note, and the next start cuts
//! the segments before it replays them. A cut that fails at run time is owed: every group and
//! every direct change tries it first, and fails while it fails.

use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable};

use super::{WriterThread, put_meta, save_streams};
use crate::base::error_chain;
use crate::storage::Store;
use crate::storage::journal::{Record, RecordKind, STREAMS_MAX};
use crate::storage::lostlog::{self, LostLogError};
use crate::storage::meta::{HistoryRecord, InstanceMeta, LastRollback};
use crate::storage::retention::JournalBase;
use crate::storage::retention::stored_bytes as record_bytes;
use crate::storage::{
    DATA, JOURNAL, META, META_ROLLBACK_CUT, StoreError, StreamSeqnos, clear_rollback_cut, cut_segments_past,
    last_of_stream, now_micros, redb_err,
};

/// Test hook: set to `rollback-cut`, the engine aborts right after a rollback committed, before
/// it cuts the segments — the crash that the next start must finish (`engine/tests/crash.rs`).
/// Read only when a rollback runs.
const ABORT_HOOK: &str = "STRAND_TEST_ABORT";

/// What both ways share: the metadata as it will be and the log to write first.
struct Plan {
    to_seqno: u64,
    committed: u64,
    /// The metadata before the rollback (the log's records are described against it).
    old: InstanceMeta,
    /// The metadata after it: history and SI streams past the target forgotten, a new
    /// history record if the instance goes on originating, the rollback noted.
    meta: InstanceMeta,
    path: PathBuf,
    header: lostlog::Header,
    last: LastRollback,
}

impl Plan {
    fn new(
        data_dir: &std::path::Path,
        old: InstanceMeta,
        to_seqno: u64,
        committed: u64,
        new_epoch: bool,
        reason: &str,
    ) -> Plan {
        let at = now_micros();
        let path = lostlog::final_path(data_dir, &old.name, to_seqno + 1, committed, at);
        let header = lostlog::Header {
            format: lostlog::FORMAT.into(),
            instance: old.name.clone(),
            creation_id: old.creation_id.clone(),
            from_seqno: to_seqno + 1,
            to_seqno: committed,
            transactions: committed - to_seqno,
            rolled_back_at_micros: at,
            reason: reason.to_owned(),
        };
        let mut meta = old.clone();
        meta.history.retain(|h| h.start_seqno <= to_seqno);
        // SI streams: forget those begun after the rollback point and history learnt after it.
        meta.streams.retain(|s| s.since_journal_seqno <= to_seqno);
        for s in &mut meta.streams {
            s.history.retain(|h| h.journal_seqno <= to_seqno);
        }
        if new_epoch || meta.history.is_empty() {
            meta.history.push(HistoryRecord {
                stream: 0,
                start_seqno: to_seqno + 1,
                root_name: meta.name.clone(),
                root_creation_id: meta.creation_id.clone(),
                journal_seqno: to_seqno,
            });
        }
        let last = LastRollback {
            log_path: path.to_string_lossy().into_owned(),
            from_seqno: to_seqno + 1,
            to_seqno: committed,
            transactions: committed - to_seqno,
            at_micros: at,
            reason: reason.to_owned(),
        };
        meta.last_rollback = Some(last.clone());
        Plan { to_seqno, committed, old, meta, path, header, last }
    }

    /// Writes the log of `records` under its pending name, synced.
    fn write_log(&self, records: &[Record]) -> Result<PathBuf, LostLogError> {
        lostlog::write_pending(&self.path, &self.header, records, &self.old.history, &self.old.streams)
    }

    /// Whether `stream`'s position survives the rollback (else it goes to 0): a
    /// supplementary instance's own stream, or an SI stream begun at or before the target.
    fn keeps(&self, stream: u8, supplementary: bool) -> bool {
        stream == 0 && supplementary || self.meta.streams.iter().any(|s| s.stream == stream)
    }
}

/// Decodes a rolled-off record found at `seqno`.
fn decode(seqno: u64, bytes: &[u8]) -> Result<(u64, Record), StoreError> {
    Record::decode(bytes).map(|r| (seqno, r)).map_err(|source| StoreError::RecordDecode { seqno, source })
}

/// The rolled-off records, checked to run from `to_seqno + 1` to `committed` without a hole;
/// a format upgrade among them refuses the rollback.
fn rolled_off(
    to_seqno: u64,
    committed: u64,
    decoded: impl Iterator<Item = Result<(u64, Record), StoreError>>,
) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::with_capacity(usize::try_from(committed - to_seqno).unwrap_or(0));
    for entry in decoded {
        let (seqno, record) = entry?;
        let expected = to_seqno + 1 + records.len() as u64;
        if seqno != expected {
            return Err(StoreError::JournalCorrupt { reason: format!("record {expected} is missing") });
        }
        if record.kind == RecordKind::Upgrade {
            return Err(StoreError::Invalid {
                reason: format!(
                    "seqno {seqno} is a format upgrade; a rollback cannot take the data back to an older format — re-create this instance from a newer backup or by seeding it from the family"
                ),
            });
        }
        records.push(record);
    }
    if to_seqno + records.len() as u64 != committed {
        return Err(StoreError::JournalCorrupt {
            reason: format!("record {} is missing", to_seqno + 1 + records.len() as u64),
        });
    }
    Ok(records)
}

/// Each node the records change, once, in node order, with its value before the earliest of
/// them that changed it: what applying every before-image newest first leaves. (A stable
/// sort of every change, where a map built change by change cost a seventh of a rollback.)
fn restores(records: &[Record]) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut all: Vec<(&[u8], Option<&[u8]>)> = records
        .iter()
        .flat_map(|r| r.changes.iter().map(|c| (c.key.as_slice(), c.before.as_deref())))
        .collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    // Of equal nodes the first, from the earliest record, stays.
    all.dedup_by(|later, earlier| later.0 == earlier.0);
    all
}

/// The streams the records write to.
fn streams_touched(records: &[Record]) -> [bool; STREAMS_MAX as usize] {
    let mut touched = [false; STREAMS_MAX as usize];
    for record in records {
        if let Some(t) = touched.get_mut(usize::from(record.stream)) {
            *t = true;
        }
    }
    touched
}

impl<T: Send + 'static> WriterThread<T> {
    /// Rolls back to `to_seqno`: within the overlay when the checkpoint is not past it, in
    /// the file otherwise. `None` if there was nothing to roll back.
    pub(super) fn rollback(
        &mut self,
        to_seqno: u64,
        new_epoch: bool,
        reason: &str,
    ) -> Result<Option<LastRollback>, StoreError> {
        let Some((committed, _)) = self.rollback_span(to_seqno)? else { return Ok(None) };
        // A rollback writes its log and commits: refused cleanly on a full disk rather than
        // meeting the error in its commit (which stops the engine, see `unknown_outcome`).
        self.check_space()?;
        // The last rollback's log, if it could not be renamed into place then, goes now: once
        // this one commits, that log would be taken for one that never committed.
        let last = self.store.meta().last_rollback.map(|r| r.log_path);
        lostlog::complete_committed(self.store.data_dir(), last.as_deref()).map_err(|e| StoreError::Invalid {
            reason: format!(
                "the log of the last rollback is still pending and cannot be completed; no rollback until it can: {}",
                error_chain(&e)
            ),
        })?;
        let paused = if self.broken_segment.is_none() && self.rollback_cut.is_none() {
            let paused = self.checkpointer.pause()?;
            // The checkpoint the pause waited for may have trimmed the journal.
            let base = self.store.journal_base();
            // A checkpoint that reported a failure may still have reached the disk: the
            // overlay then does not know where the base ends, and only a checkpoint of
            // everything (retried) settles it.
            let checkpoint = self.store.overlay.checkpoint_seqno();
            let settled = base_journal_end(self.store.db()?.as_ref(), &base)? == checkpoint;
            settled.then_some((paused, checkpoint))
        } else {
            None
        };
        let result = match paused {
            Some((_paused, checkpoint)) if checkpoint <= to_seqno => {
                self.rollback_in_overlay(to_seqno, committed, new_epoch, reason).map(Some)
            }
            Some((_paused, _)) => self.rollback_in_file(to_seqno, new_epoch, reason, Way::File),
            None => {
                // Everything is checkpointed first, and the segments go. That checkpoint
                // trims the journal as retention allows: not the records this rollback
                // takes off.
                let _pin = self.store.pin_journal("rollback", to_seqno + 1);
                self.direct(|w| w.rollback_in_file(to_seqno, new_epoch, reason, Way::CheckpointFirst))
            }
        };
        if result.is_err() {
            // What a failed rollback counted is not a change.
            self.counted = (0, 0, 0);
        }
        result
    }

    /// The committed seqno and the journal's base when there is something past `to_seqno` to
    /// roll back (`None` when there is not); refused, touching nothing, when the journal no
    /// longer holds every record past it.
    fn rollback_span(&self, to_seqno: u64) -> Result<Option<(u64, JournalBase)>, StoreError> {
        let committed = self.store.committed_seqno();
        if to_seqno >= committed {
            return Ok(None);
        }
        let base = self.store.journal_base();
        if to_seqno < base.seqno {
            return Err(StoreError::JournalTrimmed { wanted: to_seqno + 1, first: base.first() });
        }
        Ok(Some((committed, base)))
    }

    /// See the module's documentation; the checkpointer is paused and the base holds no
    /// record past `to_seqno`.
    fn rollback_in_overlay(
        &mut self,
        to_seqno: u64,
        committed: u64,
        new_epoch: bool,
        reason: &str,
    ) -> Result<LastRollback, StoreError> {
        self.counted = (0, 0, 0);
        let overlay = self.store.overlay.pin_with(|| ()).0;
        let encoded = overlay.records(to_seqno + 1, committed);
        let records =
            rolled_off(to_seqno, committed, encoded.iter().map(|(seqno, bytes)| decode(*seqno, bytes)))?;
        drop(encoded);
        let plan =
            Plan::new(self.store.data_dir(), self.store.meta(), to_seqno, committed, new_epoch, reason);
        let mut touched = Vec::new();
        for record in records.iter().rev() {
            for change in record.changes.iter().rev() {
                self.count(&change.key, change.after.is_some(), change.before.is_some());
                touched.push(crate::storage::node::user_key(&change.key).to_vec());
            }
        }
        // Each touched stream's position is that of its last remaining record: in the
        // overlay, else in the base's journal (at or below the checkpoint), else the base's.
        let mut streams = self.streams;
        let db = self.store.db()?;
        for (k, t) in streams_touched(&records).iter().enumerate() {
            let stream = u8::try_from(k).unwrap_or(0);
            let Some(slot) = streams.get_mut(k).filter(|_| *t) else { continue };
            *slot = if plan.keeps(stream, self.supplementary) {
                let found = overlay.rfind_record(to_seqno, |seqno, bytes| match Record::decode(bytes) {
                    Ok(r) if r.stream == stream => Some(Ok(r.stream_seqno)),
                    Ok(_) => None,
                    Err(source) => Some(Err(StoreError::RecordDecode { seqno, source })),
                });
                match found {
                    Some(found) => found?,
                    None => {
                        let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
                        let journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
                        last_of_stream(&journal, &self.store.journal_base(), stream, to_seqno)?
                    }
                }
            } else {
                0
            };
        }
        // The log is written while the overlay's copies are made.
        let (logged, rolled_back) = std::thread::scope(|scope| {
            let log = scope.spawn(|| plan.write_log(&records));
            let rolled_back = self.store.overlay.rolled_back(to_seqno, streams);
            (join_log(log, &plan.path), rolled_back)
        });
        let pending = logged.map_err(|e| StoreError::Invalid { reason: error_chain(&e) })?;
        // The metadata, with the note that the segments owe their cut: from this commit on
        // the rollback stands (a start finishes the cut).
        let written = (|| {
            let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
            put_meta(&txn, &plan.meta)?;
            {
                let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
                table
                    .insert(META_ROLLBACK_CUT, to_seqno.to_le_bytes().as_slice())
                    .map_err(redb_err("note the rollback's cut"))?;
            }
            Ok(txn)
        })();
        let txn = match written {
            Ok(txn) => txn,
            Err(e) => {
                // Nothing was committed.
                let _ = std::fs::remove_file(&pending);
                return Err(e);
            }
        };
        if let Err(e) = self.store.commit_without_data(txn) {
            unknown_outcome(&redb_err("commit the rollback")(e));
        }
        self.cut_segments(to_seqno);
        self.committed(&touched);
        // Published at the target before the copies: a reader that pins in between reads
        // the old list at the target, which is the state there (the base holds nothing past
        // it). Pinning the copies with the old seqno would let it see the next writes.
        publish_rollback(&self.store, &plan, streams, self.version);
        if !self.store.overlay.install(rolled_back) {
            // Only the writer and the (paused) checkpointer change the list: a broken
            // invariant, and the state in memory no longer says what the disk holds.
            unknown_outcome(&StoreError::Invalid { reason: "the overlay changed under a rollback".into() });
        }
        Ok(self.rolled_back(plan, streams, Way::Overlay))
    }

    /// Once the rollback to `to_seqno` is committed with its note: cuts its records off the
    /// journal segments, or leaves the cut owed.
    fn cut_segments(&mut self, to_seqno: u64) {
        if std::env::var_os(ABORT_HOOK).is_some_and(|v| v == "rollback-cut") {
            std::process::abort();
        }
        self.segment = None;
        self.rollback_cut = Some(to_seqno);
        if let Err(e) = self.finish_rollback_cut() {
            tracing::error!(error = %error_chain(&e), "cannot cut the rolled-off records off the journal segments; writes fail until it succeeds");
        }
    }

    /// Cuts the records a rollback took off out of the journal segments, if a cut is owed,
    /// and removes the note of it.
    pub(super) fn finish_rollback_cut(&mut self) -> Result<(), StoreError> {
        let Some(seqno) = self.rollback_cut else { return Ok(()) };
        cut_segments_past(self.store.journal_dir(), seqno)?;
        let txn = clear_rollback_cut(self.store.db()?.as_ref())?;
        self.store.commit_without_data(txn).map_err(redb_err("commit the rollback's cut"))?;
        self.rollback_cut = None;
        Ok(())
    }

    /// See the module's documentation: the base's records past `to_seqno` are taken off its
    /// journal and its nodes restored in one redb transaction, and the overlay — every
    /// record in it lies past the checkpoint, so past `to_seqno` — starts over empty; the
    /// checkpointer is paused (or nothing is left for it).
    fn rollback_in_file(
        &mut self,
        to_seqno: u64,
        new_epoch: bool,
        reason: &str,
        way: Way,
    ) -> Result<Option<LastRollback>, StoreError> {
        self.counted = (0, 0, 0);
        // Asked again: the checkpoint that opened a direct change may have trimmed the journal.
        let Some((committed, base)) = self.rollback_span(to_seqno)? else { return Ok(None) };
        let overlay = self.store.overlay.pin_with(|| ()).0;
        let checkpoint = overlay.checkpoint_seqno();
        let in_overlay = overlay.records(checkpoint + 1, committed);
        drop(overlay);
        let db = self.store.db()?;
        let mut grown = 0;
        let plan =
            Plan::new(self.store.data_dir(), self.store.meta(), to_seqno, committed, new_epoch, reason);
        let mut streams = self.streams;
        let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let pending = {
            let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            // The rolled-off records: the base's, read and taken off its journal in one pass,
            // then the overlay's.
            let extracted = journal
                .extract_from_if(to_seqno + 1.., |_, _| true)
                .map_err(redb_err("remove journal records"))?
                .map(|entry| {
                    let (seqno, bytes) = entry.map_err(redb_err("remove journal records"))?;
                    grown -= record_bytes(bytes.value());
                    decode(seqno.value(), bytes.value())
                })
                .chain(in_overlay.iter().map(|(seqno, bytes)| decode(*seqno, bytes)));
            let records = rolled_off(to_seqno, committed, extracted)?;
            drop(in_overlay);
            for record in records.iter().rev() {
                for change in record.changes.iter().rev() {
                    self.count(&change.key, change.after.is_some(), change.before.is_some());
                    touched.push(crate::storage::node::user_key(&change.key).to_vec());
                }
            }
            // Each node the base's records changed goes back to its before-image in the
            // earliest of them, written in node order. A node only the overlay's records
            // changed stands in the base as it stood at the target.
            let in_base = usize::try_from(checkpoint - to_seqno).unwrap_or(usize::MAX);
            let (logged, restored) = std::thread::scope(|scope| {
                let log = scope.spawn(|| plan.write_log(&records));
                let restores = restores(records.get(..in_base).unwrap_or(&records));
                let restored = restores.iter().try_for_each(|(key, before)| {
                    match before {
                        Some(v) => data.insert(*key, *v).map(|_| ()),
                        None => data.remove(*key).map(|_| ()),
                    }
                    .map_err(redb_err("restore a key"))
                });
                (join_log(log, &plan.path), restored)
            });
            let pending = logged.map_err(|e| StoreError::Invalid { reason: error_chain(&e) })?;
            if let Err(e) = restored {
                let _ = std::fs::remove_file(&pending);
                return Err(e);
            }
            // Each touched stream's position is that of its last remaining record.
            for (k, t) in streams_touched(&records).iter().enumerate() {
                let stream = u8::try_from(k).unwrap_or(0);
                if *t && let Some(slot) = streams.get_mut(k) {
                    *slot = if plan.keeps(stream, self.supplementary) {
                        match last_of_stream(&journal, &base, stream, to_seqno) {
                            Ok(seqno) => seqno,
                            Err(e) => {
                                let _ = std::fs::remove_file(&pending);
                                return Err(e);
                            }
                        }
                    } else {
                        0
                    };
                }
            }
            pending
        };
        // The file's stream table is as of the checkpoint: every stream is written as of the
        // target. The segments past the target owe their cut, as a rollback within the
        // overlay's do.
        let written = put_meta(&txn, &plan.meta)
            .and_then(|()| save_streams(&txn, &[u64::MAX; STREAMS_MAX as usize], &streams))
            .and_then(|()| {
                let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
                table
                    .insert(META_ROLLBACK_CUT, to_seqno.to_le_bytes().as_slice())
                    .map_err(redb_err("note the rollback's cut"))?;
                Ok(())
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&pending);
            return Err(e);
        }
        // Committed with the overlay's list locked against readers, so that none pins the
        // overlay of the records rolled off over the base without them, and published at the
        // target before the lock is let go, so that none pins the new list with the old seqno
        // (and sees the next writes): the overlay starts over empty at the target.
        // Counted and WATCHed before the commit: one that fails stops the engine.
        self.committed(&touched);
        let (store, version) = (&self.store, self.version);
        let committed_result = store.overlay.reset_with(
            to_seqno,
            || {
                let _change = store.base_change();
                txn.commit().map_err(redb_err("commit the rollback"))
            },
            || publish_rollback(store, &plan, streams, version),
        );
        if let Err(e) = committed_result {
            unknown_outcome(&e);
        }
        self.store.journal_resized(grown);
        self.cut_segments(to_seqno);
        let last = self.rolled_back(plan, streams, way);
        // The base is all there is now.
        if let Err(e) = self.store.recount_nodes() {
            tracing::warn!(error = %error_chain(&e), "cannot count nodes");
        }
        Ok(Some(last))
    }

    /// Before either way publishes: WATCH versions and key counts (the version published
    /// must be the one the touched buckets got, or a WATCH taken after the rollback fails
    /// its EXEC until the next commit).
    fn committed(&mut self, touched: &[Vec<u8>]) {
        self.touch(touched.iter().map(Vec::as_slice));
        self.store.adjust_counts(std::mem::take(&mut self.counted));
    }

    /// After either way is published: metrics and the log line.
    fn rolled_back(&mut self, plan: Plan, streams: StreamSeqnos, way: Way) -> LastRollback {
        let Plan { to_seqno, committed, last, .. } = plan;
        self.metrics.journal_seqno.set(i64::try_from(to_seqno).unwrap_or(i64::MAX));
        self.metrics
            .checkpoint_seqno
            .set(i64::try_from(self.store.overlay.checkpoint_seqno()).unwrap_or(i64::MAX));
        self.metrics.overlay_bytes.set(i64::try_from(self.store.overlay.bytes()).unwrap_or(i64::MAX));
        // Published already (`publish_rollback`).
        self.streams = streams;
        tracing::warn!(from = to_seqno + 1, to = committed, log = %last.log_path, reason = %last.reason, way = %way.as_str(), "rolled back");
        last
    }
}

/// Which way a rollback went (logged).
#[derive(Debug, Clone, Copy)]
enum Way {
    Overlay,
    File,
    /// In the file after a checkpoint of everything (a segment owed a cut).
    CheckpointFirst,
}

impl Way {
    fn as_str(self) -> &'static str {
        match self {
            Way::Overlay => "overlay",
            Way::File => "file",
            Way::CheckpointFirst => "checkpoint-then-file",
        }
    }
}

/// Publishes the committed rollback `plan`: its log renamed into place, the instance at its
/// target with its metadata and `streams`. Sources see the rollback before their pins move:
/// an acknowledgement arriving in between is either counted and then lowered, or refused as
/// stale — and the source that refused it finds the rollback and negotiates again. No
/// checkpoint (and so no trim) runs meanwhile: the checkpointer is paused, or the writer is
/// doing direct work.
fn publish_rollback(store: &Store, plan: &Plan, streams: StreamSeqnos, version: u64) {
    if let Err(e) = lostlog::finalize(&plan.path) {
        // The rollback is committed; the pending file is completed at the next start.
        tracing::error!(error = %error_chain(&e), "cannot rename the rollback log into place");
    }
    store.publish_streams(streams);
    store.note_rollback();
    store.lower_pins(plan.to_seqno + 1);
    store.publish(plan.to_seqno, Some(plan.meta.clone()), version);
}

/// A rollback's commit failed. A commit that reports an error may still have reached the
/// disk, with the note that makes the next start cut the segments: whether the rollback
/// happened is unknown, and the state in memory cannot be trusted against the disk's. The
/// engine stops (as PostgreSQL stops when an fsync fails); its next start settles it from the
/// disk — the rollback whole, its log kept, or not at all — and the client that asked sees
/// its connection closed, never a success.
fn unknown_outcome(e: &StoreError) -> ! {
    // Also on stderr: `ctl rollback --offline` sets up no log output.
    eprintln!("error: a rollback's commit failed and may have reached the disk: {}", error_chain(e));
    tracing::error!(error = %error_chain(e), "a rollback's commit failed and may have reached the disk; stopping so that the next start settles it");
    std::process::exit(UNKNOWN_OUTCOME_EXIT);
}

/// The exit code of [`unknown_outcome`] (EX_TEMPFAIL).
const UNKNOWN_OUTCOME_EXIT: i32 = 75;

/// The last seqno the base's journal holds (its base when empty).
fn base_journal_end(db: &redb::Database, base: &JournalBase) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    let journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
    let last = journal.last().map_err(redb_err("read the journal's last record"))?;
    Ok(last.map_or(base.seqno, |(seqno, _)| seqno.value()))
}

/// The log thread's outcome (a panic is a failed write).
fn join_log(
    log: std::thread::ScopedJoinHandle<'_, Result<PathBuf, LostLogError>>,
    path: &std::path::Path,
) -> Result<PathBuf, LostLogError> {
    log.join().unwrap_or_else(|_| {
        Err(LostLogError::Write {
            path: path.to_owned(),
            source: std::io::Error::other("the log writer panicked"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::KeyChange;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn record(seqno: u64, changes: Vec<KeyChange>) -> Record {
        Record {
            kind: RecordKind::Update,
            seqno,
            stream: 0,
            stream_seqno: seqno,
            commit_time_micros: 0,
            changes,
        }
    }

    proptest! {
        /// The restores equal applying every before-image newest first (the definition of
        /// rolling back), one per node, in node order.
        #[test]
        fn restores_are_the_earliest_before_images_in_node_order(
            txns in proptest::collection::vec(
                proptest::collection::btree_map(0u8..8, (proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>())), 1..4),
                0..30,
            ),
        ) {
            let records: Vec<Record> = txns
                .iter()
                .enumerate()
                .map(|(i, changes)| {
                    let changes = changes
                        .iter()
                        .map(|(k, (b, a))| KeyChange { key: vec![*k], before: b.map(|b| vec![b]), after: a.map(|a| vec![a]) })
                        .collect();
                    record(i as u64 + 1, changes)
                })
                .collect();
            let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for r in records.iter().rev() {
                for c in &r.changes {
                    model.insert(c.key.clone(), c.before.clone());
                }
            }
            let got: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                restores(&records).into_iter().map(|(k, b)| (k.to_vec(), b.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn rolled_off_records_must_run_without_a_hole_and_hold_no_upgrade() {
        let ok = |n: u64| Ok((n, record(n, Vec::new())));
        assert_eq!(rolled_off(4, 6, [ok(5), ok(6)].into_iter()).map(|r| r.len()).ok(), Some(2));
        assert!(matches!(rolled_off(4, 6, [ok(6)].into_iter()), Err(StoreError::JournalCorrupt { .. })));
        assert!(matches!(
            rolled_off(4, 7, [ok(5), ok(6)].into_iter()),
            Err(StoreError::JournalCorrupt { .. })
        ));
        let upgrade = Ok((5, Record { kind: RecordKind::Upgrade, ..record(5, Vec::new()) }));
        assert!(matches!(rolled_off(4, 5, [upgrade].into_iter()), Err(StoreError::Invalid { .. })));
    }
}
