//! The admin API: HTTP/JSON on a Unix socket in the data directory (trusted: file
//! permissions guard it) and, optionally, on a TCP address that requires a bearer token.
//!
//! Routes (all JSON; errors are `{"error": {"code", "message"}}` with a fitting status):
//!
//! | method | path            | does                                                      |
//! |--------|-----------------|-----------------------------------------------------------|
//! | GET    | /healthz        | liveness: the process answers                             |
//! | GET    | /readyz         | readiness: listeners up and storage open                  |
//! | GET    | /metrics        | Prometheus text format                                    |
//! | GET    | /v1/status      | identity, role, seqnos per stream, versions, uptime       |
//! | POST   | /v1/instance    | confirm creation of this instance (name, supplementary)   |
//! | GET    | /v1/journal     | journal records `from..=to` (at most 1000)                |
//! | POST   | /v1/backup      | consistent backup to an absolute path on the server       |
//! | GET    | /v1/verify      | full journal/data consistency check                       |
//! | GET    | /v1/lost-transactions | the unreplicated-transaction logs in the data directory |
//! | GET    | /v1/lost-transactions/{file} | one log: header and transactions (as `ctl lost-transactions show --json`) |
//!
//! `/healthz`, `/readyz` and `/metrics` need no token, so probes and scrapers can reach them.

pub mod client;
pub mod replication;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::base::{error_chain, hex};
use crate::engine::Engine;
use crate::limits::{ADMIN_BODY_BYTES_MAX, JOURNAL_READ_RECORDS_MAX, LOST_LOG_SERVE_BYTES_MAX};
use crate::shutdown::Shutdown;
use crate::storage::journal::Record;
use crate::storage::meta::HistoryRecord;
use crate::storage::{StoreError, backup};

/// Header carrying the admin token where `Authorization` cannot (through a proxy that
/// authenticates with it itself).
pub const TOKEN_HEADER: &str = "x-strand-token";

/// File name of the admin socket inside the data directory.
pub const SOCKET_FILE: &str = "admin.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// An admin error: HTTP status, a stable code, and a message saying what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status: status.as_u16(), code: code.to_owned(), message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: self })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
            StoreError::NameMismatch { .. } | StoreError::JournalTrimmed { .. } => StatusCode::CONFLICT,
            StoreError::DiskFull { .. } | StoreError::Recovering | StoreError::WriterGone => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error_chain(&e), "admin request failed");
        }
        ApiError::new(status, e.code(), error_chain(&e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {ADMIN_BODY_BYTES_MAX} bytes"),
            );
        }
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid query: {}", r.body_text()))
    }
}

/// Running admin listeners.
pub struct Admin {
    tasks: Vec<JoinHandle<()>>,
}

impl Admin {
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/instance", post(create_instance))
        .route("/v1/journal", get(journal))
        .route("/v1/backup", post(backup_handler))
        .route("/v1/verify", get(verify))
        .route("/v1/lost-transactions", get(lost_logs))
        .route("/v1/lost-transactions/{file}", get(lost_log))
        .route("/v1/promote", post(replication::promote))
        .route("/v1/demote", post(replication::demote))
        .route("/v1/failover", post(replication::failover))
        .route("/v1/lease", post(replication::lease))
        .route("/v1/prepare-upgrade", post(replication::prepare_upgrade))
        .route("/v1/upgrade-format", post(replication::upgrade_format))
        .route("/v1/receiver/start", post(replication::receiver_start))
        .route("/v1/receiver/stop", post(replication::receiver_stop))
        .route("/v1/sources", post(replication::source_start))
        .route("/v1/sources/{receiver}", axum::routing::delete(replication::source_stop))
        .route("/v1/backlog", get(replication::backlog))
        .route("/v1/rollback", post(replication::rollback))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint; see GET /v1/status")
        })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_BYTES_MAX))
        .with_state(engine)
}

