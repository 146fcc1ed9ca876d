//! The dashboard: server-rendered HTML from templates that escape by default,
//! no JavaScript framework. Sign in with the API token; see apps, their
//! add-ons (with SSO links), config vars (masked, revealed on click) and
//! releases.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::error::status_of;
use crate::{Server, SESSION_TTL};
use addonhost::display::{mask, when};
use addonhost::store::ResourceState;

/// The dashboard session cookie's name (with `__Host-` behind https, see
/// [`Server::session_cookie`]).
const COOKIE: &str = "addonhost_session";

pub fn router(server: Arc<Server>) -> Router<Arc<Server>> {
    let signed_in = Router::new()
        .route("/", get(apps))
        .route("/apps/{app}", get(app_page))
        .route("/apps/{app}/addons/{addon}/rotate", post(rotate))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(server, require_session));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .merge(signed_in)
        .layer(middleware::from_fn(refuse_cross_site_posts))
}

/// A form post from another site (CSRF) is refused: its `Origin` is not
/// this server.
async fn refuse_cross_site_posts(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && cross_site(req.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused\n").into_response();
    }
    next.run(req).await
}

fn cross_site(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        _ => matches!(
            get(header::HeaderName::from_static("sec-fetch-site")),
            Some("cross-site")
        ),
    }
}

/// The value of cookie `name` in a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether the request carries a valid dashboard session.
pub fn signed_in(server: &Server, headers: &HeaderMap) -> anyhow::Result<bool> {
    match cookie(headers, &server.session_cookie(COOKIE)) {
        Some(id) => Ok(server.dashboard_sessions.get(&id)?.is_some()),
        None => Ok(false),
    }
}

/// The sign-in page, coming back to `next` afterwards.
pub fn to_login(req_path_and_query: &str) -> Response {
    Redirect::to(&format!("/login?next={}", encode(req_path_and_query))).into_response()
}

async fn require_session(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    match signed_in(&server, req.headers()) {
        Ok(true) => return next.run(req).await,
        Ok(false) => {}
        Err(e) => return error_page(&e),
    }
    let next_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    to_login(&next_path)
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page: {e}\n"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    signed_in: bool,
    heading: &'a str,
    message: Option<String>,
}

/// An error as a page (404 for unknown things).
pub fn error_page(e: &anyhow::Error) -> Response {
    render(
        status_of(e),
        &ErrorPage {
            title: "Error",
            signed_in: true,
            heading: "Something went wrong",
            message: Some(format!("{e:#}")),
        },
    )
}

async fn not_found() -> Response {
    render(
        StatusCode::NOT_FOUND,
        &ErrorPage {
            title: "Not found",
            signed_in: true,
            heading: "Not found",
            message: None,
        },
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    signed_in: bool,
    next_encoded: String,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
struct Next_ {
    next: Option<String>,
}

fn login_form(next: Option<String>, error: Option<&str>) -> Response {
    render(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        &LoginPage {
            title: "Sign in",
            signed_in: false,
            next_encoded: encode(&next.unwrap_or_else(|| "/".into())),
            error,
        },
    )
}

async fn login_page(Query(q): Query<Next_>) -> Response {
    login_form(q.next, None)
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

/// Where to go after signing in: only a path on this server. A path starting
/// `//` or `/\` (which browsers read as `//`) would leave it.
fn local_path(next: Option<String>) -> String {
    next.filter(|n| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.starts_with("/\\")
            && !n.chars().any(|c| c.is_control())
    })
    .unwrap_or_else(|| "/".into())
}

async fn login(
    State(server): State<Arc<Server>>,
    Query(q): Query<Next_>,
    Form(form): Form<TokenForm>,
) -> Response {
    if !server.is_token(&form.token) {
        return login_form(q.next, Some("That token is not this server's API token."));
    }
    let id = match server.dashboard_sessions.create(&()).await {
        Ok(id) => id,
        Err(e) => return error_page(&e),
    };
    let mut r = Redirect::to(&local_path(q.next)).into_response();
    set_cookie(
        &mut r,
        &format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            server.session_cookie(COOKIE),
            SESSION_TTL.as_secs(),
            server.cookie_attributes()
        ),
    );
    r
}

async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let name = server.session_cookie(COOKIE);
    if let Some(id) = cookie(&headers, &name) {
        if let Err(e) = server.dashboard_sessions.remove(&id).await {
            return error_page(&e);
        }
    }
    let mut r = Redirect::to("/login").into_response();
    set_cookie(
        &mut r,
        &format!(
            "{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            server.cookie_attributes()
        ),
    );
    r
}

pub fn set_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

struct Banner {
    id: String,
    what: &'static str,
    error: String,
}

struct AppRow {
    name: String,
    path: String,
    region: String,
    addons: usize,
    created: String,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage<'a> {
    title: &'a str,
    signed_in: bool,
    banners: Vec<Banner>,
    apps: Vec<AppRow>,
    plugins: Vec<PluginRow>,
}

/// What an add-on did in this server lately, against its limits.
struct PluginRow {
    id: String,
    calls: u64,
    errors: u64,
    p99: String,
    in_flight: String,
    storage: String,
}

