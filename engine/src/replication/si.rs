//! Supplementary-instance (SI) negotiation and rollback planning, per stream. Pure functions.
//!
//! A supplementary instance interleaves its own transactions (stream 0) with those received
//! from one source family on stream k (1..=15). Every journal entry carries (journal seqno,
//! stream, stream seqno); for stream k the stream seqno is the transaction's journal seqno in
//! the source family. The instance keeps, per stream, the family's history records.
//!
//! When a member of the family connects (Ardmore, or BrynMawr after a failover), the common
//! point is found in the family's seqno space (`history::common_point`). If the receiver holds
//! stream-k transactions past it:
//! - with autorollback it rolls back to just before the first of them — which also rolls off
//!   every later transaction of any stream, the local ones included (database updates are
//!   serialized: the seed's {102,0,11} goes with {101,1,18});
//! - with noresync it keeps everything and resumes from the common point, so stream seqnos
//!   may restart lower under a new stream history record (the seed's A97 and A97a);
//! - otherwise it refuses and touches nothing.
//!
//! - if the first stream-k entry past the common point is the stream's own base (it began from
//!   a backup newer than anything the family still agrees on), no rollback can help: the
//!   instance must be re-seeded from a newer backup.
//!
//! The receiver (`receiver.rs`) and `rollback --fetchresync` run these plans; only the journal
//! suffix that can be in question is read (`Snapshot::entries_back_to`).

use super::history;
use crate::storage::journal::StreamEntry;
use crate::storage::meta::HistoryRecord;

/// What the receiver asked for when the source family's history disagrees with its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    Refuse,
    Autorollback,
    NoResync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiPlan {
    /// Not ahead: receive stream seqnos from `from` on.
    Stream { from: u64 },
    /// Ahead, autorollback: roll the journal back to `to_seqno` (every later entry goes to the
    /// unreplicated-transaction log), then receive from `from`.
    Rollback { to_seqno: u64, from: u64 },
    /// Ahead, noresync: keep everything, receive from `from` (the common point + 1) under a new
    /// stream history record.
    NoResync { from: u64 },
    /// Ahead and neither allowed: report and touch nothing.
    Refuse { common: u64, receiver_stream_seqno: u64 },
    /// Ahead by transactions that came with the stream's base (a backup): rolling back cannot
    /// remove them; the instance must be re-created from a newer backup (or use noresync).
    Reseed { common: u64, base: u64 },
}

/// The stream seqno of the receiver's latest entry of `stream` (0 if none). "Latest" is by
/// journal order, not the largest number: after a noresync stream seqnos can go down.
pub fn last_stream_seqno(journal: &[StreamEntry], stream: u8) -> u64 {
    journal.iter().rev().find(|e| e.stream == stream).map_or(0, |e| e.stream_seqno)
}

/// Plans stream `stream` of a supplementary receiver whose journal is `journal` (in journal
/// order) and whose history of that stream's family is `family` (records in the family's seqno
/// space), against a family member with history `source` at seqno `source_seqno`.
pub fn plan(
    journal: &[StreamEntry],
    stream: u8,
    family: &[HistoryRecord],
    source: &[HistoryRecord],
    source_seqno: u64,
    resync: Resync,
) -> SiPlan {
    assert!((1..16).contains(&stream), "SI streams are 1..=15");
    let last = last_stream_seqno(journal, stream);
    let common = history::common_point(family, last, source, source_seqno);
    if common >= last {
        return SiPlan::Stream { from: last + 1 };
    }
    match resync {
        Resync::Refuse => SiPlan::Refuse { common, receiver_stream_seqno: last },
        Resync::NoResync => SiPlan::NoResync { from: common + 1 },
        Resync::Autorollback => {
            // The first stream entry past the common point, in journal order *after the last
            // entry the two sides agree on*: earlier entries may carry the same numbers from a
            // previous noresync epoch and are not in question.
            let agreed_at = journal
                .iter()
                .rposition(|e| {
                    e.stream == stream
                        && e.stream_seqno <= common
                        && covered_alike(family, source, e.stream_seqno)
                })
                .map_or(0, |i| i + 1);
            let first_bad =
                journal.iter().skip(agreed_at).find(|e| e.stream == stream && e.stream_seqno > common);
            match first_bad {
                Some(e) if e.base => SiPlan::Reseed { common, base: e.stream_seqno },
                Some(e) => SiPlan::Rollback { to_seqno: e.seqno.saturating_sub(1), from: common + 1 },
                None => {
                    SiPlan::Rollback { to_seqno: journal.last().map_or(0, |e| e.seqno), from: common + 1 }
                }
            }
        }
    }
}

