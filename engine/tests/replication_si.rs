//! SI replication between real engine processes: the GT.M seed's five SI scenario tables, row
//! by row, asserting the exact contents the table shows.
//!
//! Labels are keys. Ardmore writes `A<n>` as its n-th transaction, so A<n> has seqno n in the
//! Ardmore/BrynMawr family; after its promotion BrynMawr writes `B61`, `B62`… (their family
//! seqnos continue from the last transaction it held); Malvern's own transactions are `M<n>`,
//! numbered n in its stream 0; Newtown's own are `N73`, `N74`… (numbered in stream 0 after the
//! last Malvern transaction it holds). An instance's journal, read back as the labels of its
//! entries, must end with exactly that instance's cell of the row.
//!
//! Every test starts from the tables' "...": A1–A94 replicated everywhere and M1–M33 on
//! Malvern. Replication is asynchronous, so the tables show moments where a transaction has
//! reached one instance and not yet another; the tests reproduce those moments by pausing a
//! stream (`source stop`, later `source start` again). Where one row shows a state no single
//! ordering of real processes passes through at one instant (a transaction already on
//! BrynMawr that Malvern receives only after a local one of its own), each cell is asserted
//! at the moment its instance reaches it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::path::PathBuf;

use common::{Server, tempdir, wait_until};
use redis::Commands;

fn write(server: &Server, labels: &str) {
    let mut c = server.client();
    for label in split(labels) {
        let () = c.set(&label, format!("value of {label}")).unwrap();
    }
}

fn split(labels: &str) -> Vec<String> {
    labels.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
}

/// The labels of the instance's journal entries, in journal order (markers left out).
fn row(server: &Server) -> Vec<String> {
    server.journal().into_iter().filter_map(|e| e.keys.first().cloned()).collect()
}

/// The instance's journal ends with exactly `cell` (the table's "..." is everything before).
#[track_caller]
fn expect(server: &Server, cell: &str) {
    let want = split(cell);
    let got = row(server);
    let tail = &got[got.len().saturating_sub(want.len())..];
    assert_eq!(
        tail,
        want.as_slice(),
        "{}'s journal ends {:?}",
        server.name,
        &got[got.len().saturating_sub(20)..]
    );
    // The "..." is the same on every instance: A1–A94 (and M1–M33 where Malvern's are held).
    assert!(got.iter().any(|l| l == "A94"), "{} holds the common prefix", server.name);
}

/// (stream, stream seqno) of the latest entry that wrote `label`.
fn tag(server: &Server, label: &str) -> (u64, u64) {
    let e = server.journal().into_iter().rev().find(|e| e.keys.iter().any(|k| k == label)).unwrap();
    (e.stream, e.stream_seqno)
}

#[track_caller]
fn expect_tags(server: &Server, tags: &[(&str, u64, u64)]) {
    for (label, stream, seqno) in tags {
        assert_eq!(tag(server, label), (*stream, *seqno), "{label} on {}", server.name);
    }
}

/// The labels in the instance's last unreplicated-transaction log, with their stream tags.
fn lost(server: &Server) -> Vec<(String, u64, u64)> {
    let status = server.status();
    let path = status["last_rollback"]["log_path"].as_str().expect("a rollback log").to_owned();
    let shown = common::ctl_json(&server.data_dir, &["lost-transactions", "show", &path, "--json"]);
    shown["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let key = t["changes"][0]["key"].as_str().unwrap().to_owned();
            (key, t["stream"].as_u64().unwrap(), t["stream_seqno"].as_u64().unwrap())
        })
        .collect()
}

fn no_rollback(server: &Server) {
    assert_eq!(
        server.status()["last_rollback"],
        serde_json::Value::Null,
        "{} rolled nothing back",
        server.name
    );
}

fn wait_stream(server: &Server, stream: u64, seqno: u64) {
    wait_until(&format!("{} to hold stream {stream} seqno {seqno}", server.name), || {
        server.stream_seqno(stream) == seqno
    });
}

