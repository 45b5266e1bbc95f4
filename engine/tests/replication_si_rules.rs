//! SI rules between real processes: every limit of the seed refused with a clear error and
//! nothing changed; a supplementary instance made from a backup and fed by a replicating
//! secondary; the 15-stream limit and stream reuse.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use common::{Server, tempdir, wait_until};
use redis::Commands;

fn write_n(server: &Server, prefix: &str, range: std::ops::RangeInclusive<u64>) {
    let mut c = server.client();
    for i in range {
        let () = c.set(format!("{prefix}{i}"), format!("value of {prefix}{i}")).unwrap();
    }
}

#[track_caller]
fn wait_refusal(from: &Server, to: &str, words: &str) {
    wait_until(&format!("{}'s stream to {to} to be refused with {words:?}", from.name), || {
        from.source_field(to, "last_error").contains(words)
    });
}

fn backup(server: &Server, root: &std::path::Path) -> String {
    let path = root.join(format!("{}.backup", server.name));
    server.ctl(&["backup", "--to", path.to_str().unwrap()]);
    path.to_str().unwrap().to_owned()
}

#[test]
fn every_si_limit_is_refused_with_a_clear_error() {
    let dir = tempdir();
    let root = dir.path();
    let ardmore = Server::start_replicating(root, "Ardmore");
    let brynmawr = Server::start_replicating(root, "BrynMawr");
    let malvern = Server::start_supplementary(root, "Malvern");
    let newtown = Server::start_supplementary(root, "Newtown");
    let pottstown = Server::start_replicating(root, "Pottstown");
    ardmore.ctl(&["promote"]);
    pottstown.ctl(&["promote"]);
    let ardmore_backup = backup(&ardmore, root);

    // Options that contradict each other or the instance, refused at `receiver start`.
    let err = brynmawr.ctl_fails(&["receiver", "start", "--si"]);
    assert!(
        err.contains("BrynMawr is not supplementary; SI streams go only into supplementary instances"),
        "{err}"
    );
    let err = malvern.ctl_fails(&["receiver", "start", "--noresync"]);
    assert!(err.contains("NORESYNCSUPPLONLY"), "{err}");
    let err = malvern.ctl_fails(&["receiver", "start", "--si", "--noresync", "--autorollback"]);
    assert!(err.contains("choose one of --autorollback"), "{err}");
    let err = malvern.ctl_fails(&["receiver", "start", "--updateresync", &ardmore_backup]);
    assert!(err.contains("--updateresync is for SI receivers"), "{err}");
    newtown.ctl(&["receiver", "start"]);
    let err = newtown.ctl_fails(&["receiver", "start", "--si", "--noresync"]);
    assert!(err.contains("NORESYNCUPDATERONLY"), "{err}");
    let err = newtown.ctl_fails(&["receiver", "start", "--si"]);
    assert!(err.contains("promote it"), "{err}");
    let err =
        malvern.ctl_fails(&["source", "start", "--receiver", "Newtown", "--addr", "127.0.0.1:1", "--si"]);
    assert!(err.contains("Malvern is supplementary: it cannot source an SI stream"), "{err}");
    let err = malvern.ctl_fails(&["receiver", "start", "--si", "--updateresync", "/nonexistent/backup"]);
    assert!(err.contains("/nonexistent/backup"), "{err}");

    // Streams that do not fit the receiver, refused by it during the handshake.
    brynmawr.ctl(&["receiver", "start"]);
    write_n(&ardmore, "A", 1..=5);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr(), "--si"]);
    wait_refusal(
        &ardmore,
        "BrynMawr",
        "BrynMawr is not supplementary; SI streams go only into supplementary",
    );
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    wait_until("BrynMawr to receive BC", || brynmawr.seqno() == 5);

    malvern.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr()]);
    wait_refusal(
        &ardmore,
        "Malvern",
        "Malvern is supplementary; from the non-supplementary Ardmore it can receive only an SI stream",
    );
    // Having been made a BC secondary, Malvern must be promoted before it takes an SI stream.
    let err = malvern.ctl_fails(&["receiver", "start", "--si"]);
    assert!(err.contains("Malvern is a BC replicating secondary; promote it"), "{err}");
    malvern.ctl(&["promote"]);
    malvern.ctl(&["receiver", "start", "--si"]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    wait_refusal(&ardmore, "Malvern", "Malvern has no history for the family of Ardmore");
    assert_eq!(malvern.seqno(), 0, "nothing applied to Malvern");

    // Newtown, a BC secondary, gets a BC stream only from a supplementary instance.
    pottstown.ctl(&["source", "start", "--receiver", "Newtown", "--addr", &newtown.repl_addr()]);
    wait_refusal(&pottstown, "Newtown", "Newtown is supplementary; from the non-supplementary Pottstown");
    let err = pottstown.ctl_fails(&["source", "start", "--receiver", "Pottstown", "--addr", "127.0.0.1:1"]);
    assert!(err.contains("cannot replicate to itself"), "{err}");

    // One SI stream into an instance at a time.
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", &ardmore_backup]);
    let err = malvern.ctl_fails(&["receiver", "start", "--si", "--updateresync", &ardmore_backup]);
    assert!(err.contains("already holds stream 1 from family Ardmore"), "{err}");
    wait_until("Malvern to receive Ardmore's SI stream", || malvern.stream_seqno(1) == 5);
    pottstown.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    wait_refusal(&pottstown, "Malvern", "Malvern already receives an SI stream from Ardmore");

    // A supplementary instance's BC stream goes only to supplementary instances.
    brynmawr.ctl(&["receiver", "stop"]);
    malvern.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    brynmawr.ctl(&["receiver", "start"]);
    wait_refusal(
        &malvern,
        "BrynMawr",
        "Malvern is supplementary; its BC streams go only to supplementary instances",
    );

    // At most sixteen outgoing streams (Ardmore has two already).
    for i in 3..=16 {
        ardmore.ctl(&["source", "start", "--receiver", &format!("R{i}"), "--addr", "127.0.0.1:1"]);
    }
    let err = ardmore.ctl_fails(&["source", "start", "--receiver", "R17", "--addr", "127.0.0.1:1"]);
    assert!(err.contains("already sources 16 streams"), "{err}");
    assert_eq!(malvern.stream_seqno(1), 5);
    malvern.verify();
}

