//! Add-ons: inspect and deprovision (provisioning is `provision.rs`, plan
//! changes and rotations `change.rs`).
//!
//! Every flow has the same shape: check the request against the store,
//! call the plugin (outside any transaction), validate what it answered, then
//! write the outcome, the call's buffered effects and a release in one
//! transaction. A plugin failure at any point leaves the store as it was.

use std::sync::Arc;

use serde::Serialize;

use super::context::Scope;
use super::{apply_effects, error, take, Host};
use crate::manifest::Manifest;
use crate::store::{Attachment, Resource, ResourceState, Tx};

/// `addons:create`.
#[derive(Debug, Clone, Default)]
pub struct CreateAddon {
    /// The app the resource is created on; it owns (is billed for) the resource
    /// and gets the first attachment.
    pub app: String,
    /// `service` or `service:plan`.
    pub spec: String,
    /// Attachment name (`--as`); the manifest prefix by default.
    pub as_name: Option<String>,
    /// `-- --key value` options.
    pub options: Vec<(String, String)>,
    /// Idempotency key; a fresh uuid when `None`.
    pub uuid: Option<String>,
    /// Who the provisioning is recorded as, in releases and the audit
    /// trail (each actor has its own `--audit-keep` bound): `None` is the
    /// user; the Partner API, the service broker and the Platform API name
    /// themselves ([`crate::platform::actor`]).
    pub actor: Option<String>,
}

/// An add-on as listings show it.
#[derive(Debug, Clone, Serialize)]
pub struct AddonView {
    /// The resource's globally unique name (`kv-…`).
    pub name: String,
    /// The add-on id it is an instance of.
    pub service: String,
    /// The plan id it is on.
    pub plan: String,
    /// Where it is in its lifecycle.
    pub state: ResourceState,
    /// The app that owns (bills) the resource.
    pub app: String,
    /// Where it is attached, as `app::NAME`.
    pub attachments: Vec<String>,
    /// The platform's id (the provisioning's idempotency key).
    pub uuid: String,
    /// The add-on's own id for it (what its provision returned); `None` until
    /// it answered.
    pub addon_id: Option<String>,
    /// The add-on's last message for the user, or why provisioning failed.
    pub message: Option<String>,
    /// The vars its attachments own, by app name.
    pub config_vars: Vec<String>,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// Its credential rotation state.
    pub rotation: RotationView,
}

/// Credential rotation state, for `addons:info` and the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotationView {
    /// The manifest's schedule, if any.
    pub every_seconds: Option<u64>,
    /// Unix seconds of the last rotation.
    pub last_rotated_at: Option<i64>,
    /// When the credential rotated out last stops working (the manifest's
    /// grace window after the last rotation).
    pub previous_expires_at: Option<i64>,
    /// When the schedule rotates next.
    pub next_at: Option<i64>,
    /// The last scheduled rotation's failure, until one succeeds.
    pub error: Option<String>,
    /// Scheduled rotations failed in a row since the last success.
    pub failures: i64,
}

/// The outcome of `addons:create`.
#[derive(Debug, Clone, Serialize)]
pub struct AddonCreated {
    /// The add-on as it is now.
    pub addon: AddonView,
    /// (app var name, value) set on the app.
    pub config: Vec<(String, String)>,
    /// The add-on's message for the user, if it gave one.
    pub message: Option<String>,
    /// The resource already existed for this uuid; nothing changed.
    pub existing: bool,
}

/// The outcome of a plan change, rotation or deprovision.
#[derive(Debug, Clone, Serialize)]
pub struct AddonChanged {
    /// The add-on after the change (for a deprovision, as it was last).
    pub addon: AddonView,
    /// App var names whose value changed, appeared or went away.
    pub changed: Vec<String>,
    /// The version of the release the change made (one is made on every app the
    /// resource is attached to; this is the last one's); `None` when it had no
    /// attachment.
    pub release: Option<i64>,
}

impl Host {
    pub(super) fn view(&self, c: &dyn Tx, r: &Resource) -> anyhow::Result<AddonView> {
        let atts = c.attachments_of_resource(r.id)?;
        let mut config_vars = Vec::new();
        for a in &atts {
            config_vars.extend(c.vars_of_attachment(a.id)?.into_iter().map(|v| v.name));
        }
        Ok(self.view_of(r, &atts, config_vars))
    }

    /// The view of `r`, given its attachments and the names of their vars.
    pub(super) fn view_of(
        &self,
        r: &Resource,
        atts: &[Attachment],
        config_vars: Vec<String>,
    ) -> AddonView {
        AddonView {
            name: r.name.clone(),
            service: r.service.clone(),
            plan: r.plan.clone(),
            state: r.state,
            app: r.app.clone(),
            attachments: atts
                .iter()
                .map(|a| format!("{}::{}", a.app, a.name))
                .collect(),
            uuid: r.uuid.clone(),
            addon_id: r.partner_id.clone(),
            message: r.message.clone(),
            config_vars,
            created_at: r.created_at,
            rotation: self.rotation_view(r),
        }
    }

