//! `Instance`: one Strand engine (one pod, its own volume), primary, secondary or
//! supplementary. Its role is operator-owned state in the status, never a spec field that
//! would fight a failover.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "Instance",
    doc = "A Strand engine instance: one pod with its own volume; its role is operator-owned status.",
    namespaced,
    status = "InstanceStatus",
    shortname = "sinst",
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".status.role"}"#,
    printcolumn = r#"{"name":"Seqno","type":"integer","jsonPath":".status.journalSeqno"}"#,
    printcolumn = r#"{"name":"Supplementary","type":"boolean","jsonPath":".spec.supplementary"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.binaryVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Engine container image, e.g. `strand-engine:0.1.0`. Changing it on a secondary is the
    /// first step of a hot-standby upgrade.
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// A supplementary instance receives one SI stream and accepts local updates. Fixed at
    /// creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("supplementary cannot change after creation"))]
    pub supplementary: bool,
    /// The instance's volume.
    pub storage: StorageSpec,
    /// Compute resources of the engine container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Secret holding `password` (data port AUTH) and `replication-secret`; generated when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<String>,
    /// While true the operator changes nothing for this instance.
    #[serde(default)]
    pub paused: bool,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, e.g. `10Gi`.
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')").message("size must be a quantity such as 10Gi"))]
    pub size: String,
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pending, Running, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// primary, secondary, supplementary-primary or standalone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_seqno: Option<u64>,
    /// Last seqno per stream (0 = local updates, 1–15 = SI streams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest rollback and where its unreplicated-transaction log is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<LastRollback>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub stream: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_family: Option<String>,
    pub seqno: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRollback {
    pub log_path: String,
    pub from_seqno: u64,
    pub to_seqno: u64,
    pub transactions: u64,
    pub reason: String,
}