/// The admin API could not listen where it was told to.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind {what} on {addr}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds the Unix socket (and the TCP listener if configured) and starts serving.
pub async fn start(engine: Arc<Engine>, shutdown: Shutdown) -> Result<Admin, BindError> {
    let mut tasks = Vec::new();
    let path = socket_path(engine.store.data_dir());
    // A socket file left by a killed server would make bind fail; nobody can be serving on it
    // because the database lock is already ours.
    let _ = std::fs::remove_file(&path);
    let unix = tokio::net::UnixListener::bind(&path).map_err(|source| BindError {
        what: "the admin socket",
        addr: path.display().to_string(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let app = router(engine.clone());
    let mut stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(unix, app).with_graceful_shutdown(async move { stop.recv().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin socket server failed");
        }
    }));
    if let Some(addr) = engine.config.admin_addr {
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError {
            what: "the admin port",
            addr: addr.to_string(),
            source,
        })?;
        let protected = Router::new()
            .merge(router(engine.clone()))
            .layer(middleware::from_fn_with_state(engine.clone(), require_token));
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served =
                axum::serve(tcp, protected).with_graceful_shutdown(async move { stop.recv().await }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin TCP server failed");
            }
        }));
    }
    Ok(Admin { tasks })
}

async fn require_token(State(engine): State<Arc<Engine>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let Some(expected) = engine.config.admin_token.as_deref() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "no_token_configured",
            "the TCP admin API is disabled until --admin-token-file is given; use the admin socket",
        )
        .into_response();
    };
    // `X-Strand-Token` as well: the Kubernetes API server's pod proxy (how `kubectl strand`
    // reaches an engine) consumes the Authorization header itself.
    let headers = request.headers();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()));
    match presented {
        Some(token) if crate::base::constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            tracing::warn!(path, "admin request with a missing or wrong bearer token");
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
                .into_response()
        }
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(engine): State<Arc<Engine>>) -> Response {
    let ready = engine.ready.load(Ordering::Acquire) && engine.store.db().is_ok();
    if ready {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the engine is starting, stopping or reopening its storage",
        )
        .into_response()
    }
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    let m = &engine.metrics;
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.storage_bytes.set(int(engine.store.file_bytes()));
    let (free, size) = engine.store.volume().unwrap_or((0, 0));
    m.storage_free_bytes.set(int(free));
    m.volume_size_bytes.set(int(size));
    m.storage_degraded.set(i64::from(engine.store.is_degraded()));
    let meta = engine.store.meta();
    m.data_format_version.set(i64::from(meta.format_version));
    m.version_mismatch.set(i64::from(engine.store.version_mismatch().is_some()));
    m.term.set(int(meta.term));
    m.writable.set(i64::from(meta.role.accepts_updates() && engine.store.write_refusal().is_none()));
    let family =
        crate::storage::meta::family_root(&meta.history).map_or(meta.name.as_str(), |r| r.root_name.as_str());
    m.instance_info.reset();
    m.instance_info
        .with_label_values(&[
            meta.name.as_str(),
            family,
            meta.role.as_str(),
            if meta.supplementary { "true" } else { "false" },
        ])
        .set(1);
    m.receiver_state.reset();
    if meta.receiver.is_some() {
        let state = engine.replication.receiver_status().state;
        for s in crate::metrics::RECEIVER_STATES {
            m.receiver_state
                .with_label_values(&[s])
                .set(i64::from(state == s || (state.is_empty() && s == "idle")));
        }
    }
    let committed = engine.store.committed_seqno();
    // Only the receivers sourced to now (a stopped stream's series goes away).
    m.replication_backlog_transactions.reset();
    m.replication_lag_seconds.reset();
    m.replication_connected.reset();
    m.replication_reseed_required.reset();
    for s in engine.replication.source_statuses() {
        let s = crate::replication::source::finish_status(s, committed);
        m.replication_backlog_transactions
            .with_label_values(&[&s.receiver])
            .set(i64::try_from(s.backlog).unwrap_or(i64::MAX));
        m.replication_lag_seconds.with_label_values(&[&s.receiver]).set(s.lag_seconds);
        m.replication_connected.with_label_values(&[&s.receiver]).set(i64::from(s.state == "streaming"));
        m.replication_reseed_required
            .with_label_values(&[&s.receiver])
            .set(i64::from(s.state == "needs_reseed"));
    }
    m.journal_bytes.set(int(engine.store.journal_bytes()));
    let cache = engine.store.read_cache_stats();
    {
        // The counters catch up with the cache's own counts; two scrapes at once must not
        // both add the same difference.
        static CATCHING_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CATCHING_UP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.read_cache_hits_total.inc_by(cache.hits.saturating_sub(m.read_cache_hits_total.get()));
        m.read_cache_misses_total.inc_by(cache.misses.saturating_sub(m.read_cache_misses_total.get()));
    }
    m.read_cache_bytes.set(int(cache.bytes));
    m.journal_first_seqno.set(int(engine.store.journal_first()));
    if meta.supplementary {
        let seqnos = engine.store.stream_seqnos();
        m.stream_seqno.reset();
        let own = crate::storage::meta::family_root(&meta.history)
            .map_or(meta.name.as_str(), |r| r.root_name.as_str());
        let streams =
            std::iter::once((0u8, own)).chain(meta.streams.iter().map(|s| (s.stream, s.family.as_str())));
        for (stream, family) in streams {
            let seqno = seqnos.get(usize::from(stream)).copied().unwrap_or(0);
            m.stream_seqno
                .with_label_values(&[&stream.to_string(), family])
                .set(i64::try_from(seqno).unwrap_or(i64::MAX));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

/// Per-stream position, as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamStatus {
    pub stream: u8,
    /// Root primary of the family that generated the stream, if known.
    pub source_family: Option<String>,
    /// Last stream seqno this instance holds (for stream 0 of a non-supplementary instance,
    /// the journal seqno).
    pub seqno: u64,
    /// SI streams: the source family's history records, in its seqno space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryRecord>,
}

/// The answer of `GET /v1/status` (and `ctl status --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub creation_id: String,
    pub supplementary: bool,
    pub role: String,
    pub journal_seqno: u64,
    pub streams: Vec<StreamStatus>,
    pub history: Vec<HistoryRecord>,
    /// The data's on-disk format.
    pub format_version: u32,
    pub binary_version: String,
    /// The format this binary writes (above `format_version`: version-mismatch mode).
    pub binary_format_version: u32,
    /// The replication protocol this binary speaks.
    pub protocol_version: u16,
    /// What this binary can do beyond its protocol version, for a client that must work with
    /// older engines too (the operator): `seed` (a BC receiver may be seeded from a snapshot).
    pub features: Vec<String>,
    /// Set in version-mismatch mode: why clients are refused.
    pub version_mismatch: Option<String>,
    /// Whether the data holds what the next format needs (`ctl prepare-upgrade` ran).
    pub upgrade_prepared: bool,
    pub uptime_seconds: u64,
    /// Nodes in the data table (storage::node): a string key is one, a collection one per
    /// element plus its head, an expiring key one more. O(1) to read; DBSIZE counts keys.
    pub nodes: u64,
    pub storage_bytes: u64,
    pub storage_degraded: bool,
    pub resp_port: u16,
    pub repl_addr: Option<String>,
    pub last_rollback: Option<crate::storage::meta::LastRollback>,
    /// The family term this instance last learned.
    pub term: u64,
    /// The role lease (primaries the operator manages).
    pub lease: LeaseView,
    pub receiver: Option<ReceiverView>,
    pub sources: Vec<crate::replication::source::SourceStatus>,
    /// The journal's extent and retention.
    #[serde(default)]
    pub journal: JournalView,
}