    fn rotation_view(&self, r: &Resource) -> RotationView {
        let rotation = self
            .catalog()
            .get(&r.service)
            .map(|s| s.manifest.rotation)
            .unwrap_or_default();
        RotationView {
            every_seconds: rotation.every_seconds,
            last_rotated_at: r.rotated_at,
            previous_expires_at: r
                .rotated_at
                .zip(rotation.grace_seconds)
                .map(|(at, grace)| at + grace as i64),
            next_at: super::schedule::next_rotation(r, rotation.every_seconds),
            error: r.rotation_error.clone(),
            failures: r.rotation_failures,
        }
    }

    /// Add-ons of one app (owned or attached) or of all apps.
    pub fn addons(&self, app: Option<&str>) -> crate::Result<Vec<AddonView>> {
        self.store
            .read(|tx| {
                let app_id = match app {
                    Some(a) => Some(super::app_named(tx, a)?.id),
                    None => None,
                };
                tx.list_resources(app_id)?
                    .iter()
                    .map(|r| self.view(tx, r))
                    .collect()
            })
            .map_err(Into::into)
    }

    /// Finds an add-on by resource name or uuid, or by attachment name on `app`.
    pub(super) fn resolve(
        &self,
        c: &dyn Tx,
        addon: &str,
        app: Option<&str>,
    ) -> anyhow::Result<Resource> {
        let found = match c.resource_by_name(addon)? {
            Some(r) => Some(r),
            None => c.resource_by_uuid(addon)?,
        };
        let found = match (found, app) {
            (Some(r), _) => Some(r),
            (None, Some(app)) => {
                let a = super::app_named(c, app)?;
                let name = addon.to_ascii_uppercase();
                match c.attachment_by_name(a.id, &name)? {
                    Some(att) => c.resource_by_id(att.resource_id)?,
                    None => None,
                }
            }
            (None, None) => None,
        };
        match found {
            Some(r) if r.state != ResourceState::Deprovisioned => {
                if let Some(app) = app {
                    let a = super::app_named(c, app)?;
                    let attached = c
                        .attachments_of_resource(r.id)?
                        .iter()
                        .any(|t| t.app_id == a.id);
                    if r.app_id != a.id && !attached {
                        return Err(error::not_found(format!(
                            "add-on {addon} is not on app {app}"
                        )));
                    }
                }
                Ok(r)
            }
            _ => Err(error::not_found(format!(
                "add-on {addon:?} not found{}; list them with `addonhost addons{}`",
                app.map(|a| format!(" on app {a}")).unwrap_or_default(),
                app.map(|a| format!(" -a {a}")).unwrap_or_default()
            ))),
        }
    }

    /// `addons:info`: the add-on named by resource name or uuid, or by
    /// attachment name on `app`.
    pub fn addon_info(&self, addon: &str, app: Option<&str>) -> crate::Result<AddonView> {
        self.store
            .read(|tx| {
                let r = self.resolve(tx, addon, app)?;
                self.view(tx, &r)
            })
            .map_err(Into::into)
    }

