//! Calling the partner's backend: a small blocking HTTP client over
//! `wasi:http/outgoing-handler`, used as [`crate::http::fetch`].
//!
//! The host decides where a request may go (the manifest's
//! `outbound.allowed_hosts`, as the operator narrowed them) and refuses the
//! rest with an error saying why; this client only makes the request and
//! reads the answer. It follows up to [`Outgoing::redirects`] redirects
//! (5 by default) by making a new request, which the host checks like any
//! other, and it never carries `authorization` or `cookie` headers to
//! another origin.

use std::io::Read;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

use super::http::Response;

/// An outgoing request: `Outgoing::get(url)`, `Outgoing::post(url, body)`, …
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How many redirects to follow (each a new request the host checks).
    pub redirects: u8,
}

impl Outgoing {
    pub fn new(method: &str, url: &str) -> Outgoing {
        Outgoing {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            redirects: 5,
        }
    }

    pub fn get(url: &str) -> Outgoing {
        Outgoing::new("GET", url)
    }

    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Outgoing {
        Outgoing::new("POST", url).body(body)
    }

    pub fn put(url: &str, body: impl Into<Vec<u8>>) -> Outgoing {
        Outgoing::new("PUT", url).body(body)
    }

    pub fn delete(url: &str) -> Outgoing {
        Outgoing::new("DELETE", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Outgoing {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Outgoing {
        self.body = body.into();
        self
    }

    /// A JSON body, with its content type.
    pub fn json(self, value: &serde_json::Value) -> Outgoing {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// `Authorization: Basic …` for `user:password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Outgoing {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {token}"))
    }

    /// Follow no redirect: a 3xx comes back as the response.
    pub fn no_redirects(mut self) -> Outgoing {
        self.redirects = 0;
        self
    }
}

/// Why a request got no response: the host refused it (a host not
/// declared, a private address, the call's budget), the network failed, or
/// it ran out of time or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// The URL of the request that failed (after redirects, the last one).
    pub url: String,
    pub message: String,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The host's own messages already name the URL.
        if self.message.contains(&self.url) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.url, self.message)
        }
    }
}

impl std::error::Error for FetchError {}

impl From<FetchError> for crate::AddonError {
    fn from(e: FetchError) -> Self {
        crate::AddonError::new(e.to_string())
    }
}

impl Response {
    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn body_json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the response is not JSON: {e}"))
    }

    /// A response header (the first of that name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` and reads the whole response, blocking the call until
/// it arrives (within the host's timeouts, which end before the call's
/// deadline).
pub fn fetch(request: Outgoing) -> Result<Response, FetchError> {
    let mut request = request;
    let mut hops = 0;
    loop {
        let response = fetch_once(&request)?;
        let location = response.header("location").map(str::to_string);
        let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        let (true, Some(location)) = (redirect, location) else {
            return Ok(response);
        };
        if hops >= request.redirects {
            return Ok(response);
        }
        hops += 1;
        let next = join(&request.url, &location).ok_or_else(|| FetchError {
            url: request.url.clone(),
            message: format!("redirected to {location:?}, which is not an http(s) URL"),
        })?;
        if origin(&next) != origin(&request.url) {
            // Credentials meant for one origin never follow a redirect to
            // another.
            request.headers.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("cookie")
            });
        }
        // 303 (and 301/302 after a POST, as browsers do) turn into a GET.
        if response.status == 303
            || (matches!(response.status, 301 | 302) && request.method == "POST")
        {
            request.method = "GET".into();
            request.body.clear();
            request
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        }
        request.url = next;
    }
}

/// `(scheme, authority, path-and-query)` of an http(s) URL.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or("");
    (!authority.is_empty()).then_some((scheme, authority, path))
}

fn origin(url: &str) -> Option<(String, String)> {
    split(url).map(|(s, a, _)| (s.to_ascii_lowercase(), a.to_ascii_lowercase()))
}

/// `location` resolved against `base` (absolute, or a path on the same
/// origin).
fn join(base: &str, location: &str) -> Option<String> {
    if split(location).is_some() {
        return Some(location.to_string());
    }
    let (scheme, authority, _) = split(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    None
}

fn method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

/// What an error code says, in words: the host's own sentence for a
/// refusal, the code's name otherwise.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}

fn fetch_once(r: &Outgoing) -> Result<Response, FetchError> {
    let fail = |message: String| FetchError {
        url: r.url.clone(),
        message,
    };
    let (scheme, authority, path) =
        split(&r.url).ok_or_else(|| fail("not an http:// or https:// URL".into()))?;
    let headers = Fields::new();
    for (name, value) in &r.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| fail(format!("header {name}: {e:?}")))?;
    }
    // A length, not chunks: some backends refuse chunked request bodies.
    let has_length = r
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    // Every method but GET and HEAD gets one, even for no body (a DELETE
    // would otherwise go out chunked).
    if !has_length && (!r.body.is_empty() || !matches!(r.method.as_str(), "GET" | "HEAD")) {
        headers
            .append("content-length", r.body.len().to_string().as_bytes())
            .map_err(|e| fail(format!("header content-length: {e:?}")))?;
    }
    let request = OutgoingRequest::new(headers);
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_method(&method(&r.method))
        .and_then(|_| request.set_scheme(Some(&scheme)))
        .and_then(|_| request.set_authority(Some(authority)))
        .and_then(|_| request.set_path_with_query(Some(path)))
        .map_err(|_| fail("the URL or method is not valid for wasi:http".into()))?;
    let body = request
        .body()
        .map_err(|_| fail("the request has no body".into()))?;
    // Sent first, then the body written: wasi:http buffers little of a
    // body before the request goes out.
    let future = outgoing_handler::handle(request, None).map_err(|e| fail(describe(&e)))?;
    {
        let stream = body
            .write()
            .map_err(|_| fail("the request body cannot be written".into()))?;
        for chunk in r.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| fail(format!("sending the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| fail(describe(&e)))?;
    let response = loop {
        if let Some(answer) = future.get() {
            break answer
                .map_err(|_| fail("the response was already taken".into()))?
                .map_err(|e| fail(describe(&e)))?;
        }
        future.subscribe().block();
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|_| fail("the response body was already taken".into()))?;
    let mut bytes = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|_| fail("the response body cannot be read".into()))?;
        stream.read_to_end(&mut bytes).map_err(|e| {
            let text = e.to_string();
            // The host's sentence, without wasi's prefix.
            let text = text
                .trim_start_matches("internal error: ")
                .trim()
                .to_string();
            fail(text)
        })?;
    }
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_request() {
        let base = "http://127.0.0.1:9000/a/b?x=1";
        assert_eq!(join(base, "/c").unwrap(), "http://127.0.0.1:9000/c");
        assert_eq!(
            join(base, "https://other.example/d").unwrap(),
            "https://other.example/d"
        );
        assert_eq!(
            join(base, "//other.example/e").unwrap(),
            "http://other.example/e"
        );
        assert_eq!(join(base, "ftp://x/"), None);
        assert_eq!(split("https://h:1/p?q#f"), Some(("https", "h:1", "/p?q")));
        assert_eq!(split("http://h"), Some(("http", "h", "")));
        assert_ne!(origin("http://a.example/x"), origin("http://b.example/x"));
        assert_eq!(origin("HTTP://A.example/x"), origin("http://a.example/y"));
    }
}
