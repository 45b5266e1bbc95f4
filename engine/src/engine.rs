//! The running engine as the data port and the admin API see it: the replication
//! [`Context`] (store, writer, metrics, replication state) plus what `strand-engine run` was
//! told, readiness and client ids. [`crate::server`] builds it and starts the tasks around it.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::replication::Context;

/// Everything `strand-engine run` was told.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Creates the instance on first start; must match the stored name afterwards.
    pub name: Option<String>,
    pub supplementary: bool,
    pub resp_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    /// Bearer token required on the TCP admin listener.
    pub admin_token: Option<String>,
    /// Password required by AUTH on the data port.
    pub password: Option<Vec<u8>>,
    pub max_clients: usize,
    pub disk_reserve_bytes: u64,
    /// Most bytes of images one transaction may journal.
    pub max_txn_image_bytes: usize,
    /// Overlay bytes that trigger a checkpoint (`--checkpoint-bytes`).
    pub checkpoint_bytes: usize,
    /// Bound of the read cache of the database file's nodes (`--read-cache-bytes`; 0: none).
    pub read_cache_bytes: usize,
    /// Journal segment size (`--journal-segment-bytes`).
    pub segment_bytes: u64,
    /// How much journal the database file keeps (`--journal-keep-bytes`,
    /// `--journal-retain-bytes`, `--journal-retain-seconds`).
    pub retention: crate::storage::retention::Retention,
    /// Most bytes per second a snapshot is sent at (`--seed-rate-bytes`).
    pub seed_rate_bytes: Option<u64>,
    /// Least time between a standby's applies while it keeps up (`--apply-interval-ms`).
    pub apply_interval: std::time::Duration,
    /// Filled in once the data port is bound (the configured port may be 0).
    pub resp_port: u16,
    /// Where this instance receives replication streams.
    pub repl_addr: Option<SocketAddr>,
    /// Shared secret both ends of a replication stream must prove.
    pub repl_secret: Option<Vec<u8>>,
}

/// State shared by every connection and admin request.
pub struct Engine {
    /// The part replication tasks hold; its fields read as the engine's own (`engine.store`).
    pub core: Arc<Context>,
    pub config: Config,
    pub started: Instant,
    pub ready: AtomicBool,
    /// Bound replication address (the configured port may be 0).
    pub repl_local: Option<SocketAddr>,
    next_client_id: AtomicU64,
    /// Clients blocked in BLPOP and friends, by client id: CLIENT UNBLOCK signals one
    /// (`true`: answer with an error rather than as a timeout).
    pub blocked: std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<bool>>>,
}

impl Engine {
    pub fn new(core: Arc<Context>, config: Config, repl_local: Option<SocketAddr>) -> Engine {
        Engine {
            core,
            config,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            repl_local,
            next_client_id: AtomicU64::new(1),
            blocked: std::sync::Mutex::default(),
        }
    }

    /// A fresh id for a data-port client.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Deref for Engine {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.core
    }
}
