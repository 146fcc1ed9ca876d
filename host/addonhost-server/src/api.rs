//! The JSON API, mirroring the CLI. Every route needs
//! `Authorization: Bearer <token>` (`addonhost auth:token` prints it),
//! checked before the request body is read.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | /api/apps | list apps |
//! | POST | /api/apps | `{"name", "region"?}` create |
//! | GET | /api/apps/:app | app info |
//! | DELETE | /api/apps/:app?confirm=:app | destroy |
//! | GET | /api/apps/:app/config | `{NAME: value}` |
//! | PATCH | /api/apps/:app/config[?force=true] | `{NAME: value \| null}` set / unset |
//! | GET | /api/apps/:app/releases | releases, newest first |
//! | GET | /api/apps/:app/addons | the app's add-ons |
//! | POST | /api/apps/:app/addons | `{"plan": "kv:mini", "as"?, "options"?, "uuid"?}` provision |
//! | GET | /api/addons/:addon | add-on info |
//! | PATCH | /api/addons/:addon | `{"plan": "kv:pro"}` change plan |
//! | POST | /api/addons/:addon/rotate | rotate credentials |
//! | DELETE | /api/addons/:addon?confirm=:app | deprovision |
//! | GET | /api/plugins | the plugins this server has loaded, with errors and outbound hosts |
//! | GET | /api/logs[?app=:app][&addon=:id] | this server's log lines from now on, as server-sent events (`addonhost logs --tail`) |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::{json_error, ApiError, JsonBody};
use crate::Server;
use addonhost::platform::CreateAddon;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

fn ok<T>(value: T) -> Answer<T> {
    Ok((StatusCode::OK, Json(value)))
}

pub fn router(server: Arc<Server>) -> Router<Arc<Server>> {
    Router::new()
        .route("/apps", get(apps).post(create_app))
        .route("/plugins", get(plugins))
        .route("/logs", get(logs))
        .route("/servers", get(servers))
        .route("/apps/{app}", get(app_info).delete(destroy_app))
        .route("/apps/{app}/config", get(config).patch(set_config))
        .route("/apps/{app}/releases", get(releases))
        .route("/apps/{app}/addons", get(app_addons).post(create_addon))
        .route(
            "/addons/{addon}",
            get(addon_info).patch(change_plan).delete(destroy_addon),
        )
        .route("/addons/{addon}/rotate", post(rotate))
        .fallback(|req: Request| async move {
            json_error(
                StatusCode::NOT_FOUND,
                &format!("no API route {} {}", req.method(), req.uri().path()),
            )
        })
        .route_layer(middleware::from_fn_with_state(server, authorized))
}

/// The bearer token, before anything else (the body is not read).
async fn authorized(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token.is_some_and(|t| server.is_token(t)) {
        return next.run(req).await;
    }
    crate::error::unauthorized_bearer()
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    region: Option<String>,
}

#[derive(Deserialize)]
struct NewAddon {
    plan: String,
    #[serde(rename = "as")]
    as_name: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    uuid: Option<String>,
}

#[derive(Deserialize)]
struct PlanChange {
    plan: String,
}

#[derive(Deserialize)]
struct Confirm {
    confirm: Option<String>,
}

#[derive(Deserialize)]
struct Force {
    force: Option<String>,
}

async fn apps(State(s): State<Arc<Server>>) -> Answer<Vec<addonhost::store::App>> {
    ok(s.host.apps()?)
}

async fn plugins(State(s): State<Arc<Server>>) -> Response {
    Json(s.host.plugin_statuses()).into_response()
}

/// The servers sharing the store, heard of lately (one with SQLite).
async fn servers(
    State(s): State<Arc<Server>>,
) -> Answer<Vec<addonhost::platform::cluster::ServerView>> {
    ok(s.host.servers()?)
}

async fn create_app(
    State(s): State<Arc<Server>>,
    JsonBody(body): JsonBody<NewApp>,
) -> Answer<addonhost::store::App> {
    let app = s.host.create_app(&body.name, body.region.as_deref())?;
    Ok((StatusCode::CREATED, Json(app)))
}

