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

/// The value of counter `name` in the server's metrics.
fn counter(server: &Server, name: &str) -> u64 {
    let metrics = common::admin(&server.data_dir, "GET", "/metrics", None).unwrap().1;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

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
    for round in 0..rounds {
        let handles = writers(&server.url(), &book, &never);
        let delay = 30 + rng.next() % 400;
        std::thread::sleep(Duration::from_millis(delay));
        if churn {
            // Wait (writers still running) until this incarnation has checkpointed and
            // rotated, so the kill meets a writer and a checkpointer in full churn.
            common::wait_until("checkpoints and rotations", || {
                let segments = std::fs::read_dir(server.data_dir.join("journal")).map_or(0, |d| d.count());
                counter(&server, "strand_checkpoints_total") >= 3 && segments >= 2
            });
        }
        // Whether kills can meet a group syncing on the sync thread while the next one runs.
        overlapped += counter(&server, "strand_commit_groups_overlapped_total");
        server.kill9();
        join_writers(handles, &book);
        server.restart();
        committed = check(&server, &book.lock().unwrap(), &format!("seed {seed} round {round}"), false);
        println!("round {round}: killed after {delay} ms, {committed} ops committed in all");
    }
    assert!(committed > 0, "no write was ever acknowledged; the test proved nothing");
    assert!(overlapped > 0, "no commit group ever synced while the next one ran; the kills never met one");
    println!("{overlapped} groups synced while the next one ran");
}
