//! A full disk: commits fail with a clear error, nothing acknowledged is lost, reads go on,
//! and writes resume once space is back.
//!
//! Method: the test mounts a small tmpfs (it must run as root, as CI does) and runs a real
//! server on it. Two cases:
//! - with a free-space reserve (the default mode): the writer refuses commits before redb can
//!   meet ENOSPC, so the file is never touched and reads are served throughout;
//! - with no reserve: redb itself meets ENOSPC mid-commit; the engine closes and reopens the
//!   file, answers writes with a clear error meanwhile, and resumes when space is back.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, tempdir};
use redis::Commands;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the disk-full tests need root, as in CI)",
            path.display()
        );
        Mount(path.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

fn write_until_error(c: &mut redis::Connection, prefix: &str, acked: &mut Vec<String>) -> String {
    let value = vec![b'x'; 16 * 1024];
    for i in 0..100_000 {
        let key = format!("{prefix}{i}");
        match c.set::<_, _, ()>(&key, &value) {
            Ok(()) => acked.push(key),
            Err(e) => return e.to_string(),
        }
    }
    panic!("the disk never filled up");
}

/// A server on a fresh 48 MiB tmpfs with 50 acknowledged keys, then the disk filled up
/// until a write fails: the case both tests start from.
struct Full {
    _dir: tempfile::TempDir,
    mount: Mount,
    server: Server,
    client: redis::Connection,
    acked: Vec<String>,
    filler: PathBuf,
    error: String,
}

fn fill_up(reserve: &str) -> Full {
    let dir = tempdir();
    let mnt = dir.path().join("mnt");
    let mount = Mount::tmpfs(&mnt, "48m");
    let server = Server::start(&mnt.join("data"), "Full", &["--disk-reserve-bytes", reserve]);
    let mut client = server.client();
    let mut acked = Vec::new();
    for i in 0..50 {
        let key = format!("before{i}");
        let () = client.set(&key, "v").unwrap();
        acked.push(key);
    }
    let filler = fill(&mount.0);
    let error = write_until_error(&mut client, "during", &mut acked);
    Full { _dir: dir, mount, server, client, acked, filler, error }
}

#[test]
fn reserve_refuses_commits_and_keeps_serving_reads() {
    let Full { _dir, mount: _mount, mut server, client: mut c, mut acked, filler, error: err } =
        fill_up("8388608");
    assert!(err.contains("disk full") && err.contains("reserve"), "clear error expected, got: {err}");
    // Reads still work, and the storage reports the condition.
    assert_eq!(c.get::<_, String>("before0").unwrap(), "v");
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(info.contains("storage_degraded:1"), "{info}");
    let metrics = common::admin(&server.data_dir, "GET", "/metrics", None).unwrap().1;
    assert!(metrics.contains("strand_storage_degraded 1"), "{metrics}");
    assert!(metrics.contains("strand_commit_failures_total{error=\"disk_full\"}"), "{metrics}");
    // Space back: writes resume on the same connection.
    std::fs::remove_file(&filler).unwrap();
    let () = c.set("after", "v").unwrap();
    acked.push("after".into());
    assert_present(&mut c, &acked, "after space came back");
    drop(c);
    server.stop();
    restart_and_check(&mut server, &acked);
}

fn assert_present(c: &mut redis::Connection, acked: &[String], when: &str) {
    for key in acked {
        assert!(c.exists::<_, bool>(key).unwrap(), "acknowledged {key} missing {when}");
    }
}

/// Restarts the (stopped or killed) server and checks every acknowledged key and the journal.
fn restart_and_check(server: &mut Server, acked: &[String]) {
    server.restart();
    assert_present(&mut server.client(), acked, "after restart");
    server.verify();
    server.kill9();
}

#[test]
fn enospc_inside_the_database_is_survived() {
    let Full { _dir, mount: _mount, mut server, client: mut c, mut acked, filler, error: err } = fill_up("0");
    assert!(err.contains("No space left on device"), "the error must name the cause: {err}");
    println!("error seen by the client: {err}");
    std::fs::remove_file(&filler).unwrap();
    // The writer reopens the file; writes come back. Bounded wait (the reopen retries every
    // half second), no fixed sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match c.set::<_, _, ()>("after", "v") {
            Ok(()) => break,
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("recovering") || text.contains("storage failed"),
                    "unexpected error while recovering: {text}"
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "writes never resumed; log:\n{}",
                    server.log_text()
                );
            }
        }
    }
    acked.push("after".into());
    assert_present(&mut c, &acked, "after the database was reopened");
    server.verify();
    drop(c);
    server.kill9();
    restart_and_check(&mut server, &acked);
}
