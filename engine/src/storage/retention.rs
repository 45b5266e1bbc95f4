//! Bounded journals: which of the database file's journal records may go, and taking them off
//! (decision 0002, step 6).
//!
//! The file's `journal` table holds every record from the journal's *start* to its last
//! checkpoint. After each checkpoint the checkpointer trims records off the start:
//!
//! - records every **pin** is past — a pin is a reader that still needs the journal from some
//!   seqno on: each configured replication source pins what its receiver has not acknowledged
//!   (PostgreSQL's replication slots) — as long as at least `keep_bytes` of the newest records
//!   stay (so a member added later, or a receiver briefly unconfigured, can still join by
//!   streaming; PostgreSQL's `wal_keep_size`);
//! - and, whatever the pins say, records past a retention limit the user sets: more than
//!   `retain_bytes` in all, or older than `retain_age` (PostgreSQL's
//!   `max_slot_wal_keep_size`). A receiver that needed them is told it needs re-seeding
//!   (`needs_reseed`), never streamed around the hole.
//!
//! The file's last record always stays (it names the file's checkpoint). What trimming took
//! off is summed up in the **journal base** — the last seqno trimmed and each stream's seqno
//! as of it — stored in the metadata table in the same commit as the removal, so a rollback
//! or a restart knows where the journal begins and each stream's position before it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::journal::Record;
use super::{JOURNAL, META, StoreError, StreamSeqnos, redb_err};

/// The metadata key holding the [`JournalBase`] JSON document (absent: never trimmed).
pub(crate) const META_JOURNAL_BASE: &str = "journal_base";

/// Bytes of the newest journal records kept even when no pin needs them.
pub const KEEP_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// Records taken off in one redb commit (a long trim is several).
const TRIM_RECORDS_PER_COMMIT: u64 = 100_000;
/// Commits one trim makes at least before it leaves the rest to the next checkpoint (a long
/// one, the first after an upgrade, then holds the checkpointer for a bounded time).
/// Besides these, a trim may take as many records as its checkpoint brought in, so that under
/// any steady load trimming keeps up.
pub const TRIM_COMMITS_MIN: u64 = 4;

/// How much journal the file keeps (`--journal-keep-bytes`, `--journal-retain-bytes`,
/// `--journal-retain-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest records kept even when every pin is past them.
    pub keep_bytes: u64,
    /// Past this many bytes the oldest records go even if a pin needs them (`None`: no limit).
    pub retain_bytes: Option<u64>,
    /// Records older than this go even if a pin needs them (`None`: no limit).
    pub retain_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_bytes: KEEP_BYTES_DEFAULT, retain_bytes: None, retain_age: None }
    }
}

/// What trimming has taken off the journal's start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalBase {
    /// The last seqno taken off (0: never trimmed); the journal begins at `seqno + 1`.
    pub seqno: u64,
    /// Each stream's seqno as of `seqno`: its position before the journal's first record.
    pub streams: StreamSeqnos,
}

impl JournalBase {
    /// The first seqno the journal holds (or would hold).
    pub fn first(&self) -> u64 {
        self.seqno + 1
    }
}

/// Reads the journal base (the default when the journal was never trimmed).
pub(crate) fn read_base(db: &Database) -> Result<JournalBase, StoreError> {
    base_in(&db.begin_read().map_err(redb_err("begin a read transaction"))?)
}

/// Reads the journal base as of a read transaction.
pub(crate) fn base_in(txn: &redb::ReadTransaction) -> Result<JournalBase, StoreError> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(JournalBase::default()),
        Err(e) => return Err(redb_err("open the metadata table")(e)),
    };
    match table.get(META_JOURNAL_BASE).map_err(redb_err("read the journal base"))? {
        Some(bytes) => {
            serde_json::from_slice(bytes.value()).map_err(|source| StoreError::MetaDecode { source })
        }
        None => Ok(JournalBase::default()),
    }
}

/// Bytes a record takes in the journal table (its key and its encoding), the unit of every
/// journal size here.
pub(crate) fn stored_bytes(record: &[u8]) -> i64 {
    8 + i64::try_from(record.len()).unwrap_or(i64::MAX - 8)
}

/// Readers that still need the journal from some seqno on, by holder.
#[derive(Debug, Default)]
pub struct Pins {
    inner: Mutex<PinsInner>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct PinsInner {
    pins: BTreeMap<u64, (String, u64)>,
    /// Bumped by every [`Pins::lower`] (a rollback): a position learnt before it is stale.
    epoch: u64,
}

impl Pins {
    fn lock(&self) -> std::sync::MutexGuard<'_, PinsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lowers every pin to at most `from` and starts a new epoch.
    pub fn lower(&self, from: u64) {
        let mut inner = self.lock();
        inner.epoch += 1;
        for pin in inner.pins.values_mut() {
            pin.1 = pin.1.min(from);
        }
    }

