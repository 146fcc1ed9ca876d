//! A key-value database partner, as an addonhost add-on.
//!
//! Provisioning creates a private namespace with generated credentials and
//! returns `KV_URL` (`http://<user>:<password>@host/addons/kv/<namespace>`),
//! where the host serves the add-on's HTTP routes. Everything the add-on
//! knows lives in its private KV:
//! - `ns/<id>`: the namespace record (plan, credentials with grace window)
//! - `uuid/<uuid>`: the namespace id made for a platform uuid (idempotency)
//! - `data/<id>/<key>`: the namespace's stored values

use addonhost_sdk::credentials::{hex_id, secret, Rotating};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::{
    sso, store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest,
    ProvisionResult, Provisioned, Session, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Kv;

fn manifest() -> Manifest {
    Manifest::embedded(include_str!("../addon-manifest.json"))
}

/// Keys a namespace may hold on each plan.
fn key_limit(plan: &str) -> Option<u64> {
    match plan {
        "mini" => Some(100),
        "pro" => Some(100_000),
        _ => None,
    }
}

#[derive(Serialize, Deserialize)]
struct Namespace {
    id: String,
    uuid: String,
    app: String,
    plan: String,
    base_url: String,
    password: Rotating,
    created_at: i64,
}

impl Namespace {
    fn url(&self) -> String {
        with_userinfo(&self.base_url, &self.id, &self.password.current, &self.id)
    }

    fn config(&self) -> Config {
        vec![("KV_URL".to_string(), self.url())]
    }
}

/// `http://host/p` + user, password, namespace → `http://user:password@host/p/namespace`.
fn with_userinfo(base: &str, user: &str, password: &str, path: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{password}@{rest}/{path}"),
        None => format!("http://{user}:{password}@{base}/{path}"),
    }
}

fn load(id: &str) -> Result<Namespace, AddonError> {
    store::get::<Namespace>(&format!("ns/{id}"))?
        .ok_or_else(|| AddonError::new(format!("no namespace {id}")))
}

fn save(ns: &Namespace) -> Result<(), AddonError> {
    store::put(&format!("ns/{}", ns.id), ns)
}

impl Lifecycle for Kv {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        if key_limit(&req.plan).is_none() {
            return Err(AddonError::new(format!(
                "unknown plan {:?}; kv offers mini and pro",
                req.plan
            )));
        }
        // A retry with the same uuid answers the namespace already made.
        if let Some(id) = store::get::<String>(&format!("uuid/{}", req.uuid))? {
            let ns = load(&id)?;
            return Ok(ProvisionResult::Provisioned(Provisioned {
                id: ns.id.clone(),
                config: ns.config(),
                message: Some(format!("namespace {} (already provisioned)", ns.id)),
            }));
        }
        let ns = Namespace {
            id: format!("kv-{}", hex_id(6)),
            uuid: req.uuid.clone(),
            app: req.app,
            plan: req.plan,
            base_url: req.base_url,
            password: Rotating::new(secret(32)),
            created_at: addonhost_sdk::now(),
        };
        save(&ns)?;
        store::put(&format!("uuid/{}", req.uuid), &ns.id)?;
        addonhost_sdk::info(&format!("created namespace {} for {}", ns.id, ns.app));
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: ns.id.clone(),
            config: ns.config(),
            message: Some(format!(
                "namespace {} is ready ({} keys on {})",
                ns.id,
                key_limit(&ns.plan).unwrap_or(0),
                ns.plan
            )),
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        let ns = load(&id)?;
        store::delete_prefix(&format!("data/{id}/"));
        addonhost_sdk::host::kv::delete(&format!("uuid/{}", ns.uuid));
        addonhost_sdk::host::kv::delete(&format!("ns/{id}"));
        addonhost_sdk::info(&format!("deleted namespace {id}"));
        Ok(())
    }

    fn change_plan(id: String, plan: String) -> Result<Option<Config>, AddonError> {
        let limit = key_limit(&plan).ok_or_else(|| {
            AddonError::new(format!("unknown plan {plan:?}; kv offers mini and pro"))
        })?;
        let mut ns = load(&id)?;
        let used = addonhost_sdk::host::kv::list_keys(&format!("data/{id}/")).len() as u64;
        if used > limit {
            return Err(AddonError::new(format!(
                "namespace {id} holds {used} keys; plan {plan} allows {limit}: delete keys first"
            )));
        }
        ns.plan = plan;
        save(&ns)?;
        // The URL does not depend on the plan: the config stays as it is.
        Ok(None)
    }
}

impl Credentials for Kv {
    fn rotate(id: String) -> Result<Config, AddonError> {
        let mut ns = load(&id)?;
        let grace = manifest().rotation.grace_seconds;
        ns.password.rotate(secret(32), addonhost_sdk::now(), grace);
        save(&ns)?;
        addonhost_sdk::info(&format!(
            "rotated credentials of {id}; the previous password works for {grace} s"
        ));
        Ok(ns.config())
    }
}

impl Sso for Kv {
    fn verify(login: Login) -> Verdict {
        let salt = manifest().api.sso_salt;
        if let Err(denied) = sso::check_login(&login, &salt, addonhost_sdk::now()) {
            return Verdict::Denied(denied.to_string());
        }
        match store::get::<Namespace>(&format!("ns/{}", login.id)) {
            Ok(Some(ns)) => Verdict::Ok(Session {
                user: login.email,
                landing: format!("/dashboard/{}", ns.id),
            }),
            Ok(None) => Verdict::Denied(format!("no namespace {}", login.id)),
            Err(e) => Verdict::Denied(e.message),
        }
    }
}

addonhost_sdk::export_addon!(Kv);
