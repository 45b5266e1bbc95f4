//! Seeding from a snapshot between real engine processes (decision 0002, step 7): a new
//! member joins a primary whose journal no longer reaches back to its start; a member left
//! behind a retention limit is re-seeded once allowed to be, and refused until then; a
//! seeding cut short by a killed receiver or a killed source leaves the receiver's data as it
//! was; a receiver that holds transactions its source lacks rolls them back into a log first;
//! a supplementary instance that holds nothing of its own takes a family's first SI stream from
//! the source's snapshot, and one that holds data is refused.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;

use common::{Server, lost_logs, small_wal, tempdir, wait_until};

/// A source keeps nothing past what its receivers need.
const KEEP_NOTHING: [&str; 2] = ["--journal-keep-bytes", "0"];

fn journal_first(server: &Server) -> u64 {
    server.status()["journal"]["first_seqno"].as_u64().unwrap()
}

/// Writes `rounds` pipelines of every data type: strings (some with a TTL), hashes, lists,
/// sets and sorted sets, over a few hundred keys.
fn write(server: &Server, rounds: usize, tag: &str) {
    let mut c = server.client();
    for r in 0..rounds {
        let mut p = redis::pipe();
        for i in 0..20 {
            let k = (r * 20 + i) % 300;
            p.cmd("SET").arg(format!("s:{k}")).arg(format!("{tag}:{r}:{i}:{}", "x".repeat(100))).ignore();
            p.cmd("HSET").arg(format!("h:{}", k % 40)).arg(format!("f{i}")).arg(format!("{tag}{r}")).ignore();
            p.cmd("RPUSH").arg(format!("l:{}", k % 10)).arg(format!("{tag}{r}:{i}")).ignore();
            p.cmd("SADD").arg(format!("set:{}", k % 25)).arg(format!("m{}", (r + i) % 70)).ignore();
            p.cmd("ZADD").arg("z").arg(r * 20 + i).arg(format!("z{}", k % 90)).ignore();
        }
        p.cmd("SET").arg(format!("ttl:{tag}:{r}")).arg("v").arg("EX").arg(3600).ignore();
        let () = p.query(&mut c).unwrap();
    }
}

/// Every key's DUMP and whether it has an expiry: two instances with equal data agree.
fn contents(server: &Server) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut c = server.client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            (k, (dump, pttl > 0))
        })
        .collect()
}

fn same_data(a: &Server, b: &Server) {
    let (ca, cb) = (contents(a), contents(b));
    assert!(ca.len() > 300, "too little data to compare: {}", ca.len());
    assert_eq!(ca.len(), cb.len(), "key counts differ");
    for (k, v) in &ca {
        assert_eq!(cb.get(k), Some(v), "key {k} differs");
    }
}

/// Points Ardmore's stream at BrynMawr's replication port again (it changes at a restart).
fn relink(a: &Server, b: &Server) {
    a.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
}

fn caught_up(a: &Server, b: &Server) {
    let target = a.seqno();
    wait_until("the receiver to catch up", || b.seqno() == target);
}

/// Waits until `b`'s receiver reports its snapshot installed. The receiver notes it once the
/// writer's swap returns, which may be after the seqno it publishes already equals the
/// source's (a snapshot of everything), so catching up alone does not say it.
fn seeded(b: &Server) {
    wait_until("the snapshot to be reported installed", || {
        b.status()["receiver"]["snapshot"]["installed"] == true
    });
}

/// A primary that has trimmed its journal past its start (no receiver holds it back).
fn trimmed_primary(root: &std::path::Path, more: &[&str]) -> Server {
    let mut all = KEEP_NOTHING.to_vec();
    all.extend_from_slice(more);
    let a = Server::start_replicating_with(root, "Ardmore", &small_wal(&all));
    a.ctl(&["promote"]);
    write(&a, 150, "before");
    // The next checkpoint (at the latest the 10-second one) trims what no one needs.
    wait_until("the primary to trim its journal", || journal_first(&a) > 1_000);
    a
}

