//! A transactional mail partner, as an addonhost add-on that is a thin layer
//! over the partner's own backend: provisioning, rotation, plan changes and
//! deprovisioning are calls to the partner's mailbox API, and the
//! credentials in `MAILER_URL` are the ones that backend issued.
//!
//! The backend is the first host of the manifest's `outbound.allowed_hosts`
//! (`http://127.0.0.1:9025`); `addons:create mailer -- --backend URL` picks
//! another, which the host still checks against the same list. The add-on
//! knows the backend by its partner secret (`api.password`), sent as
//! `Authorization: Basic mailer:<password>`.
//!
//! The backend's API (JSON):
//! - `POST /v1/mailboxes` `{"uuid", "plan", "app"}` → `{"id", "smtp_host",
//!   "username", "password"}`; the same `uuid` answers the same mailbox
//!   (the platform's idempotency key, passed on)
//! - `POST /v1/mailboxes/<id>/rotate` → `{"username", "password"}`; the
//!   backend keeps the previous password valid through its grace window
//! - `PUT /v1/mailboxes/<id>` `{"plan"}` → 200
//! - `DELETE /v1/mailboxes/<id>` → 204 (404: already gone)
//!
//! Private KV layout: `mailbox/<id>`: the backend it lives on, its plan.
//! HTTP: `GET /dashboard/<id>` after SSO: the mailbox's page.

