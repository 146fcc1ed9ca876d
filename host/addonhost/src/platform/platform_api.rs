//! The Platform API side remote providers call back (Heroku's shapes, under
//! `<public URL>/platform`): `POST /oauth/token` trades the provision
//! request's grant for a token scoped to that one resource; with it,
//! `PATCH /addons/:uuid/config` updates the resource's vars,
//! `POST /addons/:uuid/actions/provision` completes an asynchronous
//! provisioning, `GET /addons/:uuid` describes it.
//!
//! A provider's writes go through the very `CallContext` a plugin's do, so
//! the rules are the same: only its manifest's vars, renamed for each
//! attachment, never a var someone else owns, a release per change, every
//! refusal in the audit trail.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::context::{Completion, Effects, Scope};
use super::oauth::{Kind, ACCESS_SECONDS, REFRESH_SECONDS};
use super::{error, naming, take, validate, Host};
use crate::manifest::Manifest;
use crate::runtime::Capabilities as _;
use crate::store::{Resource, ResourceState, Tx};
use crate::util::unix_now;

/// An add-on as the Platform API describes it (`GET /addons/:uuid`).
#[derive(Debug, Clone, Serialize)]
pub struct PlatformAddon {
    /// The resource's platform uuid.
    pub id: String,
    /// The resource's name (`kv-…`).
    pub name: String,
    /// `{"name": <add-on id>}`.
    pub addon_service: serde_json::Value,
    /// `{"name": "<add-on id>:<plan>"}`.
    pub plan: serde_json::Value,
    /// `{"name": <owning app>}`.
    pub app: serde_json::Value,
    /// `provisioning`, `provisioned`, … (see [`crate::store::ResourceState`]).
    pub state: String,
    /// The provider's id for the resource, once its provision answered.
    pub provider_id: Option<String>,
    /// The resource's vars by manifest name (`KV_URL`), as its first attachment
    /// holds them.
    pub config_vars: Vec<String>,
}

/// One var as `PATCH /addons/:uuid/config` takes and answers it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The manifest's var name (`KV_URL`).
    pub name: String,
    /// Its value; `null` removes it.
    pub value: Option<String>,
}

/// Settings key of the config a provider sent for a provisioning it has
/// not completed yet.
fn pending_key(uuid: &str) -> String {
    format!("pending-config:{uuid}")
}

/// Settings key of a resource's current refresh token: the resource's row
/// and the nonce of the one refresh token that is good.
pub(super) fn refresh_key(uuid: &str) -> String {
    format!("platform-refresh:{uuid}")
}

/// The refresh token a resource's provider holds now.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
struct CurrentRefresh {
    resource: i64,
    nonce: String,
}

/// The single-use key of grant `code`.
fn grant_key(code: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "grant:{}",
        hex::encode(Sha256::digest(code.trim().as_bytes()))
    )
}

