//! SI replication under faults while local transactions and the SI stream interleave on the
//! same supplementary instance: connections cut mid-stream (through a proxy), SIGKILL of the
//! supplementary instance mid-apply, and SIGKILL of the source mid-stream. Afterwards every
//! acknowledged transaction of either kind is there exactly once, stream 1 holds the source's
//! seqnos 1..=N in order with no gap or repeat, stream 0 numbers the local ones 1..=K, nothing
//! was rolled back, and the journal verifies against the data.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::proxy::{Fault, Proxy};
use common::{Server, tempdir, wait_until};
use redis::Commands;

/// A client writing `prefix0`, `prefix1`, … one transaction at a time until stopped, through
/// whatever port the server has now (it changes when the server restarts). Records what was
/// acknowledged; a write that failed (server down) is retried under the same key.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    handle: JoinHandle<()>,
}

impl Writer {
    fn start(port: Arc<AtomicU16>, prefix: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            let mut conn: Option<redis::Connection> = None;
            while !s.load(Ordering::Acquire) {
                if conn.is_none() {
                    let url = format!("redis://127.0.0.1:{}/", port.load(Ordering::Acquire));
                    conn = redis::Client::open(url).ok().and_then(|c| c.get_connection().ok());
                    if conn.is_none() {
                        std::thread::yield_now();
                        continue;
                    }
                }
                let key = format!("{prefix}{i}");
                match conn.as_mut().unwrap().set::<_, _, ()>(&key, format!("v{i}")) {
                    Ok(()) => {
                        a.lock().unwrap().push(key);
                        i += 1;
                    }
                    Err(_) => conn = None,
                }
            }
        });
        Writer { stop, acked, handle }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

fn wait_more(what: &str, now: impl Fn() -> usize, by: usize) {
    let start = now();
    wait_until(what, || now() >= start + by);
}

#[test]
fn cuts_and_sigkills_while_local_and_si_updates_interleave() {
    let dir = tempdir();
    let root = dir.path();
    let mut ardmore = Server::start_replicating(root, "Ardmore");
    let mut malvern = Server::start_supplementary(root, "Malvern");
    ardmore.ctl(&["promote"]);
    let seed = root.join("ardmore.backup");
    ardmore.ctl(&["backup", "--to", seed.to_str().unwrap()]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", seed.to_str().unwrap()]);
    let proxy = Proxy::start(malvern.repl_addr(), Fault::None);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &proxy.addr, "--si"]);

    let a_port = Arc::new(AtomicU16::new(ardmore.resp_port));
    let m_port = Arc::new(AtomicU16::new(malvern.resp_port));
    let a = Writer::start(a_port.clone(), "A");
    let m = Writer::start(m_port.clone(), "M");
    let received = |s: &Server| s.stream_seqno(1) as usize;

    // Connections cut mid-stream, three times.
    for round in 0..3 {
        wait_more("Malvern to receive more", || received(&malvern), 100);
        assert!(proxy.cut_all() >= 1, "round {round}: a connection to cut");
    }
    // The supplementary instance killed mid-apply, twice.
    for _ in 0..2 {
        wait_more("Malvern to receive more", || received(&malvern), 100);
        wait_more("local writes on Malvern", || m.count(), 20);
        malvern.kill9();
        malvern.restart();
        m_port.store(malvern.resp_port, Ordering::Release);
    }
    // The source killed mid-stream.
    wait_more("Malvern to receive more", || received(&malvern), 100);
    ardmore.kill9();
    ardmore.restart();
    a_port.store(ardmore.resp_port, Ordering::Release);
    wait_more("Ardmore to commit again", || a.count(), 50);
    wait_more("local writes on Malvern", || m.count(), 20);

    let a_acked = a.finish();
    let m_acked = m.finish();
    let total = ardmore.seqno();
    assert!(total as usize >= a_acked.len());
    wait_until("Malvern to catch up with Ardmore", || malvern.stream_seqno(1) == total);

    let mut c = malvern.client();
    for key in a_acked.iter().chain(&m_acked) {
        let i = &key[1..];
        assert_eq!(c.get::<_, Option<String>>(key).unwrap(), Some(format!("v{i}")), "{key} is on Malvern");
    }
    let journal = malvern.journal();
    let ones: Vec<u64> =
        journal.iter().filter(|e| e.stream == 1 && e.kind == "update").map(|e| e.stream_seqno).collect();
    assert_eq!(ones, (1..=total).collect::<Vec<_>>(), "stream 1 holds 1..={total} once each, in order");
    let zeros: Vec<u64> = journal.iter().filter(|e| e.stream == 0).map(|e| e.stream_seqno).collect();
    assert_eq!(zeros, (1..=zeros.len() as u64).collect::<Vec<_>>(), "stream 0 numbered without gaps");
    assert!(zeros.len() >= m_acked.len());
    assert_eq!(malvern.status()["last_rollback"], serde_json::Value::Null);
    malvern.verify();
    ardmore.verify();
}
