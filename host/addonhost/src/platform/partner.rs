//! Provider mode: this host's plugins behind Heroku's Add-on Partner API, so
//! a platform that speaks it (Heroku, or another addonhost) can offer them.
//!
//! Each resource a platform provisions here lives on an app of its own
//! (`partner-<uuid…>`) standing for the platform's app: the provisioning,
//! idempotency by uuid, ownership rules and sandbox are then exactly those
//! of any add-on here, and the plugin sees its vars through the same
//! capabilities. What the plugin changes on its own behalf (a credential
//! roll from its dashboard, an async completion) goes back to the calling
//! platform: the request's `oauth_grant` is traded for a token at the
//! platform's `/oauth/token`, then `PATCH /addons/:uuid/config` and
//! `POST /addons/:uuid/actions/provision`. The host makes those calls, never
//! the plugin.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::context::Effects;
use super::platform_api::resource_config;
use super::remote_http::{self, Client};
use super::{error, AddonCreated, CreateAddon, Host};
use crate::manifest::Manifest;
use crate::store::{Resource, ResourceState, Store};
use crate::util::unix_now;

/// Attempts at delivering one change to the calling platform.
const DELIVERY_ATTEMPTS: u32 = 5;

/// Heroku's `POST /heroku/resources` body (v3); unknown fields are accepted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProvisionV3 {
    /// The platform's id for the resource, the idempotency key (required; must
    /// be a UUID).
    pub uuid: Option<String>,
    /// The platform's attachment name; accepted but not used (the resource
    /// lives on an app of its own here).
    pub name: Option<String>,
    /// The plan id (Heroku sometimes sends `service:plan`); the manifest's
    /// default plan when absent.
    pub plan: Option<String>,
    /// Heroku's region (`amazon-web-services::us-east-1`), mapped to ours for
    /// the resource's app.
    pub region: Option<String>,
    /// The platform's URL for this resource (`…/vendor/apps/<uuid>`); names the
    /// Platform API base when the host options do not.
    pub callback_url: Option<String>,
    /// The user's `--key value` options; non-string values are passed to the
    /// plugin as JSON text.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// The grant to trade for a Platform API token, kept for the plugin's own
    /// later changes.
    pub oauth_grant: Option<OauthGrant>,
    /// Legacy `app123@heroku.com` id; accepted, not used.
    pub heroku_id: Option<String>,
    /// Where the platform takes the resource's logs; accepted, not used.
    pub log_input_url: Option<String>,
    /// The syslog drain token (only with `requires: syslog_drain`); accepted,
    /// not used.
    pub log_drain_token: Option<String>,
}

/// The grant a provider trades for a Platform API token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OauthGrant {
    /// The one-time authorization code, exchanged at the platform's
    /// `/oauth/token`.
    pub code: String,
    /// The grant's `type` (Heroku's `authorization_code`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// When the code stops being accepted, as the platform wrote it (a
    /// timestamp string).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// What the Partner API answers: a status and a JSON body.
#[derive(Debug, Clone)]
pub struct PartnerAnswer {
    /// The HTTP status to answer (200, 202, 404, 422, …).
    pub status: u16,
    /// The JSON body to answer.
    pub body: Value,
}

/// How this host reaches the platform a resource came from; kept per uuid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Link {
    service: String,
    /// The platform's Platform API base (`https://api.heroku.com`).
    platform: String,
    grant: Option<OauthGrant>,
    access_token: Option<String>,
    access_expires_at: Option<i64>,
    refresh_token: Option<String>,
}

fn link_key(uuid: &str) -> String {
    format!("partner-link:{uuid}")
}

/// The app standing for the platform's app of resource `uuid`.
pub fn partner_app_name(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(22)
        .collect();
    format!("partner-{}", hex.to_ascii_lowercase())
}

