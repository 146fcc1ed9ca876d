//! `plugins:check`: a conformance checker for add-on authors, in the spirit
//! of Heroku's kensa. It loads one add-on folder into the real runtime, with
//! in-memory capabilities instead of the store, and walks the contract:
//! manifest, provision (and its idempotency), plan change, rotation, SSO
//! (valid, wrong, stale, future), deprovision.

use std::path::Path;

use serde::Serialize;

use addonhost::manifest::Manifest;
use addonhost::platform::validate;
use addonhost::runtime::capabilities::InMemory;
use addonhost::runtime::{Login, ProvisionRequest, ProvisionResult, Runtime, Verdict};

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
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
    cache: Option<addonhost::runtime::ArtifactCache>,
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
    let caps = InMemory::default();
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
    caps.set_config(&id, config.clone());

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
    let now = addonhost::util::unix_now();
    let login = |ts: i64, token: Option<String>| Login {
        id: id.clone(),
        token: token.unwrap_or_else(|| addonhost::sso::token(&id, salt, ts)),
        resource_id: uuid.clone(),
        resource_token: addonhost::sso::token(&uuid, salt, ts),
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
