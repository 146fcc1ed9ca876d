//! `plugins:check`: a conformance checker for add-on authors, in the spirit
//! of Heroku's kensa. It loads one add-on folder into the real runtime, with
//! in-memory capabilities instead of the store, and walks the contract:
//! manifest, provision (and its idempotency), plan change, rotation, SSO
//! (valid, wrong, stale, future), deprovision.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::manifest::Manifest;
use crate::platform::validate;
use crate::runtime::{
    Capabilities, Level, Login, ProvisionRequest, ProvisionResult, Runtime, Verdict,
};

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The KV and the per-resource config an add-on sees during the check.
#[derive(Default)]
struct Memory {
    kv: HashMap<String, Vec<u8>>,
    config: HashMap<String, Vec<(String, String)>>,
}

#[derive(Clone, Default)]
struct MemCaps(Arc<Mutex<Memory>>);

impl MemCaps {
    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Capabilities for MemCaps {
    fn config_get(&mut self, id: &str, name: &str) -> Option<String> {
        self.mem()
            .config
            .get(id)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    fn config_list(&mut self, id: &str) -> Vec<(String, String)> {
        self.mem().config.get(id).cloned().unwrap_or_default()
    }
    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        _: &str,
    ) -> Result<(), String> {
        let mut m = self.mem();
        let vars = m.config.entry(id.to_string()).or_default();
        for (name, value) in changes {
            vars.retain(|(n, _)| *n != name);
            if let Some(v) = value {
                vars.push((name, v));
            }
        }
        Ok(())
    }
    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        _: Option<String>,
    ) -> Result<(), String> {
        self.mem().config.insert(id.to_string(), config);
        Ok(())
    }
    fn fail(&mut self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.mem().kv.get(key).cloned()
    }
    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.mem().kv.insert(key.to_string(), value);
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) {
        self.mem().kv.remove(key);
    }
    fn kv_list_keys(&mut self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .mem()
            .kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
    fn log(&mut self, _: Level, _: &str) {}
}

fn result(name: &'static str, outcome: Result<String, String>) -> CheckResult {
    match outcome {
        Ok(detail) => CheckResult {
            name,
            passed: true,
            detail,
        },
        Err(detail) => CheckResult {
            name,
            passed: false,
            detail,
        },
    }
}