fn covered_alike(a: &[HistoryRecord], b: &[HistoryRecord], seqno: u64) -> bool {
    match (crate::storage::meta::covering(a, seqno), crate::storage::meta::covering(b, seqno)) {
        (Some(x), Some(y)) => {
            x.start_seqno == y.start_seqno
                && x.root_name == y.root_name
                && x.root_creation_id == y.root_creation_id
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(start: u64, id: &str) -> HistoryRecord {
        HistoryRecord {
            stream: 0,
            start_seqno: start,
            root_name: "A".into(),
            root_creation_id: id.into(),
            journal_seqno: start,
        }
    }

    fn e(seqno: u64, stream: u8, stream_seqno: u64) -> StreamEntry {
        StreamEntry { seqno, stream, stream_seqno, base: false }
    }

    /// The seed's second table: Malvern holds M34,A95,M35,M36,A96,A97,M37,M38,A98,M39,M40;
    /// BrynMawr (the family after Ardmore's crash) has A95..A97 then B61.. under its own record.
    fn malvern() -> Vec<StreamEntry> {
        // Local seqnos 1..; stream 0 seqnos count locally (M34 = 34 …).
        let labels = [
            (0, 34),
            (1, 95),
            (0, 35),
            (0, 36),
            (1, 96),
            (1, 97),
            (0, 37),
            (0, 38),
            (1, 98),
            (0, 39),
            (0, 40),
        ];
        labels.iter().enumerate().map(|(i, (s, q))| e(i as u64 + 1, *s, *q)).collect()
    }

    #[test]
    fn seed_malvern_ahead_rolls_off_a98_m39_m40() {
        let family = vec![rec(1, "ardmore")];
        let brynmawr =
            vec![rec(1, "ardmore"), HistoryRecord { root_name: "B".into(), ..rec(98, "brynmawr") }];
        let plan = plan(&malvern(), 1, &family, &brynmawr, 99, Resync::Autorollback);
        // A98 is entry 9: roll back to 8 (…M38), rolling off A98, M39, M40.
        assert_eq!(plan, SiPlan::Rollback { to_seqno: 8, from: 98 });
    }

    #[test]
    fn seed_malvern_ahead_continues_with_noresync() {
        let family = vec![rec(1, "ardmore")];
        let brynmawr =
            vec![rec(1, "ardmore"), HistoryRecord { root_name: "B".into(), ..rec(98, "brynmawr") }];
        assert_eq!(
            plan(&malvern(), 1, &family, &brynmawr, 99, Resync::NoResync),
            SiPlan::NoResync { from: 98 }
        );
        assert_eq!(
            plan(&malvern(), 1, &family, &brynmawr, 99, Resync::Refuse),
            SiPlan::Refuse { common: 97, receiver_stream_seqno: 98 }
        );
    }

    #[test]
    fn seed_brynmawr_takes_over_without_rollback() {
        // First table: Malvern has up to A97; BrynMawr has A98 and then B61 (seqno 99).
        let journal: Vec<StreamEntry> = malvern().into_iter().take(8).collect();
        let family = vec![rec(1, "ardmore")];
        let brynmawr =
            vec![rec(1, "ardmore"), HistoryRecord { root_name: "B".into(), ..rec(99, "brynmawr") }];
        assert_eq!(plan(&journal, 1, &family, &brynmawr, 100, Resync::Refuse), SiPlan::Stream { from: 98 });
    }

    #[test]
    fn a_base_past_the_common_point_needs_a_reseed() {
        // Stream 1 began from a backup at family seqno 94; the family now agrees only to 90.
        let journal = vec![
            StreamEntry { seqno: 1, stream: 0, stream_seqno: 1, base: false },
            StreamEntry { seqno: 2, stream: 1, stream_seqno: 94, base: true },
            e(3, 1, 95),
            e(4, 0, 2),
        ];
        let family = vec![rec(1, "ardmore")];
        let rolled = vec![rec(1, "ardmore"), rec(91, "ardmore-again")];
        assert_eq!(
            plan(&journal, 1, &family, &rolled, 93, Resync::Autorollback),
            SiPlan::Reseed { common: 90, base: 94 }
        );
        // Past the base, an ordinary rollback: to just before A96 (entry 4 is local, after it).
        let later = vec![rec(1, "ardmore"), rec(96, "ardmore-again")];
        assert_eq!(plan(&journal, 1, &family, &later, 99, Resync::Autorollback), SiPlan::Stream { from: 96 });
        let mut longer = journal.clone();
        longer.push(e(5, 1, 96));
        longer.push(e(6, 0, 3));
        assert_eq!(
            plan(&longer, 1, &family, &later, 99, Resync::Autorollback),
            SiPlan::Rollback { to_seqno: 4, from: 96 }
        );
    }

    proptest! {
        /// After an autorollback plan, every stream-1 entry left on the receiver is a
        /// transaction the family holds; exactly the journal suffix after `to_seqno` is rolled
        /// off, and it starts with a stream-1 entry the family does not hold (no more than
        /// needed). A noresync plan rolls nothing off and resumes right after the common point.
        #[test]
        fn si_plans_match_ground_truth(
            ops in proptest::collection::vec((0u8..3, 1u64..8), 1..14),
            copy_at in 0usize..14,
            locals in proptest::collection::vec(0u8..3, 0..60),
        ) {
            let (fam, snapshot, _) = super::super::history::testkit::evolve(&ops, copy_at);
            // The receiver got the family's transactions up to the snapshot, interleaved with
            // local ones as `locals` says (0: local, else: next family transaction).
            let seen = snapshot.unwrap_or_else(|| fam.clone());
            let mut journal = Vec::new();
            let mut truth = Vec::new(); // per journal entry: Some((stream seqno, epoch)) for stream 1
            let mut local = 0u64;
            for (i, &(q, ep)) in seen.txns.iter().enumerate() {
                // Before each family transaction, maybe one local one.
                if !locals.is_empty() && locals[i % locals.len()] == 0 {
                    local += 1;
                    journal.push(e(journal.len() as u64 + 1, 0, local));
                    truth.push(None);
                }
                journal.push(e(journal.len() as u64 + 1, 1, q));
                truth.push(Some((q, ep)));
            }
            for _ in 0..3 { local += 1; journal.push(e(journal.len() as u64 + 1, 0, local)); truth.push(None); }
            let family_history = seen.history.clone();
            let source_seqno = fam.txns.len() as u64;
            let holds = |q: u64, ep: usize| fam.txns.get(q as usize - 1) == Some(&(q, ep));

            match plan(&journal, 1, &family_history, &fam.history, source_seqno, Resync::Autorollback) {
                SiPlan::Stream { from } => {
                    for t in truth.iter().flatten() { prop_assert!(holds(t.0, t.1)); }
                    prop_assert_eq!(from, last_stream_seqno(&journal, 1) + 1);
                }
                SiPlan::Rollback { to_seqno, from } => {
                    // Executing the plan: entries up to `to_seqno` stay, the rest go to the
                    // unreplicated-transaction log — each entry exactly one of the two, and
                    // every stream-1 transaction the family lacks in the log.
                    let (stay, logged): (Vec<&StreamEntry>, Vec<&StreamEntry>) = journal.iter().partition(|e| e.seqno <= to_seqno);
                    prop_assert_eq!(stay.len() + logged.len(), journal.len());
                    for (entry, t) in journal.iter().zip(&truth) {
                        if let Some((q, ep)) = t && !holds(*q, *ep) {
                            prop_assert!(logged.contains(&entry), "{:?} is lacking in the family but not logged", entry);
                        }
                    }
                    let kept = &truth[..to_seqno as usize];
                    for t in kept.iter().flatten() { prop_assert!(holds(t.0, t.1), "kept {:?} the family lacks", t); }
                    let first_rolled = truth[to_seqno as usize];
                    prop_assert!(matches!(first_rolled, Some((q, ep)) if !holds(q, ep)), "rolled back more than needed");
                    let common = from - 1;
                    prop_assert_eq!(last_stream_seqno(&journal[..to_seqno as usize], 1), common);
                }
                other => prop_assert!(false, "unexpected plan {:?}", other),
            }
            if let SiPlan::NoResync { from } = plan(&journal, 1, &family_history, &fam.history, source_seqno, Resync::NoResync) {
                let common = history::common_point(&family_history, last_stream_seqno(&journal, 1), &fam.history, source_seqno);
                prop_assert_eq!(from, common + 1);
            }
        }
    }
}
