//! Custom resources, group `strand.dev`, version `v1alpha1`. The types are the source of
//! truth: doc comments become schema descriptions, and `crdgen` writes `crds/`.

pub mod family;
pub mod instance;
pub mod replication_link;

pub use family::{Family, FamilySpec, FamilyStatus};
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

/// The YAML of a CRD as committed in `crds/` and the chart. schemars marks unsigned integers
/// with formats (`uint8`, `uint64`, …) that the API server does not know and warns about on
/// every apply; they are dropped (the `minimum: 0` next to them already says it).
pub fn to_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Result<String, String> {
    let mut value = serde_json::to_value(crd).map_err(|e| e.to_string())?;
    drop_unknown_formats(&mut value);
    serde_yaml::to_string(&value).map_err(|e| e.to_string())
}

fn drop_unknown_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("uint")) {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unknown_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unknown_formats),
        _ => {}
    }
}
