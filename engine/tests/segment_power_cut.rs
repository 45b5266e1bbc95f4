//! Journal segments (decision 0002's write-ahead log, step 1; `storage/segment.rs`) through
//! power cuts on cutfs (tests/cutfs): see docs/reliability.md. A test binary of its own, so
//! that its many quick cuts never run beside the engine's power-cut tests (a cut kills every
//! process that used its filesystem, by thread id).
//!
//! The seed is printed; STRAND_POWERCUT_SEED replays a run, STRAND_POWERCUT_ROUNDS sets the
//! number of cycles (CI: 50). Needs root, /dev/fuse and fusermount3 (scripts/deps installs
//! fuse3).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::cutdisk::{Disk, describe, seed_and_rounds};
use common::{Rng, tempdir};

/// Journal segments (decision 0002's write-ahead log, step 1) through power cuts: a writer
/// appends groups of frames, syncs each group before counting it acknowledged, and starts a
/// new segment every few hundred frames; the power is cut at a random moment, the disk
/// mounted again and the segments recovered. Every acknowledged frame must be there, in
/// order, the segments must follow each other without a hole, a torn tail must be cut, and
/// writing must go on from the last whole frame.
#[test]
fn journal_segments_keep_every_synced_frame_through_power_cuts() {
    use strand_engine::storage::segment::{self, SegmentWriter};

    const ID: &str = "power-segments";
    let (seed, rounds) = seed_and_rounds(50);
    println!("segment power-cut seed {seed} ({rounds} rounds); replay with STRAND_POWERCUT_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempdir();
    let disk = Disk::new(dir.path(), "segments");
    let body = |seqno: u64, len: u64| {
        let mut b = seqno.to_le_bytes().to_vec();
        b.resize(8 + usize::try_from(len).unwrap(), u8::try_from(seqno % 251).unwrap());
        b
    };
    let mut acked_total = 0u64;
    let mut dropped = 0u64;
    // Each round recovers what the previous cut left; the last one only checks it.
    for round in 0..=rounds {
        let what = format!("seed {seed} round {round}");
        let mount = disk.mount();
        // Recover: every segment read in order, the last one reopened for appending.
        let segments = segment::list(&disk.mnt).unwrap();
        let mut next = 1u64;
        let mut writer = None;
        for (i, (first, path)) in segments.iter().enumerate() {
            assert_eq!(*first, next, "{what}: segment {} leaves a hole", path.display());
            let (contents, w) = segment::recover(path, ID).unwrap_or_else(|e| panic!("{what}: {e}"));
            for frame in &contents.frames {
                assert_eq!(frame.get(..8), Some(&next.to_le_bytes()[..]), "{what}: frame out of order");
                next += 1;
            }
            if i + 1 == segments.len() {
                writer = Some(w);
            }
        }
        assert!(next > acked_total, "{what}: {acked_total} frames acknowledged, {} recovered", next - 1);
        acked_total = next - 1;
        if round == rounds {
            drop(writer);
            mount.cut();
            break;
        }
        let mut writer = match writer {
            Some(w) => w,
            None => SegmentWriter::create(&disk.mnt, next, ID, 0).unwrap(),
        };
        // Write until the cut makes the disk fail.
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(acked_total));
        let group_seed = rng.next();
        // New segments are made through a handle on the mounted directory: once the cut
        // unmounts it, the mount point is a plain directory again, and a segment created
        // by its path would land on the real disk and never fail.
        let mounted = std::fs::File::open(&disk.mnt).unwrap();
        let mnt = PathBuf::from(format!("/proc/self/fd/{}", mounted.as_raw_fd()));
        let counter = acked.clone();
        let handle = std::thread::spawn(move || {
            let _mounted = mounted;
            let mut rng = Rng(group_seed | 1);
            let mut next = next;
            loop {
                let n = 1 + rng.next() % 20;
                let group: Vec<Vec<u8>> = (next..next + n).map(|s| body(s, rng.next() % 3000)).collect();
                if writer.append(&group).is_err() || writer.sync().is_err() {
                    return;
                }
                next += n;
                counter.store(next - 1, Ordering::SeqCst);
                if writer.bytes() > 256 * 1024 {
                    match SegmentWriter::create(&mnt, next, ID, 0) {
                        Ok(w) => writer = w,
                        Err(_) => return,
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 150));
        let report = mount.cut();
        handle.join().unwrap();
        let acked_now = acked.load(Ordering::SeqCst);
        dropped += report.bytes_dropped;
        println!("round {round}: {} frames acknowledged so far; cut ({})", acked_now, describe(&report));
        acked_total = acked_now;
    }
    assert!(acked_total > 0, "no frame was ever acknowledged");
    assert!(dropped > 0, "no cut ever dropped an unsynced byte; the cuts proved nothing");
    assert!(segment::list(&disk.backing).unwrap().len() > 1, "the writer never rotated");
}
