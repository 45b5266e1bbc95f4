//! Terms and role leases between real engine processes: what keeps a family at one writable
//! primary while the operator moves the role (docs/lifecycle.md).
//!
//! Method: drive the admin API through `ctl` and write through a real Redis client; a frozen
//! primary is a real SIGSTOP; a deposed primary is a real process restarted with its old role.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, tempdir, wait_until};

/// The error a SET gets, or `None` when it is accepted.
fn set_error(server: &Server, key: &str) -> Option<String> {
    let mut c = server.client();
    redis::cmd("SET").arg(key).arg("v").query::<()>(&mut c).err().map(|e| e.to_string())
}

fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(server.child.id().to_string()).status().unwrap();
    assert!(ok.success(), "kill -{sig}");
}

#[test]
fn a_promotion_needs_a_higher_term_and_repeating_one_is_harmless() {
    let dir = tempdir();
    let a = Server::start_replicating(dir.path(), "Ardmore");
    assert_eq!(a.status()["term"], 0);
    let answer = a.ctl(&["promote", "--term", "3"]);
    assert_eq!((answer["role"].as_str(), answer["term"].as_u64()), (Some("primary"), Some(3)));
    // The operator may repeat a call whose answer it did not see.
    assert_eq!(a.ctl(&["promote", "--term", "3"])["term"], 3);
    let err = a.ctl_fails(&["promote", "--term", "2"]);
    assert!(err.contains("stale_term") && err.contains("at term 3"), "{err}");
    // A demotion carries the family's term; the next promotion without one goes above it.
    assert_eq!(a.ctl(&["demote", "--term", "5"])["term"], 5);
    let err = a.ctl_fails(&["promote", "--term", "5"]);
    assert!(err.contains("stale_term"), "{err}");
    assert_eq!(a.ctl(&["promote"])["term"], 6);
}

#[test]
fn a_lease_gates_writes_expires_and_is_required_again_after_a_restart() {
    let dir = tempdir();
    let mut a = Server::start_replicating(dir.path(), "Ardmore");
    a.ctl(&["promote", "--term", "1", "--lease"]);
    let err = set_error(&a, "k").expect("no lease granted yet");
    assert!(err.to_lowercase().contains("readonly") && err.contains("waits for its role lease"), "{err}");

    // Long enough that the SET below lands inside it on a loaded machine (writes stop 250 ms
    // before the end); the wait for the expiry below is as long.
    let granted = a.ctl(&["lease", "--term", "1", "--duration-ms", "4000"]);
    assert!(granted["remaining_ms"].as_u64().unwrap() > 3000, "{granted}");
    assert_eq!(set_error(&a, "k"), None);
    let err = a.ctl_fails(&["lease", "--term", "2"]);
    assert!(err.contains("stale_term"), "{err}");

    // Not renewed: writes stop just before it runs out (a write must commit inside it), reads go on.
    wait_until("the lease to expire", || set_error(&a, "k").is_some_and(|e| e.contains("expired")));
    let err = set_error(&a, "k").unwrap();
    assert!(err.to_lowercase().contains("readonly") && err.contains("expired"), "{err}");
    assert_eq!(a.status()["lease"]["required"], true);
    let mut c = a.client();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("v"));

    // A restarted primary takes no writes until the operator confirms it again.
    a.restart();
    let err = set_error(&a, "k").expect("a restarted primary needs a new lease");
    assert!(err.contains("waits for its role lease"), "{err}");
    a.ctl(&["lease", "--term", "1", "--duration-ms", "60000"]);
    assert_eq!(set_error(&a, "k"), None);

    // A person's promotion without a lease (same term: a repeat) drops the requirement.
    a.ctl(&["promote", "--term", "1"]);
    a.restart();
    assert_eq!(set_error(&a, "k"), None);
    assert_eq!(a.status()["lease"]["required"], false);
}

#[test]
fn a_frozen_primary_wakes_up_with_its_lease_expired() {
    let dir = tempdir();
    let a = Server::start_replicating(dir.path(), "Ardmore");
    a.ctl(&["promote", "--term", "1", "--lease"]);
    // Long enough that the first SET lands inside it on a loaded machine.
    a.ctl(&["lease", "--term", "1", "--duration-ms", "3000"]);
    assert_eq!(set_error(&a, "before"), None);
    signal(&a, "STOP");
    std::thread::sleep(Duration::from_millis(3500)); // frozen past the lease: the point of the test
    signal(&a, "CONT");
    let err = set_error(&a, "after").expect("the thawed primary must refuse writes");
    assert!(err.contains("expired"), "{err}");
    assert!(a.status()["lease"]["writes_refused"].as_str().unwrap().contains("expired"));
}

