//! Strand operator.
//!
//! - [`crd`]: the custom resource types, from which `crdgen` writes the CRD YAML in `crds/`.
//! - [`desired`]: the Kubernetes objects that run an Instance (pure).
//! - [`engine_status`]: what the operator reads from an engine's admin status.
//! - [`plan`]: pure reconcile decisions for replication links (admin calls and state).
//!
//! The controllers that carry the plans out against the API server and the engines are the
//! remaining work of issue 7.

pub mod crd;
pub mod desired;
pub mod engine_status;
pub mod plan;
