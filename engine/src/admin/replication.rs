//! Admin routes for replication: roles, receiver, sources, backlog, rollback.
//!
//! | method | path                       | GT.M equivalent                                      |
//! |--------|----------------------------|------------------------------------------------------|
//! | POST   | /v1/promote                | source server `-updok` / `-rootprimary`              |
//! | POST   | /v1/demote                 | `-updnotok` / `-propagateprimary` (writes nothing)   |
//! | POST   | /v1/failover               | GemStone failover to standby: failover record, then read-only |
//! | POST   | /v1/lease                  | grant/renew the primary's role lease for its term    |
//! | POST   | /v1/prepare-upgrade        | GemStone step 1–2: create what the next format needs (a journaled write) |
//! | POST   | /v1/upgrade-format         | GemStone `upgradeImage`: the `Upgrade` record, the data moves to this binary's format |
//! | POST   | /v1/receiver/start         | `mupip replicate -receiver -start [-autorollback]`; SI: `-noresync`, `-updateresync=file`, `-reuse`; BC: `seed` (ours) |
//! | POST   | /v1/receiver/stop          | `mupip replicate -receiver -shutdown`                |
//! | POST   | /v1/sources                | `mupip replicate -source -start -secondary=…`        |
//! | DELETE | /v1/sources/{receiver}     | `mupip replicate -source -shutdown`                  |
//! | GET    | /v1/backlog                | `mupip replicate -source -showbacklog`               |
//! | POST   | /v1/rollback               | `mupip journal -rollback -backward [-fetchresync]`   |

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::engine::Engine;
use crate::limits::LEASE_MS_MAX;
use crate::replication::si::{Resync, SiPlan};
use crate::replication::source::{self, SourceStatus};
use crate::replication::{SOURCES_MAX, history};
use crate::storage::journal::RecordKind;
use crate::storage::meta::{HistoryRecord, LastRollback, ReceiverConfig, Role, SourceLink, StreamState};
use crate::storage::writer::{Marker, TxnFailure};

fn failure(e: TxnFailure) -> ApiError {
    match e {
        TxnFailure::Store { code: "invalid", message } => {
            let message = message.trim_start_matches("invalid instance: ");
            match message.strip_prefix(STALE_TERM) {
                Some(m) => ApiError::new(StatusCode::CONFLICT, "stale_term", m.to_owned()),
                None => ApiError::new(StatusCode::CONFLICT, "conflict", message.to_owned()),
            }
        }
        TxnFailure::Store { code: "needs_reseed", message } => {
            ApiError::new(StatusCode::CONFLICT, "needs_reseed", message)
        }
        TxnFailure::Store { code, message } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message),
        TxnFailure::Aborted(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoleAnswer {
    pub name: String,
    pub role: String,
    pub journal_seqno: u64,
    pub term: u64,
}

async fn role_answer(engine: &Engine) -> Json<RoleAnswer> {
    let meta = engine.store.meta();
    Json(RoleAnswer {
        name: meta.name,
        role: meta.role.as_str().into(),
        journal_seqno: engine.store.committed_seqno(),
        term: meta.term,
    })
}

/// Marks refusals of a stale term, so [`failure`] answers them with their own code.
const STALE_TERM: &str = "stale term: ";

/// Body of `POST /v1/promote` (optional: an empty body promotes at the next term, no lease).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The family term this promotion begins. Must be above the instance's term — or equal to
    /// it when the instance already is primary at that term (a repeated call). Absent: one
    /// above the instance's term.
    #[serde(default)]
    pub term: Option<u64>,
    /// Take writes only while a role lease (`POST /v1/lease`) runs; none is running until the
    /// first grant. Without it a lease is no longer required (a person's `ctl promote`).
    #[serde(default)]
    pub lease: bool,
}

/// Body of `POST /v1/demote` and `POST /v1/failover` (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoteRequest {
    /// The family's current term, adopted if higher than the instance's.
    #[serde(default)]
    pub term: Option<u64>,
}