#[test]
fn a_new_member_joins_from_a_snapshot_when_the_journal_no_longer_reaches_back() {
    let dir = tempdir();
    let a = trimmed_primary(dir.path(), &[]);
    let mut b = Server::start_replicating_with(dir.path(), "BrynMawr", &small_wal(&[]));
    b.ctl(&["receiver", "start", "--seed"]);
    let first = journal_first(&a);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    caught_up(&a, &b);
    seeded(&b);
    let status = b.status();
    let seed = &status["receiver"]["snapshot"];
    assert_eq!(status["receiver"]["seed"], true, "the receiver's setting, apart from its progress: {status}");
    let seeded_at = seed["seqno"].as_u64().unwrap();
    assert!(seeded_at + 1 >= first, "the snapshot is older than the journal it replaces: {status}");
    assert_eq!(seed["nodes_total"], seed["nodes_received"], "{status}");
    // The new member's journal begins after the snapshot; it holds what followed.
    assert!(journal_first(&b) <= seeded_at + 1, "{status}");
    assert_eq!(status["history"], a.status()["history"], "the new member is of the primary's family");
    assert_eq!(b.metric("strand_replication_seeds_total{result=\"installed\"}"), 1.0);
    same_data(&a, &b);
    b.verify();

    // It goes on streaming, survives a crash, and can itself be verified at every point.
    write(&a, 40, "after");
    caught_up(&a, &b);
    same_data(&a, &b);
    b.restart();
    relink(&a, &b);
    write(&a, 40, "after-restart");
    caught_up(&a, &b);
    same_data(&a, &b);
    b.verify();
    a.verify();
    assert!(lost_logs(&b.data_dir).is_empty(), "an empty member lost nothing");
    assert_eq!(
        b.metric("strand_replication_seeds_total{result=\"installed\"}"),
        0.0,
        "no seeding after restart"
    );
}

#[test]
fn a_member_left_behind_is_refused_until_it_may_be_seeded() {
    let dir = tempdir();
    let a = Server::start_replicating_with(
        dir.path(),
        "Ardmore",
        &small_wal(&["--journal-keep-bytes", "0", "--journal-retain-bytes", "200000"]),
    );
    let mut b = Server::start_replicating_with(dir.path(), "BrynMawr", &small_wal(&[]));
    a.ctl(&["promote"]);
    b.ctl(&["receiver", "start"]);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    write(&a, 20, "first");
    caught_up(&a, &b);
    let before = b.seqno();
    b.stop();
    write(&a, 150, "while-down");
    wait_until("the retention limit to trim past the stopped receiver", || journal_first(&a) > before + 1);
    b.restart();
    relink(&a, &b);
    wait_until("the receiver to be refused", || b.status()["receiver"]["state"] == "needs_reseed");
    assert_eq!(b.seqno(), before, "a refused receiver changes nothing");

    // Allowed to be seeded, it is replaced by a snapshot and streams on.
    b.ctl(&["receiver", "start", "--seed"]);
    caught_up(&a, &b);
    seeded(&b);
    same_data(&a, &b);
    b.verify();
    assert!(lost_logs(&b.data_dir).is_empty(), "a member that was only behind lost nothing");
}

#[test]
fn a_seeding_cut_short_leaves_the_old_data_and_completes_later() {
    let dir = tempdir();
    // 32 KiB a second: the snapshot (some 200 KB) takes seconds, so it is cut in the middle.
    let a = Server::start_replicating_with(
        dir.path(),
        "Ardmore",
        &small_wal(&["--journal-keep-bytes", "0", "--seed-rate-bytes", "32768"]),
    );
    let mut b = Server::start_replicating_with(dir.path(), "BrynMawr", &small_wal(&[]));
    a.ctl(&["promote"]);
    b.ctl(&["receiver", "start"]);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    write(&a, 20, "old");
    caught_up(&a, &b);
    // BrynMawr falls behind and Ardmore's journal leaves it: it holds data of its own now.
    let (old, before) = (contents(&b), b.seqno());
    a.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    write(&a, 150, "new");
    wait_until("the primary to trim past the receiver", || journal_first(&a) > before + 1);
    let unchanged = |b: &Server, what: &str| {
        assert_eq!(b.seqno(), before, "{what}: nothing of the snapshot became the data");
        assert_eq!(contents(b), old, "{what}: the old data changed");
        b.verify();
    };

    // Cut by the receiver's death, in the middle of the snapshot.
    b.ctl(&["receiver", "start", "--seed"]);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    let received = |b: &Server| b.status()["receiver"]["snapshot"]["nodes_received"].as_u64().unwrap_or(0);
    wait_until("part of the snapshot to arrive", || received(&b) > 0);
    wait_until("the new file to be built", || b.data_dir.join("seed.partial").exists());
    assert_eq!(b.status()["receiver"]["state"], "seeding");
    b.kill9();
    b.restart();
    assert!(!b.data_dir.join("seed.partial").exists(), "a start removes the unfinished file");
    unchanged(&b, "after the receiver was killed");

    // Cut by the source's stop: the same. Then the source goes on and seeding completes.
    relink(&a, &b);
    wait_until("the seeding to start again", || received(&b) > 0);
    a.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    wait_until("the receiver to give up the seeding", || b.status()["receiver"]["state"] != "seeding");
    assert!(b.metric("strand_replication_seeds_total{result=\"failed\"}") >= 1.0);
    unchanged(&b, "after the source stopped");
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    caught_up(&a, &b);
    same_data(&a, &b);
    b.verify();
}

