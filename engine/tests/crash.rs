//! Crash consistency: writers record which writes were acknowledged, the server is killed with
//! SIGKILL at a random moment, restarted, and every acknowledged write must be there; seqnos
//! stay contiguous and the journal's before-images agree with the data (`/v1/verify`).
//!
//! Method: 6 client threads, each writing its own keys in order — single SETs, and every third
//! operation a MULTI/EXEC pair of keys that must appear together or not at all. Repeated over
//! many kill/restart cycles on the same data directory. The seed is printed; set
//! STRAND_CRASH_SEED to replay a run, STRAND_CRASH_ROUNDS to change the number of cycles.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::writers::{Book, check, join_writers, writers};
use common::{Rng, Server, tempdir};

#[test]
fn acknowledged_writes_survive_sigkill() {
    kill_rounds("Crash", &[], 15);
}

/// The same with a tiny overlay bound and tiny journal segments: the checkpointer applies a
/// generation to the database file and removes segments many times a second, and the
/// writer rotates segments about as often, so the kills land during checkpoints, segment
/// removals and rotations. Each round first checks that both happened since the restart.
#[test]
fn acknowledged_writes_survive_sigkill_during_checkpoints_and_rotation() {
    kill_rounds("Churn", &["--checkpoint-bytes", "65536", "--journal-segment-bytes", "16384"], 10);
}

/// SETs of a lone client in each round before the writers start.
const ALONE: u64 = 10;