/// Body of `POST /v1/lease`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The term the lease is for: the instance must be a writable primary at exactly it.
    pub term: u64,
    /// How long writes are accepted from the moment the engine receives this.
    pub duration_ms: u64,
    /// Wall-clock bound (Unix milliseconds) the grant never runs past, set by the sender to
    /// when it sent it plus the lease: a grant delayed in transit (a frozen process, a
    /// buffered connection) cannot run longer than the sender counts on. Assumes clocks
    /// within a few seconds of each other (NTP).
    #[serde(default)]
    pub not_after_unix_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub name: String,
    pub term: u64,
    pub remaining_ms: u64,
}

/// Parses an optional JSON body: empty means the defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid JSON body: {e}")))
}

/// Become an originating primary: accept updates, stop receiving, and start a new history
/// record so the seqnos generated from here on are told apart from anyone else's.
pub async fn promote(
    State(engine): State<Arc<Engine>>,
    body: axum::body::Bytes,
) -> Result<Json<RoleAnswer>, ApiError> {
    let request: PromoteRequest = optional_body(&body)?;
    let changed = engine
        .writer
        .update_meta(Box::new(move |meta, seqno| {
            let target = if meta.supplementary { Role::SupplementaryPrimary } else { Role::Primary };
            let term = request.term.unwrap_or(meta.term + 1);
            if meta.role == target && (request.term.is_none() || term == meta.term) {
                meta.lease_required = request.lease;
                return Ok(None);
            }
            if term <= meta.term {
                return Err(format!(
                    "{STALE_TERM}{} is at term {}; a promotion needs a higher term than {term}",
                    meta.name, meta.term
                ));
            }
            meta.term = term;
            meta.lease_required = request.lease;
            if meta.role == target {
                return Ok(None);
            }
            meta.role = target;
            meta.receiver = None;
            meta.history.retain(|h| h.start_seqno <= seqno);
            meta.history.push(HistoryRecord {
                stream: 0,
                start_seqno: seqno + 1,
                root_name: meta.name.clone(),
                root_creation_id: meta.creation_id.clone(),
                journal_seqno: seqno,
            });
            Ok(None)
        }))
        .await
        .map_err(failure)?;
    engine.replication.drop_receiver_connection();
    engine.store.set_source_name(None);
    tracing::info!(term = changed.term, lease = changed.lease_required, "promoted to originating primary");
    Ok(role_answer(&engine).await)
}

/// Become a replicating secondary (read-only), writing nothing: what a crashed primary does
/// before it rejoins under the new primary.
pub async fn demote(
    State(engine): State<Arc<Engine>>,
    body: axum::body::Bytes,
) -> Result<Json<RoleAnswer>, ApiError> {
    let request: DemoteRequest = optional_body(&body)?;
    to_secondary(&engine, false, request.term).await
}

/// The planned handover (GemStone's "failover to standby"): commits stop, a failover record
/// is committed — and replicated, so the standby sees the primary has handed over at exactly
/// that seqno — and the instance turns read-only.
pub async fn failover(
    State(engine): State<Arc<Engine>>,
    body: axum::body::Bytes,
) -> Result<Json<RoleAnswer>, ApiError> {
    let request: DemoteRequest = optional_body(&body)?;
    to_secondary(&engine, true, request.term).await
}