    /// The current epoch (see [`Pin::set_at`]).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The lowest seqno some pin needs, and who holds it.
    pub fn lowest(&self) -> Option<(String, u64)> {
        self.lock().pins.values().min_by_key(|(_, from)| *from).cloned()
    }

    /// Every pin, as (holder, lowest seqno needed).
    pub fn all(&self) -> Vec<(String, u64)> {
        self.lock().pins.values().cloned().collect()
    }
}

/// A reader's claim on the journal from `from` on; released when dropped.
#[derive(Debug)]
pub struct Pin {
    pins: Arc<Pins>,
    id: u64,
}

impl Pin {
    /// Pins the journal from `from` on for `holder`.
    pub fn new(pins: &Arc<Pins>, holder: &str, from: u64) -> Pin {
        let id = pins.next_id.fetch_add(1, Ordering::Relaxed);
        pins.lock().pins.insert(id, (holder.to_owned(), from));
        Pin { pins: pins.clone(), id }
    }

    /// The holder now needs the journal from `from` on.
    pub fn set(&self, from: u64) {
        if let Some(pin) = self.pins.lock().pins.get_mut(&self.id) {
            pin.1 = from;
        }
    }

    /// As [`Pin::set`], but only if no rollback happened since `epoch` ([`Pins::epoch`]): a
    /// position the holder learnt before a rollback may name records that are gone. Whether
    /// it was set.
    pub fn set_at(&self, epoch: u64, from: u64) -> bool {
        let mut inner = self.pins.lock();
        if inner.epoch != epoch {
            return false;
        }
        if let Some(pin) = inner.pins.get_mut(&self.id) {
            pin.1 = from;
        }
        true
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.pins.lock().pins.remove(&self.id);
    }
}

/// Why a record may be taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every pin is past it and enough newer records stay.
    Released,
    /// The journal holds more than `retain_bytes`.
    RetainBytes,
    /// It is older than `retain_age`.
    RetainAge,
}

/// One trim's limits, fixed when it starts.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes the file's journal holds.
    pub total: u64,
    /// The highest seqno no pin needs (the checkpoint when there is no pin).
    pub released: u64,
    /// The file's last seqno: never taken off.
    pub last: u64,
    pub keep_bytes: u64,
    pub retain_bytes: Option<u64>,
    /// Records committed before this (microseconds since the epoch) are past `retain_age`.
    pub age_cutoff_micros: Option<u64>,
}

impl Budget {
    /// Whether the record `seqno` (`bytes` in the table, committed at `time_micros`) may be
    /// taken off after `removed` bytes of older records were — records are considered oldest
    /// first, and the first that may not stops the trim.
    pub fn removable(&self, removed: u64, seqno: u64, bytes: u64, time_micros: u64) -> Option<Why> {
        if seqno >= self.last {
            return None;
        }
        let left = self.total.saturating_sub(removed);
        if self.retain_bytes.is_some_and(|limit| left > limit) {
            return Some(Why::RetainBytes);
        }
        if self.age_cutoff_micros.is_some_and(|cutoff| time_micros < cutoff) {
            return Some(Why::RetainAge);
        }
        if seqno <= self.released && left.saturating_sub(bytes) >= self.keep_bytes {
            return Some(Why::Released);
        }
        None
    }
}

/// What one trim commit took off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub records: u64,
    pub bytes: u64,
    /// The new journal base.
    pub base: JournalBase,
    /// The highest seqno taken off past every pin (a retention limit's doing), if any.
    pub past_pins: Option<u64>,
}

