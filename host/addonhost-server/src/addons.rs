//! The add-ons' own HTTP routes: a request becomes one call of the plugin's
//! `wasi:http/incoming-handler`.
//!
//! On an add-on's own origin (`kv.localhost:5000`) the plugin serves its
//! pages with the identity of its SSO session. On the platform's origin
//! (`/addons/kv/…`, for processes that cannot resolve `*.localhost`) it
//! serves its resource anonymously, and the answer carries
//! `Content-Security-Policy: sandbox`: a browser runs no script of it there,
//! so it can never read the dashboard beside it.
//!
//! Either way the host strips what is not the plugin's to see (the
//! platform's cookies and token, forged identity headers) and what is not
//! the plugin's to say (cookies for anyone, the connection's framing); on
//! the platform's origin only headers that describe the content cross
//! ([`SAFE_ON_PLATFORM`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::error::status_of;
use crate::{host_of, sso, Server};
use addonhost::platform::http::Identity;

/// Response headers a plugin may not set: cookies (for anyone), and the
/// message's framing and connection handling, which are the host's
/// (hyper recomputes the length from the body).
const HOP_BY_HOP: &[&str] = &[
    "set-cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
    "te",
    "proxy-connection",
    "proxy-authenticate",
];

/// The only response headers of a plugin that cross to the platform's
/// origin (`/addons/<service>/…`): what describes the content and its
/// caching. Everything else — a `Location` or `Refresh` sending the browser
/// elsewhere from the platform's address, `Clear-Site-Data` wiping the
/// dashboard's cookies, `Link` preloads, a download's name, a credentials
/// prompt, other origins let in by CORS — acts on the origin that answers
/// it, and that origin is the platform's.
const SAFE_ON_PLATFORM: &[&str] = &[
    "content-type",
    "content-language",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "cache-control",
    "expires",
    "etag",
    "last-modified",
    "vary",
    "age",
    "retry-after",
    "allow",
];

/// Sends requests for an add-on's origin to that add-on; everything else
/// goes on to the platform's routes.
pub async fn route_addon_origins(
    State(server): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    let service = host_of(&req).and_then(|h| server.host.addon_of_host(&h));
    let Some(service) = service else {
        return next.run(req).await;
    };
    // The Partner API on the add-on's own origin (where its SSO can set
    // its cookies): before the body is read, its credentials are checked.
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/heroku/resources") {
        if rest.is_empty() || rest.starts_with('/') {
            return crate::partner::handle(&server, &service, rest, req, true).await;
        }
    }
    let (parts, body) = req.into_parts();
    let body = match crate::error::read(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if parts.method == Method::POST && parts.uri.path() == "/sso/login" {
        return sso::login(&server, &service, &body).await;
    }
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let identity = sso::identity(&server, &service, &parts.headers, safe).map(|s| Identity {
        user: s.user,
        resource: s.resource,
    });
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    // Signed in from a platform's SSO: its nav header belongs on the page.
    let nav = crate::dashboard::cookie(&parts.headers, "heroku-nav-data").is_some();
    let mut resp = call(&server, &service, parts, body, &path_and_query, identity).await;
    if nav {
        resp = with_nav_header(resp).await;
    }
    resp.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `/addons/<service>/…` on the platform's origin: the resource, for
/// processes; sandboxed for browsers.
pub async fn consumption(State(server): State<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let prefix_and_rest = parts.uri.path().strip_prefix("/addons/").unwrap_or("");
    let (service, rest) = match prefix_and_rest.split_once('/') {
        Some((s, r)) => (s.to_string(), format!("/{r}")),
        None => (prefix_and_rest.to_string(), "/".to_string()),
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let body = match crate::error::read(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut resp = call(&server, &service, parts, body, &path_and_query, None).await;
    let h = resp.headers_mut();
    let unsafe_here: Vec<HeaderName> = h
        .keys()
        .filter(|k| !SAFE_ON_PLATFORM.contains(&k.as_str()))
        .cloned()
        .collect();
    for name in unsafe_here {
        h.remove(name);
    }
    // Whatever the plugin said about scripts, on this origin none run.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Calls `service`'s HTTP handler with the request made relative to the
/// add-on (`path_and_query`), and answers what it answered, cleaned.
async fn call(
    server: &Server,
    service: &str,
    parts: axum::http::request::Parts,
    body: Bytes,
    path_and_query: &str,
    identity: Option<Identity>,
) -> Response {
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query);
    for (k, v) in parts.headers.iter() {
        // Our cookies stay with the host; the platform's token never reaches
        // a plugin, even if a client sends it.
        if k == header::COOKIE {
            continue;
        }
        if k == header::AUTHORIZATION {
            let bearer = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_some_and(|t| server.is_token(t)) {
                continue;
            }
        }
        builder = builder.header(k, v);
    }
    if !parts.headers.contains_key(header::HOST) {
        builder = builder.header(header::HOST, "127.0.0.1");
    }
    let request = match builder.body(body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad request: {e}\n")).into_response(),
    };
    match server.host.addon_http(service, request, identity).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let named_by_connection: Vec<HeaderName> = parts
                .headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect();
            for name in HOP_BY_HOP {
                parts.headers.remove(*name);
            }
            for name in named_by_connection {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            let status = match status_of(&e) {
                s @ (StatusCode::NOT_FOUND
                | StatusCode::CONFLICT
                | StatusCode::SERVICE_UNAVAILABLE) => s,
                _ if format!("{e}").contains("timed out") => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            let mut r = (status, format!("{e:#}\n")).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}

/// The element Heroku's checks look for on an add-on's dashboard after
/// SSO; its nav script fills it from the `heroku-nav-data` cookie.
const NAV_HEADER: &str = r#"<div id="heroku-header"></div>"#;

/// An HTML page with Heroku's nav header element, added right after
/// `<body…>` when the page lacks one.
async fn with_nav_header(resp: Response) -> Response {
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html || !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, addonhost::runtime::MAX_RESPONSE_BYTES * 2).await
    else {
        return (
            StatusCode::BAD_GATEWAY,
            "the add-on's page could not be read\n",
        )
            .into_response();
    };
    Response::from_parts(parts, Body::from(add_nav_header(&bytes)))
}

fn add_nav_header(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    if text.contains("heroku-header") {
        return page.to_vec();
    }
    let lower = text.to_ascii_lowercase();
    let at = lower
        .find("<body")
        .and_then(|start| lower[start..].find('>').map(|end| start + end + 1))
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len() + NAV_HEADER.len());
    out.push_str(&text[..at]);
    out.push_str(NAV_HEADER);
    out.push_str(&text[at..]);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::add_nav_header;

    #[test]
    fn nav_header_goes_right_after_body_once() {
        let page = add_nav_header(b"<html><BODY class=x><p>hi</p></body></html>");
        assert_eq!(
            String::from_utf8(page.clone()).unwrap(),
            r#"<html><BODY class=x><div id="heroku-header"></div><p>hi</p></body></html>"#
        );
        assert_eq!(add_nav_header(&page), page, "never twice");
        assert!(String::from_utf8(add_nav_header(b"<p>bare</p>"))
            .unwrap()
            .starts_with(r#"<div id="heroku-header">"#));
    }
}
