//! `Family`: instances joined by BC links, with one current primary and a term. Created and
//! kept by the operator (never by hand): its status is where the operator persists the
//! family's primary, term and any switchover or failover in progress, so that a restarted
//! operator resumes it where it stopped (docs/lifecycle.md).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "Family",
    plural = "families",
    doc = "A family of Instances joined by BC links, named after its founder; kept by the operator.",
    namespaced,
    status = "FamilyStatus",
    shortname = "sfam",
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.primary"}"#,
    printcolumn = r#"{"name":"Term","type":"integer","jsonPath":".status.term"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.procedure.step"}"#,
    printcolumn = r#"{"name":"Upgrade","type":"string","jsonPath":".status.upgrade.step"}"#,
    printcolumn = r#"{"name":"Members","type":"string","jsonPath":".status.members"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FamilySpec {}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyStatus {
    /// Incremented by every write the operator makes, so it can tell its own last write from
    /// an older copy in its cache.
    #[serde(default)]
    pub revision: u64,
    /// The member that is (or is being made) the family's writable primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The family's term: raised by every promotion the operator makes.
    #[serde(default)]
    pub term: u64,
    /// Member Instances (joined by BC links).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Pending, Standalone, Healthy, Degraded, SwitchingOver, FailingOver, Upgrading, NoPrimary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What is wrong or going on, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The switchover or failover in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<Procedure>,
    /// The image upgrade in progress (the hot-standby procedure, docs/upgrades.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,
    /// The image that moved the family's data to its present format: an older image cannot
    /// open the data, so an upgrade to one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_image: Option<String>,
    /// The last procedures, newest last (at most ten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ProcedureRecord>,
    /// The last request acted on per instance and kind, so an annotation kept in YAML does
    /// not act twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled: Vec<HandledRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A switchover or failover in progress; every step is a state the operator resumes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Procedure {
    /// Switchover or Failover.
    pub kind: String,
    /// The primary being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The member being promoted (chosen when the procedure starts, or at promotion for a
    /// failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The term the new primary gets.
    pub term: u64,
    /// Fencing, CatchingUp, Promoting, Repointing.
    pub step: String,
    /// Why it started: the request or what the operator observed.
    pub reason: String,
    /// Seqno of the old primary's failover record (a switchover waits until the target has
    /// applied it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_seqno: Option<u64>,
    /// A forced failover: no damping delay, no catch-up wait.
    #[serde(default)]
    pub forced: bool,
    /// When each step began (RFC 3339).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTime>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepTime {
    pub step: String,
    pub at: String,
}

/// An image upgrade in progress.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    /// The image the family moves to.
    pub image: String,
    /// The image the primary ran when it began (where to go back to before the format moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// Preparing, Secondaries, Primary, UpgradingFormat, Finishing.
    pub step: String,
    /// Members allowed to run `image` (the Instance controller rolls them, in this order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<String>,
    /// The data's format has moved: going back to `fromImage` is no longer possible.
    #[serde(default)]
    pub format_upgraded: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTime>,
}

/// A finished procedure.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureRecord {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub term: u64,
    /// Succeeded or Aborted.
    pub outcome: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every step with its start, then `Done` or `Aborted` with the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTime>,
}

/// A request (annotation) the operator has acted on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequest {
    pub instance: String,
    /// switchover, failover, rollback or drain.
    pub kind: String,
    pub id: String,
    /// What came of it, in a sentence.
    pub outcome: String,
    pub at: String,
}