#[test]
fn an_old_primary_rolls_its_own_transactions_into_a_log_before_it_is_seeded() {
    let dir = tempdir();
    // Ardmore keeps its own journal (so it can roll back); BrynMawr, its successor, nothing.
    let mut a = Server::start_replicating_with(dir.path(), "Ardmore", &small_wal(&[]));
    let b = Server::start_replicating_with(dir.path(), "BrynMawr", &small_wal(&KEEP_NOTHING));
    a.ctl(&["promote"]);
    b.ctl(&["receiver", "start"]);
    a.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &b.repl_addr()]);
    write(&a, 5, "shared");
    caught_up(&a, &b);
    // Ardmore commits ten transactions BrynMawr never receives, then fails.
    a.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    let mut c = a.client();
    for i in 0..10 {
        let () = redis::cmd("SET").arg(format!("only-on-a:{i}")).arg(i).query(&mut c).unwrap();
    }
    let a_last = a.seqno();
    a.kill9();
    // BrynMawr takes over, writes on and trims past the point the two share.
    let common = b.seqno();
    b.ctl(&["promote"]);
    write(&b, 150, "b-alone");
    wait_until("the new primary to trim past the common point", || journal_first(&b) > common + 1);
    // Ardmore returns as its secondary, allowed to roll back and to be seeded.
    a.restart();
    let term = b.status()["term"].as_u64().unwrap().to_string();
    a.ctl(&["demote", "--term", &term]);
    a.ctl(&["receiver", "start", "--seed", "--autorollback"]);
    b.ctl(&["source", "start", "--receiver", "Ardmore", "--addr", &a.repl_addr()]);
    caught_up(&b, &a);
    same_data(&b, &a);
    a.verify();
    let logs = lost_logs(&a.data_dir);
    assert_eq!(logs.len(), 1, "Ardmore's own transactions are in one log: {logs:?}");
    let lost = common::lost_seqnos(&a.data_dir, &logs[0]);
    assert_eq!(lost, (common + 1..=a_last).collect::<Vec<_>>());
    seeded(&a);
}

fn si_caught_up(a: &Server, m: &Server) {
    let target = a.seqno();
    wait_until("the SI stream to catch up", || m.stream_seqno(1) == target);
}

