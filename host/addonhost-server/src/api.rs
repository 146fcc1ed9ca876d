//! The JSON API, mirroring the CLI. Every route needs
//! `Authorization: Bearer <token>` (`addonhost auth:token` prints it).
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
//! | GET | /api/plugins | the plugins this server has loaded, with errors |

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::web::{Req, Resp};
use crate::Server;
use addonhost::platform::CreateAddon;

fn parse<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, Resp> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Resp::json_error(400, &format!("malformed JSON body: {e}")))
}

fn authorized(server: &Server, req: &Req) -> bool {
    match req.bearer() {
        Some(t) => {
            t.len() == server.token.len() && bool::from(t.as_bytes().ct_eq(server.token.as_bytes()))
        }
        None => false,
    }
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

fn done<T: serde::Serialize>(status: u16, r: anyhow::Result<T>) -> Resp {
    match r {
        Ok(v) => Resp::json(status, &v),
        Err(e) => Resp::error(&e),
    }
}

pub async fn route(server: &Arc<Server>, req: &Req, rest: &[&str]) -> Resp {
    if !authorized(server, req) {
        return Resp::json_error(
            401,
            "missing or wrong bearer token; see `addonhost auth:token`",
        )
        .header("www-authenticate", "Bearer");
    }
    match handle(server, req, rest).await {
        Ok(r) | Err(r) => r,
    }
}

async fn handle(server: &Arc<Server>, req: &Req, rest: &[&str]) -> Result<Resp, Resp> {
    let host = &server.host;
    let m = &req.method;
    Ok(match rest {
        ["apps"] if m == Method::GET => done(200, host.apps()),
        ["plugins"] if m == Method::GET => Resp::json(200, &host.plugin_statuses()),
        ["apps"] if m == Method::POST => {
            let body: NewApp = parse(req)?;
            done(201, host.create_app(&body.name, body.region.as_deref()))
        }
        ["apps", app] if m == Method::GET => done(200, host.app_info(app)),
        ["apps", app] if m == Method::DELETE => {
            let confirm = req.query_param("confirm");
            done(
                200,
                host.destroy_app(app, confirm.as_deref())
                    .await
                    .map(|_| serde_json::json!({"destroyed": app})),
            )
        }
        ["apps", app, "config"] if m == Method::GET => done(
            200,
            host.config(app).map(|vars| {
                vars.into_iter()
                    .map(|v| (v.name, v.value))
                    .collect::<BTreeMap<_, _>>()
            }),
        ),
        ["apps", app, "config"] if m == Method::PATCH => {
            let body: BTreeMap<String, Option<String>> = parse(req)?;
            let force = req.query_param("force").as_deref() == Some("true");
            let set: Vec<(String, String)> = body
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect();
            let unset: Vec<String> = body
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            if !set.is_empty() {
                if let Err(e) = host.config_set(app, &set, force) {
                    return Err(Resp::error(&e));
                }
            }
            if !unset.is_empty() {
                if let Err(e) = host.config_unset(app, &unset, force) {
                    return Err(Resp::error(&e));
                }
            }
            done(
                200,
                host.config(app).map(|vars| {
                    vars.into_iter()
                        .map(|v| (v.name, v.value))
                        .collect::<BTreeMap<_, _>>()
                }),
            )
        }
        ["apps", app, "releases"] if m == Method::GET => done(200, host.releases(app)),
        ["apps", app, "addons"] if m == Method::GET => done(200, host.addons(Some(app))),
        ["apps", app, "addons"] if m == Method::POST => {
            let body: NewAddon = parse(req)?;
            done(
                201,
                host.create_addon(CreateAddon {
                    app: app.to_string(),
                    spec: body.plan,
                    as_name: body.as_name,
                    options: body.options.into_iter().collect(),
                    uuid: body.uuid,
                })
                .await,
            )
        }
        ["addons", addon] if m == Method::GET => done(200, host.addon_info(addon, None)),
        ["addons", addon] if m == Method::PATCH => {
            let body: PlanChange = parse(req)?;
            done(200, host.upgrade_addon(addon, &body.plan, None).await)
        }
        ["addons", addon, "rotate"] if m == Method::POST => {
            done(200, host.rotate_addon(addon, None).await)
        }
        ["addons", addon] if m == Method::DELETE => {
            let confirm = req.query_param("confirm");
            done(
                200,
                host.destroy_addon(addon, None, confirm.as_deref()).await,
            )
        }
        _ => Resp::json_error(
            404,
            &format!("no API route {} {}", req.method, req.uri.path()),
        ),
    })
}
