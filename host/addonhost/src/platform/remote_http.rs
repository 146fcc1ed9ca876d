//! The host's own outbound HTTP: calls to remote providers (the Add-on
//! Partner API) and, in provider mode, back to the calling platform (its
//! Platform API). Plugins never make these calls; the host does, with a
//! deadline on the whole exchange and a cap on what it reads back.
//!
//! `https://` through the host's one TLS client ([`crate::tls`]: rustls,
//! Mozilla's roots and the operator's `--extra-ca`, the certificate checked
//! against the name called). Plain `http://` only to the loopback
//! (`127.0.0.0/8`, `::1`, `localhost`), unless the operator allows it
//! everywhere (`--allow-plain-http`): credentials, grants and tokens travel
//! in these requests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
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
    /// The server's TLS certificate was refused (another name, an issuer
    /// nobody trusts, expired): `reason` names which.
    #[error("{url}: {reason}")]
    Tls {
        /// What was called.
        url: String,
        /// Why the certificate was refused, and what to do.
        reason: String,
    },
    /// The request could not be made (an invalid URL, a scheme other than
    /// `https`, plain `http` off the loopback without the operator's
    /// consent) or its answer not read (larger than [`MAX_ANSWER_BYTES`],
    /// cut off).
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
    inner: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// Plain `http://` off the loopback too (the operator's consent).
    plain_http_anywhere: bool,
}

impl Default for Client {
    /// Mozilla's roots, plain `http://` to the loopback only.
    fn default() -> Self {
        Client::new(TIMEOUT, &crate::tls::Trust::default(), false)
    }
}

impl Client {
    /// A client whose every call (connecting and reading the whole answer) must
    /// finish within `timeout`, trusting the roots of `trust`, calling plain
    /// `http://` off the loopback only with `plain_http_anywhere`.
    pub fn new(timeout: Duration, trust: &crate::tls::Trust, plain_http_anywhere: bool) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        // `https` schemes are checked by `send` before a request goes out.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*trust.client_config()).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Client {
            inner: Hyper::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
            plain_http_anywhere,
        }
    }

    /// This client (sharing its connections) with another deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
            plain_http_anywhere: self.plain_http_anywhere,
        }
    }

    /// Why `url` may not be called by this client, if it may not (see
    /// [`refused`]).
    pub fn refuses(&self, url: &str) -> Option<String> {
        refused(url, self.plain_http_anywhere)
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
        if let Some(why) = self.refuses(url) {
            return Err(bad(why));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e| bad(format!("not a valid URL: {e}")))?;
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
                if let Some(reason) = crate::tls::explain(&e) {
                    return Failure::Tls {
                        url: url.to_string(),
                        reason,
                    };
                }
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

/// Why the host's own client may not call `url`, if it may not: a scheme
/// other than `https`, or plain `http` off the loopback unless
/// `plain_http_anywhere` (the operator's `--allow-plain-http`).
pub fn refused(url: &str, plain_http_anywhere: bool) -> Option<String> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("not a valid URL: {e}")),
    };
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") if plain_http_anywhere || uri.host().is_some_and(is_loopback) => None,
        Some("http") => Some(
            "plain http:// is called only on the loopback (127.0.0.1, ::1, localhost): use \
             https://, or let this host call plain http:// elsewhere with --allow-plain-http \
             (ADDONHOST_ALLOW_PLAIN_HTTP=true)"
                .into(),
        ),
        _ => Some("only https:// (and http:// on the loopback) URLs can be called".into()),
    }
}

/// Whether `host` (as a URL has it: `[::1]`, `127.0.0.1`, `localhost`) is
/// the loopback.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| crate::outbound::canonical(ip).is_loopback())
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

    #[test]
    fn plain_http_is_called_on_the_loopback_only_unless_allowed() {
        let strict = Client::default();
        for ok in [
            "https://api.heroku.com/x",
            "http://127.0.0.1:5000/platform",
            "http://127.9.9.9/x",
            "http://[::1]:80/x",
            "http://localhost:8080/x",
            "http://LOCALHOST/x",
        ] {
            assert_eq!(strict.refuses(ok), None, "{ok}");
        }
        for refused in [
            "http://api.heroku.com/x",
            "http://10.0.0.5/x",
            "http://localhost.evil.example/x",
            "http://127.0.0.1.nip.io/x",
            "ftp://127.0.0.1/x",
        ] {
            assert!(strict.refuses(refused).is_some(), "{refused}");
        }
        assert!(strict
            .refuses("http://api.heroku.com/x")
            .unwrap()
            .contains("--allow-plain-http"));
        let allowed = Client::new(TIMEOUT, &crate::tls::Trust::default(), true);
        assert_eq!(allowed.refuses("http://api.heroku.com/x"), None);
        assert!(allowed.refuses("ftp://x/y").is_some());
    }
}
