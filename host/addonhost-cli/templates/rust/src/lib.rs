//! {{title}}: an addonhost add-on.
//!
//! Private KV layout:
//! - `resource/<id>`: the resource (plan, key)
//! - `uuid/<uuid>`: the resource made for a platform uuid (idempotency)

use addonhost_sdk::credentials::{ct_eq, hex_id, secret};
use addonhost_sdk::http::{escape, parse_query, Handler, Request, Response};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::{
    sso, store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest,
    ProvisionResult, Provisioned, Session, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Addon;

fn manifest() -> Manifest {
    Manifest::embedded(include_str!("../addon-manifest.json"))
}

#[derive(Serialize, Deserialize)]
struct Resource {
    id: String,
    uuid: String,
    app: String,
    plan: String,
    base_url: String,
    key: String,
}

impl Resource {
    fn config(&self) -> Config {
        vec![(
            "{{prefix}}_URL".to_string(),
            format!("{}/{}?key={}", self.base_url, self.id, self.key),
        )]
    }
}

fn load(id: &str) -> Result<Resource, AddonError> {
    store::get(&format!("resource/{id}"))?
        .ok_or_else(|| AddonError::new(format!("no resource {id}")))
}

fn save(r: &Resource) -> Result<(), AddonError> {
    store::put(&format!("resource/{}", r.id), r)
}

impl Lifecycle for Addon {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        // A retry carries the same uuid: answer the resource made for it.
        if let Some(id) = store::get::<String>(&format!("uuid/{}", req.uuid))? {
            let r = load(&id)?;
            return Ok(ProvisionResult::Provisioned(Provisioned {
                id: r.id.clone(),
                config: r.config(),
                message: None,
            }));
        }
        let r = Resource {
            id: format!("{{id}}-{}", hex_id(4)),
            uuid: req.uuid.clone(),
            app: req.app,
            plan: req.plan,
            base_url: req.base_url,
            key: secret(32),
        };
        save(&r)?;
        store::put(&format!("uuid/{}", req.uuid), &r.id)?;
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: r.id.clone(),
            config: r.config(),
            message: Some(format!("{} is ready on the {} plan", r.id, r.plan)),
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        let r = load(&id)?;
        addonhost_sdk::host::kv::delete(&format!("uuid/{}", r.uuid));
        addonhost_sdk::host::kv::delete(&format!("resource/{id}"));
        Ok(())
    }

    fn change_plan(id: String, plan: String) -> Result<Option<Config>, AddonError> {
        // The host only sends plans from the manifest.
        let mut r = load(&id)?;
        r.plan = plan;
        save(&r)?;
        Ok(None)
    }
}

impl Credentials for Addon {
    fn rotate(id: String) -> Result<Config, AddonError> {
        let mut r = load(&id)?;
        r.key = secret(32);
        save(&r)?;
        Ok(r.config())
    }
}

impl Sso for Addon {
    fn verify(login: Login) -> Verdict {
        let salt = manifest().api.sso_salt;
        if let Err(denied) = sso::check_login(&login, &salt, addonhost_sdk::now()) {
            return Verdict::Denied(denied.to_string());
        }
        match load(&login.id) {
            Ok(r) => Verdict::Ok(Session {
                user: login.email,
                landing: format!("/dashboard/{}", r.id),
            }),
            Err(e) => Verdict::Denied(e.message),
        }
    }
}

impl Handler for Addon {
    fn handle(req: Request) -> Response {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("GET", ["dashboard", id]) => match (req.session(), load(id)) {
                (Some((user, resource)), Ok(r)) if resource == *id => Response::html(
                    200,
                    format!(
                        "<!doctype html><title>{{title}}</title><h1>{{title}} · {}</h1>\
                         <p>Signed in as <strong>{}</strong> · app {} · plan {}</p>",
                        escape(&r.id),
                        escape(&user),
                        escape(&r.app),
                        escape(&r.plan)
                    ),
                ),
                _ => Response::text(403, "sign in from the addonhost dashboard\n"),
            },
            ("GET", [id]) => {
                let key = parse_query(&req.query)
                    .into_iter()
                    .find(|(k, _)| k == "key")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                match load(id) {
                    Ok(r) if ct_eq(&r.key, &key) => Response::json(
                        200,
                        &serde_json::json!({"id": r.id, "app": r.app, "plan": r.plan}),
                    ),
                    _ => Response::text(401, "unknown resource or key\n"),
                }
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}

addonhost_sdk::export_addon!(Addon);
addonhost_sdk::export_http!(Addon);
