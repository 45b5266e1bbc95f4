//! A TCP proxy between a replication source and its receiver that the test controls: it can
//! corrupt or cut the first connection, and cut every open connection on demand.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does to the next connection's source→receiver bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Close both sides after this many bytes (mid-frame, almost surely).
    CutAfter(usize),
    /// Flip one bit of the byte at this offset.
    FlipAt(usize),
}

/// A TCP proxy applying one fault to the first connection, then passing everything through
/// (until `cut_all`).
pub struct Proxy {
    pub addr: String,
    pub faults_applied: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: String, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let applied = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(Mutex::new(Some(fault)));
        let applied2 = applied.clone();
        let open = Arc::new(Mutex::new(Vec::new()));
        let open2 = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else { continue };
                open2.lock().unwrap().push(client.try_clone().unwrap());
                let fault = pending.lock().unwrap().take().unwrap_or(Fault::None);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let applied = applied2.clone();
                std::thread::spawn(move || pipe(client, server, fault, applied));
                std::thread::spawn(move || pipe(s2, c2, Fault::None, Arc::new(AtomicUsize::new(0))));
            }
        });
        Proxy { addr, faults_applied: applied, open }
    }

    /// Cuts every connection open through the proxy (new ones still pass); how many it cut.
    pub fn cut_all(&self) -> usize {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        let n = open.len();
        for c in open {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        n
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, fault: Fault, applied: Arc<AtomicUsize>) {
    let mut offset = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        match fault {
            Fault::CutAfter(limit) if offset + n > limit => {
                let _ = to.write_all(&chunk[..limit - offset]);
                applied.fetch_add(1, Ordering::AcqRel);
                break;
            }
            Fault::FlipAt(at) if (offset..offset + n).contains(&at) => {
                chunk[at - offset] ^= 0x01;
                applied.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
        offset += n;
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
