//! BC replication between real engine processes over TCP: the BC rows of the GT.M seed's
//! scenario tables, asserted exactly, plus a planned switchover under a live client.
//!
//! Labels: "A<n>" is the transaction an instance writes as the key `A<n>`; its journal seqno
//! on Ardmore is n (each test writes A1.. in order on an empty instance).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use common::{Server, tempdir, wait_until};
use redis::Commands;

fn write(server: &Server, keys: impl IntoIterator<Item = String>) {
    let mut c = server.client();
    for k in keys {
        let () = c.set(&k, format!("value of {k}")).unwrap();
    }
}

fn keys(server: &Server) -> Vec<String> {
    let mut c = server.client();
    let mut all: Vec<String> = c.scan().unwrap().collect();
    all.sort_by_key(|k| {
        (k.chars().next(), k[1..].trim_end_matches('a').parse::<u64>().unwrap_or(0), k.clone())
    });
    all
}

fn labels(prefix: &str, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

fn lost_log(server: &Server) -> (serde_json::Value, Vec<serde_json::Value>) {
    let status = server.status();
    let path = status["last_rollback"]["log_path"].as_str().expect("a rollback log").to_owned();
    let shown = common::ctl_json(&server.data_dir, &["lost-transactions", "show", &path, "--json"]);
    (shown["header"].clone(), shown["transactions"].as_array().unwrap().clone())
}

fn lost_keys(txns: &[serde_json::Value]) -> Vec<String> {
    txns.iter()
        .flat_map(|t| t["changes"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap().to_owned()))
        .collect()
}

/// Seed, first table (BC rows): Ardmore replicates to BrynMawr; Ardmore crashes with A99 not
/// replicated; BrynMawr takes over and commits B61..B64; Ardmore returns, is refused while it
/// is ahead (no autorollback: it keeps its data), rolls A99 off into the unreplicated-
/// transaction log (rollback -fetchresync) and becomes BrynMawr's secondary.
#[test]
fn ardmore_crashes_brynmawr_takes_over_ardmore_rolls_off_a99_and_rejoins() {
    let dir = tempdir();
    let (mut ardmore, brynmawr) = Server::bc_pair(dir.path());

    write(&ardmore, labels("A", 1..=98));
    wait_until("BrynMawr to hold A98", || brynmawr.seqno() == 98);
    // A secondary refuses application writes and names its primary.
    let err = brynmawr.client().set::<_, _, ()>("x", "y").unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::ReadOnly, "{err}");
    assert!(err.to_string().contains("replicates from Ardmore"), "the error names the primary: {err}");
    let backlog = ardmore.ctl(&["backlog", "--json"]);
    assert_eq!(backlog[0]["receiver"], "BrynMawr");
    wait_until("BrynMawr's acknowledgement of A98", || {
        ardmore.ctl(&["backlog", "--json"])[0]["backlog"] == 0
    });

    // A99 is committed on Ardmore but never reaches BrynMawr; then Ardmore crashes.
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    write(&ardmore, labels("A", 99..=99));
    assert_eq!(ardmore.seqno(), 99);
    ardmore.kill9();

    // BrynMawr becomes the originating primary and continues the business.
    brynmawr.ctl(&["promote"]);
    write(&brynmawr, labels("B", 61..=64));
    assert_eq!(brynmawr.seqno(), 102);
    let history = brynmawr.status()["history"].clone();
    assert_eq!(history.as_array().unwrap().last().unwrap()["root_name"], "BrynMawr");
    assert_eq!(history.as_array().unwrap().last().unwrap()["start_seqno"], 99);

    // Ardmore returns as a secondary without autorollback: it is ahead, so it is refused and
    // touches nothing.
    ardmore.restart();
    ardmore.ctl(&["demote"]);
    ardmore.ctl(&["receiver", "start"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Ardmore", "--addr", &ardmore.repl_addr()]);
    wait_until("Ardmore to report rollback required", || {
        ardmore.status()["receiver"]["state"] == "rollback_required"
    });
    let status = ardmore.status();
    assert_eq!(status["receiver"]["common_seqno"], 98);
    assert_eq!(status["journal_seqno"], 99, "nothing touched");
    assert_eq!(ardmore.client().get::<_, Option<String>>("A99").unwrap().as_deref(), Some("value of A99"));
    wait_until("BrynMawr to see the refusal", || {
        brynmawr.ctl(&["backlog", "--json"])[0]["state"] == "rollback_required"
    });

    // Rollback with -fetchresync against BrynMawr: A99 goes to the log, and only A99.
    let rolled = ardmore.ctl(&["rollback", "--fetchresync", &brynmawr.repl_addr()]);
    assert_eq!(rolled["journal_seqno"], 98);
    assert_eq!(rolled["rollback"]["from_seqno"], 99);
    assert_eq!(rolled["rollback"]["to_seqno"], 99);
    let (header, txns) = lost_log(&ardmore);
    assert_eq!(header["instance"], "Ardmore");
    assert_eq!(lost_keys(&txns), vec!["A99"]);
    assert_eq!(txns[0]["seqno"], 99);
    assert_eq!(txns[0]["origin"], "Ardmore");
    assert_eq!(txns[0]["changes"][0]["after"], "value of A99");

    // BrynMawr's source retries and Ardmore catches up as its secondary.
    wait_until("Ardmore to catch up with BrynMawr", || ardmore.seqno() == 102);
    let mut expected = labels("A", 1..=98);
    expected.extend(labels("B", 61..=64));
    assert_eq!(keys(&ardmore), expected);
    assert_eq!(keys(&brynmawr), expected);
    ardmore.verify();
    brynmawr.verify();
    write(&brynmawr, labels("B", 65..=65));
    wait_until("B65 on Ardmore", || ardmore.seqno() == 103);
}

/// Seed, last table (BC rows): Ardmore rolls itself back online to A96 (A97..A99 into its
/// log) and goes on with A97a..; BrynMawr, which holds the original A97 and receives with
/// autorollback, rolls A97 off and then receives A97a, A98a, A99a.
#[test]
fn online_rollback_of_the_primary_and_a_secondary_with_autorollback_follows() {
    let dir = tempdir();
    let ardmore = Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = Server::start_replicating(dir.path(), "BrynMawr");
    ardmore.ctl(&["promote"]);
    brynmawr.ctl(&["receiver", "start", "--autorollback"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    write(&ardmore, labels("A", 1..=97));
    wait_until("BrynMawr to hold A97", || brynmawr.seqno() == 97);
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    write(&ardmore, labels("A", 98..=99));

    let rolled = ardmore.ctl(&["rollback", "--to-seqno", "96"]);
    assert_eq!(rolled["rollback"]["transactions"], 3);
    let (_, txns) = lost_log(&ardmore);
    assert_eq!(lost_keys(&txns), vec!["A97", "A98", "A99"], "in journal order");
    assert_eq!(ardmore.status()["role"], "primary", "an online rollback keeps the primary a primary");
    write(&ardmore, ["A97a".into(), "A98a".into(), "A99a".into()]);
    let history = ardmore.status()["history"].clone();
    assert_eq!(history.as_array().unwrap().last().unwrap()["start_seqno"], 97, "A97a is not A97");

    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    wait_until("BrynMawr to hold A99a", || {
        brynmawr.seqno() == 99 && brynmawr.client().exists::<_, bool>("A99a").unwrap()
    });
    let (header, txns) = lost_log(&brynmawr);
    assert!(header["reason"].as_str().unwrap().contains("autorollback"), "{header}");
    assert_eq!(lost_keys(&txns), vec!["A97"]);
    let mut expected = labels("A", 1..=96);
    expected.extend(["A97a".to_owned(), "A98a".to_owned(), "A99a".to_owned()]);
    assert_eq!(keys(&brynmawr), expected);
    assert_eq!(keys(&ardmore), expected);
    brynmawr.verify();
    ardmore.verify();
}

/// A planned switchover loses nothing: a client writes throughout, moving to the new primary
/// when the old one turns read-only; every acknowledged write is on the new primary, and the
/// old primary rejoins as its secondary and catches up.
#[test]
fn planned_switchover_loses_no_acknowledged_write() {
    let dir = tempdir();
    let (ardmore, brynmawr) = Server::bc_pair(dir.path());

    let urls = [ardmore.url(), brynmawr.url()];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_client = stop.clone();
    let client = std::thread::spawn(move || {
        let mut conns: Vec<redis::Connection> =
            urls.iter().map(|u| redis::Client::open(u.as_str()).unwrap().get_connection().unwrap()).collect();
        let (mut target, mut acked, mut i) = (0usize, Vec::new(), 0u64);
        while !stop_client.load(std::sync::atomic::Ordering::Acquire) {
            let key = format!("k{i}");
            match conns[target].set::<_, _, ()>(&key, i) {
                Ok(()) => {
                    acked.push(key);
                    i += 1;
                }
                Err(e) if e.kind() == redis::ErrorKind::ReadOnly => target = 1 - target,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        acked
    });
    wait_until("writes under way", || ardmore.seqno() > 200);

    // Switchover: Ardmore hands over (failover record), BrynMawr catches up to it and sees the
    // record, BrynMawr is promoted, Ardmore rejoins as its secondary.
    let handed = ardmore.ctl(&["failover-to-standby"]);
    let last = handed["journal_seqno"].as_u64().unwrap();
    wait_until("BrynMawr to receive the failover record", || {
        brynmawr.status()["receiver"]["failover_seqno"] == last && brynmawr.seqno() == last
    });
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    brynmawr.ctl(&["promote"]);
    ardmore.ctl(&["receiver", "start"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Ardmore", "--addr", &ardmore.repl_addr()]);
    let at_promotion = brynmawr.seqno();
    wait_until("writes on the new primary", || brynmawr.seqno() > at_promotion + 200);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let acked = client.join().unwrap();

    let mut c = brynmawr.client();
    for key in &acked {
        assert!(c.exists::<_, bool>(key).unwrap(), "acknowledged {key} missing on the new primary");
    }
    let final_seqno = brynmawr.seqno();
    wait_until("Ardmore to catch up", || ardmore.seqno() == final_seqno);
    assert_eq!(
        ardmore.status()["last_rollback"],
        serde_json::Value::Null,
        "a planned switchover rolls nothing back"
    );
    assert_eq!(keys(&ardmore).len(), acked.len());
    ardmore.verify();
    brynmawr.verify();
}

/// WAIT blocks until enough receivers acknowledged the client's last write, or times out, and
/// answers how many did (as Redis does).
#[test]
fn wait_counts_receivers_that_acknowledged_the_last_write() {
    let dir = tempdir();
    let ardmore = Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = Server::start_replicating(dir.path(), "BrynMawr");
    ardmore.ctl(&["promote"]);
    brynmawr.ctl(&["receiver", "start"]);
    let mut c = ardmore.client();
    // No receiver yet: nobody can acknowledge.
    let () = c.set("k1", "v").unwrap();
    assert_eq!(redis::cmd("WAIT").arg(1).arg(100).query::<i64>(&mut c).unwrap(), 0);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    let () = c.set("k2", "v").unwrap();
    assert_eq!(
        redis::cmd("WAIT").arg(1).arg(0).query::<i64>(&mut c).unwrap(),
        1,
        "blocks until acknowledged"
    );
    assert!(
        brynmawr.client().exists::<_, bool>("k2").unwrap(),
        "acknowledged means applied and durable there"
    );
    assert_eq!(
        redis::cmd("WAIT").arg(2).arg(200).query::<i64>(&mut c).unwrap(),
        1,
        "times out with the count"
    );
    assert_eq!(redis::cmd("WAIT").arg(0).arg(0).query::<i64>(&mut c).unwrap(), 1);
    let err = redis::cmd("WAIT").arg(-1).arg(0).query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("numreplicas"), "{err}");
}

/// A standby that keeps up gathers what arrives within `--apply-interval-ms` into one durable
/// apply (one fsync), instead of one apply per commit of its primary: BrynMawr (250 ms) makes
/// at most one apply per 250 ms of the run, Malvern (0, every frame as it arrives) one per
/// frame, while both receive every write and WAIT counts both.
#[test]
fn a_standby_keeping_up_applies_at_most_once_per_interval() {
    let dir = tempdir();
    let ardmore = Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = Server::start_replicating_with(dir.path(), "BrynMawr", &["--apply-interval-ms", "250"]);
    let malvern = Server::start_replicating_with(dir.path(), "Malvern", &["--apply-interval-ms", "0"]);
    ardmore.ctl(&["promote"]);
    for standby in [&brynmawr, &malvern] {
        standby.ctl(&["receiver", "start"]);
        let name = standby.status()["name"].as_str().expect("name").to_owned();
        ardmore.ctl(&["source", "start", "--receiver", &name, "--addr", &standby.repl_addr()]);
    }
    wait_until("both streams to stream", || {
        let backlog = ardmore.ctl(&["backlog", "--json"]);
        let states: Vec<&str> = backlog
            .as_array()
            .expect("backlog")
            .iter()
            .map(|b| b["state"].as_str().expect("state"))
            .collect();
        states == ["streaming", "streaming"]
    });
    let applies = |s: &Server| s.metric("strand_replication_apply_duration_seconds_count");
    let (paced_before, eager_before) = (applies(&brynmawr), applies(&malvern));
    let started = std::time::Instant::now();
    let mut c = ardmore.client();
    for i in 0..40 {
        let () = c.set(format!("k{i}"), i).unwrap();
        // Commits 10 ms apart: each its own commit group and, to an eager standby, its own frame.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(redis::cmd("WAIT").arg(2).arg(30_000).query::<i64>(&mut c).unwrap(), 2);
    let paced = applies(&brynmawr) - paced_before;
    let eager = applies(&malvern) - eager_before;
    let elapsed = started.elapsed();
    // Apply starts are at least 250 ms apart: at most one per 250 ms, plus the first.
    let bound = (elapsed.as_millis() / 250 + 1) as f64;
    assert!(paced >= 1.0 && paced <= bound, "{paced} applies in {elapsed:?} (at most {bound})");
    assert!(eager > paced, "the eager standby applied {eager} times, the paced one {paced}");
    for standby in [&brynmawr, &malvern] {
        assert_eq!(standby.seqno(), ardmore.seqno());
        let got: Vec<Option<i64>> = (0..40).map(|i| standby.client().get(format!("k{i}")).unwrap()).collect();
        assert_eq!(got, (0..40).map(Some).collect::<Vec<_>>());
        standby.verify();
    }
}

/// A stopped instance can be rolled back offline (so a crashed primary never takes a write
/// before it has rolled back); the same command is refused while a server runs.
#[test]
fn offline_rollback_of_a_stopped_instance() {
    let dir = tempdir();
    let mut ardmore = Server::start_replicating(dir.path(), "Ardmore");
    ardmore.ctl(&["promote"]);
    write(&ardmore, labels("A", 1..=10));
    let (ok, _, err) = common::ctl(&ardmore.data_dir, &["rollback", "--to-seqno", "7", "--offline"]);
    assert!(!ok && err.contains("is a server running"), "{err}");
    ardmore.stop();
    let done = common::ctl_json(&ardmore.data_dir, &["rollback", "--to-seqno", "7", "--offline"]);
    assert_eq!(done["journal_seqno"], 7);
    assert_eq!(done["rollback"]["transactions"], 3);
    ardmore.restart();
    assert_eq!(keys(&ardmore), labels("A", 1..=7));
    let (_, txns) = lost_log(&ardmore);
    assert_eq!(lost_keys(&txns), vec!["A8", "A9", "A10"]);
    ardmore.verify();
}

/// Large transactions replicate: records are sent in frames of about 4 MiB, a larger one
/// alone, and a single transaction larger than the common frame limit (64 MiB: a MULTI of
/// nine 8 MiB values) in a `Records` frame of its own. Ten 8 MiB SETs in a row once made one
/// frame past that limit, which the source could never send.
#[test]
fn transactions_larger_than_a_frame_replicate() {
    let dir = tempdir();
    let (ardmore, brynmawr) = Server::bc_pair(dir.path());
    let value = |i: u8| vec![b'a' + i; 8 * 1024 * 1024];
    let mut c = ardmore.client();
    let mut p = redis::pipe();
    for i in 0..10u8 {
        p.cmd("SET").arg(format!("big:{i}")).arg(value(i)).ignore();
    }
    let () = p.query(&mut c).unwrap();
    let mut multi = redis::pipe();
    multi.atomic();
    for i in 0..9u8 {
        multi.cmd("SET").arg(format!("multi:{i}")).arg(value(i)).ignore();
    }
    let () = multi.query(&mut c).unwrap();
    let target = ardmore.seqno();
    wait_until("the large transactions to replicate", || brynmawr.seqno() == target);
    let mut b = brynmawr.client();
    for (prefix, n) in [("big", 10u8), ("multi", 9)] {
        for i in 0..n {
            let got: Vec<u8> = b.get(format!("{prefix}:{i}")).unwrap();
            assert!(got == value(i), "{prefix}:{i} differs on BrynMawr");
        }
    }
    brynmawr.verify();
}