/// Where the journal begins, how big it is, what holds it and how much of it is kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalView {
    /// The oldest seqno kept (1 until the journal is trimmed).
    pub first_seqno: u64,
    /// Bytes its records take (database file and overlay).
    pub bytes: u64,
    /// Readers that still need it from some seqno on (replication streams).
    pub pins: Vec<JournalPinView>,
    /// `--journal-keep-bytes`.
    pub keep_bytes: u64,
    /// `--journal-retain-bytes` (absent: no limit).
    pub retain_bytes: Option<u64>,
    /// `--journal-retain-seconds` (absent: no limit).
    pub retain_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalPinView {
    pub holder: String,
    pub from_seqno: u64,
}

/// Whether a role lease is required, and how long the current one still runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseView {
    pub required: bool,
    /// `None` while no lease has been granted since the engine started.
    pub remaining_ms: Option<u64>,
    /// Whether application writes are refused right now, and why.
    pub writes_refused: Option<String>,
}

/// The receiver's configuration and live state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiverView {
    pub autorollback: bool,
    #[serde(default)]
    pub si: bool,
    #[serde(default)]
    pub noresync: bool,
    /// Seeds from a snapshot when the source's journal does not reach back far enough.
    #[serde(default)]
    pub seed: bool,
    #[serde(flatten)]
    pub status: crate::replication::ReceiverStatus,
}

