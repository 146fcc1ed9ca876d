//! The dashboard: server-rendered HTML, no JavaScript framework. Sign in
//! with the API token; see apps, their add-ons (with SSO links), config vars
//! (masked, revealed on click) and releases.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::web::{encode, escape, Req, Resp};
use crate::{Server, SESSION_TTL};
use addonhost::display::{mask, when};

const COOKIE: &str = "addonhost_session";

const STYLE: &str = r#"
:root{--ink:#1f2430;--muted:#6b7280;--line:#e5e7eb;--accent:#6b46c1;--bg:#f7f7fb}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#2d1b69;color:#fff;padding:.8rem 2rem;display:flex;justify-content:space-between;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin:0}
main{max-width:60rem;margin:1.5rem auto;padding:0 1rem}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1rem 1.3rem;margin:1rem 0}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.1rem;margin:.2rem 0 .6rem}
table{width:100%;border-collapse:collapse}th{text-align:left;color:var(--muted);font-weight:500;font-size:.85rem}
td,th{padding:.45rem .4rem;border-top:1px solid var(--line)}code{font-size:.88rem}
.state{display:inline-block;padding:0 .5rem;border-radius:99px;font-size:.8rem;background:#e8f5e9;color:#1b5e20}
.state.provisioning,.state.deprovisioning{background:#fff8e1;color:#8d6e00}.state.failed{background:#fdecea;color:#b71c1c}
a.button,button{background:var(--accent);color:#fff;border:0;border-radius:6px;padding:.35rem .8rem;text-decoration:none;cursor:pointer;font-size:.9rem}
details summary{cursor:pointer;color:var(--muted)}.muted{color:var(--muted)}.banner{background:#fdecea;border-color:#f5c6cb}
input[type=password]{width:100%;padding:.5rem;border:1px solid var(--line);border-radius:6px;margin:.5rem 0}
"#;

fn page(title: &str, signed_in: bool, body: String) -> Resp {
    let logout = if signed_in {
        r#"<form method="post" action="/logout"><button type="submit">Sign out</button></form>"#
    } else {
        ""
    };
    Resp::html(
        200,
        format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{} · addonhost</title><style>{STYLE}</style></head>
<body><header><a href="/">addonhost</a>{logout}</header><main>{body}</main></body></html>"#,
            escape(title)
        ),
    )
}

/// An error as a page (404 for unknown things).
pub fn error_page(e: &anyhow::Error) -> Resp {
    let mut r = page(
        "Error",
        true,
        format!(
            r#"<div class="card banner"><h1>Something went wrong</h1><p>{}</p><p><a href="/">Back to apps</a></p></div>"#,
            escape(&format!("{e:#}"))
        ),
    );
    r.status = Resp::status_of(e);
    r
}

/// Whether the request carries a valid dashboard session.
pub fn signed_in(server: &Server, req: &Req) -> bool {
    req.cookie(COOKIE)
        .is_some_and(|id| server.dashboard_session_valid(&id))
}

pub async fn route(server: &Arc<Server>, req: &Req, segs: &[&str]) -> Resp {
    let m = &req.method;
    if m == http::Method::POST && req.cross_site() {
        return Resp::text(403, "cross-site form posts are refused\n");
    }
    match segs {
        ["login"] if m == http::Method::GET => login_page(req, None),
        ["login"] if m == http::Method::POST => login(server, req),
        ["logout"] if m == http::Method::POST => {
            if let Some(id) = req.cookie(COOKIE) {
                server.end_dashboard_session(&id);
            }
            Resp::redirect(303, "/login").header(
                "set-cookie",
                &format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
            )
        }
        _ if !signed_in(server, req) => {
            let next = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Resp::redirect(303, &format!("/login?next={}", encode(next)))
        }
        [] if m == http::Method::GET => apps(server),
        ["apps", app] if m == http::Method::GET => app_page(server, app),
        ["apps", app, "addons", addon, "rotate"] if m == http::Method::POST => {
            match server.host.rotate_addon(addon, Some(app)).await {
                Ok(_) => Resp::redirect(303, &format!("/apps/{}", encode(app))),
                Err(e) => error_page(&e),
            }
        }
        _ => {
            let mut r = page(
                "Not found",
                true,
                r#"<div class="card"><h1>Not found</h1><p><a href="/">Back to apps</a></p></div>"#
                    .into(),
            );
            r.status = 404;
            r
        }
    }
}

fn login_page(req: &Req, error: Option<&str>) -> Resp {
    let next = req.query_param("next").unwrap_or_else(|| "/".into());
    let banner = error
        .map(|e| format!(r#"<p class="banner card">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let mut r = page(
        "Sign in",
        false,
        format!(
            r#"<div class="card" style="max-width:28rem;margin:3rem auto"><h1>Sign in</h1>{banner}
<p class="muted">Paste the API token printed by <code>addonhost auth:token</code>.</p>
<form method="post" action="/login?next={}"><input type="password" name="token" id="token" placeholder="API token" autofocus>
<button type="submit" id="sign-in">Sign in</button></form></div>"#,
            escape(&encode(&next))
        ),
    );
    if error.is_some() {
        r.status = 401;
    }
    r
}

fn login(server: &Arc<Server>, req: &Req) -> Resp {
    let token = req
        .form()
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let ok = token.len() == server.token.len()
        && bool::from(token.as_bytes().ct_eq(server.token.as_bytes()));
    if !ok {
        return login_page(req, Some("That token is not this server's API token."));
    }
    let id = server.new_dashboard_session();
    // Only local paths: never redirect off-site after sign-in.
    let next = req
        .query_param("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .unwrap_or_else(|| "/".into());
    Resp::redirect(303, &next).header(
        "set-cookie",
        &format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
            SESSION_TTL.as_secs()
        ),
    )
}

/// A banner per plugin that failed to load (or whose newer version did).
fn broken_banner(server: &Server) -> String {
    server
        .host
        .plugin_statuses()
        .iter()
        .filter_map(|p| p.error.as_ref().map(|e| (p, e)))
        .map(|(p, e)| {
            let what = if p.status == "loaded" {
                "the previous version keeps serving"
            } else {
                "not loaded"
            };
            format!(
                r#"<div class="card banner"><strong>Plugin {} ({what}):</strong> {}</div>"#,
                escape(&p.id),
                escape(e)
            )
        })
        .collect()
}

fn apps(server: &Arc<Server>) -> Resp {
    let apps = match server.host.apps() {
        Ok(a) => a,
        Err(e) => return error_page(&e),
    };
    let rows: String = apps
        .iter()
        .map(|a| {
            let addons = server.host.addons(Some(&a.name)).map(|v| v.len()).unwrap_or(0);
            format!(
                r#"<tr><td><a href="/apps/{0}">{1}</a></td><td>{2}</td><td>{addons}</td><td class="muted">{3}</td></tr>"#,
                encode(&a.name),
                escape(&a.name),
                escape(&a.region),
                when(a.created_at)
            )
        })
        .collect();
    let body = if apps.is_empty() {
        r#"<p class="muted">No apps yet: <code>addonhost apps:create NAME</code>.</p>"#.to_string()
    } else {
        format!(
            r#"<table id="apps"><tr><th>App</th><th>Region</th><th>Add-ons</th><th>Created</th></tr>{rows}</table>"#
        )
    };
    page(
        "Apps",
        true,
        format!(
            r#"{}<div class="card"><h1>Apps</h1>{body}</div>"#,
            broken_banner(server)
        ),
    )
}

fn app_page(server: &Arc<Server>, app: &str) -> Resp {
    let host = &server.host;
    let (info, config, releases) = match (host.app_info(app), host.config(app), host.releases(app))
    {
        (Ok(i), Ok(c), Ok(r)) => (i, c, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return error_page(&e),
    };
    let addons: String = info
        .addons
        .iter()
        .map(|a| {
            let attachment = a.attachments.iter().find_map(|t| t.strip_prefix(&format!("{app}::"))).unwrap_or("");
            let sso = if a.state == addonhost::store::ResourceState::Provisioned && !attachment.is_empty() {
                format!(
                    r#"<a class="button sso" href="/myapps/{0}/addons/{1}">Open {2}</a>
<form method="post" action="/apps/{0}/addons/{3}/rotate" style="display:inline"><button type="submit" class="rotate">Rotate</button></form>"#,
                    encode(app),
                    encode(attachment),
                    escape(attachment),
                    encode(&a.name)
                )
            } else {
                String::new()
            };
            let rot = &a.rotation;
            let mut notes = Vec::new();
            if let Some(at) = rot.last_rotated_at {
                notes.push(format!("rotated {}", when(at)));
            }
            if let Some(until) = rot.previous_expires_at.filter(|u| *u > addonhost::util::unix_now()) {
                notes.push(format!("old credential valid until {}", when(until)));
            }
            if let Some(e) = &rot.error {
                notes.push(format!(r#"<span class="state failed">rotation failing: {}</span>"#, escape(e)));
            }
            let sso = format!(r#"{sso}<div class="muted">{}</div>"#, notes.join(" · "));
            format!(
                r#"<tr><td><code>{}</code></td><td>{}:{}</td><td>{}</td><td><span class="state {}">{}</span></td><td>{sso}</td></tr>"#,
                escape(&a.name),
                escape(&a.service),
                escape(&a.plan),
                escape(attachment),
                escape(a.state.as_str()),
                escape(a.state.as_str())
            )
        })
        .collect();
    let vars: String = config
        .iter()
        .map(|v| {
            format!(
                r#"<tr><td><code>{}</code></td><td><details><summary>{}</summary><code class="value">{}</code></details></td><td class="muted">{}</td></tr>"#,
                escape(&v.name),
                escape(&mask(&v.value)),
                escape(&v.value),
                escape(v.addon.as_deref().unwrap_or("user"))
            )
        })
        .collect();
    let rels: String = releases
        .iter()
        .map(|r| {
            format!(
                "<tr><td>v{}</td><td>{}</td><td class=\"muted\">{}</td><td class=\"muted\">{}</td></tr>",
                r.version,
                escape(&r.description),
                escape(&r.actor),
                when(r.created_at)
            )
        })
        .collect();
    page(
        app,
        true,
        format!(
            r#"<p><a href="/">← Apps</a></p><h1 id="app-name">{}</h1><p class="muted">region {} · release v{}</p>
<div class="card"><h2>Add-ons</h2><table id="addons"><tr><th>Add-on</th><th>Plan</th><th>Attached as</th><th>State</th><th></th></tr>{addons}</table></div>
<div class="card"><h2>Config vars</h2><table id="config"><tr><th>Name</th><th>Value (click to reveal)</th><th>Set by</th></tr>{vars}</table></div>
<div class="card"><h2>Releases</h2><table id="releases"><tr><th>Version</th><th>Description</th><th>By</th><th>When</th></tr>{rels}</table></div>"#,
            escape(app),
            escape(&info.app.region),
            info.release
        ),
    )
}
