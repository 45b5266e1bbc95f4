//! Writers with acknowledged-write bookkeeping, for the crash and power-cut tests: 6 client
//! threads write their own keys in order — single SETs, and every third operation a
//! MULTI/EXEC pair that must appear together or not at all — recording what was acknowledged.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::Commands;

use super::Server;

pub const THREADS: usize = 6;

/// What the writers were told, per thread: the last acknowledged op, and ops whose outcome is
/// unknown (in flight at a cut).
#[derive(Default)]
pub struct Book {
    pub acked: Vec<Option<u64>>,
    pub next_op: Vec<u64>,
    pub in_doubt: Vec<Vec<u64>>,
    /// Acknowledged single-record writes made outside the writers, checked by whoever made
    /// them: [`check`] counts them among the journal's records.
    pub others: u64,
}

impl Book {
    pub fn new() -> Book {
        Book {
            acked: vec![None; THREADS],
            next_op: vec![0; THREADS],
            in_doubt: vec![Vec::new(); THREADS],
            others: 0,
        }
    }
}

/// Starts the writers against `url`; they stop at their first error, or when `stop` is set.
pub fn writers(
    url: &str,
    book: &Arc<Mutex<Book>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, u64)>> {
    let starts = book.lock().unwrap().next_op.clone();
    starts
        .into_iter()
        .enumerate()
        .map(|(t, start)| {
            let url = url.to_owned();
            let book = book.clone();
            let stop = stop.clone();
            std::thread::spawn(move || -> (usize, u64) {
                let Ok(client) = redis::Client::open(url) else { return (t, start) };
                let Ok(mut c) = client.get_connection() else { return (t, start) };
                let mut i = start;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return (t, i); // nothing in flight
                    }
                    let ok = if i % 3 == 2 {
                        redis::pipe()
                            .atomic()
                            .set(format!("t{t}:{i}:a"), i)
                            .set(format!("t{t}:{i}:b"), i)
                            .query::<()>(&mut c)
                            .is_ok()
                    } else {
                        c.set::<_, _, ()>(format!("t{t}:{i}"), i).is_ok()
                    };
                    if !ok {
                        return (t, i + 1); // op i's outcome is unknown; its keys are never reused
                    }
                    book.lock().unwrap().acked[t] = Some(i);
                    i += 1;
                }
            })
        })
        .collect()
}

pub fn join_writers(handles: Vec<std::thread::JoinHandle<(usize, u64)>>, book: &Arc<Mutex<Book>>) {
    for h in handles {
        let (t, next) = h.join().unwrap();
        let mut b = book.lock().unwrap();
        if next > b.next_op[t] {
            b.in_doubt[t].push(next - 1);
        }
        b.next_op[t] = next;
    }
}

/// Checks the acknowledged writes and the all-or-nothing rule on `server`; returns the number
/// of committed operations. Every acknowledged write is read back — or, `sampled`, every
/// thread's last 3,000 operations and one older one in `older / 1,000` (so a 1,000-cycle run
/// does not read a million keys each cycle; the journal count and `/v1/verify` below cover
/// the rest: a lost old write would leave the journal short or disagreeing with the data).
pub fn check(server: &Server, book: &Book, what: &str, sampled: bool) -> u64 {
    let mut c = server.client();
    let mut committed = book.others;
    for (t, last) in book.acked.iter().enumerate() {
        let Some(last) = last else { continue };
        let recent_from = if sampled { last.saturating_sub(3_000) } else { 0 };
        let stride = (recent_from / 1_000).max(1);
        let doubts: HashSet<u64> = book.in_doubt[t].iter().copied().collect();
        for i in (0..=*last).filter(|i| !doubts.contains(i)) {
            committed += 1;
            if i < recent_from && i % stride != 0 {
                continue;
            }
            if i % 3 == 2 {
                let a: Option<u64> = c.get(format!("t{t}:{i}:a")).unwrap();
                let b: Option<u64> = c.get(format!("t{t}:{i}:b")).unwrap();
                assert_eq!((a, b), (Some(i), Some(i)), "{what}: acknowledged transaction t{t}:{i} lost");
            } else {
                let v: Option<u64> = c.get(format!("t{t}:{i}")).unwrap();
                assert_eq!(v, Some(i), "{what}: acknowledged write t{t}:{i} lost");
            }
        }
    }
    for (t, doubts) in book.in_doubt.iter().enumerate() {
        for &i in doubts {
            let present = if i % 3 == 2 {
                let a: Option<u64> = c.get(format!("t{t}:{i}:a")).unwrap();
                let b: Option<u64> = c.get(format!("t{t}:{i}:b")).unwrap();
                assert_eq!(a.is_some(), b.is_some(), "{what}: half a transaction t{t}:{i} survived");
                a.is_some()
            } else {
                c.get::<_, Option<u64>>(format!("t{t}:{i}")).unwrap().is_some()
            };
            committed += u64::from(present);
        }
    }
    let report = server.verify();
    assert_eq!(
        report["journal_seqno"].as_u64().unwrap(),
        committed,
        "{what}: one journal record per committed op, none duplicated or missing"
    );
    committed
}
