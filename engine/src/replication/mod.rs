//! Business Continuity (BC) replication, as GT.M does it.
//!
//! - [`history`]: history records and the negotiation of the latest common transaction.

pub mod history;
pub mod lostlog;
