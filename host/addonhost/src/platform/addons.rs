//! Add-ons: provision, inspect, change plan, rotate, deprovision.
//!
//! Every flow has the same shape: check the request against the store,
//! call the plugin (outside any transaction), validate what it answered, then
//! write the outcome, the call's buffered effects and a release in one
//! transaction. A plugin failure at any point leaves the store as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::context::Scope;
use super::{apply_effects, error, naming, take, validate, Host};
use crate::manifest::Manifest;
use crate::runtime::{ProvisionRequest, ProvisionResult};
use crate::store::{self, Attachment, Resource, ResourceState, Tx};

/// `addons:create`.
#[derive(Debug, Clone, Default)]
pub struct CreateAddon {
    pub app: String,
    /// `service` or `service:plan`.
    pub spec: String,
    /// Attachment name (`--as`); the manifest prefix by default.
    pub as_name: Option<String>,
    /// `-- --key value` options.
    pub options: Vec<(String, String)>,
    /// Idempotency key; a fresh uuid when `None`.
    pub uuid: Option<String>,
}

/// An add-on as listings show it.
#[derive(Debug, Clone, Serialize)]
pub struct AddonView {
    pub name: String,
    pub service: String,
    pub plan: String,
    pub state: ResourceState,
    /// The app that owns (bills) the resource.
    pub app: String,
    pub attachments: Vec<String>,
    pub uuid: String,
    pub addon_id: Option<String>,
    pub message: Option<String>,
    /// The vars its attachments own, by app name.
    pub config_vars: Vec<String>,
    pub created_at: i64,
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
    pub failures: i64,
}

/// The outcome of `addons:create`.
#[derive(Debug, Clone, Serialize)]
pub struct AddonCreated {
    pub addon: AddonView,
    /// (app var name, value) set on the app.
    pub config: Vec<(String, String)>,
    pub message: Option<String>,
    /// The resource already existed for this uuid; nothing changed.
    pub existing: bool,
}

/// The outcome of a plan change, rotation or deprovision.
#[derive(Debug, Clone, Serialize)]
pub struct AddonChanged {
    pub addon: AddonView,
    /// App var names whose value changed, appeared or went away.
    pub changed: Vec<String>,
    pub release: Option<i64>,
}

/// What the reservation step of `addons:create` found.
enum Reservation {
    /// The uuid already names this add-on: nothing to provision.
    Existing(Resource),
    /// Reserved (or reserved earlier by a call that never answered).
    Reserved {
        app: store::App,
        resource_id: i64,
        attachment: String,
    },
}

impl Host {
    fn view(&self, c: &dyn Tx, r: &Resource) -> anyhow::Result<AddonView> {
        let atts = c.attachments_of_resource(r.id)?;
        let mut config_vars = Vec::new();
        for a in &atts {
            config_vars.extend(c.vars_of_attachment(a.id)?.into_iter().map(|v| v.name));
        }
        Ok(self.view_of(r, &atts, config_vars))
    }