fn wait_seqno(server: &Server, seqno: u64) {
    wait_until(&format!("{} to reach seqno {seqno}", server.name), || server.seqno() == seqno);
}

/// Starts streaming from `from` to `to` (SI when `si`).
fn link(from: &Server, to: &Server, si: bool) {
    let addr = to.repl_addr();
    let mut args = vec!["source", "start", "--receiver", to.name.as_str(), "--addr", addr.as_str()];
    if si {
        args.push("--si");
    }
    from.ctl(&args);
}

/// Stops the stream from `from` to `to` (what is not yet sent stays behind).
fn pause(from: &Server, to: &Server) {
    from.ctl(&["source", "stop", "--receiver", &to.name]);
}

struct Family {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ardmore: Server,
    brynmawr: Server,
    malvern: Server,
}

/// Ardmore (primary) → BrynMawr (BC, autorollback) and → Malvern (SI; its receiver started
/// with `malvern_flags`, first start seeded from a backup of Ardmore), then the tables' "...".
fn family(malvern_flags: &[&str]) -> Family {
    let dir = tempdir();
    let root = dir.path().to_owned();
    let ardmore = Server::start_replicating(&root, "Ardmore");
    let brynmawr = Server::start_replicating(&root, "BrynMawr");
    let malvern = Server::start_supplementary(&root, "Malvern");
    ardmore.ctl(&["promote"]);
    let backup = root.join("ardmore.backup");
    ardmore.ctl(&["backup", "--to", backup.to_str().unwrap()]);
    brynmawr.ctl(&["receiver", "start", "--autorollback"]);
    let mut args = vec!["receiver", "start", "--si", "--updateresync", backup.to_str().unwrap()];
    args.extend_from_slice(malvern_flags);
    let started = malvern.ctl(&args);
    assert_eq!(started["state"], "idle");
    link(&ardmore, &brynmawr, false);
    link(&ardmore, &malvern, true);

    let a: Vec<String> = (1..=94).map(|n| format!("A{n}")).collect();
    write(&ardmore, &a.join(","));
    wait_seqno(&brynmawr, 94);
    wait_stream(&malvern, 1, 94);
    let m: Vec<String> = (1..=33).map(|n| format!("M{n}")).collect();
    write(&malvern, &m.join(","));
    assert_eq!(malvern.stream_seqno(0), 33);
    let status = malvern.status();
    assert_eq!(status["role"], "supplementary-primary");
    assert_eq!(status["streams"][1]["source_family"], "Ardmore");
    Family { _dir: dir, root, ardmore, brynmawr, malvern }
}

/// Row 1 of the second, third and last tables: BrynMawr stopped at A97, Malvern got A98.
fn malvern_ahead_of_brynmawr(f: &Family) {
    let Family { ardmore, brynmawr, malvern, .. } = f;
    write(malvern, "M34");
    write(ardmore, "A95");
    wait_stream(malvern, 1, 95);
    write(malvern, "M35, M36");
    write(ardmore, "A96, A97");
    wait_stream(malvern, 1, 97);
    wait_seqno(brynmawr, 97);
    pause(ardmore, brynmawr);
    write(malvern, "M37, M38");
    write(ardmore, "A98");
    wait_stream(malvern, 1, 98);
    write(malvern, "M39, M40");
    pause(ardmore, malvern);
    write(ardmore, "A99");

    expect(ardmore, "A95, A96, A97, A98, A99");
    expect(brynmawr, "A95, A96, A97");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, M40");
    expect_tags(malvern, &[("M34", 0, 34), ("A95", 1, 95), ("A98", 1, 98), ("M40", 0, 40)]);
}