/// The seed's upgrade path for SI: Malvern is created from a backup of BrynMawr (a BC
/// replicating secondary) with a new identity and receives SI from BrynMawr, seeded with
/// `--updateresync` from that same backup; its own transactions are numbered after it.
#[test]
fn a_supplementary_instance_from_a_backup_of_a_secondary() {
    let dir = tempdir();
    let root = dir.path();
    let ardmore = Server::start_replicating(root, "Ardmore");
    let brynmawr = Server::start_replicating(root, "BrynMawr");
    ardmore.ctl(&["promote"]);
    brynmawr.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    write_n(&ardmore, "A", 1..=50);
    wait_until("BrynMawr at 50", || brynmawr.seqno() == 50);
    let seed = backup(&brynmawr, root);

    let (ok, _, err) = common::ctl(
        &root.join("Malvern"),
        &["restore", "--from", &seed, "--name", "Malvern", "--supplementary"],
    );
    assert!(ok, "{err}");
    let malvern = Server::start_supplementary(root, "Malvern");
    let status = malvern.status();
    assert_eq!(status["supplementary"], true);
    assert_eq!(status["history"][0]["root_name"], "Malvern", "a new family of its own");
    assert_eq!(status["streams"][0]["seqno"], 50, "its own transactions follow the backup's");
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", &seed]);
    let status = malvern.status();
    assert_eq!(status["streams"][1]["source_family"], "Ardmore");
    assert_eq!(status["streams"][1]["seqno"], 50);

    // BrynMawr, a replicating secondary, sources the SI stream (a propagating primary).
    brynmawr.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    write_n(&ardmore, "A", 51..=60);
    write_n(&malvern, "M", 51..=55);
    wait_until("Malvern to hold A60", || malvern.stream_seqno(1) == 60);
    let mut c = malvern.client();
    for i in 1..=60 {
        assert_eq!(c.get::<_, String>(format!("A{i}")).unwrap(), format!("value of A{i}"));
    }
    let journal = malvern.journal();
    let a51 = journal.iter().find(|e| e.keys == ["A51"]).unwrap();
    assert_eq!((a51.stream, a51.stream_seqno), (1, 51));
    let m55 = journal.iter().find(|e| e.keys == ["M55"]).unwrap();
    assert_eq!((m55.stream, m55.stream_seqno), (0, 55));
    assert_eq!(malvern.stream_seqno(0), 55);
    malvern.verify();
    let metrics = common::admin(&malvern.data_dir, "GET", "/metrics", None).unwrap().1;
    assert!(metrics.contains("strand_stream_seqno{source_family=\"Ardmore\",stream=\"1\"} 60"), "{metrics}");
    assert!(metrics.contains("strand_stream_seqno{source_family=\"Malvern\",stream=\"0\"} 55"), "{metrics}");

    // A backup of a supplementary instance restores only as a supplementary instance.
    let malvern_backup = backup(&malvern, root);
    let (ok, _, err) =
        common::ctl(&root.join("Oxford"), &["restore", "--from", &malvern_backup, "--name", "Oxford"]);
    assert!(!ok);
    assert!(err.contains("restores only as a supplementary instance"), "{err}");
}