    /// The view of `r`, given its attachments and the names of their vars.
    fn view_of(&self, r: &Resource, atts: &[Attachment], config_vars: Vec<String>) -> AddonView {
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
    pub fn addons(&self, app: Option<&str>) -> anyhow::Result<Vec<AddonView>> {
        self.store.read(|tx| {
            let app_id = match app {
                Some(a) => Some(super::app_named(tx, a)?.id),
                None => None,
            };
            tx.list_resources(app_id)?
                .iter()
                .map(|r| self.view(tx, r))
                .collect()
        })
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

    pub fn addon_info(&self, addon: &str, app: Option<&str>) -> anyhow::Result<AddonView> {
        self.store.read(|tx| {
            let r = self.resolve(tx, addon, app)?;
            self.view(tx, &r)
        })
    }

    fn parse_spec(&self, spec: &str) -> anyhow::Result<(Arc<Manifest>, String)> {
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

    /// Provisions an add-on and attaches it to the app (CONTRACT §Provision).
    pub async fn create_addon(&self, req: CreateAddon) -> anyhow::Result<AddonCreated> {
        let (manifest, plan) = self.parse_spec(&req.spec)?;
        let manifest = manifest.clone();
        let uuid = match &req.uuid {
            Some(u) => uuid::Uuid::parse_str(u)
                .map_err(|e| error::invalid(format!("--uuid {u:?} is not a UUID: {e}")))?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let as_name = req
            .as_name
            .as_deref()
            .map(naming::attachment_name)
            .transpose()
            .map_err(error::invalid)?;
        // Whether the plugin is loaded decides only once we know this is not
        // a retry of an add-on already provisioned (which needs no plugin).
        let (plugin, plugin_error) = match self.plugin(&manifest.id) {
            Ok((_, p)) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };

        // The app, the idempotency check and the reservation of the
        // resource and its attachment name, in one step of the writer
        // before calling out: a concurrent provision cannot take the same
        // name, and no read transaction of its own is needed (a read after
        // another connection's commit starts from a cold cache; the
        // writer's is warm).
        let reserve = {
            let (uuid, manifest, plan) = (uuid.clone(), manifest.clone(), plan.clone());
            let app_name = req.app.clone();
            let mut plugin_error = plugin_error;
            move |tx: &dyn Tx| -> anyhow::Result<Reservation> {
                let app = super::app_named(tx, &app_name)?;
                if !manifest
                    .api
                    .regions
                    .iter()
                    .any(|r| r == "*" || *r == app.region)
                {
                    return Err(error::invalid(format!(
                        "add-on {} is not offered in region {} (regions: {})",
                        manifest.id,
                        app.region,
                        manifest.api.regions.join(", ")
                    )));
                }
                // Idempotency: the same uuid answers the same resource.
                if let Some(r) = tx.resource_by_uuid(&uuid)? {
                    if r.service != manifest.id || r.app_id != app.id {
                        return Err(error::conflict(format!(
                            "uuid {uuid} already names add-on {} ({}) on app {}",
                            r.name, r.service, r.app
                        )));
                    }
                    match r.state {
                        ResourceState::Provisioned | ResourceState::Failed => {
                            return Ok(Reservation::Existing(r))
                        }
                        ResourceState::Provisioning if r.partner_id.is_some() => {
                            return Ok(Reservation::Existing(r))
                        }
                        // Never answered (crash): ask the plugin again.
                        ResourceState::Provisioning => {}
                        other => {
                            return Err(error::conflict(format!(
                                "add-on {} for uuid {uuid} is {other}",
                                r.name
                            )))
                        }
                    }
                    if let Some(e) = plugin_error.take() {
                        return Err(e);
                    }
                    let att = tx
                        .attachments_of_resource(r.id)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            anyhow::anyhow!("reserved add-on {} lost its attachment", r.name)
                        })?;
                    return Ok(Reservation::Reserved {
                        app,
                        resource_id: r.id,
                        attachment: att.name,
                    });
                }
                if let Some(e) = plugin_error.take() {
                    return Err(e);
                }
                let att_name = choose_attachment_name(tx, &manifest, app.id, as_name.as_deref())?;
                let mut name = naming::resource_name(&manifest.id);
                while tx.resource_by_name(&name)?.is_some() {
                    name = naming::resource_name(&manifest.id);
                }
                let id = tx.insert_resource(&store::NewResource {
                    uuid: &uuid,
                    name: &name,
                    service: &manifest.id,
                    plan: &plan,
                    app_id: app.id,
                })?;
                tx.insert_attachment(id, app.id, &att_name)?;
                tx.audit(
                    "user",
                    "addons:create",
                    Some(&app.name),
                    Some(&name),
                    &format!("{}:{plan} as {att_name}", manifest.id),
                )?;
                Ok(Reservation::Reserved {
                    app,
                    resource_id: id,
                    attachment: att_name,
                })
            }
        };
        // Not waited for, not even its commit: later writes see it at once
        // (one writer), and the plugin call has no effect in the store until
        // the completion below, which checks the reservation is still there
        // and whose sync covers it too.
        let (app, resource_id, att_name) = match self.store.write_staged(reserve).await? {
            Reservation::Reserved {
                app,
                resource_id,
                attachment,
            } => (app, resource_id, attachment),
            Reservation::Existing(r) => {
                // What the writer saw may not be committed yet: answer only
                // once it is durable, from a snapshot that has it.
                self.store.write(|_| Ok(())).await?;
                return self.store.read(|tx| {
                    let r = tx
                        .resource_by_id(r.id)?
                        .ok_or_else(|| error::conflict(format!("add-on {} went away", r.name)))?;
                    self.existing(tx, &r)
                });
            }
        };
        let plugin = plugin.expect("the reservation fails without a plugin");

        let request = ProvisionRequest {
            uuid: uuid.clone(),
            app: app.name.clone(),
            name: att_name.clone(),
            plan: plan.clone(),
            region: app.region.clone(),
            options: req.options.clone(),
            base_url: self.base_url(&manifest.id),
        };
        let (ctx, effects) = self.context(&manifest, Scope::Provisioning);
        let outcome = plugin.provision(ctx, request).await;
        self.log_refusals(&effects).await;
        let effects = take(&effects);

        let outcome = outcome
            .map_err(error::call)
            .and_then(|r| check_provision(&manifest, r));
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                self.release_reservation(resource_id, format!("provision failed: {e}"))
                    .await?;
                return Err(e);
            }
        };

        let policy = self.opts.policy;
        let complete = {
            let (manifest, app) = (manifest.clone(), app.clone());
            move |tx: &dyn Tx| {
                let r = tx
                    .resource_by_id(resource_id)?
                    .ok_or_else(|| anyhow::anyhow!("reserved add-on vanished"))?;
                let att = tx
                    .attachments_of_resource(r.id)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("reserved attachment vanished"))?;
                let (pid, message, config, state) = match &result {
                    ProvisionResult::Provisioned(p) => (
                        &p.id,
                        &p.message,
                        Some(&p.config),
                        ResourceState::Provisioned,
                    ),
                    ProvisionResult::Pending(p) => {
                        (&p.id, &p.message, None, ResourceState::Provisioning)
                    }
                };
                if let Some(other) = tx.resource_by_partner_id(&manifest.id, pid)? {
                    if other.id != r.id {
                        return Err(error::addon(format!(
                        "add-on {} returned id {pid:?}, which already names {}: nothing was stored",
                        manifest.id, other.name
                    )));
                    }
                }
                apply_effects(tx, &manifest, &policy, &effects)?;
                let mut set = Vec::new();
                if let Some(config) = config {
                    set = write_config(tx, &manifest, &r, &att, config)?;
                    tx.insert_release(
                        app.id,
                        &format!("Attach {} ({})", att.name, r.name),
                        "user",
                    )?;
                }
                tx.update_resource(r.id, Some(pid), state, &r.plan, message.as_deref())?;
                tx.audit(
                    "user",
                    "addons:create",
                    Some(&app.name),
                    Some(&r.name),
                    state.as_str(),
                )?;
                // The resource as just written, for the answer: no read
                // after the commit.
                let r = Resource {
                    partner_id: Some(pid.clone()),
                    state,
                    message: message.clone(),
                    updated_at: crate::util::unix_now(),
                    ..r
                };
                Ok((r, att, set))
            }
        };
        let written = self.store.write(complete).await;
        let (r, att, config) = match written {
            Ok(w) => w,
            Err(e) => {
                self.release_reservation(resource_id, format!("provision failed: {e}"))
                    .await?;
                return Err(e);
            }
        };
        // The attachment is new (or left by a call that never answered,
        // which wrote no vars): the vars just set are all it owns.
        let var_names = config.iter().map(|(name, _)| name.clone()).collect();
        Ok(AddonCreated {
            addon: self.view_of(&r, std::slice::from_ref(&att), var_names),
            message: r.message.clone(),
            config,
            existing: false,
        })
    }

    fn existing(&self, c: &dyn Tx, r: &Resource) -> anyhow::Result<AddonCreated> {
        let view = self.view(c, r)?;
        let mut config = Vec::new();
        for a in c.attachments_of_resource(r.id)? {
            config.extend(
                c.vars_of_attachment(a.id)?
                    .into_iter()
                    .map(|v| (v.name, v.value)),
            );
        }
        Ok(AddonCreated {
            addon: view,
            config,
            message: r.message.clone(),
            existing: true,
        })
    }

    /// Forgets a reservation whose provisioning failed: nothing of it stays.
    async fn release_reservation(&self, resource_id: i64, why: String) -> anyhow::Result<()> {
        self.store
            .write(move |tx| {
                if let Some(r) = tx.resource_by_id(resource_id)? {
                    for att in tx.attachments_of_resource(r.id)? {
                        tx.delete_vars_of_attachment(att.id)?;
                    }
                    tx.delete_resource(r.id)?;
                    tx.audit("user", "addons:create", Some(&r.app), Some(&r.name), &why)?;
                }
                Ok(())
            })
            .await
    }

    /// Changes an add-on's plan (`addons:upgrade`/`downgrade`).
    pub async fn upgrade_addon(
        &self,
        addon: &str,
        spec: &str,
        app: Option<&str>,
    ) -> anyhow::Result<AddonChanged> {
        let r = self.store.read(|tx| self.resolve(tx, addon, app))?;
        let spec = if spec.contains(':') {
            spec.to_string()
        } else {
            format!("{}:{spec}", r.service)
        };
        let (manifest, plan) = self.parse_spec(&spec)?;
        let manifest = manifest.clone();
        if manifest.id != r.service {
            return Err(error::invalid(format!(
                "{} is a {} add-on; it cannot become {}",
                r.name, r.service, manifest.id
            )));
        }
        if plan == r.plan {
            return Err(error::invalid(format!(
                "{} is already on plan {plan}",
                r.name
            )));
        }
        let pid = provisioned_id(&r)?;
        let (_, plugin) = self.plugin(&manifest.id)?;
        let (ctx, effects) = self.context(
            &manifest,
            Scope::Resource {
                partner_id: pid.clone(),
            },
        );
        let outcome = plugin.change_plan(ctx, &pid, &plan).await;
        self.log_refusals(&effects).await;
        let effects = take(&effects);
        let config = outcome.map_err(error::call)?;
        if let Some(c) = &config {
            validate::addon_config(&manifest, c).map_err(|e| {
                error::addon(format!(
                    "add-on {} answered invalid config: {e}; nothing changed",
                    manifest.id
                ))
            })?;
        }
        let label = self.attachment_label(&r)?;
        let description = format!("Change {label} ({}) to {}:{plan}", r.name, r.service);
        self.apply_change(
            &manifest,
            &r,
            effects,
            Change {
                config,
                plan: Some(plan),
                description,
                action: "addons:upgrade",
                actor: "user".into(),
                rotation: false,
            },
        )
        .await
    }

    /// Rotates an add-on's credentials (`addons:rotate`).
    pub async fn rotate_addon(
        &self,
        addon: &str,
        app: Option<&str>,
    ) -> anyhow::Result<AddonChanged> {
        let r = self.store.read(|tx| self.resolve(tx, addon, app))?;
        self.rotate_resource(&r, "user").await
    }

    /// Rotates one resource's credentials on behalf of `actor` (`user`,
    /// `schedule`).
    pub(super) async fn rotate_resource(
        &self,
        r: &Resource,
        actor: &str,
    ) -> anyhow::Result<AddonChanged> {
        let r = r.clone();
        let pid = provisioned_id(&r)?;
        let (manifest, plugin) = self.plugin(&r.service)?;
        let (ctx, effects) = self.context(
            &manifest,
            Scope::Resource {
                partner_id: pid.clone(),
            },
        );
        let outcome = plugin.rotate(ctx, &pid).await;
        self.log_refusals(&effects).await;
        let effects = take(&effects);
        let config = outcome.map_err(error::call)?;
        validate::addon_config(&manifest, &config).map_err(|e| {
            error::addon(format!(
                "add-on {} answered invalid config: {e}; nothing changed",
                manifest.id
            ))
        })?;
        let label = self.attachment_label(&r)?;
        let description = match actor {
            "user" => format!("Rotate {label} credentials"),
            by => format!("Rotate {label} credentials ({by})"),
        };
        self.apply_change(
            &manifest,
            &r,
            effects,
            Change {
                config: Some(config),
                plan: None,
                description,
                action: "addons:rotate",
                actor: actor.into(),
                rotation: true,
            },
        )
        .await
    }

    /// Moves a resource to `state`, keeping everything else.
    async fn set_state(&self, r: &Resource, state: ResourceState) -> anyhow::Result<()> {
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
    fn attachment_label(&self, r: &Resource) -> anyhow::Result<String> {
        Ok(self
            .store
            .read(|tx| tx.attachments_of_resource(r.id))?
            .first()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| r.name.clone()))
    }

    /// Writes a plan change or rotation: new config (replacing the old),
    /// effects, a release on each app it is attached to.
    async fn apply_change(
        &self,
        manifest: &Arc<Manifest>,
        r: &Resource,
        effects: super::Effects,
        change: Change,
    ) -> anyhow::Result<AddonChanged> {
        let Change {
            config,
            plan,
            description,
            action,
            actor,
            rotation,
        } = change;
        let policy = self.opts.policy;
        let write = {
            let (manifest, r) = (manifest.clone(), r.clone());
            move |tx: &dyn Tx| {
                let current = tx
                    .resource_by_id(r.id)?
                    .filter(|c| c.state == ResourceState::Provisioned)
                    .ok_or_else(|| {
                        error::conflict(format!(
                            "add-on {} changed state meanwhile; try again",
                            r.name
                        ))
                    })?;
                apply_effects(tx, &manifest, &policy, &effects)?;
                let mut changed = Vec::new();
                let mut release = None;
                for att in tx.attachments_of_resource(r.id)? {
                    if let Some(config) = &config {
                        changed.extend(
                            write_config(tx, &manifest, &current, &att, config)?
                                .into_iter()
                                .map(|(n, _)| n),
                        );
                    }
                    release = Some(tx.insert_release(att.app_id, &description, &actor)?);
                }
                if rotation {
                    tx.rotation_succeeded(r.id, crate::util::unix_now())?;
                }
                let plan = plan.as_deref().unwrap_or(&current.plan);
                tx.update_resource(
                    r.id,
                    current.partner_id.as_deref(),
                    ResourceState::Provisioned,
                    plan,
                    current.message.as_deref(),
                )?;
                tx.audit(&actor, action, Some(&r.app), Some(&r.name), &description)?;
                Ok((changed, release))
            }
        };
        let (changed, release) = self.store.write(write).await?;
        let addon = self.store.read(|tx| {
            let r = tx
                .resource_by_id(r.id)?
                .ok_or_else(|| anyhow::anyhow!("add-on vanished"))?;
            self.view(tx, &r)
        })?;
        Ok(AddonChanged {
            addon,
            changed,
            release,
        })
    }

    /// Deprovisions an add-on: the plugin destroys the resource, then its
    /// attachments' vars go, with a release on each app.
    pub async fn destroy_addon(
        &self,
        addon: &str,
        app: Option<&str>,
        confirm: Option<&str>,
    ) -> anyhow::Result<AddonChanged> {
        let r = self.store.read(|tx| self.resolve(tx, addon, app))?;
        if confirm != Some(r.app.as_str()) {
            return Err(error::invalid(format!(
                "destroying {} deletes its data; confirm with --confirm {}",
                r.name, r.app
            )));
        }
        let (manifest, plugin) = self.plugin(&r.service)?;
        let effects = match &r.partner_id {
            Some(pid) if r.state != ResourceState::Failed => {
                let previous = r.state;
                self.set_state(&r, ResourceState::Deprovisioning).await?;
                let (ctx, effects) = self.context(
                    &manifest,
                    Scope::Resource {
                        partner_id: pid.clone(),
                    },
                );
                let outcome = plugin.deprovision(ctx, pid).await;
                self.log_refusals(&effects).await;
                if let Err(e) = outcome {
                    self.set_state(&r, previous).await?;
                    let busy = e.is_busy();
                    let e = error::UserError {
                        kind: if busy {
                            error::Kind::Busy
                        } else {
                            error::Kind::Addon
                        },
                        message: format!("{e}; the add-on was not removed"),
                    };
                    return Err(e.into());
                }
                take(&effects)
            }
            _ => Default::default(),
        };
        let policy = self.opts.policy;
        let detach = {
            let (manifest, r) = (manifest.clone(), r.clone());
            move |tx: &dyn Tx| {
                apply_effects(tx, &manifest, &policy, &effects)?;
                let mut changed = Vec::new();
                let mut release = None;
                for att in tx.attachments_of_resource(r.id)? {
                    changed.extend(tx.vars_of_attachment(att.id)?.into_iter().map(|v| v.name));
                    tx.delete_vars_of_attachment(att.id)?;
                    tx.delete_attachment(att.id)?;
                    release = Some(tx.insert_release(
                        att.app_id,
                        &format!("Detach {} ({})", att.name, r.name),
                        "user",
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
                    "user",
                    "addons:destroy",
                    Some(&r.app),
                    Some(&r.name),
                    "deprovisioned",
                )?;
                Ok((changed, release))
            }
        };
        let (changed, release) = self.store.write(detach).await?;
        let addon = self.store.read(|tx| {
            let r = tx
                .resource_by_id(r.id)?
                .ok_or_else(|| anyhow::anyhow!("add-on vanished"))?;
            self.view(tx, &r)
        })?;
        Ok(AddonChanged {
            addon,
            changed,
            release,
        })
    }
}

/// What a plan change or rotation writes.
struct Change {
    config: Option<Vec<(String, String)>>,
    plan: Option<String>,
    description: String,
    action: &'static str,
    actor: String,
    /// Record a successful rotation.
    rotation: bool,
}

fn provisioned_id(r: &Resource) -> anyhow::Result<String> {
    match (&r.partner_id, r.state) {
        (Some(pid), ResourceState::Provisioned) => Ok(pid.clone()),
        (_, state) => Err(error::conflict(format!(
            "add-on {} is {state}; this needs a provisioned add-on",
            r.name
        ))),
    }
}

/// Validates a provision answer: the add-on's id and its config.
fn check_provision(m: &Manifest, r: ProvisionResult) -> anyhow::Result<ProvisionResult> {
    let id = match &r {
        ProvisionResult::Provisioned(p) => &p.id,
        ProvisionResult::Pending(p) => &p.id,
    };
    validate::partner_id(id)
        .map_err(|e| error::addon(format!("add-on {}: {e}; nothing was stored", m.id)))?;
    if let ProvisionResult::Provisioned(p) = &r {
        validate::addon_config(m, &p.config).map_err(|e| {
            error::addon(format!(
                "add-on {} answered invalid config: {e}; nothing was stored",
                m.id
            ))
        })?;
    }
    Ok(r)
}

/// Picks the attachment name: `--as`, else the prefix, else (for add-ons
/// allowing many per app) the prefix plus a free color. Refuses a name whose
/// vars someone else already has on the app.
fn choose_attachment_name(
    c: &dyn Tx,
    m: &Manifest,
    app_id: i64,
    as_name: Option<&str>,
) -> anyhow::Result<String> {
    let prefix = &m.api.config_vars_prefix;
    if let Some(name) = as_name {
        for v in &m.api.config_vars {
            if let Some(why) = crate::reserved::reason(&naming::app_var(v, prefix, name)) {
                return Err(error::invalid(format!(
                    "cannot attach as {name}: {why}; choose another name with --as"
                )));
            }
        }
    }
    // Point lookups: an app may carry hundreds of attachments and vars.
    let clash = |name: &str| -> anyhow::Result<Option<String>> {
        if c.attachment_by_name(app_id, name)?.is_some() {
            return Ok(Some(format!(
                "attachment name {name} is already used on this app"
            )));
        }
        for v in &m.api.config_vars {
            let app_var = naming::app_var(v, prefix, name);
            if let Some(var) = c.config_var(app_id, &app_var)? {
                let by = match var.attachment_id {
                    None => "the user",
                    Some(_) => "another add-on",
                };
                return Ok(Some(format!("{app_var} is already set on the app by {by}")));
            }
        }
        Ok(None)
    };
    if let Some(name) = as_name {
        return match clash(name)? {
            None => Ok(name.to_string()),
            Some(why) => Err(error::conflict(format!(
                "cannot attach as {name}: {why}; choose another name with --as"
            ))),
        };
    }
    let Some(why) = clash(prefix)? else {
        return Ok(prefix.clone());
    };
    if !m.api.requires.iter().any(|r| r == "many_per_app") {
        return Err(error::conflict(format!(
            "cannot attach {} as {prefix}: {why}; this add-on allows one per app",
            m.id
        )));
    }
    for color in naming::COLORS {
        let name = format!("{prefix}_{color}");
        if clash(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(error::conflict(format!(
        "no free attachment name for {}; use --as",
        m.id
    )))
}

/// Replaces the vars `att` owns with `config` (manifest names, renamed for
/// the attachment). Vars the user took over are left alone and the refusal
/// is logged. Returns (app var, new value) for each var that changed (an
/// empty value for one removed).
pub(super) fn write_config(
    tx: &dyn Tx,
    m: &Manifest,
    r: &Resource,
    att: &Attachment,
    config: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let prefix = &m.api.config_vars_prefix;
    let wanted: BTreeMap<String, &String> = config
        .iter()
        .map(|(n, v)| (naming::app_var(n, prefix, &att.name), v))
        .collect();
    let mut changed = Vec::new();
    for var in tx.vars_of_attachment(att.id)? {
        if !wanted.contains_key(&var.name) {
            tx.delete_var(att.app_id, &var.name)?;
            changed.push((var.name, String::new()));
        }
    }
    for (name, value) in wanted {
        if let Some(why) = crate::reserved::reason(&name) {
            // Manifests and attachment names cannot lead here; a name that
            // became reserved since is refused all the same.
            tx.audit(
                &format!("addon:{}", m.id),
                "refused",
                Some(&att.app),
                Some(&r.name),
                &why,
            )?;
            continue;
        }
        match tx.config_var(att.app_id, &name)? {
            Some(cur) if cur.attachment_id != Some(att.id) => {
                let owner = if cur.attachment_id.is_none() {
                    "the user"
                } else {
                    "another add-on"
                };
                if r.state == ResourceState::Provisioning {
                    // The name was taken after the reservation: refuse the
                    // whole provision rather than attach half of it.
                    return Err(error::conflict(format!(
                        "{name} was set on app {} by {owner} meanwhile; nothing was stored",
                        att.app
                    )));
                }
                tx.audit(
                    &format!("addon:{}", m.id),
                    "refused",
                    Some(&att.app),
                    Some(&r.name),
                    &format!("{name} is owned by {owner}: write refused"),
                )?;
            }
            Some(cur) if &cur.value == value => {}
            _ => {
                tx.upsert_var(att.app_id, &name, value, Some(att.id))?;
                changed.push((name, value.clone()));
            }
        }
    }
    Ok(changed)
}
