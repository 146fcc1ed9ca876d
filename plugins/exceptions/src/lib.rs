//! An exception tracker partner (the seed's "POST /exceptions" example), as an
//! addonhost add-on.
//!
//! Provisioning creates a project with an API key and returns
//! `EXCEPTIONS_URL` (`http://host/addons/exceptions/<api key>`; the app posts
//! to `$EXCEPTIONS_URL/exceptions`) and `EXCEPTIONS_RETENTION_DAYS`, which
//! depends on the plan, so a plan change answers new config.
//! Private KV layout:
//! - `project/<id>`: the project (plan, API key with grace window)
//! - `uuid/<uuid>`: the project made for a platform uuid (idempotency)
//! - `exc/<id>/<seq>`: the stored exceptions
//! - `key/<api key>`: the project an API key (current or previous) belongs to
//!
//! HTTP (relative to `<server>/addons/exceptions`):
//! - `POST /<api key>/exceptions`: store one (any JSON or text body)
//! - `GET /<api key>/exceptions`: the stored ones, as JSON
//! - `GET /dashboard/<id>` after SSO: the project's exceptions

use addonhost_sdk::credentials::{hex_id, secret, Rotating};
use addonhost_sdk::http::{escape, Handler, Request, Response};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::{
    sso, store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest,
    ProvisionResult, Provisioned, Session, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Exceptions;

fn manifest() -> Manifest {
    Manifest::embedded(include_str!("../addon-manifest.json"))
}

fn retention_days(plan: &str) -> Option<u32> {
    match plan {
        "dev" => Some(7),
        "pro" => Some(90),
        _ => None,
    }
}

fn unknown_plan(plan: &str) -> AddonError {
    AddonError::new(format!(
        "unknown plan {plan:?}; exceptions offers dev and pro"
    ))
}

#[derive(Serialize, Deserialize)]
struct Project {
    id: String,
    uuid: String,
    app: String,
    plan: String,
    base_url: String,
    api_key: Rotating,
    /// How long a rotated-out key keeps working (`--grace_seconds N`).
    #[serde(default = "default_grace")]
    grace_seconds: i64,
}

fn default_grace() -> i64 {
    manifest().rotation.grace_seconds
}

impl Project {
    fn config(&self) -> Config {
        vec![
            (
                "EXCEPTIONS_URL".to_string(),
                format!("{}/{}", self.base_url, self.api_key.current),
            ),
            (
                "EXCEPTIONS_RETENTION_DAYS".to_string(),
                retention_days(&self.plan).unwrap_or(0).to_string(),
            ),
        ]
    }
}

fn load(id: &str) -> Result<Project, AddonError> {
    store::get::<Project>(&format!("project/{id}"))?
        .ok_or_else(|| AddonError::new(format!("no project {id}")))
}

fn save(p: &Project) -> Result<(), AddonError> {
    store::put(&format!("project/{}", p.id), p)
}

impl Lifecycle for Exceptions {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        retention_days(&req.plan).ok_or_else(|| unknown_plan(&req.plan))?;
        let grace_seconds =
            addonhost_sdk::credentials::grace_from_options(&req.options, default_grace())?;
        if let Some(id) = store::get::<String>(&format!("uuid/{}", req.uuid))? {
            let p = load(&id)?;
            return Ok(ProvisionResult::Provisioned(Provisioned {
                id: p.id.clone(),
                config: p.config(),
                message: Some(format!("project {} (already provisioned)", p.id)),
            }));
        }
        let p = Project {
            id: format!("exc-{}", hex_id(6)),
            uuid: req.uuid.clone(),
            app: req.app,
            plan: req.plan,
            base_url: req.base_url,
            api_key: Rotating::new(secret(40)),
            grace_seconds,
        };
        save(&p)?;
        store::put(&format!("uuid/{}", req.uuid), &p.id)?;
        store::put(&format!("key/{}", p.api_key.current), &p.id)?;
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: p.id.clone(),
            config: p.config(),
            message: Some(format!(
                "project {} keeps exceptions for {} days; POST them to $EXCEPTIONS_URL/exceptions",
                p.id,
                retention_days(&p.plan).unwrap_or(0)
            )),
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        let p = load(&id)?;
        store::delete_prefix(&format!("exc/{id}/"));
        addonhost_sdk::host::kv::delete(&format!("key/{}", p.api_key.current));
        if let Some(prev) = &p.api_key.previous {
            addonhost_sdk::host::kv::delete(&format!("key/{prev}"));
        }
        addonhost_sdk::host::kv::delete(&format!("uuid/{}", p.uuid));
        addonhost_sdk::host::kv::delete(&format!("project/{id}"));
        Ok(())
    }

    fn change_plan(id: String, plan: String) -> Result<Option<Config>, AddonError> {
        retention_days(&plan).ok_or_else(|| unknown_plan(&plan))?;
        let mut p = load(&id)?;
        p.plan = plan;
        save(&p)?;
        Ok(Some(p.config()))
    }
}

