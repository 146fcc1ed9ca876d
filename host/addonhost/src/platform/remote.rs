//! Remote add-ons: providers elsewhere, in any language, that speak Heroku's
//! Add-on Partner API. The platform calls them over HTTP — `POST
//! /heroku/resources` (the v3 request), `PUT` and `DELETE
//! /heroku/resources/:id`, and addonhost's extension `POST
//! /heroku/resources/:id/rotate` — with Basic `<id>:<api.password>` and a
//! 30-second deadline. Whatever a provider answers that is not a clean
//! success becomes an error that names the add-on, the call and what was
//! wrong; the callers then write nothing (see `provision.rs`).

use serde_json::{json, Map, Value};

use super::context::CallContext;
use super::error;
use super::oauth::{Grants, Kind, GRANT_SECONDS};
use super::provider::{Answer, Config, Provider};
use super::remote_http::{self, Answer as Reply, Client, Failure};
use crate::manifest::{urlencode_segment, Manifest, Remote};
use crate::runtime::bindings::{Pending, Provisioned};
use crate::runtime::{ProvisionRequest, ProvisionResult};
use std::sync::Arc;

/// A remote provider, as one call of the platform sees it.
pub struct RemoteProvider {
    pub manifest: Arc<Manifest>,
    pub remote: Remote,
    pub client: Client,
    /// The platform's Platform API base (`<public URL>/platform`), for the
    /// provision request's `callback_url`.
    pub callback_base: String,
    pub grants: Grants,
}

/// Heroku's region names for ours.
pub fn heroku_region(region: &str) -> String {
    match region {
        "eu" => "amazon-web-services::eu-west-1".into(),
        _ => "amazon-web-services::us-east-1".into(),
    }
}

impl RemoteProvider {
    fn auth(&self) -> (&'static str, String) {
        (
            "authorization",
            remote_http::basic(&self.manifest.id, &self.manifest.api.password),
        )
    }

    fn resource_url(&self, id: &str) -> String {
        format!("{}/{}", self.remote.resources_url, urlencode_segment(id))
    }

    /// One call: `what` names it in errors (`provision`, `plan change`,
    /// …); a 2xx, or a status of `also`, is its answer.
    async fn call(
        &self,
        what: &str,
        (method, url): (http::Method, &str),
        body: Option<Value>,
        also: &[u16],
    ) -> anyhow::Result<Reply> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let m = &self.manifest;
        let reply = self
            .client
            .send(method.clone(), url, &[self.auth()], body)
            .await
            .map_err(|f| {
                error::addon(match f {
                    Failure::Unreachable { reason, .. } => format!(
                        "add-on {}: its provider is unreachable ({method} {url}: {reason}); nothing changed",
                        m.id
                    ),
                    Failure::TimedOut { after, .. } => format!(
                        "add-on {}: its provider did not answer the {what} within {} s ({method} {url}); nothing changed, retry with the same command",
                        m.id,
                        after.as_secs()
                    ),
                    Failure::Tls { reason, .. } => format!(
                        "add-on {}: its provider cannot be called securely ({method} {url}): {reason}; nothing changed",
                        m.id
                    ),
                    Failure::Bad { reason, .. } => format!(
                        "add-on {}: cannot call its provider ({method} {url}): {reason}; nothing changed",
                        m.id
                    ),
                })
            })?;
        match reply.status {
            200..=299 => Ok(reply),
            s if also.contains(&s) => Ok(reply),
            401 => Err(error::addon(format!(
                "add-on {}: its provider refused our credentials (401 to {method} {url}): api.password in {} is not the one the provider expects",
                m.id,
                m.dir.join(crate::manifest::FILE_NAME).display()
            ))),
            422 => Err(error::addon(format!(
                "add-on {}: the provider refused the {what}: {}",
                m.id,
                message_of(&reply)
            ))),
            status => Err(error::addon(format!(
                "add-on {}: its provider answered {status} to the {what} ({method} {url}){}",
                m.id,
                match reply.snippet() {
                    s if s.is_empty() => String::new(),
                    s => format!(": {s}"),
                }
            ))),
        }
    }

    /// The JSON object of a successful answer (an empty body is `{}`).
    fn object(&self, what: &str, reply: &Reply) -> anyhow::Result<Map<String, Value>> {
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(error::addon(format!(
                "add-on {}: its provider answered the {what} with JSON that is not an object: {}",
                self.manifest.id,
                reply.snippet()
            ))),
            Err(e) => Err(error::addon(format!(
                "add-on {}: its provider answered the {what} with malformed JSON ({e}): {}",
                self.manifest.id,
                reply.snippet()
            ))),
        }
    }

    /// `config` of an answer, by manifest name; every value must be a
    /// string (the names are checked by the caller against the manifest).
    fn config_of(&self, what: &str, o: &Map<String, Value>) -> anyhow::Result<Option<Config>> {
        match o.get("config") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(c)) => c
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    // Named, a URL's password in it never.
                    other => Err(error::addon(format!(
                        "add-on {} answered invalid config in the {what}: config var {k} is {}, not a string",
                        self.manifest.id,
                        crate::util::redact_url(crate::util::truncate(&other.to_string(), 200))
                    ))),
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(error::addon(format!(
                "add-on {} answered invalid config in the {what}: \"config\" is {}, not an object",
                self.manifest.id,
                crate::util::redact_url(crate::util::truncate(&other.to_string(), 200))
            ))),
        }
    }
}