use addonhost_sdk::http::{escape, fetch, Handler, Outgoing, Request, Response};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::{
    sso, store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest,
    ProvisionResult, Provisioned, Session, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Mailer;

fn manifest() -> Manifest {
    Manifest::embedded(include_str!("../addon-manifest.json"))
}

const PLANS: [&str; 2] = ["starter", "pro"];

/// What the add-on keeps of a mailbox; the credentials live in the backend.
#[derive(Serialize, Deserialize)]
struct Mailbox {
    id: String,
    backend: String,
    plan: String,
    smtp_host: String,
}

/// A call to the backend with the partner's credentials; a non-2xx answer
/// is an error naming the status and what the backend said.
fn call(
    backend: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, AddonError> {
    let m = manifest();
    let mut request = Outgoing::new(method, &format!("{}{path}", backend.trim_end_matches('/')))
        .basic_auth(&m.id, &m.api.password)
        .header("accept", "application/json");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = fetch(request)?;
    if !response.is_success() {
        return Err(AddonError::new(format!(
            "the mail backend answered {method} {path} with {}: {}",
            response.status,
            response.body_text().trim()
        )));
    }
    if response.body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    response.body_json().map_err(AddonError::new)
}

fn field(v: &serde_json::Value, key: &str) -> Result<String, AddonError> {
    v[key]
        .as_str()
        .map(String::from)
        .ok_or_else(|| AddonError::new(format!("the mail backend's answer has no {key:?}: {v}")))
}

/// `MAILER_URL` from the credentials the backend issued.
fn config(smtp_host: &str, credentials: &serde_json::Value) -> Result<Config, AddonError> {
    Ok(vec![(
        "MAILER_URL".into(),
        format!(
            "smtp://{}:{}@{smtp_host}",
            field(credentials, "username")?,
            field(credentials, "password")?
        ),
    )])
}

fn load(id: &str) -> Result<Mailbox, AddonError> {
    store::get(&format!("mailbox/{id}"))?.ok_or_else(|| AddonError::new(format!("no mailbox {id}")))
}

fn check_plan(plan: &str) -> Result<(), AddonError> {
    if PLANS.contains(&plan) {
        Ok(())
    } else {
        Err(AddonError::new(format!(
            "unknown plan {plan:?}; mailer offers {}",
            PLANS.join(" and ")
        )))
    }
}

impl Lifecycle for Mailer {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        check_plan(&req.plan)?;
        let backend = req
            .options
            .iter()
            .find(|(k, _)| k == "backend")
            .map(|(_, v)| v.clone())
            .or_else(|| manifest().outbound.allowed_hosts.first().cloned())
            .ok_or_else(|| {
                AddonError::new("no mail backend: the manifest declares no outbound host")
            })?;
        // The backend answers the same mailbox for the same uuid, so a
        // retried provisioning makes no second one.
        let answer = call(
            &backend,
            "POST",
            "/v1/mailboxes",
            Some(serde_json::json!({"uuid": req.uuid, "plan": req.plan, "app": req.app})),
        )?;
        let mailbox = Mailbox {
            id: field(&answer, "id")?,
            backend,
            plan: req.plan,
            smtp_host: field(&answer, "smtp_host")?,
        };
        store::put(&format!("mailbox/{}", mailbox.id), &mailbox)?;
        Ok(ProvisionResult::Provisioned(Provisioned {
            config: config(&mailbox.smtp_host, &answer)?,
            message: Some(format!(
                "mailbox {} is ready on the {} plan",
                mailbox.id, mailbox.plan
            )),
            id: mailbox.id,
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        let mailbox = load(&id)?;
        match call(
            &mailbox.backend,
            "DELETE",
            &format!("/v1/mailboxes/{id}"),
            None,
        ) {
            Ok(_) => {}
            // Already gone at the backend: the resource is gone either way.
            Err(e) if e.message.contains(" with 404") => {}
            Err(e) => return Err(e),
        }
        addonhost_sdk::host::kv::delete(&format!("mailbox/{id}"));
        Ok(())
    }

    fn change_plan(id: String, plan: String) -> Result<Option<Config>, AddonError> {
        check_plan(&plan)?;
        let mut mailbox = load(&id)?;
        call(
            &mailbox.backend,
            "PUT",
            &format!("/v1/mailboxes/{id}"),
            Some(serde_json::json!({"plan": plan})),
        )?;
        mailbox.plan = plan;
        store::put(&format!("mailbox/{id}"), &mailbox)?;
        Ok(None)
    }
}

impl Credentials for Mailer {
    /// The backend issues the new password and keeps the previous one
    /// valid through its grace window.
    fn rotate(id: String) -> Result<Config, AddonError> {
        let mailbox = load(&id)?;
        let answer = call(
            &mailbox.backend,
            "POST",
            &format!("/v1/mailboxes/{id}/rotate"),
            None,
        )?;
        config(&mailbox.smtp_host, &answer)
    }
}

impl Sso for Mailer {
    fn verify(login: Login) -> Verdict {
        let salt = manifest().api.sso_salt;
        if let Err(denied) = sso::check_login(&login, &salt, addonhost_sdk::now()) {
            return Verdict::Denied(denied.to_string());
        }
        match load(&login.id) {
            Ok(m) => Verdict::Ok(Session {
                user: login.email,
                landing: format!("/dashboard/{}", m.id),
            }),
            Err(e) => Verdict::Denied(e.message),
        }
    }
}

impl Handler for Mailer {
    fn handle(req: Request) -> Response {
        match (req.method.as_str(), req.segments().as_slice()) {
            ("GET", ["dashboard", id]) => match req.session() {
                Some((user, resource)) if resource == *id => match load(id) {
                    Ok(m) => Response::html(
                        200,
                        format!(
                            "<!doctype html><title>Mailer</title><div id=\"heroku-header\"></div>\
                             <h1>Mailbox {}</h1><p>Plan {}, on {}; signed in as {}.</p>",
                            escape(&m.id),
                            escape(&m.plan),
                            escape(&m.backend),
                            escape(&user)
                        ),
                    ),
                    Err(e) => Response::text(404, format!("{}\n", e.message)),
                },
                _ => Response::text(403, "sign in through the dashboard first\n"),
            },
            _ => Response::text(404, "not found\n"),
        }
    }
}

addonhost_sdk::export_addon!(Mailer);
addonhost_sdk::export_http!(Mailer);
