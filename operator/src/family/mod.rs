//! The family lifecycle, as pure decisions (docs/lifecycle.md): which instances form a family
//! and which way its streams flow ([`topology`]), and what to do next given everything the
//! engines report ([`plan`]): bootstrap, steady state, switchover, failover, rejoin,
//! rollback, drains and link removal. No I/O: `controller::family` gathers the inputs, runs
//! the plan, persists the family's status and carries the actions out.

pub mod plan;
pub mod topology;

pub use plan::{Action, FamilyPlan, FamilyView, LinkReport, MemberView, Note, SiPeer, Timing, plan};
