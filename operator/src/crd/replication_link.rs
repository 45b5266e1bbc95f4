//! `ReplicationLink`: which instance sources a stream to which, BC or SI. For BC the source
//! is a member of a family whose *current* primary the operator tracks in status; an SI link
//! follows the current primary of its source family.
//!
//! Validation at apply time covers what one object can say about itself (CEL rules below).
//! Rules across objects — SI only into a supplementary instance, one SI link per target, at
//! most 16 outgoing links, BC links forming a tree — need the other objects: the admission
//! webhook refuses them at apply time and the controllers block a link that got past it.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "ReplicationLink",
    doc = "A BC or SI replication stream from one Instance (or its family's current primary) to another.",
    namespaced,
    status = "ReplicationLinkStatus",
    shortname = "slink",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.currentSource"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.currentTarget"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Lag","type":"string","jsonPath":".status.lag"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.source != self.target").message("a link cannot replicate an instance to itself"))]
#[x_kube(validation = Rule::new("self.mode == 'SI' || !self.noresync").message("noresync applies only to SI links (GT.M NORESYNCSUPPLONLY)"))]
#[x_kube(validation = Rule::new("!(self.autorollback && self.noresync)").message("choose autorollback or noresync, not both"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicationLinkSpec {
    /// The source Instance (in this namespace). For BC, any member of the family: the stream
    /// comes from the family's current primary.
    #[x_kube(validation = Rule::new("self != ''").message("source must name an Instance"))]
    pub source: String,
    /// The receiving Instance (in this namespace).
    #[x_kube(validation = Rule::new("self != ''").message("target must name an Instance"))]
    pub target: String,
    /// BC (business continuity) or SI (supplementary instance).
    pub mode: Mode,
    /// Roll the target back automatically when it is ahead of its source.
    #[serde(default)]
    pub autorollback: bool,
    /// SI only: resume from the common point without rolling back.
    #[serde(default)]
    pub noresync: bool,
    /// SI only: the path, inside the target's volume, of a backup of a member of the source's
    /// family that the target was restored from; its first SI connection begins at the
    /// backup's seqno. Without it a target that holds nothing of its own is seeded from the
    /// source's snapshot (one that holds data of its own is refused, keeping it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updateresync: Option<String>,
    /// While true the stream is stopped (the receiving end keeps its data, role and place in
    /// the family); `kubectl strand pause|resume LINK`.
    #[serde(default)]
    pub paused: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Mode {
    #[serde(rename = "BC")]
    Bc,
    #[serde(rename = "SI")]
    Si,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationLinkStatus {
    /// Connecting, Seeding (a BC target the source's journal no longer reaches takes a
    /// snapshot of the source's data), CatchingUp, Streaming, RollbackRequired,
    /// ReseedRequired (the source's journal no longer holds what an SI target needs), Blocked, Paused, Unreachable,
    /// Deleting, AwaitingUpgrade (its target waits for its turn in an image upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the link is blocked or needs a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end that currently sources the stream: for BC the end nearer the family's current
    /// primary (the stream flows away from it), for SI the source family's primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_source: Option<String>,
    /// The end that currently receives it (for SI the target family's primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_target: Option<String>,
    /// The family the link belongs to (BC) or is sourced by (SI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Age of the oldest transaction sent and not yet acknowledged, e.g. `0.012s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
