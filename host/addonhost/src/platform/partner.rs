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
//! `POST /addons/:uuid/actions/provision` (see `forward.rs`). The host makes
//! those calls, never the plugin, and only to the platform its operator
//! configured: a provision request's `callback_url` elsewhere is refused.

use anyhow::Context as _;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::platform_api::resource_config;
use super::{error, AddonCreated, CreateAddon, Host};
use crate::store::{Resource, ResourceState};

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
pub(super) struct Link {
    pub(super) service: String,
    /// The platform's Platform API base (`https://api.heroku.com`).
    pub(super) platform: String,
    pub(super) grant: Option<OauthGrant>,
    pub(super) access_token: Option<String>,
    pub(super) access_expires_at: Option<i64>,
    pub(super) refresh_token: Option<String>,
}

pub(super) fn link_key(uuid: &str) -> String {
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

/// The platform a host answers to when the operator names none.
pub const HEROKU_API: &str = "https://api.heroku.com";

/// Whether `callback_url` (`<base>/vendor/apps/<uuid>`) lies on the platform
/// whose API base is `platform`: the same scheme, host and port, under its
/// path. The error says what differs.
fn check_callback(callback_url: &str, platform: &str) -> Result<(), String> {
    let cb = url::Url::parse(callback_url).map_err(|e| format!("is not a URL ({e})"))?;
    let base = url::Url::parse(platform).map_err(|e| format!("cannot be checked: {e}"))?;
    if !cb.username().is_empty() || cb.password().is_some() {
        return Err("carries credentials".into());
    }
    if cb.origin() != base.origin() {
        return Err(format!("is not on {}", base.origin().ascii_serialization()));
    }
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    if !cb.path().starts_with(&prefix) {
        return Err(format!("is not under {prefix}"));
    }
    Ok(())
}

/// Where the platform at `base` trades grants for tokens (Heroku's is on
/// another host).
pub(super) fn token_url(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(u) if u.host_str() == Some("api.heroku.com") => {
            "https://id.heroku.com/oauth/token".into()
        }
        _ => format!("{}/oauth/token", base.trim_end_matches('/')),
    }
}

impl Host {
    /// The Platform API base this host answers to in provider mode:
    /// `--platform-api`, else Heroku's.
    pub fn partner_platform(&self) -> String {
        self.opts
            .platform_api
            .as_deref()
            .unwrap_or(HEROKU_API)
            .trim_end_matches('/')
            .to_string()
    }

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