/// First table: Ardmore crashes; BrynMawr (which has A98) takes over the SI stream and Malvern,
/// not ahead, continues without any rollback; Ardmore later rolls A99 off and rejoins.
#[test]
fn brynmawr_takes_over_the_si_stream_without_rollback() {
    let mut f = family(&[]);
    let Family { ardmore, brynmawr, malvern, .. } = &mut f;
    write(malvern, "M34");
    write(ardmore, "A95");
    wait_stream(malvern, 1, 95);
    write(malvern, "M35, M36");
    write(ardmore, "A96, A97");
    wait_stream(malvern, 1, 97);
    write(malvern, "M37, M38");
    pause(ardmore, malvern);
    write(ardmore, "A98");
    wait_seqno(brynmawr, 98);
    pause(ardmore, brynmawr);
    write(ardmore, "A99");
    // Row 1.
    expect(ardmore, "A95, A96, A97, A98, A99");
    expect(brynmawr, "A95, A96, A97, A98");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38");

    // Row 2: Ardmore crashes; BrynMawr becomes the originating primary. Malvern's receiver
    // stays up (it was never restarted) and BrynMawr connects to it.
    ardmore.kill9();
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38");
    brynmawr.ctl(&["promote"]);
    link(brynmawr, malvern, true);
    wait_stream(malvern, 1, 98);
    write(malvern, "M39");
    write(brynmawr, "B61");
    expect(brynmawr, "A95, A96, A97, A98, B61");

    // Row 3: Malvern receives A98 from BrynMawr (A97 was the common point) and B61.
    wait_stream(malvern, 1, 99);
    write(malvern, "M40");
    pause(brynmawr, malvern);
    write(brynmawr, "B62");
    expect(brynmawr, "A95, A96, A97, A98, B61, B62");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, B61, M40");
    expect_tags(malvern, &[("A97", 1, 97), ("A98", 1, 98), ("M39", 0, 39), ("B61", 1, 99), ("M40", 0, 40)]);
    no_rollback(malvern);

    // Row 4: BrynMawr goes on; Ardmore is repaired and must roll A99 off before it can
    // replicate from BrynMawr.
    link(brynmawr, malvern, true);
    write(brynmawr, "B63");
    wait_stream(malvern, 1, 101);
    pause(brynmawr, malvern);
    write(brynmawr, "B64");
    expect(brynmawr, "A95, A96, A97, A98, B61, B62, B63, B64");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, B61, M40, B62, B63");
    ardmore.restart();
    ardmore.ctl(&["demote"]);
    ardmore.ctl(&["receiver", "start"]);
    link(brynmawr, ardmore, false);
    wait_until("BrynMawr to report that Ardmore must roll back", || {
        brynmawr.source_field("Ardmore", "state") == "rollback_required"
    });
    expect(ardmore, "A95, A96, A97, A98, A99");
    let rolled = ardmore.ctl(&["rollback", "--fetchresync", &brynmawr.repl_addr()]);
    assert_eq!(rolled["rollback"]["transactions"], 1);
    assert_eq!(lost(ardmore), vec![("A99".to_owned(), 0, 99)]);

    // Row 5: Ardmore is BrynMawr's replicating secondary; Malvern goes on with both streams.
    wait_seqno(ardmore, brynmawr.seqno());
    expect(ardmore, "A95, A96, A97, A98, B61, B62, B63, B64");
    write(malvern, "M41");
    link(brynmawr, malvern, true);
    wait_stream(malvern, 1, 102);
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, B61, M40, B62, B63, M41, B64");
    write(brynmawr, "B65");
    expect(brynmawr, "A95, A96, A97, A98, B61, B62, B63, B64, B65");
    wait_stream(malvern, 1, 103);
    wait_seqno(ardmore, brynmawr.seqno());

    let status = malvern.status();
    let stream = &status["streams"][1];
    assert_eq!(stream["source_family"], "Ardmore");
    assert_eq!(stream["seqno"], 103);
    let history = stream["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["root_name"], "BrynMawr");
    assert_eq!(history.last().unwrap()["start_seqno"], 99);
    for s in [&*ardmore, &*brynmawr, &*malvern] {
        s.verify();
    }
}

/// Second table: BrynMawr lacks A98, which Malvern holds; Malvern is refused, rolls A98, M39
/// and M40 off into its unreplicated-transaction log (`rollback --fetchresync`), then
/// receives from BrynMawr and continues with new local transactions.
#[test]
fn malvern_ahead_rolls_off_a98_m39_m40() {
    let mut f = family(&[]);
    malvern_ahead_of_brynmawr(&f);
    let Family { ardmore, brynmawr, malvern, .. } = &mut f;
    ardmore.kill9();

    // Row 2: BrynMawr becomes the originating primary with A97; Malvern cannot start
    // replicating from it: BrynMawr's source is refused and Malvern touches nothing.
    brynmawr.ctl(&["promote"]);
    expect(brynmawr, "A95, A96, A97");
    link(brynmawr, malvern, true);
    wait_until("BrynMawr to report that Malvern must roll back", || {
        brynmawr.source_field("Malvern", "state") == "rollback_required"
    });
    let status = malvern.status();
    let receiver = &status["receiver"];
    assert_eq!(receiver["state"], "rollback_required");
    assert!(
        receiver["last_error"].as_str().unwrap().contains("stream 1 (Ardmore) seqnos 98..=98"),
        "{receiver}"
    );
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, M40");
    no_rollback(malvern);

    // Row 3: Malvern rolls off A98 and everything after it, its own M39 and M40 included.
    write(brynmawr, "B61");
    let rolled = malvern.ctl(&["rollback", "--fetchresync", &brynmawr.repl_addr()]);
    assert_eq!(rolled["rollback"]["transactions"], 3);
    assert_eq!(
        lost(malvern),
        vec![("A98".to_owned(), 1, 98), ("M39".to_owned(), 0, 39), ("M40".to_owned(), 0, 40)]
    );
    wait_stream(malvern, 1, 98);
    pause(brynmawr, malvern);
    write(brynmawr, "B62");
    expect(brynmawr, "A95, A96, A97, B61, B62");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, B61");

    // Row 4: SI from BrynMawr plus new local transactions (numbered 39 and 40 again).
    link(brynmawr, malvern, true);
    wait_stream(malvern, 1, 99);
    write(malvern, "M39a, M40a");
    write(brynmawr, "B63");
    wait_stream(malvern, 1, 100);
    pause(brynmawr, malvern);
    write(brynmawr, "B64");
    expect(brynmawr, "A95, A96, A97, B61, B62, B63, B64");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, B61, B62, M39a, M40a, B63");
    expect_tags(malvern, &[("B61", 1, 98), ("M39a", 0, 39), ("M40a", 0, 40), ("B63", 1, 100)]);
    let mut c = malvern.client();
    assert!(!c.exists::<_, bool>("A98").unwrap(), "A98 is gone from Malvern");
    malvern.verify();
}

/// Third table: as the second, but Malvern's receiver runs with `--noresync`: it keeps A98,
/// M39 and M40 and receives from the last common transaction on.
#[test]
fn malvern_ahead_continues_with_noresync() {
    let mut f = family(&[]);
    malvern_ahead_of_brynmawr(&f);
    let Family { ardmore, brynmawr, malvern, .. } = &mut f;
    ardmore.kill9();

    // Row 2.
    brynmawr.ctl(&["promote"]);
    write(brynmawr, "B61, B62");
    expect(brynmawr, "A95, A96, A97, B61, B62");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, M40");

    // Row 3: with --noresync replication starts from the last common transaction (A97).
    malvern.ctl(&["receiver", "start", "--si", "--noresync"]);
    link(brynmawr, malvern, true);
    wait_stream(malvern, 1, 99);
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, M40, B61, B62");
    no_rollback(malvern);
    // Stream seqnos restart lower: A98 and B61 are both 98 in the family, told apart by the
    // resync record between them (the stream resumed after 97) and the new history record.
    expect_tags(malvern, &[("A98", 1, 98), ("B61", 1, 98), ("B62", 1, 99)]);
    let journal = malvern.journal();
    let resync: Vec<_> = journal.iter().filter(|e| e.kind == "stream_resync").collect();
    assert_eq!(resync.len(), 1);
    assert_eq!((resync[0].stream, resync[0].stream_seqno), (1, 97));
    let b61 = journal.iter().position(|e| e.keys == ["B61"]).unwrap();
    assert_eq!(journal[b61 - 1].kind, "stream_resync");
    malvern.verify();
}

/// Fourth table: Ardmore and Malvern lose their data center. BrynMawr takes over Ardmore's
/// role and Newtown (Malvern's BC secondary) takes over the SI stream from BrynMawr, without
/// rollback. When the data center returns, Ardmore rolls off A99 and Malvern rolls off A97
/// and M38; they rejoin as BC secondaries of BrynMawr and Newtown.
///
/// The table's rows 3–4 show BrynMawr without A98 while rows 1–2 show it holding A98 (and
/// Newtown receiving A98 from it); we follow the consistent reading (docs/gtm-mapping.md):
/// BrynMawr keeps A98, so Ardmore rolls off A99 only.
#[test]
fn data_center_outage_newtown_takes_the_si_stream_from_brynmawr() {
    let mut f = family(&[]);
    let Family { ardmore, brynmawr, malvern, root, .. } = &mut f;
    let newtown = Server::start_supplementary(root, "Newtown");
    newtown.ctl(&["receiver", "start"]);
    link(malvern, &newtown, false);
    wait_seqno(&newtown, malvern.seqno());

    write(malvern, "M34");
    write(ardmore, "A95");
    wait_stream(malvern, 1, 95);
    write(malvern, "M35, M36");
    write(ardmore, "A96");
    wait_stream(malvern, 1, 96);
    write(malvern, "M37");
    wait_seqno(&newtown, malvern.seqno());
    pause(malvern, &newtown);
    write(ardmore, "A97");
    wait_stream(malvern, 1, 97);
    write(malvern, "M38");
    pause(ardmore, malvern);
    write(ardmore, "A98");
    wait_seqno(brynmawr, 98);
    pause(ardmore, brynmawr);
    write(ardmore, "A99");
    // Row 1.
    expect(ardmore, "A95, A96, A97, A98, A99");
    expect(brynmawr, "A95, A96, A97, A98");
    expect(malvern, "M34, A95, M35, M36, A96, M37, A97, M38");
    expect(&newtown, "M34, A95, M35, M36, A96, M37");
    // The tags travel unchanged down Malvern's BC stream.
    expect_tags(&newtown, &[("M34", 0, 34), ("A96", 1, 96), ("M37", 0, 37)]);

    // Row 2: the data center goes down. BrynMawr becomes the originating primary; Newtown
    // becomes the supplementary primary and receives the SI stream from BrynMawr — it is not
    // ahead, so no rollback.
    ardmore.kill9();
    malvern.kill9();
    brynmawr.ctl(&["promote"]);
    newtown.ctl(&["promote"]);
    let status = newtown.status();
    assert_eq!(status["role"], "supplementary-primary");
    assert_eq!(status["streams"][1]["source_family"], "Ardmore");
    assert_eq!(status["streams"][1]["seqno"], 96);
    newtown.ctl(&["receiver", "start", "--si"]);
    expect(&newtown, "M34, A95, M35, M36, A96, M37");
    link(brynmawr, &newtown, true);
    wait_stream(&newtown, 1, 98);
    no_rollback(&newtown);

    // Row 3: Newtown receives A97 and A98 from BrynMawr and computes its own transactions.
    write(&newtown, "N73");
    write(brynmawr, "B61");
    wait_stream(&newtown, 1, 99);
    write(&newtown, "N74");
    write(brynmawr, "B62");
    wait_stream(&newtown, 1, 100);
    expect(brynmawr, "A95, A96, A97, A98, B61, B62");
    expect(&newtown, "M34, A95, M35, M36, A96, M37, A97, A98, N73, B61, N74, B62");
    expect_tags(&newtown, &[("A97", 1, 97), ("A98", 1, 98), ("N73", 0, 38), ("B61", 1, 99), ("N74", 0, 39)]);

    // Row 4: BrynMawr and Newtown keep the enterprise going.
    write(&newtown, "N75");
    write(brynmawr, "B63");
    wait_stream(&newtown, 1, 101);
    write(&newtown, "N76");
    write(brynmawr, "B64");
    wait_stream(&newtown, 1, 102);
    expect(brynmawr, "A95, A96, A97, A98, B61, B62, B63, B64");
    expect(&newtown, "M34, A95, M35, M36, A96, M37, A97, A98, N73, B61, N74, B62, N75, B63, N76, B64");

    // The first data center returns. Ardmore rolls off A99 (autorollback) and replicates from
    // BrynMawr; Malvern rolls off A97 and M38 (fetchresync with Newtown) and replicates
    // from Newtown.
    ardmore.restart();
    expect(ardmore, "A95, A96, A97, A98, A99");
    ardmore.ctl(&["demote"]);
    ardmore.ctl(&["receiver", "start", "--autorollback"]);
    link(brynmawr, ardmore, false);
    malvern.restart();
    expect(malvern, "M34, A95, M35, M36, A96, M37, A97, M38");
    malvern.ctl(&["demote"]);
    malvern.ctl(&["receiver", "start"]);
    let rolled = malvern.ctl(&["rollback", "--fetchresync", &newtown.repl_addr()]);
    assert_eq!(rolled["rollback"]["transactions"], 2);
    assert_eq!(lost(malvern), vec![("A97".to_owned(), 1, 97), ("M38".to_owned(), 0, 38)]);
    link(&newtown, malvern, false);
    wait_seqno(ardmore, brynmawr.seqno());
    assert_eq!(lost(ardmore), vec![("A99".to_owned(), 0, 99)]);
    wait_seqno(malvern, newtown.seqno());

    // Row 5: Ardmore and Malvern are replicating secondaries again; Malvern received A97
    // back from Newtown as it caught up.
    expect(ardmore, "A95, A96, A97, A98, B61, B62, B63, B64");
    expect(malvern, "M34, A95, M35, M36, A96, M37, A97, A98, N73, B61, N74, B62, N75, B63, N76, B64");
    pause(brynmawr, &newtown);
    write(brynmawr, "B65");
    write(&newtown, "N77");
    expect(brynmawr, "A95, A96, A97, A98, B61, B62, B63, B64, B65");
    expect(&newtown, "M34, A95, M35, M36, A96, M37, A97, A98, N73, B61, N74, B62, N75, B63, N76, B64, N77");
    wait_seqno(malvern, newtown.seqno());
    wait_seqno(ardmore, brynmawr.seqno());
    // Malvern's journal is Newtown's, tags and all, and it knows the SI stream as Newtown does.
    assert_eq!(malvern.journal(), newtown.journal());
    let (ms, ns) = (malvern.status(), newtown.status());
    assert_eq!(ms["streams"], ns["streams"]);
    assert_eq!(ms["role"], "secondary");
    for s in [&*ardmore, &*brynmawr, &*malvern, &newtown] {
        s.verify();
    }
}

/// Last table: Ardmore rolls itself back online to A96 (A97–A99 into its log) and generates
/// A97a… under a new history record. BrynMawr (autorollback) rolls back to A96 with it;
/// Malvern, with `--noresync`, keeps A97, A98, M39, M40 and receives A97a, A98a after them.
#[test]
fn online_rollback_of_ardmore_with_malvern_on_noresync() {
    let mut f = family(&["--noresync"]);
    malvern_ahead_of_brynmawr(&f);
    let Family { ardmore, brynmawr, malvern, .. } = &mut f;

    // Row 2: the online rollback.
    let rolled = ardmore.ctl(&["rollback", "--to-seqno", "96"]);
    assert_eq!(rolled["rollback"]["transactions"], 3);
    assert_eq!(
        lost(ardmore),
        vec![("A97".to_owned(), 0, 97), ("A98".to_owned(), 0, 98), ("A99".to_owned(), 0, 99)]
    );
    link(ardmore, brynmawr, false);
    wait_until("BrynMawr to roll back automatically", || brynmawr.status()["last_rollback"].is_object());
    wait_seqno(brynmawr, 96);
    assert_eq!(lost(brynmawr), vec![("A97".to_owned(), 0, 97)]);

    // Row 3: Malvern resumes without rolling back.
    link(ardmore, malvern, true);
    wait_until("Malvern to resume stream 1 after 96", || {
        malvern.journal().iter().any(|e| e.kind == "stream_resync" && e.stream_seqno == 96)
    });
    write(ardmore, "A97a");
    wait_stream(malvern, 1, 97);
    wait_seqno(brynmawr, 97);
    write(malvern, "M41");
    write(ardmore, "A98a");
    wait_stream(malvern, 1, 98);
    wait_seqno(brynmawr, 98);
    write(malvern, "M42");
    pause(ardmore, brynmawr);
    pause(ardmore, malvern);
    write(ardmore, "A99a");
    expect(ardmore, "A95, A96, A97a, A98a, A99a");
    expect(brynmawr, "A95, A96, A97a, A98a");
    expect(malvern, "M34, A95, M35, M36, A96, A97, M37, M38, A98, M39, M40, A97a, M41, A98a, M42");
    no_rollback(malvern);
    expect_tags(malvern, &[("A97", 1, 97), ("A98", 1, 98), ("A97a", 1, 97), ("A98a", 1, 98), ("M41", 0, 41)]);
    let mut c = malvern.client();
    for key in ["A97", "A98", "A97a", "A98a"] {
        assert!(c.exists::<_, bool>(key).unwrap(), "Malvern holds {key}");
    }
    // Malvern knows the family's new history record (A97a is not A97).
    let status = malvern.status();
    let history = status["streams"][1]["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["start_seqno"], 97);
    assert_eq!(history.last().unwrap()["root_name"], "Ardmore");
    for s in [&*ardmore, &*brynmawr, &*malvern] {
        s.verify();
    }
}

/// The last table's other branch, which the seed calls straightforward: with `--autorollback`,
/// Malvern follows Ardmore's online rollback by rolling A97 through M40 — its own M37–M40
/// included — into its unreplicated-transaction log, then receives A97a.
#[test]
fn online_rollback_of_ardmore_with_malvern_on_autorollback() {
    let mut f = family(&["--autorollback"]);
    malvern_ahead_of_brynmawr(&f);
    let Family { ardmore, malvern, .. } = &mut f;
    ardmore.ctl(&["rollback", "--to-seqno", "96"]);
    link(ardmore, malvern, true);
    wait_until("Malvern to roll back automatically", || malvern.status()["last_rollback"].is_object());
    assert_eq!(
        lost(malvern),
        vec![
            ("A97".to_owned(), 1, 97),
            ("M37".to_owned(), 0, 37),
            ("M38".to_owned(), 0, 38),
            ("A98".to_owned(), 1, 98),
            ("M39".to_owned(), 0, 39),
            ("M40".to_owned(), 0, 40),
        ]
    );
    write(ardmore, "A97a");
    wait_stream(malvern, 1, 97);
    write(malvern, "M37a");
    expect(malvern, "M34, A95, M35, M36, A96, A97a, M37a");
    expect_tags(malvern, &[("A97a", 1, 97), ("M37a", 0, 37)]);
    malvern.verify();
}