/// Fifteen source families use up streams 1–15; a sixteenth needs `--reuse` naming the family
/// whose stream it takes over, and then streams on that number.
#[test]
fn fifteen_streams_then_reuse() {
    let dir = tempdir();
    let root = dir.path();
    let malvern = Server::start_supplementary(root, "Malvern");
    let mut seeds = Vec::new();
    for i in 1..=15 {
        let mut family = Server::start_replicating(root, &format!("Family{i}"));
        seeds.push(backup(&family, root));
        family.stop();
    }
    for (i, seed) in seeds.iter().enumerate() {
        malvern.ctl(&["receiver", "start", "--si", "--updateresync", seed]);
        assert_eq!(malvern.status()["streams"][i + 1]["stream"], i + 1);
    }
    let sixteenth = Server::start_replicating(root, "Family16");
    sixteenth.ctl(&["promote"]);
    let seed = backup(&sixteenth, root);
    let err = malvern.ctl_fails(&["receiver", "start", "--si", "--updateresync", &seed]);
    assert!(err.contains("all 15 SI streams of Malvern are in use (1: Family1, 2: Family2"), "{err}");
    assert!(err.contains("--reuse FAMILY"), "{err}");
    let err = malvern.ctl_fails(&["receiver", "start", "--si", "--updateresync", &seed, "--reuse", "Nobody"]);
    assert!(err.contains("no stream of Malvern is fed by family \"Nobody\""), "{err}");
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", &seed, "--reuse", "Family3"]);
    let status = malvern.status();
    let streams = status["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 16, "stream 0 and fifteen SI streams");
    let three = streams.iter().find(|s| s["stream"] == 3).unwrap();
    assert_eq!(three["source_family"], "Family16");
    assert!(!streams.iter().any(|s| s["source_family"] == "Family3"), "Family3's record is gone");

    write_n(&sixteenth, "P", 1..=4);
    sixteenth.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    wait_until("Malvern to hold Family16's four", || malvern.stream_seqno(3) == 4);
    let last = malvern.journal().into_iter().last().unwrap();
    assert_eq!((last.stream, last.stream_seqno, last.keys), (3, 4, vec!["P4".to_owned()]));
    malvern.verify();
}

/// Newtown learns changes of the SI stream's family history (BrynMawr's promotion) while it
/// streams from Malvern, without reconnecting, so it can take the stream over from exactly
/// where it is.
#[test]
fn a_bc_secondary_of_a_supplementary_instance_follows_the_family_history_live() {
    let dir = tempdir();
    let root = dir.path();
    let mut ardmore = Server::start_replicating(root, "Ardmore");
    let brynmawr = Server::start_replicating(root, "BrynMawr");
    let mut malvern = Server::start_supplementary(root, "Malvern");
    let newtown = Server::start_supplementary(root, "Newtown");
    ardmore.ctl(&["promote"]);
    let seed = backup(&ardmore, root);
    brynmawr.ctl(&["receiver", "start"]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", &seed]);
    newtown.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    malvern.ctl(&["source", "start", "--receiver", "Newtown", "--addr", &newtown.repl_addr()]);
    write_n(&ardmore, "A", 1..=10);
    write_n(&malvern, "M", 1..=3);
    wait_until("BrynMawr at A10", || brynmawr.seqno() == 10);
    wait_until("Newtown to follow Malvern", || {
        newtown.stream_seqno(1) == 10 && newtown.seqno() == malvern.seqno()
    });

    ardmore.kill9();
    brynmawr.ctl(&["promote"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    write_n(&brynmawr, "B", 1..=5);
    wait_until("Newtown to hold B5 through Malvern", || newtown.stream_seqno(1) == 15);
    let history = newtown.status()["streams"][1]["history"].clone();
    assert_eq!(history.as_array().unwrap().last().unwrap()["root_name"], "BrynMawr", "{history}");

    malvern.kill9();
    newtown.ctl(&["promote"]);
    newtown.ctl(&["receiver", "start", "--si"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Newtown", "--addr", &newtown.repl_addr(), "--si"]);
    write_n(&brynmawr, "B", 6..=7);
    wait_until("Newtown to take the SI stream over", || newtown.stream_seqno(1) == 17);
    assert_eq!(newtown.status()["last_rollback"], serde_json::Value::Null);
    newtown.verify();
}

/// A brand-new supplementary instance seeded over the network from a family member that holds
/// nothing yet (nothing to load, so no backup needed) — and refused once it holds something.
#[test]
fn updateresync_from_an_empty_family_member() {
    let dir = tempdir();
    let root = dir.path();
    let ardmore = Server::start_replicating(root, "Ardmore");
    let malvern = Server::start_supplementary(root, "Malvern");
    let pottstown = Server::start_replicating(root, "Pottstown");
    ardmore.ctl(&["promote"]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync-from", &ardmore.repl_addr()]);
    let status = malvern.status();
    assert_eq!(status["streams"][1]["source_family"], "Ardmore");
    assert_eq!(status["streams"][1]["seqno"], 0);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    write_n(&ardmore, "A", 1..=3);
    wait_until("Malvern to hold A3", || malvern.stream_seqno(1) == 3);

    write_n(&pottstown, "P", 1..=2);
    let err =
        malvern.ctl_fails(&["receiver", "start", "--si", "--updateresync-from", &pottstown.repl_addr()]);
    assert!(err.contains("already holds 2 transactions; seed from a backup"), "{err}");
    let err = malvern.ctl_fails(&["receiver", "start", "--updateresync-from", &pottstown.repl_addr()]);
    assert!(err.contains("--updateresync-from is for SI receivers"), "{err}");
    malvern.verify();
}

/// A switchover under a running SI stream: Ardmore hands over to BrynMawr and becomes
/// BrynMawr's secondary while its SI stream to Malvern still runs. The transactions it relays
/// from then on belong to BrynMawr's new history record; its stream must tell Malvern so
/// (negotiating again) before the first of them, or Malvern would file them under the old
/// record and roll them back as soon as BrynMawr takes the SI stream over.
#[test]
fn a_relayed_new_history_record_reaches_the_si_receiver_before_its_transactions() {
    let dir = tempdir();
    let root = dir.path();
    let ardmore = Server::start_replicating(root, "Ardmore");
    let brynmawr = Server::start_replicating(root, "BrynMawr");
    let malvern = Server::start_supplementary(root, "Malvern");
    ardmore.ctl(&["promote"]);
    brynmawr.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    malvern.ctl(&["promote"]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync-from", &ardmore.repl_addr()]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    write_n(&ardmore, "A", 1..=10);
    wait_until("BrynMawr and Malvern to hold A1..A10", || {
        brynmawr.seqno() == 10 && malvern.stream_seqno(1) == 10
    });

    // The switchover, leaving Ardmore's SI stream running.
    ardmore.ctl(&["failover-to-standby"]);
    wait_until("BrynMawr to apply the failover record", || brynmawr.seqno() == 11);
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    brynmawr.ctl(&["promote"]);
    ardmore.ctl(&["receiver", "start"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Ardmore", "--addr", &ardmore.repl_addr()]);
    write_n(&brynmawr, "B", 12..=20);
    wait_until("Malvern to get B12..B20 relayed by Ardmore", || malvern.stream_seqno(1) == 20);
    assert!(
        ardmore.log_text().contains("history changed; negotiating again"),
        "Ardmore's SI stream did not renegotiate"
    );

    // BrynMawr takes the SI stream over: Malvern is in step, nothing to roll back.
    ardmore.ctl(&["source", "stop", "--receiver", "Malvern"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    write_n(&brynmawr, "B", 21..=22);
    wait_until("Malvern to hold B22 from BrynMawr", || malvern.stream_seqno(1) == 22);
    let status = malvern.status();
    assert!(status["last_rollback"].is_null(), "Malvern rolled back: {}", status["last_rollback"]);
}