impl Host {
    /// `POST /oauth/token`: a grant (`grant_type=authorization_code`,
    /// `code`) or a refresh token (`grant_type=refresh_token`,
    /// `refresh_token`), with the provider's `client_secret`, for an access
    /// token scoped to one resource and the next refresh token. A grant
    /// is traded once; a refresh token is good until it is traded (then
    /// the one it answered is the current one); both only while their
    /// resource lives. The partner's rate is charged once it proved who it
    /// is (its client secret): a caller without the secret spends nothing.
    pub async fn oauth_token(
        &self,
        params: &BTreeMap<String, String>,
    ) -> crate::Result<serde_json::Value> {
        let grants = self.grants()?;
        let now = unix_now();
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        let (kind, token) = match get("grant_type") {
            "authorization_code" => (Kind::Grant, get("code")),
            "refresh_token" => (Kind::Refresh, get("refresh_token")),
            other => {
                return Err(error::invalid(format!(
                    "grant_type {other:?} is not supported: use authorization_code or refresh_token"
                ))
                .into())
            }
        };
        let what = match kind {
            Kind::Grant => "grant code",
            _ => "refresh token",
        };
        let claims = grants
            .open(kind, token, now)
            .map_err(|why| error::unauthorized(format!("the {what} is {why}")))?;
        let m = self.service(&claims.service)?.manifest.clone();
        if !crate::sso::ct_eq(
            get("client_secret").as_bytes(),
            m.api.client_secret.as_bytes(),
        ) {
            return Err(
                error::unauthorized(format!("client_secret is not add-on {}'s", m.id)).into(),
            );
        }
        self.charge_platform_api(&claims.service)?;
        let nonce = super::cluster::random_token();
        let spend = (kind == Kind::Grant).then(|| (grant_key(token), claims.expires_at + 1));
        let (service, next, uuid) = (m.id.clone(), nonce.clone(), claims.uuid.clone());
        // One transaction: the grant spent (or the refresh token checked
        // against the current one), the resource alive, the next refresh
        // token made current.
        let resource = self
            .store
            .write(move |tx| {
                let gone = || {
                    error::unauthorized(format!(
                        "add-on {service} has no resource {} any more",
                        claims.uuid
                    ))
                };
                let r = tx
                    .resource_by_uuid(&claims.uuid)?
                    .filter(|r| r.service == service && r.state != ResourceState::Deprovisioned)
                    .ok_or_else(gone)?;
                let key = refresh_key(&claims.uuid);
                let current: Option<CurrentRefresh> = tx
                    .setting(&key)?
                    .and_then(|j| serde_json::from_str(&j).ok());
                match &spend {
                    Some((spent, until)) => {
                        if !tx.spend_once(spent, *until, now)? {
                            return Err(error::unauthorized(
                                "the grant code was traded already: a grant is good once",
                            ));
                        }
                    }
                    None => {
                        let good = match (&current, &claims.nonce) {
                            (Some(c), Some(n)) => {
                                crate::sso::ct_eq(c.nonce.as_bytes(), n.as_bytes())
                                    && Some(c.resource) == claims.resource
                            }
                            // A refresh token of an earlier version, before
                            // any was rotated: good once, as it is replaced.
                            (None, None) => true,
                            _ => false,
                        };
                        if !good {
                            return Err(error::unauthorized(
                                "the refresh token was replaced: each refresh answers the next one, \
                                 and only the newest is good",
                            ));
                        }
                    }
                }
                if current.as_ref().is_some_and(|c| c.resource != r.id) && spend.is_none() {
                    return Err(gone());
                }
                let json = serde_json::to_string(&CurrentRefresh {
                    resource: r.id,
                    nonce: next.clone(),
                })?;
                tx.put_setting(&key, Some(&json))?;
                Ok(r.id)
            })
            .await?;
        let access = grants.sign_bound(
            Kind::Access,
            (&m.id, &uuid, resource),
            now + ACCESS_SECONDS,
            "",
        );
        let refresh = grants.sign_bound(
            Kind::Refresh,
            (&m.id, &uuid, resource),
            now + REFRESH_SECONDS,
            &nonce,
        );
        Ok(json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": ACCESS_SECONDS,
            "token_type": "Bearer",
        }))
    }

    /// One request of `service`'s partner against its Platform API rate
    /// (checked once its token is known good, so nobody else can spend it).
    fn charge_platform_api(&self, service: &str) -> anyhow::Result<()> {
        self.platform_api_rate.take(service).map_err(|wait| {
            error::rate_limited(format!(
                "add-on {service} is over its Platform API rate of {} requests an hour; \
                 retry in {} s",
                self.platform_api_rate.per_hour(),
                wait.as_secs().max(1)
            ))
        })
    }

    /// The add-on a bearer token may act on, named in the path by uuid (or
    /// name): only the one resource its grant was made for, while it lives.
    /// `charge`: the request spends one of the partner's rate.
    fn authorized_resource(
        &self,
        bearer: &str,
        addon: &str,
        charge: bool,
    ) -> anyhow::Result<(Arc<Manifest>, Resource)> {
        let claims = self
            .grants()?
            .open(Kind::Access, bearer, unix_now())
            .map_err(|why| error::unauthorized(format!("the access token is {why}")))?;
        if charge {
            self.charge_platform_api(&claims.service)?;
        }
        let r = self.store.read(|tx| match tx.resource_by_uuid(addon)? {
            Some(r) => Ok(Some(r)),
            None => tx.resource_by_name(addon),
        })?;
        let r = match r {
            Some(r)
                if r.uuid == claims.uuid
                    && r.service == claims.service
                    && claims.resource.is_none_or(|id| id == r.id) =>
            {
                r
            }
            _ => {
                return Err(error::unauthorized(format!(
                    "this token is for add-on {} only",
                    claims.uuid
                )))
            }
        };
        // Its tokens die with it.
        if r.state == ResourceState::Deprovisioned {
            return Err(error::unauthorized(format!(
                "add-on {} is deprovisioned: its tokens are no longer good",
                r.name
            )));
        }
        let m = self.service(&r.service)?.manifest.clone();
        Ok((m, r))
    }

    /// Whether `bearer` may act on `addon`, spending none of the rate (to
    /// refuse a request before its body is read).
    pub fn platform_check_token(&self, bearer: &str, addon: &str) -> crate::Result<()> {
        self.authorized_resource(bearer, addon, false)
            .map(|_| ())
            .map_err(Into::into)
    }

    /// `GET /addons/:uuid`.
    pub fn platform_addon(&self, bearer: &str, addon: &str) -> crate::Result<PlatformAddon> {
        let (m, r) = self.authorized_resource(bearer, addon, true)?;
        self.platform_view(&m, &r).map_err(Into::into)
    }

    fn platform_view(&self, m: &Manifest, r: &Resource) -> anyhow::Result<PlatformAddon> {
        let config_vars = self
            .store
            .read(|tx| resource_config(tx, m, r))?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        Ok(PlatformAddon {
            id: r.uuid.clone(),
            name: r.name.clone(),
            addon_service: json!({ "name": r.service }),
            plan: json!({ "name": format!("{}:{}", r.service, r.plan) }),
            app: json!({ "name": r.app }),
            state: r.state.as_str().to_string(),
            provider_id: r.partner_id.clone(),
            config_vars,
        })
    }

    /// `PATCH /addons/:uuid/config`: sets (a value) or removes (`null`) the
    /// resource's vars, by manifest name, in one release; answers the
    /// resource's config afterwards. Before the provisioning is complete the
    /// vars are kept until `actions/provision` attaches them: read, changed
    /// and written back in one transaction that also reads the resource's
    /// state, so concurrent PATCHes lose nothing and one racing the
    /// completion lands either in its release or after it.
    pub async fn platform_config_update(
        &self,
        bearer: &str,
        addon: &str,
        changes: Vec<ConfigEntry>,
    ) -> crate::Result<Vec<ConfigEntry>> {
        let (m, r) = self.authorized_resource(bearer, addon, true)?;
        let actor = super::actor::platform_api(&m.id);
        for c in &changes {
            let checked = validate::var_allowed(&m, &c.name).and_then(|()| match &c.value {
                Some(v) => validate::value_ok(&c.name, v),
                None => Ok(()),
            });
            if let Err(why) = checked {
                let (actor, name, app) = (actor.clone(), r.name.clone(), r.app.clone());
                let what = crate::util::truncate(&why, 500).to_string();
                self.store
                    .write(move |tx| tx.audit(&actor, "refused", Some(&app), Some(&name), &what))
                    .await?;
                return Err(
                    error::addon(format!("add-on {}: {why}; nothing changed", m.id)).into(),
                );
            }
        }
        if r.state == ResourceState::Provisioning {
            let (key, id, name) = (pending_key(&r.uuid), r.id, r.name.clone());
            let asked = changes.clone();
            let kept = self
                .store
                .write(move |tx| {
                    let state = tx.resource_by_id(id)?.map(|r| r.state);
                    if state != Some(ResourceState::Provisioning) {
                        // Completed (or gone) meanwhile: not kept aside.
                        return Ok(None);
                    }
                    let mut pending: BTreeMap<String, String> = tx
                        .setting(&key)?
                        .and_then(|j| serde_json::from_str(&j).ok())
                        .unwrap_or_default();
                    for c in &asked {
                        match &c.value {
                            Some(v) => pending.insert(c.name.clone(), v.clone()),
                            None => pending.remove(&c.name),
                        };
                    }
                    let json = serde_json::to_string(&pending)
                        .with_context(|| format!("encoding the pending config of {name}"))?;
                    tx.put_setting(&key, Some(&json))?;
                    Ok(Some(pending))
                })
                .await?;
            if let Some(pending) = kept {
                return Ok(pending
                    .into_iter()
                    .map(|(name, value)| ConfigEntry {
                        name,
                        value: Some(value),
                    })
                    .collect());
            }
        }
        let r = self
            .store
            .read(|tx| tx.resource_by_id(r.id))?
            .ok_or_else(|| error::not_found(format!("add-on {} went away", r.name)))?;
        match (r.state, &r.partner_id) {
            (ResourceState::Provisioned, Some(pid)) => {
                let pid = pid.clone();
                let changes: Vec<(String, Option<String>)> =
                    changes.into_iter().map(|c| (c.name, c.value)).collect();
                self.retrying(&m.id, "config update", || async {
                    let (mut ctx, effects) = self.context(
                        &m,
                        Scope::Resource {
                            partner_id: pid.clone(),
                        },
                    );
                    effects.lock().unwrap_or_else(|p| p.into_inner()).actor = Some(actor.clone());
                    let outcome = ctx.config_update(
                        &pid,
                        changes.clone(),
                        "updated by the provider through the Platform API",
                    );
                    drop(ctx);
                    self.log_refusals(&effects).await;
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(why)) | Err(crate::runtime::BudgetExceeded(why)) => {
                            return Err(error::conflict(format!(
                                "add-on {}: {why}; nothing changed",
                                m.id
                            )))
                        }
                    }
                    self.commit_effects(&m, take(&effects)).await
                })
                .await?;
                let config = self.store.read(|tx| resource_config(tx, &m, &r))?;
                Ok(config
                    .into_iter()
                    .map(|(name, value)| ConfigEntry {
                        name,
                        value: Some(value),
                    })
                    .collect())
            }
            (state, _) => Err(error::conflict(format!(
                "add-on {} is {state}: its config cannot change",
                r.name
            ))
            .into()),
        }
    }

    /// `POST /addons/:uuid/actions/provision`: completes an asynchronous
    /// provisioning with the config sent before it (one `Attach` release).
    /// The config kept aside is read, attached and cleared in the
    /// completion's own transaction, so a PATCH racing it is in the release
    /// or applied after it, never acknowledged and dropped. Answering it
    /// again for a provisioned add-on changes nothing.
    pub async fn platform_provisioned(
        &self,
        bearer: &str,
        addon: &str,
    ) -> crate::Result<PlatformAddon> {
        let (m, r) = self.authorized_resource(bearer, addon, true)?;
        let pid = match (r.state, &r.partner_id) {
            (ResourceState::Provisioned, _) => return Ok(self.platform_view(&m, &r)?),
            (ResourceState::Provisioning, Some(pid)) => pid.clone(),
            (state, _) => {
                return Err(error::conflict(format!(
                    "add-on {} is {state}: there is no provisioning to complete",
                    r.name
                ))
                .into())
            }
        };
        let (manifest, policy) = (m.clone(), self.opts.policy);
        let (key, id, actor) = (
            pending_key(&r.uuid),
            r.id,
            super::actor::platform_api(&m.id),
        );
        self.store
            .write(move |tx| {
                let r = tx
                    .resource_by_id(id)?
                    .ok_or_else(|| error::not_found("the add-on went away"))?;
                match r.state {
                    ResourceState::Provisioning => {}
                    // Completed by a request racing this one.
                    ResourceState::Provisioned => return Ok(()),
                    state => {
                        return Err(error::conflict(format!(
                            "add-on {} is {state}: there is no provisioning to complete",
                            r.name
                        )))
                    }
                }
                let config: Vec<(String, String)> = tx
                    .setting(&key)?
                    .and_then(|j| serde_json::from_str::<BTreeMap<String, String>>(&j).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                validate::addon_config(&manifest, &config).map_err(|why| {
                    error::addon(format!("add-on {}: {why}; nothing changed", manifest.id))
                })?;
                let effects = Effects {
                    completions: vec![Completion {
                        partner_id: pid.clone(),
                        config,
                        message: None,
                    }],
                    actor: Some(actor.clone()),
                    ..Effects::default()
                };
                super::apply_effects(tx, &manifest, &policy, &effects)?;
                tx.put_setting(&key, None)
            })
            .await?;
        let r = self
            .store
            .read(|tx| tx.resource_by_id(r.id))?
            .ok_or_else(|| error::not_found("the add-on went away"))?;
        self.platform_view(&m, &r).map_err(Into::into)
    }
}

/// The resource's own vars by manifest name (its first attachment's, which
/// every attachment carries alike).
pub(super) fn resource_config(
    tx: &dyn Tx,
    m: &Manifest,
    r: &Resource,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(att) = tx.attachments_of_resource(r.id)?.first() {
        for var in tx.vars_of_attachment(att.id)? {
            if let Some(name) =
                naming::manifest_var(&var.name, &m.api.config_vars_prefix, &att.name)
            {
                out.push((name, var.value));
            }
        }
    }
    Ok(out)
}
