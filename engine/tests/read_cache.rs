//! The read cache of the database file's nodes, in a real engine: reads answered by it see
//! every acknowledged write across checkpoints, overwrites, deletes and a restart, while
//! checkpoints run many times a second; it is used (its hit counter moves) and can be turned
//! off. In the debug build the tests run, the engine also checks every hit against the file.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Rng, Server, seed_and_rounds, small_wal, tempdir};
use redis::Commands;

const KEYS: u64 = 200;

/// Writes and deletes random keys (with filler that keeps the checkpoints coming) and, after
/// each acknowledged change, reads keys back twice on another connection: the second read of
/// a node in the file is the cache's.
fn write_and_read_back(server: &Server, rng: &mut Rng, rounds: usize, model: &mut HashMap<String, String>) {
    let mut writer = server.client();
    let mut reader = server.client();
    for round in 0..rounds {
        let key = format!("k{}", rng.next() % KEYS);
        if rng.next().is_multiple_of(4) {
            let _: i64 = writer.del(&key).unwrap();
            model.remove(&key);
        } else {
            let value = format!("v{round}-{}", rng.next());
            let _: () = writer.set(&key, &value).unwrap();
            model.insert(key.clone(), value);
        }
        // About 64 KiB of filler every 32 rounds: a checkpoint, and so a new, empty cache.
        let filler = format!("filler{}", round % 8);
        let _: () = writer.set(&filler, "x".repeat(2048)).unwrap();
        let other = format!("k{}", rng.next() % KEYS);
        for _ in 0..2 {
            for probe in [&key, &other] {
                let got: Option<String> = reader.get(probe).unwrap();
                assert_eq!(got.as_ref(), model.get(probe), "{probe} after round {round}");
            }
        }
    }
}

#[test]
fn reads_see_every_acknowledged_write_across_checkpoints() {
    let (seed, rounds) = seed_and_rounds("STRAND_CACHE_SEED", "STRAND_CACHE_ROUNDS", 1500);
    eprintln!("seed {seed}, {rounds} rounds (STRAND_CACHE_SEED, STRAND_CACHE_ROUNDS replay)");
    let dir = tempdir();
    let mut server = Server::start(dir.path(), "cached", &small_wal(&[]));
    let mut rng = Rng(seed);
    let mut model = HashMap::new();
    write_and_read_back(&server, &mut rng, rounds, &mut model);
    assert!(server.metric("strand_checkpoints_total") >= 20.0, "the checkpoints came");
    let hits = server.metric("strand_read_cache_hits_total");
    assert!(hits >= rounds as f64 / 2.0, "the cache answered reads: {hits} hits");
    assert!(server.metric("strand_read_cache_misses_total") > 0.0);

    // After a restart (the file's state replayed), reads through a fresh cache agree too.
    server.restart();
    let mut reader = server.client();
    for i in 0..KEYS {
        let key = format!("k{i}");
        for _ in 0..2 {
            let got: Option<String> = reader.get(&key).unwrap();
            assert_eq!(got.as_ref(), model.get(&key), "{key} after the restart");
        }
    }
    write_and_read_back(&server, &mut rng, rounds / 5, &mut model);
}

/// A reader polling keys that a writer keeps overwriting with rising numbers never sees one
/// go back, while checkpoints replace the cache under it.
#[test]
fn concurrent_readers_never_see_a_value_go_back() {
    let dir = tempdir();
    let server = Server::start(dir.path(), "racing", &small_wal(&[]));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut c = server.client();
                    let mut seen = [0u64; 8];
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (i, last) in seen.iter_mut().enumerate() {
                            let got: Option<u64> = c.get(format!("n{i}")).unwrap();
                            let got = got.unwrap_or(0);
                            assert!(got >= *last, "n{i} went back from {last} to {got}");
                            *last = got;
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        let mut c = server.client();
        for n in 1..=1500u64 {
            let _: () = c.set(format!("n{}", n % 8), n).unwrap();
            let _: () = c.set(format!("filler{}", n % 8), "y".repeat(1024)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert!(server.metric("strand_checkpoints_total") >= 10.0, "the checkpoints came");
    assert!(server.metric("strand_read_cache_hits_total") > 0.0);
}

#[test]
fn a_bound_of_zero_turns_it_off() {
    let dir = tempdir();
    let server = Server::start(dir.path(), "uncached", &small_wal(&["--read-cache-bytes", "0"]));
    let mut rng = Rng(7);
    let mut model = HashMap::new();
    write_and_read_back(&server, &mut rng, 200, &mut model);
    assert_eq!(server.metric("strand_read_cache_hits_total"), 0.0);
    assert_eq!(server.metric("strand_read_cache_bytes"), 0.0);
}