async fn to_secondary(
    engine: &Arc<Engine>,
    record: bool,
    term: Option<u64>,
) -> Result<Json<RoleAnswer>, ApiError> {
    let before = engine.store.meta().term;
    let after = engine
        .writer
        .update_meta(Box::new(move |meta, _| {
            if let Some(term) = term {
                meta.term = meta.term.max(term);
            }
            if meta.role == Role::Secondary {
                return if record {
                    Err(format!(
                        "{} is already a replicating secondary; only a primary can fail over",
                        meta.name
                    ))
                } else {
                    Ok(None)
                };
            }
            crate::storage::meta::to_secondary(meta);
            Ok(record.then(Marker::failover))
        }))
        .await
        .map_err(failure)?;
    drop_stale_stream(engine, before, after.term);
    tracing::info!(failover_record = record, term = after.term, "now a replicating secondary");
    Ok(role_answer(engine).await)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpgradeAnswer {
    pub name: String,
    pub journal_seqno: u64,
    pub format_version: u32,
    pub binary_version: String,
}

fn upgrade_answer(engine: &Engine) -> Json<UpgradeAnswer> {
    let meta = engine.store.meta();
    Json(UpgradeAnswer {
        name: meta.name,
        journal_seqno: engine.store.committed_seqno(),
        format_version: meta.format_version,
        binary_version: crate::VERSION.to_owned(),
    })
}

/// The seed's steps 1–2 on the older primary: create what the next format needs before the
/// switch (`#OptimizedSelectors`), as an ordinary journaled write that replicates. Run by the
/// older binary (every binary has this call). Repeating it is harmless.
pub async fn prepare_upgrade(State(engine): State<Arc<Engine>>) -> Result<Json<UpgradeAnswer>, ApiError> {
    if !matches!(engine.store.role(), Role::Primary | Role::SupplementaryPrimary | Role::Standalone) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            "prepare-upgrade runs on the family's primary: it is a write that replicates to the others",
        ));
    }
    if let Some(refusal) = engine.store.write_refusal() {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_writable", refusal));
    }
    let prepared = engine.store.snapshot()?.get(crate::storage::format::PREPARED_KEY)?.is_some();
    if !prepared {
        engine
            .writer
            .system(crate::storage::format::PREPARED_KEY.to_vec(), b"1".to_vec(), None)
            .await
            .map_err(failure)?;
        tracing::info!("prepared the data for the next format");
    }
    Ok(upgrade_answer(&engine))
}

/// The seed's step 6 on the new primary (GemStone's `upgradeImage`): commit the `Upgrade`
/// record, moving the data to this binary's format in the same transaction. Secondaries
/// upgrade by replaying it. Clients are served from then on.
pub async fn upgrade_format(State(engine): State<Arc<Engine>>) -> Result<Json<UpgradeAnswer>, ApiError> {
    let meta = engine.store.meta();
    if meta.format_version >= crate::version::FORMAT {
        return Ok(upgrade_answer(&engine)); // done already: a repeated call
    }
    if !matches!(meta.role, Role::Primary | Role::SupplementaryPrimary | Role::Standalone) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            format!(
                "{} is {}: the format is upgraded on the family's primary, and its secondaries follow by replaying the upgrade record",
                meta.name,
                meta.role.as_str()
            ),
        ));
    }
    if let Some(refusal) = engine.store.role_refusal() {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_writable", refusal));
    }
    let to = meta.format_version + 1;
    let value = to.to_string().into_bytes();
    engine
        .writer
        .system(crate::storage::format::FORMAT_KEY.to_vec(), value, Some(to))
        .await
        .map_err(failure)?;
    tracing::info!(to, "format upgraded: the upgrade record replicates to the family");
    Ok(upgrade_answer(&engine))
}

/// A higher term learned through the admin API ends the stream being received: it may come
/// from a deposed primary, which then reconnects, is refused and learns the term itself.
fn drop_stale_stream(engine: &Engine, before: u64, after: u64) {
    if after > before {
        engine.replication.drop_receiver_connection();
    }
}