async fn app_info(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
) -> Answer<addonhost::platform::AppInfo> {
    ok(s.host.app_info(&app)?)
}

async fn destroy_app(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
    Query(q): Query<Confirm>,
) -> Answer<serde_json::Value> {
    s.host.destroy_app(&app, q.confirm.as_deref()).await?;
    ok(serde_json::json!({ "destroyed": app }))
}

fn config_map(s: &Server, app: &str) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(s.host
        .config(app)?
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect())
}

async fn config(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
) -> Answer<BTreeMap<String, String>> {
    ok(config_map(&s, &app)?)
}

async fn set_config(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
    Query(q): Query<Force>,
    JsonBody(body): JsonBody<BTreeMap<String, Option<String>>>,
) -> Answer<BTreeMap<String, String>> {
    let force = q.force.as_deref() == Some("true");
    let set: Vec<(String, String)> = body
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    let unset: Vec<String> = body
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    // One transaction and one release for the whole request.
    s.host.config_change(&app, &set, &unset, force)?;
    ok(config_map(&s, &app)?)
}

async fn releases(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
) -> Answer<Vec<addonhost::store::Release>> {
    ok(s.host.releases(&app)?)
}

async fn app_addons(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
) -> Answer<Vec<addonhost::platform::AddonView>> {
    ok(s.host.addons(Some(&app))?)
}

async fn create_addon(
    State(s): State<Arc<Server>>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<NewAddon>,
) -> Answer<addonhost::platform::AddonCreated> {
    let created = s
        .host
        .create_addon(CreateAddon {
            app,
            spec: body.plan,
            as_name: body.as_name,
            options: body.options.into_iter().collect(),
            uuid: body.uuid,
            actor: None,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn addon_info(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
) -> Answer<addonhost::platform::AddonView> {
    ok(s.host.addon_info(&addon, None)?)
}

async fn change_plan(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
    JsonBody(body): JsonBody<PlanChange>,
) -> Answer<addonhost::platform::AddonChanged> {
    ok(s.host.upgrade_addon(&addon, &body.plan, None).await?)
}

async fn rotate(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
) -> Answer<addonhost::platform::AddonChanged> {
    ok(s.host.rotate_addon(&addon, None).await?)
}

async fn destroy_addon(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
    Query(q): Query<Confirm>,
) -> Answer<addonhost::platform::AddonChanged> {
    ok(s.host
        .destroy_addon(&addon, None, q.confirm.as_deref())
        .await?)
}

#[derive(Deserialize)]
struct LogsQuery {
    app: Option<String>,
    addon: Option<String>,
}

/// `GET /api/logs`: the lines this server logs from now on, as server-sent
/// events (each `data` one JSON [`crate::logs::LogLine`]), until the client
/// goes or the server stops. An unknown app or add-on is a 404.
async fn logs(
    State(server): State<Arc<Server>>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    use crate::logs::LogFilter;
    let mut filter = LogFilter {
        addon: q.addon.filter(|a| !a.is_empty()),
        app: q.app.filter(|a| !a.is_empty()),
        resources: Vec::new(),
    };
    if let Some(addon) = &filter.addon {
        server.host.service(addon)?;
    }
    if let Some(app) = &filter.app {
        filter.resources = server
            .host
            .addons(Some(app))?
            .into_iter()
            .filter_map(|a| a.addon_id)
            .collect();
    }
    let Ok(lines) = server.logs.subscribe(filter) else {
        return Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "{} clients are streaming this server's logs already; try again later",
                crate::logs::MAX_CLIENTS
            ),
        ));
    };
    let events = Events(lines);
    Ok(axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}

/// A client's log lines as server-sent events.
struct Events(crate::logs::Subscription);

impl futures_core::Stream for Events {
    type Item = Result<axum::response::sse::Event, std::convert::Infallible>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().0.poll_line(cx).map(|line| {
            line.map(|line| {
                let data = serde_json::to_string(&line).unwrap_or_default();
                Ok(axum::response::sse::Event::default().data(data))
            })
        })
    }
}
