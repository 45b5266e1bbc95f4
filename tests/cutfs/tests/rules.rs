//! cutfs's rules, each shown on a real mount: what a power cut keeps and what it forgets.
//! Needs root and /dev/fuse with fusermount3 (Debian's fuse3, installed by scripts/deps).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use strand_cutfs::Mount;

struct Disk {
    _dir: TempDir,
    backing: PathBuf,
    mnt: PathBuf,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn disk(name: &str) -> Disk {
    let dir = std::env::temp_dir().join(format!("cutfs-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let backing = dir.join("backing");
    let mnt = dir.join("mnt");
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    Disk { _dir: TempDir(dir), backing, mnt }
}

fn mount(d: &Disk) -> Mount {
    Mount::new(&d.backing, &d.mnt).unwrap_or_else(|e| {
        panic!("cannot mount cutfs (needs root, /dev/fuse and fusermount3 from fuse3): {e}")
    })
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn read(p: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(p).ok()?.read_to_string(&mut s).ok()?;
    Some(s)
}

/// A durable file: written, synced, its directory synced.
fn durable(m: &Mount, name: &str, content: &str) {
    let mut f = File::create(m.mountpoint().join(name)).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.sync_all().unwrap();
    sync_dir(m.mountpoint());
}

#[test]
fn an_unsynced_write_vanishes_and_a_synced_one_stays() {
    let d = disk("write");
    let m = mount(&d);
    durable(&m, "f", "synced");
    let mut f = OpenOptions::new().append(true).open(d.mnt.join("f")).unwrap();
    f.write_all(b" and more").unwrap();
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "synced and more", "a program reads its own writes");
    assert_eq!(m.unsynced_bytes(), 9);
    drop(f);
    let r = m.cut();
    assert_eq!(r.bytes_dropped, 9);
    let m = mount(&d);
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "synced", "the unsynced append is gone");
    let mut f = OpenOptions::new().append(true).open(d.mnt.join("f")).unwrap();
    f.write_all(b" and kept").unwrap();
    f.sync_data().unwrap();
    drop(f);
    m.cut();
    let _m = mount(&d);
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "synced and kept", "fdatasync made it durable");
}

#[test]
fn a_created_file_without_a_directory_sync_is_gone_even_if_its_data_was_synced() {
    let d = disk("create");
    let m = mount(&d);
    let mut f = File::create(d.mnt.join("new")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let r = m.cut();
    assert_eq!(r.names_undone, 1);
    let m = mount(&d);
    assert!(!d.mnt.join("new").exists(), "the entry was never made durable");
    durable(&m, "new", "data");
    m.cut();
    let _m = mount(&d);
    assert_eq!(read(&d.mnt.join("new")).unwrap(), "data", "with the directory synced it stays");
}

#[test]
fn a_rename_without_a_directory_sync_is_undone_and_the_replaced_file_comes_back() {
    let d = disk("rename");
    let m = mount(&d);
    durable(&m, "a", "from a");
    durable(&m, "b", "old b");
    fs::rename(d.mnt.join("a"), d.mnt.join("b")).unwrap();
    assert_eq!(read(&d.mnt.join("b")).unwrap(), "from a");
    m.cut();
    let m = mount(&d);
    assert_eq!(read(&d.mnt.join("a")).unwrap(), "from a");
    assert_eq!(read(&d.mnt.join("b")).unwrap(), "old b");
    fs::rename(d.mnt.join("a"), d.mnt.join("b")).unwrap();
    sync_dir(&d.mnt);
    m.cut();
    let _m = mount(&d);
    assert!(!d.mnt.join("a").exists());
    assert_eq!(read(&d.mnt.join("b")).unwrap(), "from a", "a synced rename stays");
}

#[test]
fn an_unlink_without_a_directory_sync_is_undone() {
    let d = disk("unlink");
    let m = mount(&d);
    durable(&m, "f", "still here");
    fs::remove_file(d.mnt.join("f")).unwrap();
    assert!(!d.mnt.join("f").exists());
    m.cut();
    let m = mount(&d);
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "still here");
    fs::remove_file(d.mnt.join("f")).unwrap();
    sync_dir(&d.mnt);
    m.cut();
    let _m = mount(&d);
    assert!(!d.mnt.join("f").exists(), "a synced unlink stays");
}

#[test]
fn directories_follow_the_same_rules() {
    let d = disk("dirs");
    let m = mount(&d);
    fs::create_dir(d.mnt.join("sub")).unwrap();
    durable(&m, "sub/x", "in sub"); // syncs the mount's root, not sub: x is not durable
    fs::create_dir(d.mnt.join("gone")).unwrap();
    let r = m.cut();
    assert!(r.names_undone >= 1);
    let m = mount(&d);
    assert!(d.mnt.join("sub").is_dir(), "sub's creation was synced with the root");
    assert!(!d.mnt.join("gone").exists(), "gone was made after the root's last sync");
    assert!(!d.mnt.join("sub/x").exists(), "x's directory was never synced");
    fs::create_dir(d.mnt.join("late")).unwrap();
    m.cut();
    let _m = mount(&d);
    assert!(!d.mnt.join("late").exists());
}

#[test]
fn truncation_is_data_too() {
    let d = disk("truncate");
    let m = mount(&d);
    durable(&m, "f", "0123456789");
    let f = OpenOptions::new().write(true).open(d.mnt.join("f")).unwrap();
    f.set_len(4).unwrap();
    f.set_len(8).unwrap();
    assert_eq!(fs::read(d.mnt.join("f")).unwrap(), b"0123\0\0\0\0", "truncated bytes read as zeros");
    drop(f);
    m.cut();
    let _m = mount(&d);
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "0123456789", "the unsynced truncation is gone");
}

#[test]
fn a_cut_kills_the_processes_using_the_filesystem_and_nothing_more_is_served() {
    let d = disk("kill");
    let m = mount(&d);
    durable(&m, "log", "");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>>{}; while :; do echo x >&3; sleep 0.01; done", d.mnt.join("log").display()))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.unsynced_bytes() < 10 {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let r = m.cut();
    assert!(r.killed >= 1, "{r:?}");
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the writer was killed: {status:?}");
    let _m = mount(&d);
    assert_eq!(read(&d.mnt.join("log")).unwrap(), "", "none of its unsynced lines survived");
}

#[test]
fn a_clean_unmount_keeps_everything() {
    let d = disk("clean");
    let m = mount(&d);
    fs::write(d.mnt.join("f"), "written, never synced").unwrap();
    m.unmount().unwrap();
    let _m = mount(&d);
    assert_eq!(read(&d.mnt.join("f")).unwrap(), "written, never synced");
}