async fn status(State(engine): State<Arc<Engine>>) -> Result<Json<Status>, ApiError> {
    let store = &engine.store;
    let meta = store.meta();
    let seqno = store.committed_seqno();
    let nodes = store.key_counts().nodes;
    let seqnos = store.stream_seqnos();
    let own_family = crate::storage::meta::family_root(&meta.history).map_or(&meta.name, |r| &r.root_name);
    let mut streams = vec![StreamStatus {
        stream: 0,
        source_family: Some(own_family.clone()),
        seqno: if meta.supplementary { seqnos[0] } else { seqno },
        history: Vec::new(),
    }];
    streams.extend(meta.streams.iter().map(|s| StreamStatus {
        stream: s.stream,
        source_family: Some(s.family.clone()),
        seqno: seqnos.get(usize::from(s.stream)).copied().unwrap_or(0),
        history: s.history.clone(),
    }));
    Ok(Json(Status {
        streams,
        name: meta.name,
        creation_id: meta.creation_id,
        supplementary: meta.supplementary,
        role: meta.role.as_str().to_owned(),
        journal_seqno: seqno,
        history: meta.history,
        format_version: meta.format_version,
        binary_version: crate::VERSION.to_owned(),
        binary_format_version: crate::version::FORMAT,
        features: crate::version::FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        protocol_version: crate::version::PROTOCOL,
        version_mismatch: store.version_mismatch(),
        upgrade_prepared: store.snapshot()?.get(crate::storage::format::PREPARED_KEY)?.is_some(),
        uptime_seconds: engine.started.elapsed().as_secs(),
        nodes,
        storage_bytes: store.file_bytes(),
        storage_degraded: store.is_degraded(),
        resp_port: engine.config.resp_port,
        repl_addr: engine.repl_local.map(|a| a.to_string()),
        last_rollback: meta.last_rollback,
        term: meta.term,
        lease: LeaseView {
            required: meta.lease_required,
            remaining_ms: store.lease_remaining().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            writes_refused: store.write_refusal(),
        },
        receiver: meta.receiver.map(|r| ReceiverView {
            autorollback: r.autorollback,
            si: r.si,
            noresync: r.noresync,
            seed: r.seed,
            status: engine.replication.receiver_status(),
        }),
        sources: {
            let committed = store.committed_seqno();
            engine
                .replication
                .source_statuses()
                .into_iter()
                .map(|s| crate::replication::source::finish_status(s, committed))
                .collect()
        },
        journal: {
            let r = engine.config.retention;
            JournalView {
                first_seqno: store.journal_first(),
                bytes: store.journal_bytes(),
                pins: store
                    .journal_pins()
                    .into_iter()
                    .map(|(holder, from_seqno)| JournalPinView { holder, from_seqno })
                    .collect(),
                keep_bytes: r.keep_bytes,
                retain_bytes: r.retain_bytes,
                retain_seconds: r.retain_age.map(|a| a.as_secs()),
            }
        },
    }))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub supplementary: bool,
}

/// The server creates its instance at first start (`run --name`). This call lets a caller
/// confirm the identity it expects: 200 when it matches, 409 when the data directory holds a
/// different instance — never a silent second identity.
async fn create_instance(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Json<Status>, ApiError> {
    let Json(request) = body?;
    crate::storage::meta::validate_name(&request.name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    let meta = engine.store.meta();
    if meta.name != request.name || meta.supplementary != request.supplementary {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "instance_exists",
            format!(
                "this data directory already holds instance {:?} (supplementary: {}); restore or create into a new data directory instead",
                meta.name, meta.supplementary
            ),
        ));
    }
    status(State(engine)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalQuery {
    pub from: u64,
    pub to: Option<u64>,
}

/// One journal record in JSON. Keys and values are hex so that any bytes survive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JournalEntry {
    pub seqno: u64,
    pub kind: crate::storage::journal::RecordKind,
    pub stream: u8,
    pub stream_seqno: u64,
    pub commit_time_micros: u64,
    pub changes: Vec<ChangeEntry>,
}

/// One node a transaction changed, in application terms (storage::node): the key, what the
/// node is (`string`, `hash-field`, `set-member`, `expiry-index`, …), the element it names,
/// and the values an application sees; `node_hex` is the node itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeEntry {
    pub key_hex: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_hex: Option<String>,
    pub before_hex: Option<String>,
    pub after_hex: Option<String>,
    /// A head's expiry before and after, in Unix milliseconds (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_before_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after_ms: Option<u64>,
    pub node_hex: String,
}