/// Grants or renews the role lease of a primary at `term` (the operator's confirmation that
/// this instance is still its family's primary). The first grant makes a lease required
/// from then on, across restarts.
pub async fn lease(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<LeaseAnswer>, ApiError> {
    let Json(request) = body?;
    if request.duration_ms == 0 || request.duration_ms > LEASE_MS_MAX {
        return Err(bad_request("bad_request", format!("duration_ms must be 1 to {LEASE_MS_MAX}")));
    }
    let meta = engine.store.meta();
    if !matches!(meta.role, Role::Primary | Role::SupplementaryPrimary) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            format!("{} is {}; only a primary holds a role lease", meta.name, meta.role.as_str()),
        ));
    }
    if meta.term != request.term {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_term",
            format!(
                "{} is at term {}, not {}; the lease is for another term",
                meta.name, meta.term, request.term
            ),
        ));
    }
    if !meta.lease_required {
        let term = request.term;
        engine
            .writer
            .update_meta(Box::new(move |meta, _| {
                if meta.term != term || !matches!(meta.role, Role::Primary | Role::SupplementaryPrimary) {
                    return Err(format!("{STALE_TERM}{} changed role or term meanwhile", meta.name));
                }
                meta.lease_required = true;
                Ok(None)
            }))
            .await
            .map_err(failure)?;
    }
    let mut duration = std::time::Duration::from_millis(request.duration_ms);
    if let Some(not_after) = request.not_after_unix_ms {
        let now = crate::storage::now_micros() / 1000;
        if not_after <= now {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "lease_expired",
                format!(
                    "this grant ran out {} ms before it arrived (sent too long ago, or the clocks disagree): not granted",
                    now - not_after
                ),
            ));
        }
        duration = duration.min(std::time::Duration::from_millis(not_after - now));
    }
    engine.store.grant_lease(duration);
    Ok(Json(LeaseAnswer {
        name: meta.name,
        term: meta.term,
        remaining_ms: engine
            .store
            .lease_remaining()
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverStart {
    #[serde(default)]
    pub autorollback: bool,
    /// Receive an SI stream (supplementary instances) instead of BC.
    #[serde(default)]
    pub si: bool,
    /// SI only: when ahead, resume from the common point without rolling back.
    #[serde(default)]
    pub noresync: bool,
    /// BC: when the source's journal no longer reaches back far enough, replace this
    /// instance's data with a snapshot of the source's instead of refusing. SI: a family's
    /// first stream into an instance that holds nothing of its own begins from the source's
    /// snapshot (in place of `updateresync`).
    #[serde(default)]
    pub seed: bool,
    /// SI only, first start for a family: path of a backup of a member of the source family
    /// whose data this instance holds; seeds the stream's history and position.
    #[serde(default)]
    pub updateresync: Option<String>,
    /// With `updateresync` when all 15 streams are in use: the family whose stream to reuse.
    #[serde(default)]
    pub reuse: Option<String>,
    /// SI only, first start for a family, instead of `updateresync`: the replication address
    /// of a member of the family that holds no transactions yet (so there is nothing to load);
    /// its history is fetched over the authenticated replication protocol.
    #[serde(default)]
    pub updateresync_from: Option<String>,
    /// BC: the family's current term, adopted if higher (a stream from a source below it is
    /// then refused).
    #[serde(default)]
    pub term: Option<u64>,
}

fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Checks the combination of receiver options (GT.M's NORESYNCSUPPLONLY and friends).
fn check_receiver_options(r: &ReceiverStart) -> Result<(), ApiError> {
    if r.noresync && !r.si {
        return Err(bad_request(
            "noresync_suppl_only",
            "--noresync applies only to SI streams (GT.M NORESYNCSUPPLONLY); a BC receiver that is ahead rolls back (--autorollback) or refuses",
        ));
    }
    if r.seed && (r.updateresync.is_some() || r.updateresync_from.is_some()) {
        return Err(bad_request(
            "bad_request",
            "--seed joins a family from the source's snapshot, --updateresync and --updateresync-from from a backup or an empty member: give one of them",
        ));
    }
    if r.noresync && r.autorollback {
        return Err(bad_request(
            "bad_request",
            "choose one of --autorollback (roll back when ahead) and --noresync (keep and resume)",
        ));
    }
    if r.updateresync.is_some() && !r.si {
        return Err(bad_request(
            "updateresync_si_only",
            "--updateresync is for SI receivers; a BC receiver negotiates from the history its backup carries",
        ));
    }
    if r.updateresync_from.is_some() && (!r.si || r.updateresync.is_some()) {
        return Err(bad_request(
            "bad_request",
            "--updateresync-from is for SI receivers, in place of --updateresync (give one of them)",
        ));
    }
    if r.reuse.is_some() && r.updateresync.is_none() && r.updateresync_from.is_none() {
        return Err(bad_request(
            "bad_request",
            "--reuse goes with --updateresync (a first start for a new family)",
        ));
    }
    Ok(())
}

/// What seeds a new SI stream: the family's position and history.
struct Seed {
    seqno: u64,
    history: Vec<HistoryRecord>,
    from: String,
}

/// Seeds from a family member over the network: only while it holds nothing (there is no data
/// to load, so its empty state trivially matches this instance's).
async fn fetch_seed(engine: &Engine, addr: &str) -> Result<Seed, ApiError> {
    let answer = source::query(engine, addr).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "updateresync_failed", crate::base::error_chain(&e))
    })?;
    if answer.supplementary {
        return Err(bad_request(
            "bad_seed",
            format!("{addr} is supplementary; SI streams come only from non-supplementary families"),
        ));
    }
    if answer.seqno != 0 {
        return Err(bad_request(
            "seed_not_empty",
            format!(
                "{addr} already holds {} transactions; seed from a backup of it loaded into this instance (--updateresync BACKUP)",
                answer.seqno
            ),
        ));
    }
    Ok(Seed { seqno: 0, history: answer.history, from: addr.to_owned() })
}

/// A backup that is to seed an SI stream: its seqno and the history it carries.
fn read_seed(path: &str) -> Result<Seed, ApiError> {
    let p = std::path::Path::new(path);
    let info = crate::storage::backup::describe(p)?;
    let meta = crate::storage::backup::backup_meta(p)?;
    if meta.supplementary {
        return Err(bad_request(
            "bad_backup",
            format!(
                "{path} is a backup of the supplementary {}; SI streams come only from non-supplementary families",
                meta.name
            ),
        ));
    }
    if crate::storage::meta::family_root(&meta.history).is_none() {
        return Err(bad_request("bad_backup", format!("{path} carries no history records")));
    }
    Ok(Seed { seqno: info.journal_seqno, history: meta.history, from: path.to_owned() })
}

pub async fn receiver_start(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<ReceiverStart>, JsonRejection>,
) -> Result<Json<crate::replication::ReceiverStatus>, ApiError> {
    let Json(request) = body?;
    if engine.repl_local.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_repl_addr",
            "this server was started without --repl-addr; restart it with one to receive",
        ));
    }
    check_receiver_options(&request)?;
    let seed = match (request.updateresync.clone(), request.updateresync_from.as_deref()) {
        (Some(path), _) => Some(
            tokio::task::spawn_blocking(move || read_seed(&path))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??,
        ),
        (None, Some(addr)) => Some(fetch_seed(&engine, addr).await?),
        (None, None) => None,
    };
    let config = ReceiverConfig {
        autorollback: request.autorollback,
        si: request.si,
        noresync: request.noresync,
        seed: request.seed,
    };
    let reuse = request.reuse.clone();
    let term = request.term;
    let before = engine.store.meta().term;
    let after = engine
        .writer
        .update_meta(Box::new(move |meta, seqno| {
            if !config.si {
                if matches!(meta.role, Role::Primary | Role::SupplementaryPrimary) {
                    return Err(format!(
                        "{} is an originating primary; demote it first (ctl demote) to make it receive",
                        meta.name
                    ));
                }
                meta.role = Role::Secondary;
                meta.receiver = Some(config);
                if let Some(term) = term {
                    meta.term = meta.term.max(term);
                }
                return Ok(None);
            }
            if !meta.supplementary {
                return Err(format!(
                    "{} is not supplementary; SI streams go only into supplementary instances (create one with --supplementary)",
                    meta.name
                ));
            }
            if meta.role == Role::Secondary {
                return Err(if config.noresync {
                    format!(
                        "{} does not accept updates (it is a BC replicating secondary); --noresync needs an instance that does (GT.M NORESYNCUPDATERONLY): promote it first",
                        meta.name
                    )
                } else {
                    format!(
                        "{} is a BC replicating secondary; promote it (ctl promote) before it receives an SI stream",
                        meta.name
                    )
                });
            }
            meta.role = Role::SupplementaryPrimary;
            meta.receiver = Some(config);
            let Some(Seed { seqno: base, history, from }) = seed else { return Ok(None) };
            let root = crate::storage::meta::family_root(&history)
                .cloned()
                .ok_or_else(|| "the backup carries no history records".to_owned())?;
            let stream = crate::replication::streams::allocate(meta, &root, reuse.as_deref())?;
            let state = StreamState::begin(stream, &history, base, seqno + 1, 0)
                .ok_or_else(|| "the backup carries no history records".to_owned())?;
            meta.streams.retain(|s| s.stream != stream);
            meta.streams.push(state);
            meta.streams.sort_by_key(|s| s.stream);
            tracing::info!(stream, family = %root.root_name, base, %from, "SI stream seeded (updateresync)");
            Ok(Some(Marker { kind: RecordKind::StreamBase, stream, stream_seqno: base }))
        }))
        .await
        .map_err(failure)?;
    drop_stale_stream(&engine, before, after.term);

    engine.replication.set_receiver(|s| {
        if s.state.is_empty() || s.state == "stopped" {
            s.state = "idle".into();
        }
    });
    Ok(Json(engine.replication.receiver_status()))
}

