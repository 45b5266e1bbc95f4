//! A small admin API client over the Unix socket or TCP, used by `strand-engine ctl`.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use thiserror::Error;

use super::{ApiError, ErrorBody};

/// Where the admin API is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp { addr: String, token: Option<String> },
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to the admin API at {target}; is the server running?")]
    Connect { target: String, source: std::io::Error },
    #[error("admin API request failed")]
    Http { source: hyper::Error },
    #[error("failed to build the admin request")]
    Build { source: hyper::http::Error },
    #[error("{} ({})", .0.message, .0.code)]
    Api(ApiError),
    #[error("admin API answered {status} with an unreadable body")]
    Decode { status: u16, source: serde_json::Error },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Unix(path) => path.display().to_string(),
            Target::Tcp { addr, .. } => addr.clone(),
        }
    }

    /// Sends a request and returns the raw body of a successful (2xx) answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let connect_err = |source| ClientError::Connect { target: self.describe(), source };
        let mut builder = Request::builder().method(method).uri(path).header("host", "strand-admin");
        if let Target::Tcp { token: Some(token), .. } = self {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let payload = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(payload)).map_err(|source| ClientError::Build { source })?;
        let response = match self {
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
                send(TokioIo::new(stream), request).await?
            }
            Target::Tcp { addr, .. } => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(connect_err)?;
                send(TokioIo::new(stream), request).await?
            }
        };
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http { source })?
            .to_bytes()
            .to_vec();
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let body: ErrorBody =
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { status, source })?;
        Err(ClientError::Api(ApiError { status, ..body.error }))
    }

    /// Like [`Target::call`], decoding the JSON answer.
    pub async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { status: 200, source })
    }
}

async fn send<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|source| ClientError::Http { source })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(|source| ClientError::Http { source })
}
