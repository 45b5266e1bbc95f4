//! What the operator reads from an engine's `GET /v1/status` (the fields it acts on). The
//! engine is the authority on its role, positions and replication state; the operator never
//! guesses them. Unknown fields are ignored, so engines may add fields freely.

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EngineStatus {
    pub name: String,
    pub supplementary: bool,
    /// standalone, primary, secondary, supplementary-primary
    pub role: String,
    pub journal_seqno: u64,
    #[serde(default)]
    pub streams: Vec<Stream>,
    #[serde(default)]
    pub history: Vec<History>,
    pub format_version: u32,
    pub binary_version: String,
    #[serde(default)]
    pub last_rollback: Option<LastRollback>,
    #[serde(default)]
    pub receiver: Option<Receiver>,
    #[serde(default)]
    pub sources: Vec<Source>,
    /// The family term the engine last learned.
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub lease: Lease,
    /// The replication listener's bound address.
    #[serde(default)]
    pub repl_addr: Option<String>,
    /// The format this binary writes (above `format_version`: version-mismatch mode).
    #[serde(default)]
    pub binary_format_version: u32,
    #[serde(default)]
    pub protocol_version: u16,
    /// What the binary can do beyond its protocol (`seed`, `seed-si`); absent from older
    /// binaries.
    #[serde(default)]
    pub features: Vec<String>,
    /// Set in version-mismatch mode (a newer binary on older data): why clients are refused.
    #[serde(default)]
    pub version_mismatch: Option<String>,
    /// The data holds what the next format needs (`prepare-upgrade` ran).
    #[serde(default)]
    pub upgrade_prepared: bool,
}

impl EngineStatus {
    /// Whether the engine takes application writes by its role (a primary or supplementary
    /// primary; a lease may still hold them back).
    pub fn writable_role(&self) -> bool {
        matches!(self.role.as_str(), "primary" | "supplementary-primary")
    }

    /// The root of the instance's family (the first history record's instance).
    pub fn family(&self) -> Option<&str> {
        self.history.iter().min_by_key(|h| h.start_seqno).map(|h| h.root_name.as_str())
    }

    pub fn source_to(&self, receiver: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.receiver == receiver)
    }

    /// Whether the instance holds an SI stream fed by `family`.
    pub fn has_stream_from(&self, family: &str) -> bool {
        self.streams.iter().any(|s| s.stream > 0 && s.source_family.as_deref() == Some(family))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Lease {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub remaining_ms: Option<u64>,
    #[serde(default)]
    pub writes_refused: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Stream {
    pub stream: u8,
    #[serde(default)]
    pub source_family: Option<String>,
    pub seqno: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct History {
    pub start_seqno: u64,
    pub root_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LastRollback {
    pub log_path: String,
    pub from_seqno: u64,
    pub to_seqno: u64,
    pub transactions: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Receiver {
    pub autorollback: bool,
    #[serde(default)]
    pub si: bool,
    #[serde(default)]
    pub noresync: bool,
    /// BC: seeds from a snapshot when the source's journal does not reach back; SI: a family's
    /// first stream begins from the source's snapshot.
    #[serde(default)]
    pub seed: bool,
    /// idle, seeding, streaming, rollback_required, needs_reseed, error, stopped
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub stream: Option<u8>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Last seqno applied, in the source's numbering.
    #[serde(default)]
    pub applied_seqno: u64,
    /// Seqno of the last failover record received (the primary handed over).
    #[serde(default)]
    pub failover_seqno: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Source {
    pub receiver: String,
    pub addr: String,
    #[serde(default)]
    pub si: bool,
    /// connecting, seeding, streaming, rollback_required, needs_reseed, error, stopped
    pub state: String,
    pub acked_seqno: u64,
    pub backlog: u64,
    pub lag_seconds: f64,
    #[serde(default)]
    pub last_error: Option<String>,
}