impl Credentials for Exceptions {
    fn rotate(id: String) -> Result<Config, AddonError> {
        let mut p = load(&id)?;
        // A key older than the previous one is no longer accepted anywhere.
        if let Some(old) = &p.api_key.previous {
            addonhost_sdk::host::kv::delete(&format!("key/{old}"));
        }
        p.api_key
            .rotate(secret(40), addonhost_sdk::now(), p.grace_seconds);
        save(&p)?;
        store::put(&format!("key/{}", p.api_key.current), &p.id)?;
        Ok(p.config())
    }
}

impl Sso for Exceptions {
    fn verify(login: Login) -> Verdict {
        let salt = manifest().api.sso_salt;
        if let Err(denied) = sso::check_login(&login, &salt, addonhost_sdk::now()) {
            return Verdict::Denied(denied.to_string());
        }
        match load(&login.id) {
            Ok(p) => Verdict::Ok(Session {
                user: login.email,
                landing: format!("/dashboard/{}", p.id),
            }),
            Err(e) => Verdict::Denied(e.message),
        }
    }
}

/// The project an API key opens (the previous key within its grace window).
fn project_for_key(key: &str) -> Option<Project> {
    let id: String = store::get(&format!("key/{key}")).ok()??;
    let p = load(&id).ok()?;
    p.api_key.accepts(key, addonhost_sdk::now()).then_some(p)
}

fn stored(id: &str) -> Vec<serde_json::Value> {
    let prefix = format!("exc/{id}/");
    addonhost_sdk::host::kv::list_keys(&prefix)
        .into_iter()
        .filter_map(|k| store::get::<serde_json::Value>(&k).ok().flatten())
        .collect()
}

impl Handler for Exceptions {
    fn handle(req: Request) -> Response {
        let segs = req.segments();
        match (req.method.as_str(), segs.as_slice()) {
            ("POST", [key, "exceptions"]) => {
                let Some(p) = project_for_key(key) else {
                    return Response::text(401, "unknown API key\n");
                };
                let body = String::from_utf8_lossy(&req.body).into_owned();
                let payload = serde_json::from_str::<serde_json::Value>(&body)
                    .unwrap_or(serde_json::Value::String(body));
                let seq = addonhost_sdk::host::kv::count_keys(&format!("exc/{}/", p.id));
                let record = serde_json::json!({
                    "seq": seq + 1,
                    "at": addonhost_sdk::now(),
                    "exception": payload,
                });
                // Zero-padded so keys list in arrival order.
                if let Err(e) = store::put(&format!("exc/{}/{:010}", p.id, seq + 1), &record) {
                    return Response::text(413, format!("{}\n", e.message));
                }
                Response::json(
                    201,
                    &serde_json::json!({"stored": seq + 1, "project": p.id}),
                )
            }
            ("GET", [key, "exceptions"]) => match project_for_key(key) {
                Some(p) => Response::json(200, &serde_json::Value::Array(stored(&p.id))),
                None => Response::text(401, "unknown API key\n"),
            },
            ("GET", ["dashboard", id]) => match req.session() {
                Some((user, resource)) if resource == *id => match load(id) {
                    Ok(p) => dashboard(&user, &p),
                    Err(_) => Response::text(404, "no such project\n"),
                },
                _ => Response::html(
                    403,
                    "<h1>403</h1><p>Sign in from the addonhost dashboard.</p>",
                ),
            },
            _ => Response::text(404, "not found\n"),
        }
    }
}

fn dashboard(user: &str, p: &Project) -> Response {
    let items = stored(&p.id);
    let rows: String = items
        .iter()
        .rev()
        .map(|e| {
            format!(
                "<tr><td>#{}</td><td>{}</td><td><code>{}</code></td></tr>",
                e["seq"],
                e["at"],
                escape(&e["exception"].to_string())
            )
        })
        .collect();
    Response::html(
        200,
        format!(
            r#"<!doctype html><html><head><meta charset="utf-8"><title>exceptions · {id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;width:100%}} td{{border-top:1px solid #eee;padding:.4rem}} code{{font-size:.85rem}}</style></head>
<body><h1>Exception Tracker · project <code id="project">{id}</code></h1>
<p>Signed in as <strong id="user">{user}</strong> · app <code>{app}</code> · plan <strong>{plan}</strong> ·
<span id="count">{count}</span> exceptions</p>
<table id="exceptions">{rows}</table></body></html>"#,
            id = escape(&p.id),
            user = escape(user),
            app = escape(&p.app),
            plan = escape(&p.plan),
            count = items.len(),
        ),
    )
}

addonhost_sdk::export_addon!(Exceptions);
addonhost_sdk::export_http!(Exceptions);