pub async fn receiver_stop(
    State(engine): State<Arc<Engine>>,
) -> Result<Json<crate::replication::ReceiverStatus>, ApiError> {
    engine
        .writer
        .update_meta(Box::new(|meta, _| {
            meta.receiver = None;
            Ok(None)
        }))
        .await
        .map_err(failure)?;
    engine.replication.drop_receiver_connection();
    engine.replication.set_receiver(|s| s.state = "stopped".into());
    Ok(Json(engine.replication.receiver_status()))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStart {
    pub receiver: String,
    pub addr: String,
    /// An SI stream (the receiver is supplementary) instead of BC.
    #[serde(default)]
    pub si: bool,
}

pub async fn source_start(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<SourceStart>, JsonRejection>,
) -> Result<Json<Vec<SourceStatus>>, ApiError> {
    let Json(request) = body?;
    crate::storage::meta::validate_name(&request.receiver)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    if request.addr.parse::<std::net::SocketAddr>().is_err() && !request.addr.contains(':') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_addr",
            format!("{:?} is not HOST:PORT", request.addr),
        ));
    }
    if engine.replication.secret.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_secret",
            "this server was started without --repl-secret-file; replication needs the shared secret",
        ));
    }
    let link = SourceLink { receiver: request.receiver.clone(), addr: request.addr.clone(), si: request.si };
    let stored = link.clone();
    engine
        .writer
        .update_meta(Box::new(move |meta, _| {
            if stored.receiver == meta.name {
                return Err(format!("{} cannot replicate to itself", meta.name));
            }
            if stored.si && meta.supplementary {
                return Err(format!(
                    "{} is supplementary: it cannot source an SI stream (it can source BC to supplementary instances)",
                    meta.name
                ));
            }
            meta.sources.retain(|s| s.receiver != stored.receiver);
            if meta.sources.len() >= SOURCES_MAX {
                return Err(format!(
                    "{} already sources {SOURCES_MAX} streams, the most an instance may",
                    meta.name
                ));
            }
            meta.sources.push(stored);
            Ok(None)
        }))
        .await
        .map_err(failure)?;
    let handle = source::spawn(engine.core.clone(), link);
    if let Some(old) = engine
        .replication
        .sources
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(request.receiver, handle)
    {
        old.stop();
    }
    Ok(backlog_list(&engine))
}

