//! Custom resources, group `strand.dev`, version `v1alpha1`. The types are the source of
//! truth: doc comments become schema descriptions, and `crdgen` writes `crds/`.

pub mod instance;
pub mod replication_link;

pub use instance::{Instance, InstanceSpec, InstanceStatus};
pub use replication_link::{Mode, ReplicationLink, ReplicationLinkSpec, ReplicationLinkStatus};

pub const GROUP: &str = "strand.dev";
pub const VERSION: &str = "v1alpha1";

/// A status condition, as Kubernetes conventions describe it.
#[derive(serde::Deserialize, serde::Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Replicating, RollbackRequired, VersionMismatch, …
    pub r#type: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
