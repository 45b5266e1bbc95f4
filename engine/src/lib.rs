//! Strand engine: a transactional key-value server that speaks RESP and keeps a journal
//! the way GT.M does (journal sequence numbers, before/after images, history records).
//!
//! Module map:
//! - [`storage`]: redb tables for data, journal and instance metadata, changed in one atomic
//!   commit; [`storage::writer`] is the group-commit writer thread; [`storage::journal`] the
//!   record format; [`storage::meta`] the instance metadata; [`storage::backup`] backups and
//!   restores.
//! - [`resp`]: the data port — framing, one task per connection, the commands.
//! - [`admin`]: the HTTP/JSON admin API (Unix socket and token-protected TCP) and its client.
//! - [`server`]: wires storage, writer, data port and admin API together; startup and
//!   shutdown order.
//! - [`metrics`]: Prometheus metrics. [`limits`]: every bound, in one place.
//! - [`shutdown`]: the shutdown signal. [`cli`]: `strand-engine run` and `strand-engine ctl`.
//! - [`version`]: the binary, format and protocol versions and what is compatible with what.

pub mod admin;
pub mod cli;
pub mod limits;
pub mod metrics;
pub mod replication;
pub mod resp;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod version;

pub use version::VERSION;
