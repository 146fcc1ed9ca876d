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

use addonhost_sdk::credentials::{hex_id, secret, Rotating};
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
        };
        save(&p)?;
        store::put(&format!("uuid/{}", req.uuid), &p.id)?;
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
        p.api_key.rotate(
            secret(40),
            addonhost_sdk::now(),
            manifest().rotation.grace_seconds,
        );
        save(&p)?;
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

addonhost_sdk::export_addon!(Exceptions);
