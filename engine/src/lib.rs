//! Strand engine: a transactional key-value server that speaks RESP and keeps a journal
//! the way GT.M does (journal sequence numbers, before/after images, history records).
//!
//! Layers, each importing only from its own layer or the ones before it, never upwards and
//! never in a cycle:
//!
//! 1. Leaves: [`base`] (error chains, hex, constant-time compare), [`frame`] (RESP values and
//!    framing), [`limits`] (every bound), [`version`] (binary, format and protocol versions),
//!    [`metrics`], [`shutdown`].
//! 2. [`storage`]: redb tables for data, journal and instance metadata, changed in one atomic
//!    commit; [`storage::node`] lays the Redis data model out as nodes of the data table (a
//!    head per key, a node per collection element, an expiry index); [`storage::writer`] is
//!    the group-commit writer thread; [`storage::journal`] the
//!    record format; [`storage::meta`] the instance metadata; [`storage::lostlog`] the
//!    Unreplicated Transaction Log; [`storage::backup`] backups and restores; [`storage::seed`]
//!    snapshots for seeding a secondary.
//! 3. [`replication`]: BC and SI streams, working on a [`replication::Context`] (store,
//!    writer, metrics, replication state), not on the whole engine.
//! 4. [`engine`]: the [`engine::Engine`] the data port and the admin API share (the
//!    replication context plus configuration, readiness and client ids).
//! 5. [`admin`] (the HTTP/JSON admin API and its client) and [`resp`] (the data port: one task
//!    per connection, the commands and the data model they run on).
//! 6. [`server`]: builds the engine and starts and stops the writer, data port, replication
//!    and admin API in order; [`expiry`]: the primary's expiry cycle.
//! 7. [`cli`]: `strand-engine run` and `strand-engine ctl`.
//!
//! `engine/tests/layers.rs` reads the sources and fails if an import points the wrong way.

pub mod admin;
pub mod base;
pub mod cli;
pub mod engine;
pub mod expiry;
pub mod frame;
pub mod limits;
pub mod metrics;
pub mod replication;
pub mod resp;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod version;

pub use version::VERSION;
