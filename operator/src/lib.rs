//! Strand operator.
//!
//! - [`crd`]: the custom resource types, from which `crdgen` writes the CRD YAML in `crds/`.
//! - [`desired`]: the Kubernetes objects that run an Instance (pure).
//! - [`engine_status`]: what the operator reads from an engine's admin status.
//! - [`plan`]: pure reconcile decisions for replication links (admin calls and state).
//! - [`engine_client`]: the engine admin API client.
//! - [`controller`]: the Instance and ReplicationLink controllers that carry the plans out.
//! - [`leader`]: leader election with a Lease; [`metrics`]: the operator's own metrics.
//! - [`webhook`]: the validating admission webhook for ReplicationLinks.

pub mod controller;
pub mod crd;
pub mod desired;
pub mod engine_client;
pub mod engine_status;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod webhook;

/// Renders an error and its sources as one line: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