impl From<Record> for JournalEntry {
    fn from(r: Record) -> Self {
        JournalEntry {
            seqno: r.seqno,
            kind: r.kind,
            stream: r.stream,
            stream_seqno: r.stream_seqno,
            commit_time_micros: r.commit_time_micros,
            changes: r
                .changes
                .into_iter()
                .map(|c| {
                    let before = crate::storage::node::describe(&c.key, c.before.as_deref());
                    let after = crate::storage::node::describe(&c.key, c.after.as_deref());
                    ChangeEntry {
                        key_hex: hex(&after.key),
                        node: after.node.to_owned(),
                        element_hex: after.element.as_deref().map(hex),
                        before_hex: before.value.as_deref().map(hex),
                        after_hex: after.value.as_deref().map(hex),
                        expire_before_ms: before.expire_at_ms.filter(|_| c.before.is_some()),
                        expire_after_ms: after.expire_at_ms.filter(|_| c.after.is_some()),
                        node_hex: hex(&c.key),
                    }
                })
                .collect(),
        }
    }
}

async fn journal(
    State(engine): State<Arc<Engine>>,
    query: Result<Query<JournalQuery>, QueryRejection>,
) -> Result<Json<Vec<JournalEntry>>, ApiError> {
    let Query(q) = query?;
    let to = q.to.unwrap_or(q.from.saturating_add(JOURNAL_READ_RECORDS_MAX - 1));
    if q.from == 0 || to < q.from {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_range", "need 1 <= from <= to"));
    }
    if to - q.from >= JOURNAL_READ_RECORDS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "range_too_large",
            format!("at most {JOURNAL_READ_RECORDS_MAX} records per call; page with from/to"),
        ));
    }
    let view = engine.store.journal_view()?;
    let records = tokio::task::block_in_place(|| view.journal(q.from, to))?;
    Ok(Json(records.into_iter().map(JournalEntry::from).collect()))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    pub path: PathBuf,
}

async fn backup_handler(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<BackupRequest>, JsonRejection>,
) -> Result<Json<backup::BackupInfo>, ApiError> {
    let Json(request) = body?;
    // The backup copies the database file: first bring it up to date from the journal.
    engine.writer.checkpoint().await.map_err(|e| match e {
        crate::storage::writer::TxnFailure::Store { code, message } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
        crate::storage::writer::TxnFailure::Aborted(message) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", message)
        }
    })?;
    let store = engine.store.clone();
    let info = tokio::task::spawn_blocking(move || backup::backup(&store, &request.path))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(info))
}

/// One unreplicated-transaction log in the data directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct LostLogEntry {
    pub file: String,
    pub path: String,
    pub bytes: u64,
}

async fn lost_logs(State(engine): State<Arc<Engine>>) -> Result<Json<Vec<LostLogEntry>>, ApiError> {
    let dir = engine.store.data_dir().join(crate::storage::lostlog::DIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Json(out)),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io",
                format!("{}: {e}", dir.display()),
            ));
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jsonl") {
            continue; // pending logs of an unfinished rollback are not logs yet
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(LostLogEntry { path: entry.path().display().to_string(), file: name, bytes });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(Json(out))
}

async fn lost_log(
    State(engine): State<Arc<Engine>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if file.contains('/') || file.starts_with('.') || !file.ends_with(".jsonl") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{file:?} is not a log file name"),
        ));
    }
    let path = engine.store.data_dir().join(crate::storage::lostlog::DIR).join(&file);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no log {file}; GET /v1/lost-transactions lists them"),
            ));
        }
    };
    if size > LOST_LOG_SERVE_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{file} holds {size} bytes, more than {LOST_LOG_SERVE_BYTES_MAX} served here; read it with `strand-engine ctl lost-transactions show` in the instance's volume"
            ),
        ));
    }
    let (header, txns) = tokio::task::spawn_blocking(move || crate::storage::lostlog::read(&path))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", error_chain(&e)))?;
    Ok(Json(serde_json::json!({"header": header, "transactions": txns})))
}

async fn verify(State(engine): State<Arc<Engine>>) -> Result<Json<crate::storage::VerifyReport>, ApiError> {
    let store = engine.store.clone();
    let report = tokio::task::spawn_blocking(move || store.journal_view()?.verify())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| match e {
            e @ (StoreError::JournalCorrupt { .. } | StoreError::RecordDecode { .. }) => {
                ApiError::new(StatusCode::CONFLICT, e.code(), error_chain(&e))
            }
            e => ApiError::from(e),
        })?;
    Ok(Json(report))
}