/// Our region for Heroku's (`amazon-web-services::eu-west-1` → `eu`).
fn our_region(region: Option<&str>) -> &'static str {
    match region {
        Some(r) if r == "eu" || r.contains("::eu-") => "eu",
        _ => "us",
    }
}

/// The Platform API base a `callback_url` names
/// (`https://api.heroku.com/vendor/apps/<uuid>` → `https://api.heroku.com`).
fn platform_of(callback_url: &str) -> Option<String> {
    let (base, _) = callback_url.rsplit_once("/vendor/apps/")?;
    url::Url::parse(base).ok()?;
    Some(base.to_string())
}

/// Where the platform at `base` trades grants for tokens (Heroku's is on
/// another host).
fn token_url(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(u) if u.host_str() == Some("api.heroku.com") => {
            "https://id.heroku.com/oauth/token".into()
        }
        _ => format!("{}/oauth/token", base.trim_end_matches('/')),
    }
}

impl Host {
    /// Whether `user:password` are add-on `service`'s Partner API
    /// credentials (its id and `api.password`, compared in constant time).
    /// A service that is not a plugin here never matches.
    pub fn partner_authorized(&self, service: &str, user: &str, password: &str) -> bool {
        let Some(s) = self.catalog().get(service).cloned() else {
            return false;
        };
        let m = &s.manifest;
        m.remote.is_none()
            & crate::sso::ct_eq(user.as_bytes(), m.id.as_bytes())
            & crate::sso::ct_eq(password.as_bytes(), m.api.password.as_bytes())
    }

