//! The engine admin API client — the only code that calls it: HTTP/1.1 over TCP to
//! `podIP:8080` with the instance's bearer token. Every call has a deadline; errors say which
//! engine and what it answered.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::engine_status::EngineStatus;
use crate::family::Action;

/// Header carrying the admin token through a proxy that keeps `Authorization` for itself (the
/// API server's pod proxy, used by `kubectl strand`).
pub const TOKEN_HEADER: &str = "x-strand-token";

/// How long one admin call may take (a receiver start or rollback with a big log included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a status read or a lease grant may take. A lease grant that has not answered by
/// then may still take effect when it arrives: the lease book counts it (docs/lifecycle.md).
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the engine admin API at {addr}")]
    Connect { addr: String, source: std::io::Error },
    #[error("admin call to {addr} failed")]
    Http { addr: String, source: hyper::Error },
    #[error("admin call to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("{addr} answered {status}: {message} ({code})")]
    Api { addr: String, status: u16, code: String, message: String },
    #[error("{addr} answered {status} with an unreadable body")]
    Decode { addr: String, status: u16, source: serde_json::Error },
    #[error("bad admin request: {0}")]
    Build(String),
}

impl EngineError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Connect { .. } => "connect",
            EngineError::Http { .. } | EngineError::Build(_) => "http",
            EngineError::Timeout { .. } => "timeout",
            EngineError::Api { .. } => "api",
            EngineError::Decode { .. } => "decode",
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// One admin call; the answer's JSON.
pub async fn call(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, EngineError> {
    tokio::time::timeout(timeout, call_inner(addr, token, method, path, body))
        .await
        .map_err(|_| EngineError::Timeout { addr: addr.to_owned(), after: timeout })?
}

/// Method, path, body and deadline of the admin request that carries out `action`. A lease
/// grant runs `lease` from when the engine receives it but never past `lease_not_after`
/// (Unix ms: the sender's own bound), so a grant delivered late cannot outlive what the
/// sender counts on.
pub fn request(
    action: &Action,
    lease: Duration,
    lease_not_after: u64,
) -> (&'static str, String, Option<serde_json::Value>, Duration) {
    use serde_json::json;
    match action {
        Action::Promote { term, lease, .. } => {
            ("POST", "/v1/promote".into(), Some(json!({ "term": term, "lease": lease })), CALL_TIMEOUT)
        }
        Action::Lease { term, .. } => (
            "POST",
            "/v1/lease".into(),
            Some(json!({
                "term": term,
                "duration_ms": u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
                "not_after_unix_ms": lease_not_after,
            })),
            QUICK_TIMEOUT,
        ),
        Action::Fence { term, .. } => {
            ("POST", "/v1/failover".into(), Some(json!({ "term": term })), CALL_TIMEOUT)
        }
        Action::Demote { term, .. } => {
            ("POST", "/v1/demote".into(), Some(json!({ "term": term })), CALL_TIMEOUT)
        }
        Action::ReceiverStart {
            si,
            autorollback,
            noresync,
            seed,
            updateresync,
            updateresync_from,
            term,
            ..
        } => (
            "POST",
            "/v1/receiver/start".into(),
            Some({
                let mut body = json!({
                    "si": si, "autorollback": autorollback, "noresync": noresync,
                    "updateresync": updateresync, "updateresync_from": updateresync_from, "term": term,
                });
                // Only when asked for: a binary without the feature refuses unknown fields.
                if *seed && let Some(fields) = body.as_object_mut() {
                    fields.insert("seed".into(), json!(true));
                }
                body
            }),
            CALL_TIMEOUT,
        ),
        Action::ReceiverStop { .. } => ("POST", "/v1/receiver/stop".into(), None, CALL_TIMEOUT),
        Action::PrepareUpgrade { .. } => ("POST", "/v1/prepare-upgrade".into(), None, CALL_TIMEOUT),
        Action::UpgradeFormat { .. } => ("POST", "/v1/upgrade-format".into(), None, CALL_TIMEOUT),
        Action::SourceStart { receiver, addr, si, .. } => (
            "POST",
            "/v1/sources".into(),
            Some(json!({ "receiver": receiver, "addr": addr, "si": si })),
            CALL_TIMEOUT,
        ),
        Action::SourceStop { receiver, .. } => {
            ("DELETE", format!("/v1/sources/{receiver}"), None, CALL_TIMEOUT)
        }
        Action::Rollback { fetchresync, .. } => (
            "POST",
            "/v1/rollback".into(),
            Some(json!({ "fetchresync": fetchresync })),
            Duration::from_secs(600),
        ),
    }
}

async fn call_inner(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, EngineError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| EngineError::Connect { addr: addr.to_owned(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| EngineError::Http { addr: addr.to_owned(), source })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = match &body {
        Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| EngineError::Build(e.to_string()))?),
        None => Bytes::new(),
    };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| EngineError::Build(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| EngineError::Http { addr: addr.to_owned(), source })?;
    let status = response.status().as_u16();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|source| EngineError::Http { addr: addr.to_owned(), source })?
        .to_bytes();
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<ErrorBody>(&collected) {
            Ok(e) => EngineError::Api {
                addr: addr.to_owned(),
                status,
                code: e.error.code,
                message: e.error.message,
            },
            Err(source) => EngineError::Decode { addr: addr.to_owned(), status, source },
        });
    }
    serde_json::from_slice(&collected).map_err(|source| EngineError::Decode {
        addr: addr.to_owned(),
        status,
        source,
    })
}

/// `GET /v1/status`.
pub async fn status(addr: &str, token: &str) -> Result<EngineStatus, EngineError> {
    let value = call(addr, token, "GET", "/v1/status", None, QUICK_TIMEOUT).await?;
    serde_json::from_value(value).map_err(|source| EngineError::Decode {
        addr: addr.to_owned(),
        status: 200,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver_start(seed: bool) -> Action {
        Action::ReceiverStart {
            instance: "brynmawr".into(),
            si: false,
            autorollback: true,
            noresync: false,
            seed,
            updateresync: None,
            updateresync_from: None,
            term: Some(2),
        }
    }

    /// `seed` is sent only when asked for: an engine without the feature refuses unknown
    /// fields, so the operator must not name it to one.
    #[test]
    fn a_receiver_start_names_seed_only_when_asked_for() {
        let (_, path, body, _) = request(&receiver_start(true), Duration::from_secs(1), 0);
        assert_eq!(path, "/v1/receiver/start");
        assert_eq!(body.as_ref().and_then(|b| b.get("seed")), Some(&serde_json::json!(true)));
        let (_, _, body, _) = request(&receiver_start(false), Duration::from_secs(1), 0);
        assert!(body.is_some_and(|b| b.get("seed").is_none()));
    }
}