/// The provider's `message` (or the body) of a refusal.
fn message_of(reply: &Reply) -> String {
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(Value::Object(o)) => match o.get("message") {
            Some(Value::String(m)) => crate::util::truncate(m, 500).to_string(),
            _ => reply.snippet(),
        },
        _ => reply.snippet(),
    }
}

/// An `id` as providers send it: a string or a number.
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Provider for RemoteProvider {
    fn provision(
        &self,
        _caps: Box<CallContext>,
        req: ProvisionRequest,
    ) -> Answer<'_, ProvisionResult> {
        Box::pin(async move {
            let now = crate::util::unix_now();
            let expires_at = now + GRANT_SECONDS;
            let code = self
                .grants
                .sign(Kind::Grant, &self.manifest.id, &req.uuid, expires_at);
            let options: Map<String, Value> = req
                .options
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let body = json!({
                "uuid": req.uuid,
                "name": req.name,
                "plan": req.plan,
                "region": heroku_region(&req.region),
                "callback_url": format!("{}/vendor/apps/{}", self.callback_base, req.uuid),
                "options": options,
                "log_input_url": Value::Null,
                "oauth_grant": {
                    "code": code,
                    "type": "authorization_code",
                    "expires_at": time_rfc3339(expires_at),
                },
                "heroku_id": format!("{}@addonhost.local", req.app),
            });
            let url = self.remote.resources_url.clone();
            let reply = self
                .call("provision", (http::Method::POST, &url), Some(body), &[])
                .await?;
            let o = self.object("provision", &reply)?;
            let id = id_of(o.get("id")).ok_or_else(|| {
                error::addon(format!(
                    "add-on {}: its provider answered the provision without an \"id\": {}",
                    self.manifest.id,
                    reply.snippet()
                ))
            })?;
            let message = match o.get("message") {
                Some(Value::String(m)) => Some(m.clone()),
                _ => None,
            };
            if reply.status == 202 {
                return Ok(ProvisionResult::Pending(Pending { id, message }));
            }
            let config = self.config_of("provision", &o)?.unwrap_or_default();
            Ok(ProvisionResult::Provisioned(Provisioned {
                id,
                config,
                message,
            }))
        })
    }

    fn deprovision<'a>(&'a self, _caps: Box<CallContext>, id: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            let url = self.resource_url(id);
            // A 410: gone at the provider already (an earlier attempt that
            // timed out here went through there).
            self.call("deprovision", (http::Method::DELETE, &url), None, &[410])
                .await
                .map(|_| ())
        })
    }

    fn change_plan<'a>(
        &'a self,
        _caps: Box<CallContext>,
        id: &'a str,
        plan: &'a str,
    ) -> Answer<'a, Option<Config>> {
        Box::pin(async move {
            let url = self.resource_url(id);
            let reply = self
                .call(
                    "plan change",
                    (http::Method::PUT, &url),
                    Some(json!({ "plan": plan })),
                    &[],
                )
                .await?;
            let o = self.object("plan change", &reply)?;
            self.config_of("plan change", &o)
        })
    }

    fn rotate<'a>(&'a self, _caps: Box<CallContext>, id: &'a str) -> Answer<'a, Config> {
        Box::pin(async move {
            let url = format!("{}/rotate", self.resource_url(id));
            let reply = self
                .call(
                    "rotation",
                    (http::Method::POST, &url),
                    Some(json!({})),
                    &[404, 405],
                )
                .await?;
            if matches!(reply.status, 404 | 405) {
                return Err(error::invalid(format!(
                    "add-on {} does not offer credential rotation: its provider answered {} to POST {url}",
                    self.manifest.id, reply.status
                )));
            }
            let o = self.object("rotation", &reply)?;
            self.config_of("rotation", &o)?.ok_or_else(|| {
                error::addon(format!(
                    "add-on {}: its provider answered the rotation without \"config\"",
                    self.manifest.id
                ))
            })
        })
    }
}

/// Unix seconds as RFC 3339 (`2024-01-01T00:00:00Z`).
pub fn time_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
