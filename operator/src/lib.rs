//! Strand operator.
//!
//! - [`crd`]: the custom resource types (Instance, ReplicationLink, Family), from which
//!   `crdgen` writes the CRD YAML in `crds/`.
//! - [`desired`]: the Kubernetes objects that run an Instance (pure).
//! - [`rules`]: link rules across objects (pure), for the webhook and the controllers.
//! - [`family`]: the family lifecycle — topology, switchover, failover, rejoin — as pure
//!   step functions over observed engine status.
//! - [`engine_status`]: what the operator reads from an engine; [`engine_client`]: the only
//!   code calling the engine admin API.
//! - [`controller`]: the Instance, Family and ReplicationLink controllers that carry the
//!   plans out, reading reflector stores.
//! - [`leader`]: leader election (a pure elector over a Lease); [`metrics`]: the operator's
//!   own metrics; [`webhook`]: the admission webhook (link rules, primary evictions).
//!
//! The `kubectl-strand` plugin (`src/bin/kubectl-strand.rs`) uses [`crd`] and talks to the
//! Kubernetes API only.

pub mod controller;
pub mod crd;
pub mod desired;
pub mod engine_client;
pub mod engine_status;
pub mod family;
pub mod leader;
pub mod metrics;
pub mod rules;
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
