//! Replication under faults, between real processes: a wrong credential, a corrupted frame
//! and a connection cut mid-frame (through a proxy the test controls), SIGKILL of the receiver
//! mid-apply and of the primary mid-stream, and a rollback interrupted by SIGKILL. After each:
//! no acknowledged transaction missing, none duplicated, no seqno hole (`verify`), the two
//! instances identical, and every rolled-off transaction in exactly one log.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::{Server, tempdir, wait_until};
use redis::Commands;

fn pair(dir: &std::path::Path) -> (Server, Server) {
    let primary = Server::start_replicating(dir, "Ardmore");
    let standby = Server::start_replicating(dir, "BrynMawr");
    primary.ctl(&["promote"]);
    standby.ctl(&["receiver", "start"]);
    (primary, standby)
}

fn write_n(server: &Server, prefix: &str, n: u64) {
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.set(format!("{prefix}{i}"), i).ignore();
    }
    let () = pipe.query(&mut c).unwrap();
}

/// Same seqno, same keys and values, both journals consistent.
fn assert_identical(a: &Server, b: &Server) {
    let seqno = a.seqno();
    wait_until("the standby to catch up", || b.seqno() == seqno);
    a.verify();
    b.verify();
    let (mut ca, mut cb) = (a.client(), b.client());
    let mut ka: Vec<String> = ca.scan().unwrap().collect();
    let mut kb: Vec<String> = cb.scan().unwrap().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb);
    for k in ka.iter().step_by(97) {
        assert_eq!(ca.get::<_, String>(k).unwrap(), cb.get::<_, String>(k).unwrap(), "{k}");
    }
}

#[test]
fn wrong_credential_is_refused_and_logged() {
    let dir = tempdir();
    let primary = Server::start_replicating(dir.path(), "Ardmore");
    let other = tempdir();
    std::fs::write(other.path().join("repl-secret"), "a different secret").unwrap();
    let standby = Server::start_replicating(other.path(), "BrynMawr");
    primary.ctl(&["promote"]);
    standby.ctl(&["receiver", "start"]);
    write_n(&primary, "k", 10);
    primary.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &standby.repl_addr()]);
    wait_until("the source to report the failure", || {
        primary.ctl(&["backlog", "--json"])[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("authentication failed"))
    });
    assert_eq!(standby.seqno(), 0, "nothing applied");
    assert!(primary.log_text().contains("failed to prove the replication secret"), "source logs it");
    // A client that speaks garbage or nothing at all is dropped and changes nothing.
    let (_, closed) = common::raw(&standby.repl_addr(), b"\x10\x00\x00\x00garbage-garbage-garbage");
    assert!(closed);
    let metrics = common::admin(&primary.data_dir, "GET", "/metrics", None).unwrap().1;
    assert!(metrics.contains("strand_replication_errors_total{error=\"error\"}"), "{metrics}");
}

#[test]
fn a_corrupted_frame_and_a_cut_connection_lose_nothing() {
    for fault in [Fault::FlipAt(5000), Fault::CutAfter(7000)] {
        let dir = tempdir();
        let (primary, standby) = pair(dir.path());
        write_n(&primary, "before", 500);
        let proxy = Proxy::start(standby.repl_addr(), fault);
        primary.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &proxy.addr]);
        write_n(&primary, "during", 500);
        assert_identical(&primary, &standby);
        assert_eq!(proxy.faults_applied.load(Ordering::Acquire), 1, "the fault really happened");
        assert_eq!(standby.seqno(), 1000);
        assert_eq!(standby.status()["last_rollback"], serde_json::Value::Null);
    }
}

#[test]
fn sigkill_of_the_receiver_mid_apply_and_of_the_primary_mid_stream() {
    let dir = tempdir();
    let (mut primary, mut standby) = pair(dir.path());
    primary.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &standby.repl_addr()]);
    // A client writes throughout; what it got acknowledged must end up on both.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let spawn_client = |url: String, round: usize| {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let Ok(mut c) = redis::Client::open(url).unwrap().get_connection() else { return };
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let key = format!("r{round}-{i}");
                if c.set::<_, _, ()>(&key, i).is_err() {
                    return; // server killed: the outcome of this one write is unknown
                }
                acked.lock().unwrap().push(key);
                i += 1;
            }
        })
    };
    for round in 0..4 {
        let client = spawn_client(primary.url(), round);
        let deadline = std::time::Instant::now() + common::REPLICATION_TIMEOUT;
        while !(standby.seqno() > primary.seqno().saturating_sub(50) && standby.seqno() > 0) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: standby at {} primary at {}; source: {}; receiver: {}\nstandby log tail: {}",
                standby.seqno(),
                primary.seqno(),
                primary.ctl(&["backlog", "--json"]),
                standby.status()["receiver"],
                standby.log_text().lines().rev().take(8).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if round % 2 == 0 {
            standby.kill9(); // mid-apply: the stream is busy
            standby.restart();
        } else {
            primary.kill9(); // mid-stream
            client.join().unwrap();
            primary.restart(); // the source link is kept in the metadata and resumes
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Release);
        client.join().unwrap();
        stop.store(false, Ordering::Release);
    }
    assert_identical(&primary, &standby);
    let mut c = standby.client();
    for key in acked.lock().unwrap().iter() {
        assert!(c.exists::<_, bool>(key).unwrap(), "acknowledged {key} missing on the standby");
    }
}

#[test]
fn a_rollback_interrupted_by_sigkill_is_all_or_nothing_and_logged_once() {
    let dir = tempdir();
    let mut server = Server::start_replicating(dir.path(), "Ardmore");
    server.ctl(&["promote"]);
    for chunk in 0..10 {
        write_n(&server, &format!("c{chunk}-"), 2000);
    }
    assert_eq!(server.seqno(), 20_000);
    let target = 5_000u64;
    let mut delays = [5u64, 20, 60, 150, 400].into_iter();
    loop {
        let before = server.seqno();
        if before == target {
            break;
        }
        let data_dir = server.data_dir.clone();
        let rollback =
            std::thread::spawn(move || common::ctl(&data_dir, &["rollback", "--to-seqno", "5000"]));
        match delays.next() {
            Some(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                server.kill9();
                let _ = rollback.join();
                server.restart();
            }
            None => {
                let (ok, _, err) = rollback.join().unwrap();
                assert!(ok, "{err}");
            }
        }
        let after = server.seqno();
        assert!(after == before || after == target, "rollback half done: {before} -> {after}");
        server.verify();
        let logs: Vec<_> = std::fs::read_dir(server.data_dir.join("lost-transactions"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            logs.iter().all(|p| !p.to_string_lossy().ends_with(".pending")),
            "pending log left: {logs:?}"
        );
        if after == target {
            assert_eq!(logs.len(), 1, "exactly one log for the one rollback that happened");
            let seqnos = common::lost_seqnos(&server.data_dir, &logs[0]);
            assert_eq!(
                seqnos,
                (target + 1..=20_000).collect::<Vec<_>>(),
                "every rolled-off transaction, once"
            );
        } else {
            assert!(logs.is_empty(), "a log for a rollback that did not happen: {logs:?}");
        }
    }
    let mut c = server.client();
    assert_eq!(redis::cmd("DBSIZE").query::<u64>(&mut c).unwrap(), 5_000);
}
