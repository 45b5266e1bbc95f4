//! Strand operator.
//!
//! Today: the custom resource types ([`crd`]) the operator reconciles, from which `crdgen`
//! writes the CRD YAML in `crds/`. The controllers, the engine client and the kubectl plugin
//! come with issue 7.

pub mod crd;
