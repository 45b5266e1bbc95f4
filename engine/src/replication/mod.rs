//! Replication as GT.M does it: Business Continuity (BC) and Supplementary Instance (SI).
//!
//! - [`history`]: history records and the negotiation of the latest common transaction.
//! - [`protocol`]: the framed, checksummed, authenticated wire protocol.
//! - [`source`]: one task per outgoing stream; connects to a receiver and streams the journal.
//! - [`receiver`]: the listener on `--repl-addr`; negotiates, rolls back if allowed, applies.
//! - [`si`]: supplementary-instance negotiation and rollback planning per stream (pure).
//! - [`streams`]: SI streams on a running instance: allocation, reuse, negotiation.
//!
//! The receiver listens and the source connects (as in GT.M). Everything a receiver applies
//! goes through the writer, in seqno order, with the source's seqnos, stream tags and commit
//! times, and is acknowledged back only once durable.

pub mod history;
pub mod protocol;
pub mod receiver;
pub mod si;
pub mod source;
pub mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::storage::writer::Writer;

/// Most outgoing streams one instance may source (GT.M: sixteen, BC and SI together).
pub const SOURCES_MAX: usize = 16;

/// What replication uses of the running engine, and nothing more. The source and receiver
/// tasks hold it; [`crate::engine::Engine`] is built around it.
pub struct Context {
    pub store: Arc<Store>,
    pub writer: Writer<Frame>,
    pub metrics: Arc<Metrics>,
    pub replication: Replication,
}

/// Replication state shared by the admin API, the sources and the receiver.
pub struct Replication {
    pub secret: Option<Vec<u8>>,
    /// Most bytes per second a snapshot is sent at (`None`: no limit).
    pub seed_rate_bytes: Option<u64>,
    /// Least time between two applies of a receiver that keeps up: what arrives meanwhile is
    /// made durable with one `fdatasync`, so a standby does not sync as often as its primary
    /// (they usually share a disk). Zero: apply each frame as it arrives.
    pub apply_interval: std::time::Duration,
    pub sources: Mutex<HashMap<String, source::SourceHandle>>,
    pub receiver: Mutex<ReceiverStatus>,
    /// Bumped to make the active receiver connection end (receiver stop, promote).
    pub receiver_generation: tokio::sync::watch::Sender<u64>,
    /// Woken on every acknowledgement from any receiver (WAIT listens).
    pub acks: tokio::sync::Notify,
}

impl Replication {
    pub fn new(
        secret: Option<Vec<u8>>,
        seed_rate_bytes: Option<u64>,
        apply_interval: std::time::Duration,
    ) -> Self {
        Replication {
            secret,
            seed_rate_bytes,
            apply_interval,
            sources: Mutex::new(HashMap::new()),
            receiver: Mutex::new(ReceiverStatus::default()),
            receiver_generation: tokio::sync::watch::Sender::new(0),
            acks: tokio::sync::Notify::new(),
        }
    }

    pub fn receiver_status(&self) -> ReceiverStatus {
        self.receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_receiver(&self, f: impl FnOnce(&mut ReceiverStatus)) {
        f(&mut self.receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    pub fn source_statuses(&self) -> Vec<source::SourceStatus> {
        let sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = sources.values().map(|h| h.status()).collect();
        out.sort_by(|a, b| a.receiver.cmp(&b.receiver));
        out
    }

    /// How many receivers have acknowledged `seqno` or later, counting only acknowledgements
    /// made since the last rollback (`epoch`: the store's pins epoch).
    pub fn acknowledged(&self, seqno: u64, epoch: u64) -> usize {
        let sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sources.values().filter(|h| h.acked_in(epoch).is_some_and(|acked| acked >= seqno)).count()
    }

    /// Ends the active receiver connection, if any.
    pub fn drop_receiver_connection(&self) {
        self.receiver_generation.send_modify(|g| *g += 1);
    }
}

/// What the receiver side is doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiverStatus {
    /// idle, seeding, streaming, rollback_required, needs_reseed, error
    pub state: String,
    pub source: Option<String>,
    /// The SI stream being received (`None` for BC).
    pub stream: Option<u8>,
    /// Last seqno applied, in the source's numbering (for SI: the stream seqno).
    pub applied_seqno: u64,
    /// Set when the receiver is ahead of its source and autorollback is off.
    pub common_seqno: Option<u64>,
    pub last_error: Option<String>,
    /// Seqno of the last failover record received (the primary handed over).
    pub failover_seqno: Option<u64>,
    /// The snapshot being received, or the last one installed (the configuration's `seed`
    /// says whether the receiver may be seeded at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SeedProgress>,
}

/// A seeding's progress (storage::seed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedProgress {
    /// The seqno the snapshot reflects.
    pub seqno: u64,
    pub nodes_total: u64,
    pub nodes_received: u64,
    /// Set once the snapshot is the instance's data.
    pub installed: bool,
    pub seconds: f64,
}
