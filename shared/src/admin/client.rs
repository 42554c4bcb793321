//! The client side of the admin endpoint: one HTTP/1 request per connection, as
//! `healthcheck` and the `jantar-peer` client commands use it.

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{Method, body::Bytes};
use serde::de::DeserializeOwned;

/// Why a request to the admin endpoint did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted the connection (no node running there).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP error talking to {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
    /// The endpoint answered with an error status; `message` is its `error` field.
    #[error("{message}")]
    Status { code: u16, message: String },
    #[error("unexpected answer from {addr}: {reason}")]
    Decode { addr: SocketAddr, reason: String },
}

/// An answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: Bytes,
}

/// Talks to one node's admin endpoint.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the endpoint at `addr`; a wildcard address (`0.0.0.0`, `::`) is asked
    /// on loopback. `token` is sent as `Authorization: Bearer <token>`.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        AdminClient {
            addr,
            token,
            timeout: Duration::from_secs(60),
        }
    }

    /// How long one request may take in all (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request; `json` is sent as an `application/json` body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, ClientError> {
        let addr = self.addr;
        let http = |e: &dyn std::fmt::Display| ClientError::Http {
            addr,
            reason: e.to_string(),
        };
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ClientError::Connect { addr, source })?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| http(&e))?;
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.to_string());
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let body = match json {
                Some(v) => {
                    req = req.header("content-type", "application/json");
                    Full::new(Bytes::from(v.to_string()))
                }
                None => Full::new(Bytes::new()),
            };
            let req = req.body(body).map_err(|e| http(&e))?;
            let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http(&e))?
                .to_bytes();
            Ok(Answer { code, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })?
    }

    /// Sends one request and decodes a 200 answer as `T`; any other status is a
    /// [`ClientError::Status`] carrying the endpoint's `error` message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let a = self.request(method, path, json).await?;
        if a.code != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    format!(
                        "HTTP {}: {}",
                        a.code,
                        String::from_utf8_lossy(&a.body).trim()
                    )
                });
            return Err(ClientError::Status {
                code: a.code,
                message,
            });
        }
        serde_json::from_slice(&a.body).map_err(|e| ClientError::Decode {
            addr: self.addr,
            reason: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// Asks `/readyz`; returns the HTTP status code.
    pub async fn ready(&self) -> Result<u16, ClientError> {
        Ok(self.request(Method::GET, "/readyz", None).await?.code)
    }
}
