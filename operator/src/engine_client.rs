//! The engine admin API client: HTTP/1.1 over TCP to `podIP:8080` with the instance's bearer
//! token. Every call has a deadline; errors say which engine and what it answered.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::engine_status::EngineStatus;

/// How long one admin call may take (a receiver start with a rollback behind it included).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the engine admin API at {addr}")]
    Connect { addr: String, source: std::io::Error },
    #[error("admin call to {addr} failed")]
    Http { addr: String, source: hyper::Error },
    #[error("admin call to {addr} timed out after {CALL_TIMEOUT:?}")]
    Timeout { addr: String },
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
) -> Result<serde_json::Value, EngineError> {
    tokio::time::timeout(CALL_TIMEOUT, call_inner(addr, token, method, path, body))
        .await
        .map_err(|_| EngineError::Timeout { addr: addr.to_owned() })?
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
    let value = call(addr, token, "GET", "/v1/status", None).await?;
    serde_json::from_value(value).map_err(|source| EngineError::Decode {
        addr: addr.to_owned(),
        status: 200,
        source,
    })
}
