//! Small request/response types the handlers work with: the body is read
//! whole (within the server's limit) before routing.

use bytes::Bytes;
use http_body_util::Full;
use rand::RngCore;

use addonhost::platform::error::{kind_of, Kind};

#[derive(Debug, Clone)]
pub struct Req {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn new(parts: http::request::Parts, body: Bytes) -> Req {
        Req {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        }
    }

    /// Percent-decoded path segments, without empty ones.
    pub fn segments(&self) -> Vec<String> {
        self.uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }

    /// A POST from another site (CSRF): its Origin does not match our Host.
    pub fn cross_site(&self) -> bool {
        match (self.header("origin"), self.header("host")) {
            (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
            (Some(_), None) => true,
            _ => matches!(self.header("sec-fetch-site"), Some("cross-site")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Resp {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
        Resp {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Resp {
        Resp::new(status, "text/plain; charset=utf-8", body.to_string())
    }

    pub fn html(status: u16, body: String) -> Resp {
        Resp::new(status, "text/html; charset=utf-8", body)
    }

    pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Resp {
        match serde_json::to_vec_pretty(value) {
            Ok(b) => Resp::new(status, "application/json", b),
            Err(e) => Resp::json_error(500, &e.to_string()),
        }
    }

    pub fn json_error(status: u16, message: &str) -> Resp {
        Resp::json(status, &serde_json::json!({ "message": message }))
    }

    /// The status for a platform error: 404, 409, 400, 422 (add-on), 500.
    pub fn status_of(e: &anyhow::Error) -> u16 {
        match kind_of(e) {
            Some(Kind::NotFound) => 404,
            Some(Kind::Conflict) => 409,
            Some(Kind::Invalid) => 400,
            Some(Kind::Addon) => 422,
            Some(Kind::Busy) => 503,
            None => 500,
        }
    }

    pub fn error(e: &anyhow::Error) -> Resp {
        let status = Resp::status_of(e);
        let r = Resp::json_error(status, &format!("{e:#}"));
        if status == 503 {
            return r.header("retry-after", "1");
        }
        r
    }

    pub fn redirect(status: u16, location: &str) -> Resp {
        Resp::text(status, "").header("location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Resp {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn into_hyper(self) -> http::Response<Full<Bytes>> {
        let mut b = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body)).unwrap_or_else(|_| {
            http::Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"invalid response header")))
                .expect("static response")
        })
    }
}

/// 32 random bytes as hex: session ids and tokens.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
