//! Single sign-on (CONTRACT §SSO) and the add-ons' own routes.
//!
//! `/myapps/<app>/addons/<attachment>` signs a login and hands the browser an
//! auto-submitting form; the add-on's SSO route asks the plugin's
//! `sso.verify`; on success the browser gets a session cookie scoped to that
//! add-on's path, `heroku-nav-data`, and a 302 to the add-on's dashboard.
//! Requests to `/addons/<service>/…` then carry the session's identity to the
//! plugin in headers the host sets (and strips when they come from outside).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::web::{encode, escape, Req, Resp};
use crate::{dashboard, Server, SsoSession, SESSION_TTL};
use addonhost::platform::http::Identity;
use addonhost::platform::sso::login_from_fields;
use addonhost::runtime::Verdict;

/// The add-on session cookie's name for `service`.
pub fn cookie_name(service: &str) -> String {
    format!("addonhost_sso_{}", service.replace('-', "_"))
}

/// `GET /myapps/<app>/addons/<attachment>`: sign and post the login.
pub fn start(server: &Arc<Server>, req: &Req, app: &str, attachment: &str) -> Resp {
    if !dashboard::signed_in(server, req) {
        let next = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        return Resp::redirect(303, &format!("/login?next={}", encode(next)));
    }
    let params = req.query();
    let now = addonhost::util::unix_now();
    let form = match server
        .host
        .sso_form(app, attachment, &server.email, &params, now)
    {
        Ok(f) => f,
        Err(e) => return dashboard::error_page(&e),
    };
    let inputs: String = form
        .fields
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    Resp::html(
        200,
        format!(
            r#"<!doctype html><html><head><meta charset="utf-8"><title>Signing in…</title></head>
<body onload="document.forms[0].submit()"><form method="post" action="/addons/{}/sso/login">{inputs}
<noscript><button type="submit">Continue to the add-on</button></noscript></form>
<p>Signing you in to the add-on…</p></body></html>"#,
            encode(&form.service)
        ),
    )
}

/// `POST /addons/<service>/sso/login`: the plugin decides.
pub async fn login(server: &Arc<Server>, req: &Req, service: &str) -> Resp {
    let fields = req.form();
    let login = match login_from_fields(&fields) {
        Ok(l) => l,
        Err(e) => {
            return Resp::html(
                400,
                format!("<h1>400</h1><p>{}</p>", escape(&e.to_string())),
            )
        }
    };
    let nav = login.nav_data.clone();
    let resource = login.id.clone();
    match server.host.sso_verify(service, login).await {
        Ok(Verdict::Ok(session)) => {
            let id = server.new_sso_session(SsoSession {
                service: service.to_string(),
                user: session.user,
                resource,
                expires: Instant::now() + SESSION_TTL,
            });
            let path = format!("/addons/{service}/");
            let landing = if session.landing.starts_with('/') {
                format!("/addons/{service}{}", session.landing)
            } else {
                path.clone()
            };
            Resp::redirect(302, &landing)
                .header(
                    "set-cookie",
                    &format!(
                        "{}={id}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={}",
                        cookie_name(service),
                        SESSION_TTL.as_secs()
                    ),
                )
                .header(
                    "set-cookie",
                    &format!(
                        "heroku-nav-data={}; Path={path}; SameSite=Lax",
                        encode(&nav)
                    ),
                )
        }
        Ok(Verdict::Denied(why)) => Resp::html(
            403,
            format!(
                "<h1>403 Forbidden</h1><p>The add-on refused the login: {}</p>",
                escape(&why)
            ),
        ),
        Err(e) => Resp::html(
            if Resp::status_of(&e) == 404 { 404 } else { 502 },
            format!(
                "<h1>Sign-in failed</h1><p>{}</p>",
                escape(&format!("{e:#}"))
            ),
        ),
    }
}

/// Any other `/addons/<service>/…` request: the plugin's HTTP handler, with
/// the identity of this add-on's SSO session, if any.
pub async fn addon_route(server: &Arc<Server>, req: Req, service: &str) -> Resp {
    let identity = req
        .cookie(&cookie_name(service))
        .and_then(|id| server.sso_session(&id, service))
        .map(|s| Identity {
            user: s.user,
            resource: s.resource,
        });
    let prefix = format!("/addons/{service}");
    let path = req.uri.path().strip_prefix(&prefix).unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let uri = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut builder = http::Request::builder().method(req.method.clone()).uri(uri);
    for (k, v) in req.headers.iter() {
        // Our own cookies stay with the host.
        if k != http::header::COOKIE {
            builder = builder.header(k, v);
        }
    }
    if !req.headers.contains_key(http::header::HOST) {
        builder = builder.header(http::header::HOST, "127.0.0.1");
    }
    let request = match builder.body(Bytes::clone(&req.body)) {
        Ok(r) => r,
        Err(e) => return Resp::text(400, &format!("bad request: {e}\n")),
    };
    match server.host.addon_http(service, request, identity).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut out = Resp {
                status: parts.status.as_u16(),
                headers: Vec::new(),
                body,
            };
            for (k, v) in parts.headers.iter() {
                // An add-on cannot set cookies for other add-ons or the host.
                if k == http::header::SET_COOKIE {
                    continue;
                }
                if let Ok(v) = v.to_str() {
                    out.headers.push((k.to_string(), v.to_string()));
                }
            }
            out
        }
        Err(e) => {
            let status = match Resp::status_of(&e) {
                404 => 404,
                503 => 503,
                _ if format!("{e}").contains("timed out") => 504,
                _ => 502,
            };
            let r = Resp::text(status, &format!("{e:#}\n"));
            if status == 503 {
                return r.header("retry-after", "1");
            }
            r
        }
    }
}
