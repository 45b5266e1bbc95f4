//! The admin API and the `ctl` CLI against a real server: status, identity, journal reads,
//! backup and restore under a new identity, verification, bad requests, and the
//! token-protected TCP listener.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::process::Command;

use common::{Server, admin, binary, tempdir};
use redis::Commands;

fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).arg("ctl").args(args).output().expect("run ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_journal_and_identity() {
    let dir = tempdir();
    let data = dir.path().join("a");
    let server = Server::start(&data, "Ardmore", &[]);
    let mut c = server.client();
    let () = c.set("k", "v1").unwrap();
    let () = c.set("k", "v2").unwrap();
    let d = data.to_str().unwrap();
    let (ok, out, err) = ctl(&["--data-dir", d, "status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["name"], "Ardmore");
    assert_eq!(status["role"], "standalone");
    assert_eq!(status["journal_seqno"], 2);
    assert_eq!(status["supplementary"], false);
    assert_eq!(status["format_version"], 1);
    assert_eq!(status["streams"][0]["stream"], 0);
    assert_eq!(status["streams"][0]["seqno"], 2);
    assert_eq!(status["creation_id"].as_str().unwrap().len(), 32);
    // Journal: before and after images, in hex.
    let (ok, out, err) = ctl(&["--data-dir", d, "journal", "--from", "1", "--to", "2"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["seqno"], 2);
    assert_eq!(lines[1]["kind"], "update");
    assert_eq!(lines[1]["stream_seqno"], 2);
    assert_eq!(lines[1]["changes"][0]["key_hex"], "6b");
    assert_eq!(lines[1]["changes"][0]["before_hex"], "7631");
    assert_eq!(lines[1]["changes"][0]["after_hex"], "7632");
    // Identity confirmation: idempotent for the right name, 409 for another.
    let (ok, _, err) = ctl(&["--data-dir", d, "create", "--name", "Ardmore"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&["--data-dir", d, "create", "--name", "Other"]);
    assert!(!ok);
    assert!(err.contains("instance_exists") && err.contains("Ardmore"), "{err}");
    // Starting the directory under another name is refused.
    let out = Command::new(binary())
        .args(["run", "--data-dir", d, "--name", "Wrong", "--resp-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not \"Wrong\"") || err.contains("already"), "{err}");
    let (ok, out, _) = ctl(&["--data-dir", d, "verify"]);
    assert!(ok);
    assert!(out.contains("\"journal_seqno\": 2"), "{out}");
}

#[test]
fn bad_requests_get_json_errors() {
    let dir = tempdir();
    let data = dir.path().join("a");
    let _server = Server::start(&data, "Ardmore", &[]);
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/v1/journal?from=0", None, 400, "bad_range"),
        ("GET", "/v1/journal?from=5&to=2", None, 400, "bad_range"),
        ("GET", "/v1/journal?from=1&to=5000", None, 400, "range_too_large"),
        ("GET", "/v1/journal?from=abc", None, 400, "bad_request"),
        ("POST", "/v1/backup", Some("{not json"), 400, "bad_request"),
        ("POST", "/v1/backup", Some("{\"path\":\"relative.bak\"}"), 400, "invalid"),
        ("POST", "/v1/backup", Some("{\"path\":\"/tmp\",\"extra\":1}"), 400, "bad_request"),
        ("POST", "/v1/instance", Some("{\"name\":\"bad name\"}"), 400, "invalid_name"),
        ("GET", "/v1/nothing", None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, text) = admin(&data, method, path, *body).unwrap();
        assert_eq!(got, *status, "{method} {path}: {text}");
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(json["error"]["code"], *code, "{method} {path}: {text}");
        assert!(!json["error"]["message"].as_str().unwrap().is_empty());
    }
    let big = format!("{{\"path\":\"/{}\"}}", "x".repeat(100_000));
    let (got, _) = admin(&data, "POST", "/v1/backup", Some(&big)).unwrap();
    assert_eq!(got, 413, "oversized admin bodies are refused");
}

#[test]
fn backup_and_restore_with_a_new_identity() {
    let dir = tempdir();
    let data = dir.path().join("a");
    let server = Server::start(&data, "Ardmore", &[]);
    let mut c = server.client();
    for i in 0..500 {
        let () = c.set(format!("k{i}"), i).unwrap();
    }
    let backup = dir.path().join("ardmore.bak");
    let b = backup.to_str().unwrap();
    let (ok, out, err) = ctl(&["--data-dir", data.to_str().unwrap(), "backup", "--to", b]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["journal_seqno"], 500);
    assert_eq!(info["nodes"], 500, "500 strings are 500 head nodes");
    // Writes after the backup are not in it.
    let () = c.set("later", "x").unwrap();
    let (ok, _, err) = ctl(&["--data-dir", data.to_str().unwrap(), "backup", "--to", b]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = ctl(&["backup-info", b]);
    assert!(ok);
    assert!(out.contains("\"name\": \"Ardmore\""), "{out}");
    // Restore as a new, supplementary instance.
    let restored = dir.path().join("m");
    let (ok, out, err) = ctl(&[
        "--data-dir",
        restored.to_str().unwrap(),
        "restore",
        "--from",
        b,
        "--name",
        "Malvern",
        "--supplementary",
    ]);
    assert!(ok, "{err}");
    let meta: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(meta["name"], "Malvern");
    assert_eq!(meta["supplementary"], true);
    assert_eq!(meta["restored_from"]["name"], "Ardmore");
    assert_eq!(meta["restored_from"]["journal_seqno"], 500);
    let original = server.status();
    assert_ne!(meta["creation_id"], original["creation_id"], "a restored copy has a new identity");
    // Restoring over an existing instance is refused.
    let (ok, _, err) =
        ctl(&["--data-dir", restored.to_str().unwrap(), "restore", "--from", b, "--name", "X"]);
    assert!(!ok && err.contains("already holds an instance"), "{err}");
    let copy = Server::start(&restored, "Malvern", &[]);
    let status = copy.status();
    assert_eq!(status["journal_seqno"], 500, "the copy continues from the backup's seqno");
    assert_eq!(status["supplementary"], true);
    let mut cc = copy.client();
    assert_eq!(cc.get::<_, i64>("k499").unwrap(), 499);
    assert_eq!(cc.get::<_, Option<String>>("later").unwrap(), None);
    let () = cc.set("new", "y").unwrap();
    assert_eq!(copy.status()["journal_seqno"], 501);
    copy.verify();
}

#[test]
fn tcp_admin_requires_the_bearer_token() {
    let dir = tempdir();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let _server = Server::start(
        &dir.path().join("a"),
        "Ardmore",
        &["--admin-addr", &addr, "--admin-token-file", token.to_str().unwrap()],
    );
    let (ok, out, err) =
        ctl(&["--admin-addr", &addr, "--admin-token-file", token.to_str().unwrap(), "status", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"name\": \"Ardmore\""));
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let (ok, _, err) = ctl(&["--admin-addr", &addr, "--admin-token-file", wrong.to_str().unwrap(), "status"]);
    assert!(!ok && err.contains("unauthorized"), "{err}");
    let (ok, _, err) = ctl(&["--admin-addr", &addr, "status"]);
    assert!(!ok && err.contains("unauthorized"), "{err}");
    // Probes and scrapes need no token.
    let (ok, out, _) = ctl(&["--admin-addr", &addr, "health"]);
    assert!(ok && out.contains("ok"));
    let (ok, out, _) = ctl(&["--admin-addr", &addr, "ready"]);
    assert!(ok && out.contains("ready"));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    for name in [
        "strand_commits_total",
        "strand_commit_duration_seconds_bucket",
        "strand_group_commit_transactions_bucket",
        "strand_journal_fsync_duration_seconds",
        "strand_journal_seqno",
        "strand_connected_clients",
        "strand_storage_bytes",
        "strand_build_info{format_version=\"1\"",
    ] {
        assert!(text.contains(name), "metric {name} missing");
    }
}

/// `ctl status | head -1` must not panic when the reader has gone: the command ends quietly
/// with the shell's broken-pipe code (141), as Unix tools do.
#[test]
fn ctl_into_a_closed_pipe_ends_quietly() {
    let dir = tempdir();
    let data = dir.path().join("a");
    let _server = Server::start(&data, "Ardmore", &[]);
    for args in [&["status"][..], &["status", "--json"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // no reader at all, before ctl writes a byte
        let out = Command::new(binary())
            .arg("ctl")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "ctl {args:?}: {err}");
        assert!(!err.contains("panicked"), "ctl {args:?}: {err}");
    }
}

#[test]
fn ctl_without_a_server_explains_itself() {
    let dir = tempdir();
    let (ok, _, err) = ctl(&["--data-dir", dir.path().to_str().unwrap(), "status"]);
    assert!(!ok);
    assert!(err.contains("is the server running"), "{err}");
    let out =
        Command::new(binary()).args(["run", "--data-dir", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no instance"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What dashboards and alerts read, on a real pair: who the instance is and its family, its
/// term, whether it takes writes, the receiver's state, per-receiver backlog (gone with the
/// stream), volume size and journal bytes.
#[test]
fn metrics_say_who_takes_writes_and_how_replication_stands() {
    let dir = common::tempdir();
    let ardmore = common::Server::start_replicating(dir.path(), "Ardmore");
    let brynmawr = common::Server::start_replicating(dir.path(), "BrynMawr");
    ardmore.ctl(&["promote", "--term", "3"]);
    brynmawr.ctl(&["receiver", "start"]);
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    let mut c = ardmore.client();
    for i in 0..20 {
        redis::cmd("SET").arg(format!("k{i}")).arg("v").query::<()>(&mut c).unwrap();
    }
    common::wait_until("BrynMawr to hold the writes", || brynmawr.seqno() == 20);
    let scrape = |s: &common::Server| common::admin(&s.data_dir, "GET", "/metrics", None).unwrap().1;
    let a = scrape(&ardmore);
    for series in [
        r#"strand_instance_info{family="Ardmore",name="Ardmore",role="primary",supplementary="false"} 1"#,
        "strand_term 3",
        "strand_writable 1",
        r#"strand_replication_connected{receiver="BrynMawr"} 1"#,
    ] {
        assert!(a.contains(series), "{series} not in\n{a}");
    }
    assert!(a.contains("strand_volume_size_bytes ") && !a.contains("strand_volume_size_bytes 0\n"), "{a}");
    assert!(!a.contains("strand_receiver_state"), "no receiver, no state: {a}");
    let b = scrape(&brynmawr);
    for series in [
        r#"strand_instance_info{family="Ardmore",name="BrynMawr",role="secondary",supplementary="false"} 1"#,
        "strand_writable 0",
        r#"strand_receiver_state{state="streaming"} 1"#,
        r#"strand_receiver_state{state="error"} 0"#,
    ] {
        assert!(b.contains(series), "{series} not in\n{b}");
    }
    assert!(b.contains("strand_replication_apply_duration_seconds_count "), "{b}");
    // The stream stops: its per-receiver series go.
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    let a = scrape(&ardmore);
    assert!(!a.contains(r#"receiver="BrynMawr""#), "{a}");
}