pub async fn source_stop(
    State(engine): State<Arc<Engine>>,
    Path(receiver): Path<String>,
) -> Result<Json<Vec<SourceStatus>>, ApiError> {
    let name = receiver.clone();
    engine
        .writer
        .update_meta(Box::new(move |meta, _| {
            meta.sources.retain(|s| s.receiver != name);
            Ok(None)
        }))
        .await
        .map_err(failure)?;
    let removed = engine
        .replication
        .sources
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&receiver);
    match removed {
        // The reply waits until the stream has ended: a write after it is not sent.
        Some(handle) => handle.stop_and_wait().await,
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_source",
                format!("no stream to {receiver}"),
            ));
        }
    }
    Ok(backlog_list(&engine))
}

fn backlog_list(engine: &Engine) -> Json<Vec<SourceStatus>> {
    let committed = engine.store.committed_seqno();
    Json(
        engine
            .replication
            .source_statuses()
            .into_iter()
            .map(|s| source::finish_status(s, committed))
            .collect(),
    )
}

pub async fn backlog(State(engine): State<Arc<Engine>>) -> Json<Vec<SourceStatus>> {
    backlog_list(&engine)
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub to_seqno: Option<u64>,
    /// HOST:PORT of the replication listener of the instance to resynchronise with.
    pub fetchresync: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RollbackAnswer {
    pub journal_seqno: u64,
    /// `None` when there was nothing to roll back.
    pub rollback: Option<LastRollback>,
}

/// `rollback --fetchresync` of a supplementary instance against a member of an SI source
/// family: roll back to just before the first transaction of that family's stream the member
/// does not have (local transactions after it go too, as the seed explains).
async fn fetchresync_si(
    engine: &Engine,
    addr: &str,
    answer: &crate::replication::protocol::HistoryAnswer,
) -> Result<(u64, String), ApiError> {
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m);
    let n = crate::replication::streams::negotiate(
        engine,
        addr,
        &answer.history,
        answer.seqno,
        Resync::Autorollback,
    )
    .await
    .map_err(|e| {
        let code = match &e {
            crate::replication::streams::StreamError::Store(s) if s.code() == "needs_reseed" => {
                "needs_reseed"
            }
            _ => "conflict",
        };
        ApiError::new(StatusCode::CONFLICT, code, crate::base::error_chain(&e))
    })?;
    let committed = engine.store.committed_seqno();
    match n.plan {
        SiPlan::Rollback { to_seqno, from } => Ok((
            to_seqno,
            format!(
                "fetchresync with {addr}: stream {} ({}) common point {}, rolling back to seqno {to_seqno}",
                n.stream,
                n.family,
                from - 1
            ),
        )),
        SiPlan::Reseed { common, base } => Err(conflict(format!(
            "stream {} ({}) began from a backup at family seqno {base} but {addr} agrees only up to {common}; no rollback can help: re-create this instance from a newer backup",
            n.stream, n.family
        ))),
        SiPlan::Stream { .. } | SiPlan::NoResync { .. } | SiPlan::Refuse { .. } => {
            Ok((committed, format!("fetchresync with {addr}: stream {} is not ahead", n.stream)))
        }
    }
}

