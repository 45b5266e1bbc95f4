//! The GemStone seed's hot-standby upgrade, step by step, between real processes of two real
//! builds of the engine: N (this build: format 1, protocol 1) and N+1 (the same source built
//! with `--features next-version`: the next minor version, format 2, protocol 2).
//! docs/upgrades.md maps every step.
//!
//! Method: Ardmore (primary) replicates to BrynMawr; each test runs the seed's steps up to the
//! one it is named after (with the helpers below), then asserts that step's behaviour exactly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, next_binary, tempdir, wait_until};

const PREPARED: &str = "__strand/optimized-selectors";

fn set(server: &Server, key: &str, value: &str) -> Result<(), String> {
    let mut c = server.client();
    redis::cmd("SET").arg(key).arg(value).query::<()>(&mut c).map_err(|e| e.to_string())
}

fn get(server: &Server, key: &str) -> Option<String> {
    let mut c = server.client();
    redis::cmd("GET").arg(key).query(&mut c).unwrap()
}

/// The first reply a client gets from the data port, or the error it gets.
fn first_reply(server: &Server) -> String {
    match redis::Client::open(server.url()).unwrap().get_connection() {
        Ok(mut c) => match redis::cmd("PING").query::<String>(&mut c) {
            Ok(v) => v,
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

/// Ardmore (N, primary) → BrynMawr (N, secondary), with A1..A5 written and replicated.
fn family(root: &std::path::Path) -> (Server, Server) {
    let ardmore = Server::start_replicating(root, "Ardmore");
    let brynmawr = Server::start_replicating(root, "BrynMawr");
    ardmore.ctl(&["promote"]);
    brynmawr.ctl(&["receiver", "start", "--autorollback"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    for i in 1..=5 {
        set(&ardmore, &format!("A{i}"), "from N").unwrap();
    }
    wait_until("BrynMawr to hold A1..A5", || brynmawr.seqno() == 5);
    (ardmore, brynmawr)
}

/// Steps 1–2: the older primary creates what format 2 needs; it replicates.
fn prepare(ardmore: &Server, brynmawr: &Server) {
    ardmore.ctl(&["prepare-upgrade"]);
    let seqno = ardmore.seqno();
    wait_until("BrynMawr to hold the prepared key", || brynmawr.seqno() == seqno);
}

/// Step 3: BrynMawr restarted on N+1, receiving again.
fn standby_on_next(brynmawr: &mut Server, next: &Path) {
    brynmawr.restart_on(next);
}

/// Steps 4–5: Ardmore fails over to the standby, which is promoted once it has replayed the
/// failover record.
fn fail_over(ardmore: &Server, brynmawr: &Server) -> u64 {
    let handed = ardmore.ctl(&["failover-to-standby"]);
    let fenced = handed["journal_seqno"].as_u64().unwrap();
    wait_until("BrynMawr to replay the failover record", || {
        brynmawr.status()["receiver"]["failover_seqno"].as_u64() == Some(fenced)
    });
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    brynmawr.ctl(&["promote"]);
    fenced
}

#[test]
fn step_1_and_2_the_older_primary_prepares_what_the_new_format_needs() {
    let dir = tempdir();
    let (ardmore, brynmawr) = family(dir.path());
    // Clients read the engine's keys but cannot write them.
    let err = set(&ardmore, PREPARED, "1").unwrap_err();
    assert!(err.contains("belongs to the engine"), "{err}");
    prepare(&ardmore, &brynmawr);
    // An ordinary journaled write: on the primary and replicated to the standby.
    let last = ardmore.journal().pop().unwrap();
    assert_eq!((last.kind.as_str(), last.keys.clone()), ("update", vec![PREPARED.to_owned()]));
    assert_eq!(get(&brynmawr, PREPARED).as_deref(), Some("1"));
    // Repeating it changes nothing.
    let seqno = ardmore.seqno();
    ardmore.ctl(&["prepare-upgrade"]);
    assert_eq!(ardmore.seqno(), seqno);
    // A secondary cannot prepare (it is a write).
    let err = brynmawr.ctl_fails(&["prepare-upgrade"]);
    assert!(err.contains("primary"), "{err}");
}

#[test]
fn step_3_a_newer_standby_replays_the_older_primary_in_version_mismatch_mode() {
    let dir = tempdir();
    let next = next_binary();
    let (ardmore, mut brynmawr) = family(dir.path());
    prepare(&ardmore, &brynmawr);
    standby_on_next(&mut brynmawr, &next);
    let status = brynmawr.status();
    assert_eq!(status["format_version"], 1, "starting on older data changes no format");
    assert_eq!(status["binary_format_version"], 2);
    assert_eq!(status["protocol_version"], 2);
    let mismatch = status["version_mismatch"].as_str().unwrap().to_owned();
    assert!(mismatch.contains("format 2") && mismatch.contains("format 1"), "{mismatch}");
    // Applications are refused with both versions named; admin and replication work.
    let reply = first_reply(&brynmawr);
    let older = ardmore.status()["binary_version"].as_str().unwrap().to_owned();
    assert!(
        reply.contains("MISMATCH")
            && reply.contains(&format!("strand {}", status["binary_version"].as_str().unwrap()))
            && reply.contains(&format!("written by strand {older}")),
        "{reply}"
    );
    for i in 6..=10 {
        set(&ardmore, &format!("A{i}"), "from N, replayed on N+1").unwrap();
    }
    let seqno = ardmore.seqno();
    wait_until("the N+1 standby to replay N's stream", || brynmawr.seqno() == seqno);
    assert_eq!(brynmawr.status()["format_version"], 1);
    // No write happens in this mode: the data is exactly the primary's.
    assert_eq!(brynmawr.journal(), ardmore.journal());
    brynmawr.verify();
}

#[test]
fn step_4_and_5_fail_over_with_the_old_primary_fenced() {
    let dir = tempdir();
    let next = next_binary();
    let (ardmore, mut brynmawr) = family(dir.path());
    prepare(&ardmore, &brynmawr);
    standby_on_next(&mut brynmawr, &next);
    let fenced = fail_over(&ardmore, &brynmawr);
    // The old primary takes no commits, the failover record is the last thing it wrote and
    // the standby holds it.
    let err = set(&ardmore, "late", "x").unwrap_err();
    assert!(err.to_lowercase().contains("readonly"), "{err}");
    assert_eq!(ardmore.journal().last().unwrap().kind, "failover");
    assert_eq!(brynmawr.seqno(), fenced);
    // Promoted, but still on format 1: still no clients until step 6.
    assert_eq!(brynmawr.status()["role"], "primary");
    assert!(first_reply(&brynmawr).contains("MISMATCH"));
}

#[test]
fn step_6_upgrade_the_new_primary() {
    let dir = tempdir();
    let next = next_binary();
    let (ardmore, mut brynmawr) = family(dir.path());
    standby_on_next(&mut brynmawr, &next);
    fail_over(&ardmore, &brynmawr);
    // Without the preparation of steps 1–2 the upgrade is refused, nothing touched.
    let seqno = brynmawr.seqno();
    let err = brynmawr.ctl_fails(&["upgrade-format"]);
    assert!(err.contains("prepare-upgrade"), "{err}");
    assert_eq!(brynmawr.seqno(), seqno);

    // The same from a prepared family.
    let dir = tempdir();
    let (ardmore, mut brynmawr) = family(dir.path());
    prepare(&ardmore, &brynmawr);
    standby_on_next(&mut brynmawr, &next);
    fail_over(&ardmore, &brynmawr);
    let answer = brynmawr.ctl(&["upgrade-format"]);
    assert_eq!(answer["format_version"], 2);
    let last = brynmawr.journal().pop().unwrap();
    assert_eq!((last.kind.as_str(), last.keys.clone()), ("upgrade", vec!["__strand/format".to_owned()]));
    let status = brynmawr.status();
    assert!(status["version_mismatch"].is_null(), "{status}");
    assert_eq!(first_reply(&brynmawr), "PONG");
    set(&brynmawr, "B1", "from N+1").unwrap();
    brynmawr.verify();
    // Repeating it is harmless.
    assert_eq!(brynmawr.ctl(&["upgrade-format"])["format_version"], 2);
    // The metrics say it.
    let (_, metrics) = common::admin(&brynmawr.data_dir, "GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("strand_data_format_version 2") && metrics.contains("strand_version_mismatch 0")
    );
    assert!(metrics.contains("protocol_version=\"2\""), "{metrics}");
}

#[test]
fn step_7_and_8_the_old_primary_rejoins_on_n_plus_1_and_upgrades_by_replaying() {
    let dir = tempdir();
    let root = dir.path();
    let next = next_binary();
    let (mut ardmore, mut brynmawr) = family(root);
    prepare(&ardmore, &brynmawr);
    standby_on_next(&mut brynmawr, &next);
    fail_over(&ardmore, &brynmawr);
    brynmawr.ctl(&["upgrade-format"]);
    set(&brynmawr, "B1", "from N+1").unwrap();

    // An N binary cannot apply the upgrade: it refuses and touches nothing.
    let oxford = Server::start_replicating(root, "Oxford");
    oxford.ctl(&["receiver", "start"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Oxford", "--addr", &oxford.repl_addr()]);
    wait_until("Oxford to refuse the upgrade record", || {
        oxford.status()["receiver"]["last_error"].as_str().is_some_and(|e| e.contains("cannot write"))
    });
    let upgrade_seqno = brynmawr.journal().iter().find(|e| e.kind == "upgrade").unwrap().seqno;
    assert!(oxford.seqno() < upgrade_seqno, "Oxford applied part of the upgrade frame");
    assert_eq!(oxford.status()["format_version"], 1);
    oxford.verify();

    // Step 8: the old primary, restarted on N+1 (mismatch until the record arrives), is
    // BrynMawr's secondary and upgrades its own format by replaying.
    ardmore.restart_on(&next);
    assert!(first_reply(&ardmore).contains("MISMATCH"));
    ardmore.ctl(&["receiver", "start", "--autorollback"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Ardmore", "--addr", &ardmore.repl_addr()]);
    let seqno = brynmawr.seqno();
    wait_until("Ardmore to replay up to B1", || ardmore.seqno() == seqno);
    let status = ardmore.status();
    assert_eq!(status["format_version"], 2);
    assert!(status["version_mismatch"].is_null());
    assert_eq!(ardmore.journal(), brynmawr.journal());
    ardmore.verify();
    assert!(ardmore.log_text().contains("format upgraded by replaying"));
    assert!(status["last_rollback"].is_null(), "nothing was rolled back");

    // The N binary refuses to open format-2 data at all, naming what it supports, and leaves
    // it as it was.
    ardmore.stop();
    let out = Command::new(common::binary())
        .args(["run", "--data-dir"])
        .arg(&ardmore.data_dir)
        .args(["--name", "Ardmore", "--resp-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("format version 2") && text.contains("untouched"), "{text}");
    ardmore.restart_on(&next);
    assert_eq!(ardmore.status()["format_version"], 2);
    ardmore.verify();
}

/// Replication spans one version step either way; two steps are refused at the handshake,
/// naming both versions.
#[test]
fn protocols_two_steps_apart_are_refused_at_the_handshake() {
    use strand_engine::replication::protocol::{self, Hello, Kind, Mode, Refuse};
    let dir = tempdir();
    let brynmawr = Server::start_replicating(dir.path(), "BrynMawr");
    brynmawr.ctl(&["receiver", "start"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refusal: Refuse = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(brynmawr.repl_addr()).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let hello = Hello {
            protocol: protocol::PROTOCOL_VERSION + 2,
            mode: Mode::Source,
            name: "Future".into(),
            creation_id: "x".into(),
            nonce: "n".into(),
            si: false,
            supplementary: false,
            term: 0,
            binary_version: "9.9.0".into(),
        };
        protocol::write_json(&mut wr, Kind::Hello, &hello).await.unwrap();
        protocol::expect(&mut rd, Kind::Refuse).await.unwrap()
    });
    assert_eq!(refusal.code, "protocol");
    assert!(
        refusal.message.contains("9.9.0") && refusal.message.contains(strand_engine::VERSION),
        "{}",
        refusal.message
    );
    assert!(
        brynmawr.status()["receiver"]["last_error"].as_str().unwrap().contains("at most one version step")
    );
}