/// Ardmore (term 1) streams to BrynMawr and Newtown and dies. BrynMawr is promoted at term 2
/// and Newtown follows it. Ardmore comes back still believing it is primary, without a lease
/// to stop it: Newtown refuses its stream (stale term), Ardmore learns term 2 from the refusal
/// and stops taking writes. A promotion at the old term is refused everywhere.
#[test]
fn a_deposed_primary_learns_the_higher_term_from_a_receiver_and_stops_taking_writes() {
    let dir = tempdir();
    let mut ardmore = Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = Server::start_replicating(dir.path(), "BrynMawr");
    let newtown = Server::start_replicating(dir.path(), "Newtown");
    ardmore.ctl(&["promote", "--term", "1"]);
    for r in [&brynmawr, &newtown] {
        r.ctl(&["receiver", "start"]);
        ardmore.ctl(&["source", "start", "--receiver", &r.name, "--addr", &r.repl_addr()]);
    }
    assert_eq!(set_error(&ardmore, "A1"), None);
    wait_until("both to hold A1 and term 1", || {
        [&brynmawr, &newtown].iter().all(|r| r.seqno() == 1 && r.status()["term"] == 1)
    });

    ardmore.kill9();
    brynmawr.ctl(&["promote", "--term", "2"]);
    newtown.ctl(&["receiver", "start", "--term", "2"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Newtown", "--addr", &newtown.repl_addr()]);
    assert_eq!(set_error(&brynmawr, "B2"), None);
    wait_until("Newtown to hold B2", || newtown.seqno() == 2);
    let err = newtown.ctl_fails(&["promote", "--term", "2"]);
    assert!(err.contains("stale_term"), "{err}");

    // Ardmore restarts as a primary at term 1 with its sources configured.
    ardmore.restart();
    wait_until("Ardmore to step down", || ardmore.status()["role"] == "secondary");
    assert_eq!(ardmore.status()["term"], 2);
    let err = set_error(&ardmore, "A2").expect("the deposed primary must refuse writes");
    assert!(err.to_lowercase().contains("readonly"), "{err}");
    assert!(newtown.log_text().contains("refused a stream from a deposed primary"));
    // Nothing of Ardmore's reached Newtown, which still follows BrynMawr.
    assert_eq!(set_error(&brynmawr, "B3"), None);
    wait_until("Newtown to hold B3", || newtown.seqno() == 3);
}

/// The same over SI: Malvern's stream from family Ardmore remembers the family's term, so once
/// BrynMawr (term 2) has fed it, a returning Ardmore (term 1) is refused and steps down.
#[test]
fn an_si_stream_refuses_a_deposed_primary_of_its_source_family() {
    let dir = tempdir();
    let mut ardmore = Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = Server::start_replicating(dir.path(), "BrynMawr");
    let malvern = Server::start_supplementary(dir.path(), "Malvern");
    ardmore.ctl(&["promote", "--term", "1"]);
    brynmawr.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    malvern.ctl(&["promote"]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync-from", &ardmore.repl_addr()]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    assert_eq!(set_error(&ardmore, "A1"), None);
    wait_until("Malvern and BrynMawr to hold A1", || malvern.stream_seqno(1) == 1 && brynmawr.seqno() == 1);
    wait_until("Malvern's stream to record term 1", || {
        malvern.status()["streams"].as_array().unwrap().iter().any(|s| s["stream"] == 1)
    });

    ardmore.kill9();
    brynmawr.ctl(&["promote", "--term", "2"]);
    brynmawr.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);
    assert_eq!(set_error(&brynmawr, "B2"), None);
    wait_until("Malvern to hold B2", || malvern.stream_seqno(1) == 2);

    ardmore.restart();
    wait_until("Ardmore to step down", || ardmore.status()["role"] == "secondary");
    assert_eq!(ardmore.status()["term"], 2);
    assert!(malvern.log_text().contains("refused a stream from a deposed primary"));
    assert_eq!(set_error(&brynmawr, "B3"), None);
    wait_until("Malvern to hold B3", || malvern.stream_seqno(1) == 3);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A grant carries the wall-clock time it must end by (its sender's send time plus the
/// lease): one that arrives too late is refused, one that arrives late runs only until then.
/// A lease is for one role at one term: a demotion ends it, and a re-promoted instance waits
/// for a new grant.
#[test]
fn a_late_grant_cannot_outlive_its_sender_and_a_role_change_ends_the_lease() {
    let dir = tempdir();
    let a = Server::start_replicating(dir.path(), "Ardmore");
    a.ctl(&["promote", "--term", "1", "--lease"]);
    let grant = |not_after: u64| {
        let body = format!(r#"{{"term":1,"duration_ms":60000,"not_after_unix_ms":{not_after}}}"#);
        common::admin(&a.data_dir, "POST", "/v1/lease", Some(&body)).unwrap()
    };
    let (code, body) = grant(unix_ms() - 1);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("lease_expired"), "{body}");
    assert!(set_error(&a, "k").is_some());

    let (code, body) = grant(unix_ms() + 1500);
    assert_eq!(code, 200, "{body}");
    let remaining: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(remaining["remaining_ms"].as_u64().unwrap() <= 1500, "{body}");
    assert_eq!(set_error(&a, "k"), None);
    wait_until("the capped lease to end", || set_error(&a, "k").is_some());

    // A full lease, then a demotion and a re-promotion: no writes until a new grant.
    let (code, body) = grant(unix_ms() + 60_000);
    assert_eq!(code, 200, "{body}");
    assert_eq!(set_error(&a, "k"), None);
    a.ctl(&["demote", "--term", "1"]);
    a.ctl(&["promote", "--term", "2", "--lease"]);
    let err = set_error(&a, "k").expect("a re-promoted primary needs a new grant");
    assert!(err.contains("waits for its role lease"), "{err}");
}