/// A family's first SI stream into a supplementary instance that holds nothing of its own
/// begins from the source's snapshot (`receiver start --si --seed`), with no backup placed in
/// its volume, even when the source's journal no longer reaches back to its start. The
/// instance keeps its own family, takes the stream and its own writes, verifies, and restarts
/// without seeding again; one that holds a key of its own is refused and keeps it.
#[test]
fn a_supplementary_instance_takes_a_first_si_stream_from_a_snapshot() {
    let dir = tempdir();
    let a = trimmed_primary(dir.path(), &[]);
    let mut m = Server::start_replicating_with(dir.path(), "Malvern", &small_wal(&["--supplementary"]));
    m.ctl(&["promote"]);
    // A snapshot or a backup, not both.
    let both = r#"{"si": true, "seed": true, "updateresync_from": "127.0.0.1:1"}"#;
    let (code, body) = common::admin(&m.data_dir, "POST", "/v1/receiver/start", Some(both)).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("give one of them"), "{body}");
    m.ctl(&["receiver", "start", "--si", "--seed", "--autorollback"]);
    a.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &m.repl_addr(), "--si"]);
    si_caught_up(&a, &m);
    seeded(&m);
    same_data(&a, &m);
    let status = m.status();
    let snapshot_at = status["receiver"]["snapshot"]["seqno"].as_u64().unwrap();
    assert_eq!(status["history"][0]["root_name"], "Malvern", "its own family: {status}");
    assert_eq!(status["streams"][1]["source_family"], "Ardmore", "{status}");
    assert_eq!(m.metric("strand_replication_seeds_total{result=\"installed\"}"), 1.0);
    // Its journal is its own: the stream's base record at the snapshot's seqno, then what
    // followed it, each in Ardmore's numbering.
    let journal = m.journal();
    assert_eq!(journal[0].kind, "stream_base", "{:?}", journal[0]);
    assert_eq!((journal[0].stream, journal[0].stream_seqno), (1, snapshot_at));
    assert!(journal[1..].iter().all(|e| e.stream == 1), "only the stream follows");
    m.verify();

    // It takes its own writes and the stream's, and resumes after a restart without seeding.
    let mut c = m.client();
    let () = redis::cmd("SET").arg("malvern:own").arg("1").query(&mut c).unwrap();
    write(&a, 30, "after");
    si_caught_up(&a, &m);
    m.restart();
    a.ctl(&["source", "stop", "--receiver", "Malvern"]);
    a.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &m.repl_addr(), "--si"]);
    write(&a, 30, "after-restart");
    si_caught_up(&a, &m);
    let mut mine = contents(&m);
    assert!(mine.remove("malvern:own").is_some(), "its own write is kept");
    assert_eq!(mine, contents(&a), "the rest is Ardmore's");
    assert_eq!(
        m.metric("strand_replication_seeds_total{result=\"installed\"}"),
        0.0,
        "no seeding after restart"
    );
    m.verify();
    assert!(lost_logs(&m.data_dir).is_empty());

    // Pottstown holds a key of its own: a snapshot would replace it, so it is refused.
    let p = Server::start_replicating_with(dir.path(), "Pottstown", &small_wal(&["--supplementary"]));
    p.ctl(&["promote"]);
    let () = redis::cmd("SET").arg("pottstown:own").arg("1").query(&mut p.client()).unwrap();
    p.ctl(&["receiver", "start", "--si", "--seed"]);
    a.ctl(&["source", "start", "--receiver", "Pottstown", "--addr", &p.repl_addr(), "--si"]);
    wait_until("Pottstown to be refused", || {
        a.source_field("Pottstown", "last_error").contains("Pottstown already holds data")
    });
    let err = a.source_field("Pottstown", "last_error");
    assert!(err.contains("--updateresync BACKUP"), "{err}");
    assert_eq!(contents(&p).len(), 1, "Pottstown keeps its own data");
    assert_eq!(p.metric("strand_replication_seeds_total{result=\"installed\"}"), 0.0);
}

/// An SI seeding cut short by the receiver's death leaves the instance as it was — no data,
/// no stream — and the next connection seeds it whole: the data and the stream arrive in one
/// rename, never one without the other.
#[test]
fn an_si_seeding_cut_short_leaves_the_instance_empty_and_completes_later() {
    let dir = tempdir();
    // 32 KiB a second: the snapshot takes seconds, so it is cut in the middle.
    let a = trimmed_primary(dir.path(), &["--seed-rate-bytes", "32768"]);
    let mut m = Server::start_replicating_with(dir.path(), "Malvern", &small_wal(&["--supplementary"]));
    m.ctl(&["promote"]);
    m.ctl(&["receiver", "start", "--si", "--seed"]);
    let link = |a: &Server, m: &Server| {
        a.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &m.repl_addr(), "--si"]);
    };
    link(&a, &m);
    let received = |m: &Server| m.status()["receiver"]["snapshot"]["nodes_received"].as_u64().unwrap_or(0);
    wait_until("part of the snapshot to arrive", || received(&m) > 0);
    wait_until("the new file to be built", || m.data_dir.join("seed.partial").exists());
    m.kill9();
    m.restart();
    assert!(!m.data_dir.join("seed.partial").exists(), "a start removes the unfinished file");
    let status = m.status();
    assert_eq!(status["streams"].as_array().unwrap().len(), 1, "stream 0 only: {status}");
    assert!(contents(&m).is_empty(), "nothing of the snapshot became the data");
    m.verify();

    // Pointed at its new address (a restart gives another port), it is seeded whole.
    a.ctl(&["source", "stop", "--receiver", "Malvern"]);
    link(&a, &m);
    si_caught_up(&a, &m);
    same_data(&a, &m);
    assert_eq!(m.status()["streams"][1]["source_family"], "Ardmore");
    m.verify();
}