    /// `POST /heroku/resources`: provisions through the plugin; 200 with
    /// `{id, config, message}`, or 202 `{id, message}` when the plugin
    /// answered pending. A retry with the same uuid answers the same.
    pub async fn partner_provision(
        &self,
        service: &str,
        req: ProvisionV3,
    ) -> crate::Result<PartnerAnswer> {
        let m = self.service(service)?.manifest.clone();
        let uuid = req
            .uuid
            .as_deref()
            .ok_or_else(|| error::invalid("the provision request has no uuid"))?;
        let uuid = uuid::Uuid::parse_str(uuid)
            .map_err(|e| error::invalid(format!("uuid {uuid:?} is not a UUID: {e}")))?
            .to_string();
        let plan = match req.plan.as_deref() {
            None => m.default_plan().id.clone(),
            Some(p) => {
                // Heroku sends `service:plan` in some flows.
                let p = p.strip_prefix(&format!("{service}:")).unwrap_or(p);
                m.plan(p)
                    .ok_or_else(|| {
                        error::invalid(format!(
                            "add-on {service} has no plan {p:?}; plans: {}",
                            m.plans
                                .iter()
                                .map(|p| p.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?
                    .id
                    .clone()
            }
        };
        let options: Vec<(String, String)> = req
            .options
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Null => None,
                Value::String(s) => Some((k, s)),
                other => Some((k, other.to_string())),
            })
            .collect();
        let platform = self
            .opts
            .platform_api
            .clone()
            .or_else(|| req.callback_url.as_deref().and_then(platform_of))
            .unwrap_or_else(|| "https://api.heroku.com".to_string());
        let app = partner_app_name(&uuid);
        if let Err(e) = self.create_app(&app, Some(our_region(req.region.as_deref()))) {
            // A retry (or a concurrent request) for this uuid made it.
            if e.kind() != Some(error::Kind::Conflict) {
                return Err(e);
            }
        }
        // Before provisioning: a plugin may complete from its very next call.
        let link = Link {
            service: m.id.clone(),
            platform,
            grant: req.oauth_grant.clone(),
            ..Link::default()
        };
        let (key, json) = (
            link_key(&uuid),
            serde_json::to_string(&link).context("encoding the link")?,
        );
        let keep_token = self.store.read(|tx| tx.setting(&key))?;
        if keep_token.is_none() {
            self.store
                .write(move |tx| tx.put_setting(&key, Some(&json)))
                .await?;
        }
        let created: AddonCreated = self
            .create_addon(CreateAddon {
                app,
                spec: format!("{service}:{plan}"),
                as_name: None,
                options,
                uuid: Some(uuid),
            })
            .await?;
        let a = &created.addon;
        let id = a.addon_id.clone().unwrap_or_default();
        let message = created.message.clone();
        Ok(match a.state {
            ResourceState::Provisioned => {
                let config: Map<String, Value> = created
                    .config
                    .iter()
                    .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                    .collect();
                PartnerAnswer {
                    status: 200,
                    body: json!({"id": id, "config": config, "message": message}),
                }
            }
            ResourceState::Provisioning => PartnerAnswer {
                status: 202,
                body: json!({"id": id, "message": message.unwrap_or_else(|| "provisioning".into())}),
            },
            state => {
                return Err(error::addon(format!(
                    "add-on {} for uuid {} is {state}{}",
                    a.name,
                    a.uuid,
                    a.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ))
                .into())
            }
        })
    }

    /// The resource a platform names by our plugin's id for it.
    fn partner_resource(&self, service: &str, id: &str) -> anyhow::Result<Resource> {
        self.service(service)?;
        self.store
            .read(|tx| tx.resource_by_partner_id(service, id))?
            .ok_or_else(|| error::not_found(format!("add-on {service} has no resource {id}")))
    }

    /// `PUT /heroku/resources/:id`: the plan change; the new config when it
    /// changed.
    pub async fn partner_change_plan(
        &self,
        service: &str,
        id: &str,
        plan: &str,
    ) -> crate::Result<Option<Vec<(String, String)>>> {
        let r = self.partner_resource(service, id)?;
        let plan = plan.strip_prefix(&format!("{service}:")).unwrap_or(plan);
        if r.plan == plan {
            return Ok(None);
        }
        let changed = self
            .upgrade_addon(&r.name, &format!("{service}:{plan}"), None)
            .await?;
        if changed.changed.is_empty() {
            return Ok(None);
        }
        let m = self.service(service)?.manifest.clone();
        Ok(Some(self.store.read(|tx| resource_config(tx, &m, &r))?))
    }

    /// `POST /heroku/resources/:id/rotate` (addonhost's extension): new
    /// credentials from the plugin's `credentials.rotate`; the whole config.
    pub async fn partner_rotate(
        &self,
        service: &str,
        id: &str,
    ) -> crate::Result<Vec<(String, String)>> {
        let r = self.partner_resource(service, id)?;
        self.rotate_resource(&r, "platform").await?;
        let m = self.service(service)?.manifest.clone();
        self.store
            .read(|tx| resource_config(tx, &m, &r))
            .map_err(Into::into)
    }

    /// `DELETE /heroku/resources/:id`; `false` when it was deprovisioned
    /// already (Heroku's 410).
    pub async fn partner_deprovision(&self, service: &str, id: &str) -> crate::Result<bool> {
        let r = self.partner_resource(service, id)?;
        if r.state == ResourceState::Deprovisioned {
            return Ok(false);
        }
        self.destroy_addon(&r.name, None, Some(&r.app)).await?;
        let key = link_key(&r.uuid);
        self.store
            .write(move |tx| tx.put_setting(&key, None))
            .await?;
        Ok(true)
    }

    /// Sends what a call of `m` changed on its own behalf to the platforms
    /// its resources came from (nothing for resources of this host's own
    /// apps). Delivered in the background, retried; failures are logged and
    /// audited.
    pub(super) fn forward_to_platforms(&self, m: &Arc<Manifest>, changes: Vec<ToPlatform>) {
        if changes.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let forwarder = Forwarder {
            store: self.store.clone(),
            client: self.remote_http.clone(),
            manifest: m.clone(),
        };
        tokio::spawn(async move {
            for o in changes {
                forwarder.deliver(o).await;
            }
        });
    }
}

/// One change to send back to a calling platform.
#[derive(Debug, Clone)]
pub(super) enum ToPlatform {
    /// `PATCH /addons/:uuid/config`.
    Config {
        partner_id: String,
        changes: Vec<(String, Option<String>)>,
    },
    /// The config, then `POST /addons/:uuid/actions/provision`.
    Provisioned {
        partner_id: String,
        config: Vec<(String, String)>,
    },
}

/// What of `effects` a calling platform must hear of.
pub(super) fn to_platform_of(effects: &Effects) -> Vec<ToPlatform> {
    let mut out: Vec<ToPlatform> = effects
        .updates
        .iter()
        .map(|u| ToPlatform::Config {
            partner_id: u.partner_id.clone(),
            changes: u.changes.clone(),
        })
        .collect();
    out.extend(effects.completions.iter().map(|c| ToPlatform::Provisioned {
        partner_id: c.partner_id.clone(),
        config: c.config.clone(),
    }));
    out
}

/// Delivers changes to calling platforms.
struct Forwarder {
    store: Arc<Store>,
    client: Client,
    manifest: Arc<Manifest>,
}

impl Forwarder {
    async fn deliver(&self, o: ToPlatform) {
        let pid = match &o {
            ToPlatform::Config { partner_id, .. } | ToPlatform::Provisioned { partner_id, .. } => {
                partner_id.clone()
            }
        };
        let service = self.manifest.id.clone();
        let found = self.store.read(|tx| {
            let Some(r) = tx.resource_by_partner_id(&service, &pid)? else {
                return Ok(None);
            };
            let link = tx.setting(&link_key(&r.uuid))?;
            Ok(link.map(|l| (r, l)))
        });
        let (r, link) = match found {
            Ok(Some((r, l))) => match serde_json::from_str::<Link>(&l) {
                Ok(link) => (r, link),
                Err(e) => {
                    tracing::error!(addon = %service, "unreadable platform link of {}: {e}", r.uuid);
                    return;
                }
            },
            // A resource of one of this host's own apps: nothing to send.
            Ok(None) => return,
            Err(e) => {
                tracing::error!(addon = %service, "cannot read the platform link: {e:#}");
                return;
            }
        };
        let mut last = String::new();
        for attempt in 0..DELIVERY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.send(&r, link.clone(), &o).await {
                Ok(()) => {
                    tracing::info!(addon = %service, uuid = %r.uuid, "change delivered to {}", link.platform);
                    return;
                }
                Err((e, retry)) => {
                    tracing::warn!(addon = %service, uuid = %r.uuid, "delivery to {} failed: {e}", link.platform);
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        let (actor, name, app) = (format!("addon:{service}"), r.name.clone(), r.app.clone());
        let what = format!("not delivered to the platform {}: {last}", link.platform);
        let _ = self
            .store
            .write(move |tx| tx.audit(&actor, "partner:forward", Some(&app), Some(&name), &what))
            .await;
    }

    /// One attempt; the error says whether trying again may help.
    async fn send(&self, r: &Resource, link: Link, o: &ToPlatform) -> Result<(), (String, bool)> {
        let token = self.token(&r.uuid, link.clone()).await?;
        let base = link.platform.trim_end_matches('/');
        let headers = [
            ("authorization", format!("Bearer {token}")),
            (
                "accept",
                "application/vnd.heroku+json; version=3".to_string(),
            ),
        ];
        let config: Vec<Value> = match o {
            ToPlatform::Config { changes, .. } => changes
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect(),
            ToPlatform::Provisioned { config, .. } => config
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect(),
        };
        let url = format!("{base}/addons/{}/config", r.uuid);
        let body = json!({ "config": config }).to_string().into_bytes();
        let reply = self
            .client
            .send(
                http::Method::PATCH,
                &url,
                &headers,
                Some(("application/json", body)),
            )
            .await
            .map_err(|e| (e.to_string(), true))?;
        check(&url, &reply)?;
        if let ToPlatform::Provisioned { .. } = o {
            let url = format!("{base}/addons/{}/actions/provision", r.uuid);
            let reply = self
                .client
                .send(
                    http::Method::POST,
                    &url,
                    &headers,
                    Some(("application/json", b"{}".to_vec())),
                )
                .await
                .map_err(|e| (e.to_string(), true))?;
            check(&url, &reply)?;
        }
        Ok(())
    }

    /// An access token for resource `uuid`: the one kept while it is good,
    /// else one traded for the refresh token or, first, the grant.
    async fn token(&self, uuid: &str, mut link: Link) -> Result<String, (String, bool)> {
        let now = unix_now();
        if let (Some(t), Some(exp)) = (&link.access_token, link.access_expires_at) {
            if exp > now + 60 {
                return Ok(t.clone());
            }
        }
        let secret = self.manifest.api.client_secret.clone();
        let form: Vec<(&str, String)> = match (&link.refresh_token, &link.grant) {
            (Some(refresh), _) => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh.clone()),
                ("client_secret", secret),
            ],
            (None, Some(grant)) => vec![
                ("grant_type", "authorization_code".into()),
                ("code", grant.code.clone()),
                ("client_secret", secret),
            ],
            (None, None) => return Err((
                "the provision request carried no oauth_grant: the platform cannot be called back"
                    .into(),
                false,
            )),
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish()
            .into_bytes();
        let url = token_url(&link.platform);
        let reply = self
            .client
            .send(
                http::Method::POST,
                &url,
                &[],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await
            .map_err(|e| (e.to_string(), true))?;
        check(&url, &reply)?;
        let answer: BTreeMap<String, Value> = serde_json::from_slice(&reply.body)
            .map_err(|e| (format!("{url} answered malformed JSON: {e}"), false))?;
        let access = answer
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| (format!("{url} answered no access_token"), false))?
            .to_string();
        link.access_token = Some(access.clone());
        link.access_expires_at = Some(
            now + answer
                .get("expires_in")
                .and_then(Value::as_i64)
                .unwrap_or(3600),
        );
        if let Some(refresh) = answer.get("refresh_token").and_then(Value::as_str) {
            link.refresh_token = Some(refresh.to_string());
        }
        let (key, json) = (
            link_key(uuid),
            serde_json::to_string(&link).unwrap_or_default(),
        );
        if let Err(e) = self
            .store
            .write(move |tx| tx.put_setting(&key, Some(&json)))
            .await
        {
            tracing::warn!("cannot keep the platform token of {uuid}: {e:#}");
        }
        Ok(access)
    }
}

/// A 2xx, or the error (worth retrying for a 5xx or 429).
fn check(url: &str, reply: &remote_http::Answer) -> Result<(), (String, bool)> {
    match reply.status {
        200..=299 => Ok(()),
        s => Err((
            format!("{url} answered {s}: {}", reply.snippet()),
            s >= 500 || s == 429,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_base_comes_from_the_callback_url() {
        assert_eq!(
            platform_of("https://api.heroku.com/vendor/apps/01234567-89ab-cdef-0123-456789abcdef"),
            Some("https://api.heroku.com".into())
        );
        assert_eq!(
            platform_of("http://127.0.0.1:5001/platform/vendor/apps/x"),
            Some("http://127.0.0.1:5001/platform".into())
        );
        assert_eq!(platform_of("http://127.0.0.1/elsewhere"), None);
        assert_eq!(
            token_url("https://api.heroku.com"),
            "https://id.heroku.com/oauth/token"
        );
        assert_eq!(
            token_url("http://b:1/platform"),
            "http://b:1/platform/oauth/token"
        );
    }

    #[test]
    fn partner_apps_are_valid_app_names() {
        let n = partner_app_name("01234567-89AB-cdef-0123-456789abcdef");
        assert_eq!(n, "partner-0123456789abcdef012345");
        assert!(n.len() <= 30);
    }
}