/// Runs every check against the add-on in `dir`, provisioning with `options`.
pub async fn check(
    dir: &Path,
    options: Vec<(String, String)>,
    cache: Option<crate::runtime::ArtifactCache>,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let manifest = match Manifest::load(dir) {
        Ok(m) => {
            out.push(result(
                "manifest is valid",
                Ok(format!(
                    "{} with plans {}",
                    m.id,
                    m.plans
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ));
            m
        }
        Err(e) => {
            out.push(result("manifest is valid", Err(e.to_string())));
            return out;
        }
    };
    let runtime = match Runtime::new(cache) {
        Ok(r) => r,
        Err(e) => {
            out.push(result("component loads", Err(format!("{e:#}"))));
            return out;
        }
    };
    let plugin = match runtime.load(&manifest.id, &manifest.component, manifest.limits) {
        Ok(p) => {
            out.push(result(
                "component implements the addon world",
                Ok(format!("{}", manifest.component.display())),
            ));
            p
        }
        Err(e) => {
            out.push(result(
                "component implements the addon world",
                Err(format!("{e:#}")),
            ));
            return out;
        }
    };
    let caps = MemCaps::default();
    let uuid = uuid::Uuid::new_v4().to_string();
    let request = ProvisionRequest {
        uuid: uuid.clone(),
        app: "check-app".into(),
        name: manifest.api.config_vars_prefix.clone(),
        plan: manifest.default_plan().id.clone(),
        region: "us".into(),
        options,
        base_url: format!("http://127.0.0.1:5000/addons/{}", manifest.id),
    };

    // Provision: an id, and only manifest vars with valid URLs.
    let first = plugin
        .provision(Box::new(caps.clone()), request.clone())
        .await;
    let (id, config) = match first {
        Ok(ProvisionResult::Provisioned(p)) => {
            let verdict = validate::partner_id(&p.id)
                .and_then(|_| validate::addon_config(&manifest, &p.config));
            out.push(result(
                "provision returns an id and valid manifest vars",
                verdict.map(|_| format!("id {} with {}", p.id, names(&p.config))),
            ));
            (p.id, p.config)
        }
        Ok(ProvisionResult::Pending(p)) => {
            out.push(result(
                "provision returns an id and valid manifest vars",
                Ok(format!("pending {} (config follows later)", p.id)),
            ));
            (p.id, Vec::new())
        }
        Err(e) => {
            out.push(result(
                "provision returns an id and valid manifest vars",
                Err(e.to_string()),
            ));
            return out;
        }
    };
    caps.mem().config.insert(id.clone(), config.clone());

    let again = plugin
        .provision(Box::new(caps.clone()), request.clone())
        .await;
    out.push(result(
        "provision with the same uuid is idempotent",
        match again {
            Ok(ProvisionResult::Provisioned(p)) if p.id == id => Ok(format!("answered {id} again")),
            Ok(ProvisionResult::Pending(p)) if p.id == id => Ok(format!("answered {id} again")),
            Ok(other) => Err(format!("a second resource was made: {other:?}")),
            Err(e) => Err(e.to_string()),
        },
    ));

    match manifest.plans.iter().find(|p| p.id != request.plan) {
        Some(other) => {
            let r = plugin
                .change_plan(Box::new(caps.clone()), &id, &other.id)
                .await;
            out.push(result(
                "change-plan moves to another plan",
                match r {
                    Ok(Some(c)) => validate::addon_config(&manifest, &c)
                        .map(|_| format!("to {} with new config {}", other.id, names(&c))),
                    Ok(None) => Ok(format!("to {}, config unchanged", other.id)),
                    Err(e) => Err(e.to_string()),
                },
            ));
        }
        None => out.push(result(
            "change-plan moves to another plan",
            Ok("only one plan: nothing to change".into()),
        )),
    }

    let rotated = plugin.rotate(Box::new(caps.clone()), &id).await;
    out.push(result(
        "rotate changes the credentials",
        match rotated {
            Ok(c) if c != config => {
                validate::addon_config(&manifest, &c).map(|_| format!("new {}", names(&c)))
            }
            Ok(_) => Err("rotate answered the same config: the credentials did not change".into()),
            Err(e) => Err(e.to_string()),
        },
    ));

    let salt = &manifest.api.sso_salt;
    let now = crate::util::unix_now();
    let login = |ts: i64, token: Option<String>| Login {
        id: id.clone(),
        token: token.unwrap_or_else(|| crate::sso::token(&id, salt, ts)),
        resource_id: uuid.clone(),
        resource_token: crate::sso::token(&uuid, salt, ts),
        timestamp: ts,
        email: "check@addonhost.local".into(),
        app: "check-app".into(),
        context_app: "check-app".into(),
        nav_data: "{}".into(),
        params: Vec::new(),
    };
    let verdict = plugin
        .verify(Box::new(caps.clone()), login(now, None))
        .await;
    out.push(result(
        "sso verify accepts a valid token",
        match verdict {
            Ok(Verdict::Ok(s)) => Ok(format!("lands {} on {}", s.user, s.landing)),
            Ok(Verdict::Denied(why)) => Err(format!("denied a valid login: {why}")),
            Err(e) => Err(e.to_string()),
        },
    ));
    for (name, ts, token) in [
        (
            "sso verify rejects a wrong token",
            now,
            Some("0".repeat(40)),
        ),
        (
            "sso verify rejects a 6-minute-old timestamp",
            now - 6 * 60,
            None,
        ),
        (
            "sso verify rejects a 2-minute-future timestamp",
            now + 2 * 60,
            None,
        ),
    ] {
        let verdict = plugin
            .verify(Box::new(caps.clone()), login(ts, token))
            .await;
        out.push(result(
            name,
            match verdict {
                Ok(Verdict::Denied(why)) => Ok(format!("denied: {why}")),
                Ok(Verdict::Ok(_)) => Err("the login was accepted".into()),
                Err(e) => Err(e.to_string()),
            },
        ));
    }

    let gone = plugin.deprovision(Box::new(caps.clone()), &id).await;
    out.push(result(
        "deprovision succeeds",
        gone.map(|_| format!("{id} removed"))
            .map_err(|e| e.to_string()),
    ));
    out
}

fn names(config: &[(String, String)]) -> String {
    if config.is_empty() {
        return "no vars".into();
    }
    config
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
