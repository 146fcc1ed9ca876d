//! The host's own outbound HTTP: calls to remote providers (the Add-on
//! Partner API) and, in provider mode, back to the calling platform (its
//! Platform API). Plugins never make these calls; the host does, with a
//! deadline on the whole exchange and a cap on what it reads back.
//!
//! Plain `http://` only: a provider or platform reached over TLS needs a
//! TLS-terminating proxy in front of this host for now.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;

/// How long one call may take, connecting and reading the answer included
/// (Heroku gives providers 30 seconds).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an answer read.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// How one call went wrong before any answer could be read.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No connection could be made, or it broke before the answer's head.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The error and its causes.
        reason: String,
    },
    /// No whole answer came within the client's timeout, connecting
    /// included.
    #[error("{url} did not answer within {} s", .after.as_secs())]
    TimedOut {
        /// What was called.
        url: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The request could not be made (an invalid or non-`http` URL) or its
    /// answer not read (larger than [`MAX_ANSWER_BYTES`], cut off).
    #[error("{url}: {reason}")]
    Bad {
        /// What was called.
        url: String,
        /// Which of those, and why.
        reason: String,
    },
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header, when present and readable as text.
    pub content_type: Option<String>,
    /// The whole body, at most [`MAX_ANSWER_BYTES`].
    pub body: Bytes,
}

impl Answer {
    /// The body as text, cut short for messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        crate::util::truncate(text.trim(), 300).to_string()
    }
}

/// A client shared by every outbound call of one host.
#[derive(Clone)]
pub struct Client {
    inner: Hyper<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(TIMEOUT)
    }
}

impl Client {
    /// A client whose every call (connecting and reading the whole answer) must
    /// finish within `timeout`.
    pub fn new(timeout: Duration) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Client {
            inner: Hyper::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
        }
    }

    /// This client (sharing its connections) with another deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// Sends one request and reads its answer, all within the timeout.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, Failure> {
        let bad = |reason: String| Failure::Bad {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| bad(format!("not a valid URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(
                "only http:// URLs can be called from this host (put a TLS-terminating proxy in front of https)".into(),
            ));
        }
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "addonhost");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| bad(format!("{e}")))?;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                Failure::Unreachable {
                    url: url.to_string(),
                    reason,
                }
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| bad(format!("cannot read the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::TimedOut {
                url: url.to_string(),
                after: self.timeout,
            }),
        }
    }
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The (user, password) of an `Authorization: Basic …` header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, password) = raw.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_round_trips() {
        let h = basic("kv", "pa:ss");
        assert_eq!(parse_basic(&h), Some(("kv".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