    pub(super) fn parse_spec(&self, spec: &str) -> anyhow::Result<(Arc<Manifest>, String)> {
        let (service, plan) = match spec.split_once(':') {
            Some((s, p)) => (s, Some(p)),
            None => (spec, None),
        };
        let m = self.service(service)?.manifest.clone();
        let plan = match plan {
            None => m.default_plan().id.clone(),
            Some(p) => {
                m.plan(p).ok_or_else(|| {
                    error::not_found(format!(
                        "add-on {service} has no plan {p:?}; plans: {}",
                        m.plans
                            .iter()
                            .map(|p| p.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                p.to_string()
            }
        };
        Ok((m, plan))
    }

    /// Moves a resource to `state`, keeping everything else.
    pub(super) async fn set_state(&self, r: &Resource, state: ResourceState) -> anyhow::Result<()> {
        let (id, pid, plan, message) = (
            r.id,
            r.partner_id.clone(),
            r.plan.clone(),
            r.message.clone(),
        );
        self.store
            .write(move |tx| {
                tx.update_resource(id, pid.as_deref(), state, &plan, message.as_deref())?;
                Ok(())
            })
            .await
    }

    /// The name a resource is known by on its app (`KV`), for messages.
    pub(super) fn attachment_label(&self, r: &Resource) -> anyhow::Result<String> {
        Ok(self
            .store
            .read(|tx| tx.attachments_of_resource(r.id))?
            .first()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| r.name.clone()))
    }

    /// Deprovisions an add-on: the plugin destroys the resource, then its
    /// attachments' vars go, with a release on each app.
    pub async fn destroy_addon(
        &self,
        addon: &str,
        app: Option<&str>,
        confirm: Option<&str>,
    ) -> crate::Result<AddonChanged> {
        self.destroy_addon_as(addon, app, confirm, super::actor::USER)
            .await
    }

    /// [`Host::destroy_addon`], recorded as `actor`.
    pub(crate) async fn destroy_addon_as(
        &self,
        addon: &str,
        app: Option<&str>,
        confirm: Option<&str>,
        actor: &str,
    ) -> crate::Result<AddonChanged> {
        let r = self.store.read(|tx| self.resolve(tx, addon, app))?;
        if confirm != Some(r.app.as_str()) {
            return Err(error::invalid(format!(
                "destroying {} deletes its data; confirm with --confirm {}",
                r.name, r.app
            ))
            .into());
        }
        let (manifest, provider) = self.provider(&r.service)?;
        // A resource the add-on never answered for (failed) has nothing
        // for the plugin to destroy.
        let previous = r.state;
        let call_plugin = r.partner_id.is_some() && r.state != ResourceState::Failed;
        if call_plugin {
            self.set_state(&r, ResourceState::Deprovisioning).await?;
        }
        let outcome = self
            .retrying(&manifest.id, "deprovision", || async {
                let effects = match &r.partner_id {
                    Some(pid) if call_plugin => {
                        let (ctx, effects) = self.context(
                            &manifest,
                            Scope::Resource {
                                partner_id: pid.clone(),
                            },
                        );
                        let outcome = provider.deprovision(ctx, pid).await;
                        self.log_refusals(&effects).await;
                        if let Err(e) = outcome {
                            let e = error::UserError {
                                kind: error::kind_of(&e).unwrap_or(error::Kind::Addon),
                                message: format!("{e}; the add-on was not removed"),
                            };
                            return Err(e.into());
                        }
                        take(&effects)
                    }
                    _ => Default::default(),
                };
                self.store
                    .write(detach(
                        manifest.clone(),
                        self.opts.policy,
                        (r.clone(), actor.to_string()),
                        effects,
                    ))
                    .await
            })
            .await;
        let (changed, release) = match outcome {
            Ok(done) => done,
            Err(e) => {
                if call_plugin {
                    self.set_state(&r, previous).await?;
                }
                return Err(e.into());
            }
        };
        Ok(self.changed(&r, changed, release)?)
    }

    /// What a change to `r` answers: the add-on as the store has it now.
    pub(super) fn changed(
        &self,
        r: &Resource,
        changed: Vec<String>,
        release: Option<i64>,
    ) -> anyhow::Result<AddonChanged> {
        let addon = self.store.read(|tx| {
            let r = tx
                .resource_by_id(r.id)?
                .ok_or_else(|| anyhow::anyhow!("add-on {} vanished", r.name))?;
            self.view(tx, &r)
        })?;
        Ok(AddonChanged {
            addon,
            changed,
            release,
        })
    }
}

/// The write of a deprovisioning: the call's effects, then the resource's
/// vars and attachments go, with a release on each app.
fn detach(
    manifest: Arc<Manifest>,
    policy: super::Policy,
    (r, actor): (Resource, String),
    effects: super::context::Effects,
) -> impl FnMut(&dyn Tx) -> anyhow::Result<(Vec<String>, Option<i64>)> + Send + 'static {
    move |tx: &dyn Tx| {
        apply_effects(tx, &manifest, &policy, &effects)?;
        if manifest.remote.is_some() {
            // Its provider's Platform API tokens die with it (they are
            // refused for a deprovisioned resource anyway; the record of
            // the current refresh token goes).
            tx.put_setting(&super::platform_api::refresh_key(&r.uuid), None)?;
        }
        let mut changed = Vec::new();
        let mut release = None;
        for att in tx.attachments_of_resource(r.id)? {
            changed.extend(tx.vars_of_attachment(att.id)?.into_iter().map(|v| v.name));
            tx.delete_vars_of_attachment(att.id)?;
            tx.delete_attachment(att.id)?;
            release = Some(tx.insert_release(
                att.app_id,
                &format!("Detach {} ({})", att.name, r.name),
                &actor,
            )?);
        }
        tx.update_resource(
            r.id,
            r.partner_id.as_deref(),
            ResourceState::Deprovisioned,
            &r.plan,
            r.message.as_deref(),
        )?;
        tx.audit(
            &actor,
            "addons:destroy",
            Some(&r.app),
            Some(&r.name),
            "deprovisioned",
        )?;
        Ok((changed, release))
    }
}