fn kill_rounds(name: &str, flags: &[&str], default_rounds: usize) {
    let (seed, rounds) = common::seed_and_rounds("STRAND_CRASH_SEED", "STRAND_CRASH_ROUNDS", default_rounds);
    println!("crash test seed {seed} ({rounds} rounds); replay with STRAND_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempdir();
    let churn = !flags.is_empty();
    let mut server = Server::start(&dir.path().join(name.to_lowercase()), name, flags);
    let book = Arc::new(Mutex::new(Book::new()));
    let never = Arc::new(AtomicBool::new(false));
    let mut committed = 0;
    let mut overlapped = 0;
    let mut led = 0;
    for round in 0..rounds {
        // One client alone first: its first SET is queued (the writer thread starts a
        // segment) and leaves the writer thread's last group one submitter's, so the next
        // are led by its own task — each that does not reach the writer while the writer
        // thread still holds its state after the last reply. They must survive the kill like
        // the writers' own.
        let mut alone = server.client();
        for n in 0..ALONE {
            let () = redis::Commands::set(&mut alone, format!("alone:{round}:{n}"), n).unwrap();
        }
        book.lock().unwrap().others += ALONE;
        let handles = writers(&server.url(), &book, &never);
        let delay = 30 + rng.next() % 400;
        std::thread::sleep(Duration::from_millis(delay));
        if churn {
            // Wait (writers still running) until this incarnation has checkpointed and
            // rotated, so the kill meets a writer and a checkpointer in full churn.
            common::wait_until("checkpoints and rotations", || {
                let segments = std::fs::read_dir(server.data_dir.join("journal")).map_or(0, |d| d.count());
                (server.metric("strand_checkpoints_total") as u64) >= 3 && segments >= 2
            });
        }
        // Whether kills can meet a group syncing on the sync thread while the next one runs.
        overlapped += server.metric("strand_commit_groups_overlapped_total") as u64;
        // And groups a client's own task led (the writer thread idle).
        led += server.metric("strand_commit_groups_led_total") as u64;
        server.kill9();
        join_writers(handles, &book);
        server.restart();
        committed = check(&server, &book.lock().unwrap(), &format!("seed {seed} round {round}"), false);
        let mut c = server.client();
        for n in 0..ALONE {
            let got: Option<u64> = redis::Commands::get(&mut c, format!("alone:{round}:{n}")).unwrap();
            assert_eq!(got, Some(n), "the lone client's acknowledged SET {n} of round {round} is lost");
        }
        println!("round {round}: killed after {delay} ms, {committed} ops committed in all");
    }
    assert!(committed > 0, "no write was ever acknowledged; the test proved nothing");
    assert!(overlapped > 0, "no commit group ever synced while the next one ran; the kills never met one");
    assert!(led > 0, "no commit group was ever led by a client's task: none met the kills");
    println!("{overlapped} groups synced while the next one ran, {led} led by a client's task");
}

/// Writes `count` keys `{prefix}{i}` one transaction each (pipelined); the seqno after.
fn write_keys(server: &Server, prefix: &str, count: usize) -> u64 {
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.set(format!("{prefix}{i}"), i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    server.seqno()
}

fn present(server: &Server, prefix: &str, range: std::ops::Range<usize>) -> Vec<bool> {
    let mut c = server.client();
    range.map(|i| redis::Commands::exists::<_, bool>(&mut c, format!("{prefix}{i}")).unwrap()).collect()
}

/// A rollback to a seqno past the checkpoint takes its records off the overlay and the journal
/// segments (decision 0002, step 4). Killed between its metadata commit and its cut of the
/// segments (a test hook aborts the engine there), the next start finishes the cut: the
/// records past the target are not replayed, the lost-transaction log names each of them once
/// and `/v1/verify` passes. Writes after that start, and after a rollback that was not cut
/// short, survive a SIGKILL: the cut is not done again over them.
#[test]
fn a_rollback_killed_before_it_cut_the_segments_is_finished_by_the_next_start() {
    let dir = tempdir();
    let data = dir.path().join("cut");
    // Small segments, so the rolled-off records span several; the overlay's default bound
    // keeps the checkpoint at 0 (nothing is checkpointed within the checkpoint interval).
    let flags = ["--journal-segment-bytes", "16384"];
    let mut first = Server::start_with_env(&data, "Cut", &flags, &[("STRAND_TEST_ABORT", "rollback-cut")]);
    let before = write_keys(&first, "k", 2000);
    let target = before - 1200;
    let segments = std::fs::read_dir(data.join("journal")).unwrap().count();
    assert!(segments >= 3, "the records span {segments} segments");
    // Nothing checkpointed yet: the rollback takes the overlay's way.
    assert_eq!(first.metric("strand_checkpoint_seqno"), 0.0);
    let (ok, _, _) = common::ctl(&data, &["rollback", "--to-seqno", &target.to_string()]);
    assert!(!ok, "the rollback returned, but the hook aborts the engine before it answers");
    let status = first.child.wait().unwrap();
    assert!(!status.success(), "the engine aborted: {status}");
    assert!(!first.log_text().contains("rolled back from="), "the abort came before the rollback finished");
    drop(first);
    // The volume comes back mounted elsewhere (another pod): the rollback's log, still under
    // its pending name, is recognised by its file name, not the path it was recorded with.
    let moved = dir.path().join("cut-remounted");
    std::fs::rename(&data, &moved).unwrap();
    let data = moved;

    let mut server = Server::start(&data, "Cut", &flags);
    assert!(
        server.log_text().contains("finished a rollback's cut of the journal segments"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.seqno(), target, "the records past the target are not replayed");
    let kept = usize::try_from(target - (before - 2000)).unwrap();
    assert!(present(&server, "k", 0..kept).iter().all(|p| *p), "a write before the target is gone");
    assert!(present(&server, "k", kept..2000).iter().all(|p| !*p), "a rolled-off write is back");
    let logs = common::lost_logs(&data);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(common::lost_seqnos(&data, &logs[0]), ((target + 1)..=before).collect::<Vec<_>>());
    server.verify();

    // Writes after the finished cut, then a rollback that is not cut short, then more writes:
    // a SIGKILL loses none of what stands.
    let after = write_keys(&server, "n", 500);
    assert_eq!(after, target + 500);
    let rolled = server.ctl(&["rollback", "--to-seqno", &(after - 100).to_string()]);
    assert_eq!(rolled["rollback"]["transactions"], 100, "{rolled}");
    // A WATCH taken after the rollback on a key it touched does not fail its EXEC: the
    // version the rollback published is the one it gave the key's bucket.
    let mut c = server.client();
    redis::cmd("WATCH").arg("n450").query::<()>(&mut c).unwrap();
    let exec: Option<()> = redis::pipe().atomic().set("n450", "again").ignore().query(&mut c).unwrap();
    assert!(exec.is_some(), "EXEC failed on a WATCH taken after the rollback");
    let last = write_keys(&server, "m", 300);
    assert_eq!(last, after - 100 + 1 + 300);
    server.kill9();
    server.restart();
    assert_eq!(server.seqno(), last, "the journal after the restart");
    assert!(present(&server, "n", 0..400).iter().all(|p| *p));
    assert!(present(&server, "n", 400..450).iter().all(|p| !*p));
    assert!(present(&server, "n", 451..500).iter().all(|p| !*p));
    assert!(present(&server, "n", 450..451).iter().all(|p| *p));
    assert!(present(&server, "m", 0..300).iter().all(|p| *p));
    assert_eq!(common::lost_logs(&data).len(), 2);
    server.verify();
}

/// The same for a rollback behind the checkpoint, which takes the file's records off and
/// drops the overlay in one commit: a backup checkpoints the first 1,000 writes, 1,000 more
/// stay in the overlay and the segments, and the rollback to 500 is aborted between its
/// commit and its cut. The next start must replay neither the file's records past the target
/// nor the overlay's from the segments.
#[test]
fn a_rollback_in_the_file_killed_before_it_cut_the_segments_is_finished_by_the_next_start() {
    let dir = tempdir();
    let data = dir.path().join("cut-file");
    let flags = ["--journal-segment-bytes", "16384"];
    let mut first =
        Server::start_with_env(&data, "CutFile", &flags, &[("STRAND_TEST_ABORT", "rollback-cut")]);
    let checkpointed = write_keys(&first, "a", 1000);
    first.ctl(&["backup", "--to", dir.path().join("backup").to_str().unwrap()]);
    assert_eq!(first.metric("strand_checkpoint_seqno") as u64, checkpointed, "the backup checkpointed");
    let before = write_keys(&first, "b", 1000);
    // Still where the backup left it (not passed by the 10-second checkpoint): the "b" writes
    // are in the overlay and the segments only.
    assert_eq!(first.metric("strand_checkpoint_seqno") as u64, checkpointed);
    let target = checkpointed - 500;
    let (ok, _, _) = common::ctl(&data, &["rollback", "--to-seqno", &target.to_string()]);
    assert!(!ok, "the hook aborts the engine before it answers");
    assert!(!first.child.wait().unwrap().success());
    // The file's way, not a checkpoint of everything first (which removes every segment and
    // leaves the start nothing to cut).
    let segments = std::fs::read_dir(data.join("journal")).unwrap().count();
    assert!(segments > 0, "the segments holding the \"b\" writes are still there");
    drop(first);

    let server = Server::start(&data, "CutFile", &flags);
    let log = server.log_text();
    assert!(log.contains("finished a rollback's cut of the journal segments"), "{log}");
    assert_eq!(server.seqno(), target, "records past the target are back");
    assert!(present(&server, "a", 0..500).iter().all(|p| *p));
    assert!(present(&server, "a", 500..1000).iter().all(|p| !*p));
    assert!(present(&server, "b", 0..1000).iter().all(|p| !*p));
    let logs = common::lost_logs(&data);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(common::lost_seqnos(&data, &logs[0]), ((target + 1)..=before).collect::<Vec<_>>());
    server.verify();
}