    /// One request of `service`'s partner credential against its Partner API
    /// rate: called once the credential is checked, so a caller without it
    /// spends nothing. Past the rate the request is refused before anything
    /// is read or written ([`error::Kind::RateLimited`]).
    pub fn charge_partner_api(&self, service: &str) -> crate::Result<()> {
        self.partner_api_rate.take(service).map_err(|wait| {
            error::rate_limited(format!(
                "add-on {service}'s partner is over its Partner API rate of {} requests an hour; \
                     retry in {} s",
                self.partner_api_rate.per_hour(),
                wait.as_secs().max(1)
            ))
            .into()
        })
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
        // This host calls back only the platform its operator configured:
        // a callback_url elsewhere (an internal address, a metadata service)
        // is refused before anything is made, never called.
        let platform = self.partner_platform();
        if let Some(cb) = req.callback_url.as_deref() {
            check_callback(cb, &platform).map_err(|why| {
                error::invalid(format!(
                    "callback_url {:?} {why}: this host calls back only the platform it is configured for, {platform} ({})",
                    crate::util::redact_url(cb),
                    match self.opts.platform_api {
                        Some(_) => "--platform-api",
                        None => "the default; set --platform-api for another platform",
                    }
                ))
            })?;
        }
        let app = partner_app_name(&uuid);
        let actor = super::actor::partner(service);
        // Ownership before anything is written: a uuid naming another
        // add-on (or a resource of this host's own apps) is not this
        // partner's to provision, link or call back about.
        let taken = |r: &Resource| r.service != m.id || r.app != app;
        if self
            .store
            .read(|tx| tx.resource_by_uuid(&uuid))?
            .is_some_and(|r| taken(&r))
        {
            return Err(error::conflict(format!(
                "uuid {uuid} already names another add-on here; use a new uuid"
            ))
            .into());
        }
        if let Err(e) = self.create_app_as(&app, Some(our_region(req.region.as_deref())), &actor) {
            // A retry (or a concurrent request) for this uuid made it.
            if e.kind() != Some(error::Kind::Conflict) {
                return Err(e);
            }
        }
        // Before provisioning: a plugin may complete from its very next call.
        // Only for a uuid that is free or already this add-on's, on its
        // partner app (ownership first: a link is where the resource's
        // changes go), in one transaction with that check; a link another
        // add-on holds is a claim on the uuid, refused too.
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
        let (owner, on_app, id) = (m.id.clone(), app.clone(), uuid.clone());
        self.store
            .write(move |tx| {
                if let Some(r) = tx.resource_by_uuid(&id)? {
                    if r.service != owner || r.app != on_app {
                        return Err(error::conflict(format!(
                            "uuid {id} already names another add-on here; use a new uuid"
                        )));
                    }
                }
                match tx.setting(&key)? {
                    None => tx.put_setting(&key, Some(&json)),
                    Some(kept) => {
                        let theirs = serde_json::from_str::<Link>(&kept)
                            .map(|l| l.service)
                            .unwrap_or_default();
                        if theirs != owner {
                            return Err(error::conflict(format!(
                                "uuid {id} is another add-on's here; use a new uuid"
                            )));
                        }
                        // A retry: the link (and any token traded) stays.
                        Ok(())
                    }
                }
            })
            .await?;
        let created: AddonCreated = self
            .create_addon(CreateAddon {
                app,
                spec: format!("{service}:{plan}"),
                as_name: None,
                options,
                uuid: Some(uuid),
                actor: Some(actor),
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
            .upgrade_addon_as(
                &r.name,
                &format!("{service}:{plan}"),
                None,
                &super::actor::partner(service),
            )
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
        self.rotate_resource(&r, &super::actor::partner(service))
            .await?;
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
        self.destroy_addon_as(&r.name, None, Some(&r.app), &super::actor::partner(service))
            .await?;
        // The platform removed it: nothing is owed to it any more.
        let (key, uuid) = (link_key(&r.uuid), r.uuid.clone());
        self.store
            .write(move |tx| {
                // The link before the entry: the order `forward::owe` takes
                // their locks in.
                tx.put_setting(&key, None)?;
                tx.delete_outbox_entry(&uuid)
            })
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_off_the_configured_platform_are_refused() {
        let heroku = "https://api.heroku.com";
        let ok = |cb: &str, p: &str| check_callback(cb, p).is_ok();
        assert!(ok(
            "https://api.heroku.com/vendor/apps/01234567-89ab-cdef-0123-456789abcdef",
            heroku
        ));
        assert!(ok(
            "http://127.0.0.1:5001/platform/vendor/apps/x",
            "http://127.0.0.1:5001/platform"
        ));
        for attack in [
            "http://169.254.169.254/latest/meta-data/vendor/apps/x",
            "http://10.0.0.5/admin/vendor/apps/x",
            "http://api.heroku.com/vendor/apps/x",
            "https://api.heroku.com.evil.example/vendor/apps/x",
            "https://api.heroku.com@evil.example/vendor/apps/x",
            "https://user:pw@api.heroku.com/vendor/apps/x",
            "https://api.heroku.com:8443/vendor/apps/x",
            "not a url",
        ] {
            assert!(!ok(attack, heroku), "{attack}");
        }
        assert!(!ok(
            "http://127.0.0.1:5001/platformx/vendor/apps/x",
            "http://127.0.0.1:5001/platform"
        ));
        assert!(!ok(
            "http://127.0.0.1:5002/platform/vendor/apps/x",
            "http://127.0.0.1:5001/platform"
        ));
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