/// Takes records off the journal's start as `budget` allows, in commits of at most
/// [`TRIM_RECORDS_PER_COMMIT`] records, each with the new journal base, and at most
/// [`TRIM_COMMITS_MIN`] commits plus enough for `brought` records (what the checkpoint
/// brought in; the next checkpoint goes on). `commit` commits each (the store's
/// [`super::Store::commit_without_data`]); `committed` hears of each commit: what it took
/// off and the new base.
pub(crate) fn trim(
    db: &Database,
    mut base: JournalBase,
    budget: &Budget,
    brought: u64,
    mut commit: impl FnMut(redb::WriteTransaction) -> Result<(), redb::CommitError>,
    mut committed: impl FnMut(&Trimmed),
) -> Result<(), StoreError> {
    let mut removed = 0;
    for _ in 0..TRIM_COMMITS_MIN + brought.div_ceil(TRIM_RECORDS_PER_COMMIT) {
        let mut batch = Trimmed { base, ..Trimmed::default() };
        let txn = db.begin_write().map_err(redb_err("begin a journal trim"))?;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
            for entry in journal.range(base.seqno + 1..).map_err(redb_err("read the journal"))? {
                let (seqno, bytes) = entry.map_err(redb_err("read the journal"))?;
                let (seqno, bytes) = (seqno.value(), bytes.value());
                let expected = batch.base.seqno + 1;
                if seqno != expected {
                    return Err(StoreError::JournalCorrupt {
                        reason: format!("expected seqno {expected} at the journal's start, found {seqno}"),
                    });
                }
                let head =
                    Record::head(bytes).map_err(|source| StoreError::RecordDecode { seqno, source })?;
                let size = stored_bytes(bytes).unsigned_abs();
                let Some(why) = budget.removable(removed, seqno, size, head.commit_time_micros) else {
                    break;
                };
                if why != Why::Released && seqno > budget.released {
                    batch.past_pins = Some(seqno);
                }
                if let Some(slot) = batch.base.streams.get_mut(usize::from(head.stream)) {
                    *slot = head.stream_seqno;
                }
                batch.base.seqno = seqno;
                batch.bytes += size;
                batch.records += 1;
                removed += size;
                if batch.records == TRIM_RECORDS_PER_COMMIT {
                    break;
                }
            }
            if batch.records == 0 {
                drop(journal);
                txn.abort().map_err(redb_err("end a journal trim"))?;
                return Ok(());
            }
            journal.retain_in(..=batch.base.seqno, |_, _| false).map_err(redb_err("trim the journal"))?;
            let mut meta = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
            let json = serde_json::to_vec(&batch.base).map_err(|source| StoreError::MetaDecode { source })?;
            meta.insert(META_JOURNAL_BASE, json.as_slice()).map_err(redb_err("write the journal base"))?;
        }
        commit(txn).map_err(redb_err("commit a journal trim"))?;
        committed(&batch);
        base = batch.base;
        if batch.records < TRIM_RECORDS_PER_COMMIT {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(total: u64, released: u64, last: u64, keep: u64) -> Budget {
        Budget { total, released, last, keep_bytes: keep, retain_bytes: None, age_cutoff_micros: None }
    }

    #[test]
    fn released_records_go_while_enough_newer_ones_stay() {
        let b = budget(1000, 5, 10, 700);
        assert_eq!(b.removable(0, 1, 100, 0), Some(Why::Released));
        assert_eq!(b.removable(200, 3, 100, 0), Some(Why::Released)); // 800 left, 700 after
        assert_eq!(b.removable(300, 4, 100, 0), None); // would leave 600 < 700
        assert_eq!(budget(1000, 5, 10, 0).removable(400, 6, 100, 0), None); // pinned
    }

    #[test]
    fn retention_limits_override_pins_but_never_the_last_record() {
        let mut b = budget(1000, 0, 10, 0);
        b.retain_bytes = Some(500);
        assert_eq!(b.removable(0, 1, 100, 0), Some(Why::RetainBytes));
        assert_eq!(b.removable(500, 6, 100, 0), None);
        b.retain_bytes = None;
        b.age_cutoff_micros = Some(50);
        assert_eq!(b.removable(0, 1, 100, 49), Some(Why::RetainAge));
        assert_eq!(b.removable(0, 1, 100, 50), None);
        b.retain_bytes = Some(0);
        assert_eq!(b.removable(0, 10, 100, 0), None);
    }

    #[test]
    fn pins_report_the_lowest_and_go_when_dropped() {
        let pins = Arc::new(Pins::default());
        let a = Pin::new(&pins, "a", 10);
        let b = Pin::new(&pins, "b", 5);
        assert_eq!(pins.lowest(), Some(("b".into(), 5)));
        b.set(20);
        assert_eq!(pins.lowest(), Some(("a".into(), 10)));
        drop(a);
        assert_eq!(pins.lowest(), Some(("b".into(), 20)));
        drop(b);
        assert_eq!(pins.lowest(), None);
    }

    #[test]
    fn a_rollback_lowers_pins_and_makes_older_positions_stale() {
        let pins = Arc::new(Pins::default());
        let a = Pin::new(&pins, "a", 100);
        let epoch = pins.epoch();
        assert!(a.set_at(epoch, 120));
        pins.lower(50);
        assert_eq!(pins.lowest(), Some(("a".into(), 50)));
        assert!(!a.set_at(epoch, 130), "a position from before the rollback");
        assert_eq!(pins.lowest(), Some(("a".into(), 50)));
        assert!(a.set_at(pins.epoch(), 60));
    }

    /// Records 1..=10 alternating streams 0 and 3, committed at times 100, 200, …
    fn journal_db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut journal = txn.open_table(JOURNAL).unwrap();
            for seqno in 1..=10u64 {
                let record = Record {
                    kind: super::super::journal::RecordKind::Update,
                    seqno,
                    stream: if seqno % 2 == 0 { 3 } else { 0 },
                    stream_seqno: seqno * 10,
                    commit_time_micros: seqno * 100,
                    changes: Vec::new(),
                };
                journal.insert(seqno, record.encode().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, db)
    }

    fn left(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let journal = txn.open_table(JOURNAL).unwrap();
        journal.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[test]
    fn a_trim_takes_released_records_and_sums_up_each_stream_in_the_base() {
        let (_dir, db) = journal_db();
        let mut b = budget(10_000, 6, 10, 0);
        let (mut seen, mut commits) = (Vec::new(), 0);
        let commit = |txn: redb::WriteTransaction| {
            commits += 1;
            txn.commit()
        };
        trim(&db, JournalBase::default(), &b, 0, commit, |t| seen.push(*t)).unwrap();
        assert_eq!(commits, seen.len(), "every batch commits through `commit`, once");
        assert_eq!(left(&db), (7..=10).collect::<Vec<_>>());
        let [t] = seen.as_slice() else { panic!("one commit: {seen:?}") };
        assert_eq!((t.records, t.base.seqno, t.past_pins), (6, 6, None));
        // The last record of each stream up to 6: seqno 5 (stream 0), seqno 6 (stream 3).
        assert_eq!((t.base.streams[0], t.base.streams[3], t.base.streams[5]), (50, 60, 0));
        assert_eq!(read_base(&db).unwrap(), t.base);
        // A rollback's stream position before the start comes from the base.
        let txn = db.begin_read().unwrap();
        let journal = txn.open_table(JOURNAL).unwrap();
        let base = t.base;
        assert_eq!(super::super::last_of_stream(&journal, &base, 3, 6).unwrap(), 60);
        assert_eq!(super::super::last_of_stream(&journal, &base, 3, 9).unwrap(), 80);
        assert_eq!(super::super::last_of_stream(&journal, &base, 5, 9).unwrap(), 0);
        drop((journal, txn));

        // An age limit takes older records past the pins, and says so.
        b.released = 6;
        b.age_cutoff_micros = Some(850);
        let mut seen = Vec::new();
        trim(&db, base, &b, 0, redb::WriteTransaction::commit, |t| seen.push(*t)).unwrap();
        assert_eq!(left(&db), vec![9, 10]);
        assert_eq!(seen.first().map(|t| (t.records, t.past_pins)), Some((2, Some(8))));
    }

    proptest! {
        /// Trimming oldest first as `removable` allows never takes the last record, never
        /// takes a pinned record unless a limit demands it, and leaves at least `keep` bytes
        /// unless a limit demands less.
        #[test]
        fn a_trim_respects_pins_keep_and_limits(
            sizes in prop::collection::vec(1u64..200, 1..60),
            released in 0u64..70,
            keep in 0u64..3000,
            retain in prop::option::of(0u64..3000),
        ) {
            let total: u64 = sizes.iter().sum();
            let last = sizes.len() as u64;
            let mut b = budget(total, released, last, keep);
            b.retain_bytes = retain;
            let mut removed = 0;
            let mut upto = 0;
            for (i, size) in sizes.iter().enumerate() {
                let seqno = i as u64 + 1;
                match b.removable(removed, seqno, *size, 0) {
                    Some(_) => { removed += size; upto = seqno; }
                    None => break,
                }
            }
            prop_assert!(upto < last);
            let left = total - removed;
            let forced = retain.is_some_and(|r| left + sizes.get(upto.saturating_sub(1) as usize).copied().unwrap_or(0) > r);
            if upto > released {
                prop_assert!(forced, "took pinned records without a limit");
            }
            if removed > 0 && left < keep {
                prop_assert!(forced, "left {left} < keep {keep} without a limit");
            }
            if let Some(r) = retain {
                // Over the limit only by what the last record holds.
                prop_assert!(left <= r || upto + 1 == last);
            }
        }
    }
}