fn plugin_rows(statuses: &[addonhost::platform::PluginStatus]) -> Vec<PluginRow> {
    statuses
        .iter()
        .filter(|p| p.status == "loaded")
        .map(|p| PluginRow {
            id: p.id.clone(),
            calls: p.recent.calls,
            errors: p.recent.errors,
            p99: p
                .recent
                .p99_ms
                .map(|ms| format!("≤ {ms} ms"))
                .unwrap_or_else(|| "—".into()),
            in_flight: format!(
                "{} of {}",
                p.in_flight,
                p.limits.map(|l| l.concurrency).unwrap_or(0)
            ),
            storage: p
                .storage
                .map(|s| {
                    format!(
                        "{} keys, {} of {}",
                        s.keys,
                        addonhost::display::bytes(s.bytes),
                        addonhost::display::bytes(s.quota_bytes)
                    )
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// A banner per plugin that failed to load (or whose newer version did).
fn banners(statuses: Vec<addonhost::platform::PluginStatus>) -> Vec<Banner> {
    statuses
        .into_iter()
        .filter_map(|p| {
            let error = p.error?;
            Some(Banner {
                what: if p.status == "loaded" {
                    "the previous version keeps serving"
                } else {
                    "not loaded"
                },
                id: p.id,
                error,
            })
        })
        .collect()
}

async fn apps(State(server): State<Arc<Server>>) -> Response {
    let apps = match server.host.apps() {
        Ok(a) => a,
        Err(e) => return error_page(&e.into()),
    };
    let apps = apps
        .into_iter()
        .map(|a| AppRow {
            addons: server
                .host
                .addons(Some(&a.name))
                .map(|v| v.len())
                .unwrap_or(0),
            path: encode(&a.name),
            created: when(a.created_at),
            name: a.name,
            region: a.region,
        })
        .collect();
    let statuses = server.host.plugin_statuses();
    render(
        StatusCode::OK,
        &AppsPage {
            title: "Apps",
            signed_in: true,
            plugins: plugin_rows(&statuses),
            banners: banners(statuses),
            apps,
        },
    )
}

struct AddonRow {
    name: String,
    name_path: String,
    service: String,
    plan: String,
    attachment: String,
    attachment_path: String,
    state: &'static str,
    can_open: bool,
    notes: Vec<String>,
    rotation_error: Option<String>,
}

struct VarRow {
    name: String,
    masked: String,
    value: String,
    owner: String,
}

struct ReleaseRow {
    version: i64,
    description: String,
    actor: String,
    when: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage<'a> {
    title: &'a str,
    signed_in: bool,
    name: &'a str,
    app_path: String,
    region: String,
    release: i64,
    addons: Vec<AddonRow>,
    vars: Vec<VarRow>,
    releases: Vec<ReleaseRow>,
}

async fn app_page(State(server): State<Arc<Server>>, Path(app): Path<String>) -> Response {
    let host = &server.host;
    let (info, config, releases) =
        match (host.app_info(&app), host.config(&app), host.releases(&app)) {
            (Ok(i), Ok(c), Ok(r)) => (i, c, r),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return error_page(&e.into()),
        };
    let now = addonhost::util::unix_now();
    let addons = info
        .addons
        .iter()
        .map(|a| {
            let attachment = a
                .attachments
                .iter()
                .find_map(|t| t.strip_prefix(&format!("{app}::")))
                .unwrap_or("")
                .to_string();
            let rot = &a.rotation;
            let mut notes = Vec::new();
            if let Some(at) = rot.last_rotated_at {
                notes.push(format!("rotated {}", when(at)));
            }
            if let Some(until) = rot.previous_expires_at.filter(|u| *u > now) {
                notes.push(format!("old credential valid until {}", when(until)));
            }
            AddonRow {
                name_path: encode(&a.name),
                name: a.name.clone(),
                service: a.service.clone(),
                plan: a.plan.clone(),
                attachment_path: encode(&attachment),
                can_open: a.state == ResourceState::Provisioned && !attachment.is_empty(),
                attachment,
                state: a.state.as_str(),
                notes,
                rotation_error: rot.error.clone(),
            }
        })
        .collect();
    let vars = config
        .into_iter()
        .map(|v| VarRow {
            masked: mask(&v.value),
            owner: v.addon.unwrap_or_else(|| "user".into()),
            name: v.name,
            value: v.value,
        })
        .collect();
    let releases = releases
        .into_iter()
        .map(|r| ReleaseRow {
            version: r.version,
            when: when(r.created_at),
            description: r.description,
            actor: r.actor,
        })
        .collect();
    render(
        StatusCode::OK,
        &AppPage {
            title: &app,
            signed_in: true,
            name: &app,
            app_path: encode(&app),
            region: info.app.region.clone(),
            release: info.release,
            addons,
            vars,
            releases,
        },
    )
}

async fn rotate(
    State(server): State<Arc<Server>>,
    Path((app, addon)): Path<(String, String)>,
) -> Response {
    match server.host.rotate_addon(&addon, Some(&app)).await {
        Ok(_) => Redirect::to(&format!("/apps/{}", encode(&app))).into_response(),
        Err(e) => error_page(&e.into()),
    }
}
