//! Serving an add-on's resource over HTTP (`wasi:http/incoming-handler`)
//! without touching wasi:http's streams: implement [`Handler`] on plain
//! [`Request`]/[`Response`] values and call [`export_http!`](crate::export_http).
//! And the other way: [`fetch`] calls the partner's backend, at a host the
//! manifest declares in `outbound.allowed_hosts`.
//!
//! The host routes `<server>/addons/<service>/…` to the add-on, with the path
//! made relative (`/kv-1234/mykey`). After single sign-on it sets
//! [`USER_HEADER`] and [`RESOURCE_HEADER`]; it strips both from requests
//! arriving from outside, so an add-on can trust them.

use std::io::{Read, Write};

use base64::Engine;

pub use crate::fetch::{fetch, FetchError, Outgoing};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The signed-in user (email), set by the host after SSO.
pub const USER_HEADER: &str = "x-addonhost-user";
/// The add-on's id of the resource the user signed in to.
pub const RESOURCE_HEADER: &str = "x-addonhost-resource";

/// Largest request body read.
pub const MAX_BODY: u64 = 1 << 20;

/// An HTTP request, read whole.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path relative to the add-on's base URL, starting with `/`.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The path's segments, without empty ones.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// `Authorization: Basic …` credentials.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?;
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// The signed-in user and resource, if the host says there is one.
    pub fn session(&self) -> Option<(String, String)> {
        Some((self.header(USER_HEADER)?, self.header(RESOURCE_HEADER)?))
    }

    /// The body as `application/x-www-form-urlencoded` pairs.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_query(&String::from_utf8_lossy(&self.body))
    }
}

/// Parses `a=1&b=x%20y` into pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    pub fn html(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/html; charset=utf-8", body.into())
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// A 303 to `location` (after a form post).
    pub fn redirect(location: &str) -> Response {
        let mut r = Response::text(303, "");
        r.headers.push(("location".into(), location.into()));
        r
    }

    /// 401 asking for basic credentials.
    pub fn unauthorized(realm: &str) -> Response {
        let mut r = Response::text(401, "invalid or missing credentials\n");
        r.headers.push((
            "www-authenticate".into(),
            format!("Basic realm=\"{realm}\""),
        ));
        r
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What an HTTP-serving add-on implements.
pub trait Handler {
    fn handle(request: Request) -> Response;
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(o) => o.to_ascii_uppercase(),
    }
}

/// Reads the request whole, runs `handler`, writes its response.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_with_query, String::new()),
    };
    let mut req = Request {
        method: method_name(&request.method()),
        path,
        query,
        headers: request.headers().entries(),
        body: Vec::new(),
    };
    if let Ok(body) = request.consume() {
        if let Ok(stream) = body.stream() {
            let mut limited = stream.take(MAX_BODY);
            let _ = limited.read_to_end(&mut req.body);
        }
    }
    let response = handler(req);
    let headers = Fields::new();
    for (name, value) in &response.headers {
        let _ = headers.append(name, value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let body = outgoing.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(outgoing));
    {
        let mut stream = body.write().expect("a new body has a stream");
        let _ = stream.write_all(&response.body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Exports a [`Handler`] as the component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! export_http {
    ($ty:ident) => {
        impl $crate::wasip2::exports::http::incoming_handler::Guest for $ty {
            fn handle(
                request: $crate::wasip2::http::types::IncomingRequest,
                out: $crate::wasip2::http::types::ResponseOutparam,
            ) {
                $crate::http::serve(request, out, <$ty as $crate::http::Handler>::handle)
            }
        }
        $crate::wasip2::http::proxy::export!($ty with_types_in $crate::wasip2);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_decoding() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