pub async fn rollback(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Json<RollbackAnswer>, ApiError> {
    let Json(request) = body?;
    let (to, reason) = match (request.to_seqno, request.fetchresync) {
        (Some(to), None) => (to, format!("rollback to seqno {to} requested by an operator")),
        (None, Some(addr)) => {
            let answer = source::query(&engine, &addr).await.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, "fetchresync_failed", crate::base::error_chain(&e))
            })?;
            let meta = engine.store.meta();
            if meta.supplementary && !answer.supplementary {
                fetchresync_si(&engine, &addr, &answer).await?
            } else {
                let common = history::common_point(
                    &meta.history,
                    engine.store.committed_seqno(),
                    &answer.history,
                    answer.seqno,
                );
                (common, format!("fetchresync with {addr}: common point {common}"))
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of to_seqno and fetchresync",
            ));
        }
    };
    // A primary rolling itself back stays a primary: the seqnos it reuses need a new history
    // record (A97a is not A97).
    let new_epoch = matches!(engine.store.role(), Role::Primary | Role::SupplementaryPrimary);
    let done = engine.writer.rollback(to, new_epoch, reason).await.map_err(failure)?;
    if let Some(done) = &done {
        engine.metrics.rollbacks_total.inc();
        engine.metrics.rolled_back_transactions_total.inc_by(done.transactions);
    }
    Ok(Json(RollbackAnswer { journal_seqno: engine.store.committed_seqno(), rollback: done }))
}
