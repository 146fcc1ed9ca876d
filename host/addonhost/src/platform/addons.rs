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
use crate::store::{Attachment, Resource, ResourceState, Tx};

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
        let (_, provider) = self.provider(&manifest.id)?;
        let label = self.attachment_label(&r)?;
        self.retrying(&manifest.id, "change-plan", || async {
            let (ctx, effects) = self.context(
                &manifest,
                Scope::Resource {
                    partner_id: pid.clone(),
                },
            );
            let outcome = provider.change_plan(ctx, &pid, &plan).await;
            self.log_refusals(&effects).await;
            let effects = take(&effects);
            let config = outcome?;
            if let Some(c) = &config {
                validate::addon_config(&manifest, c).map_err(|e| {
                    error::addon(format!(
                        "add-on {} answered invalid config: {e}; nothing changed",
                        manifest.id
                    ))
                })?;
            }
            let description = format!("Change {label} ({}) to {}:{plan}", r.name, r.service);
            self.apply_change(
                &manifest,
                &r,
                effects,
                Change {
                    config,
                    plan: Some(plan.clone()),
                    description,
                    action: "addons:upgrade",
                    actor: "user".into(),
                    rotation: false,
                },
            )
            .await
        })
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
        let (manifest, provider) = self.provider(&r.service)?;
        let label = self.attachment_label(&r)?;
        self.retrying(&manifest.id, "rotate", || async {
            let (ctx, effects) = self.context(
                &manifest,
                Scope::Resource {
                    partner_id: pid.clone(),
                },
            );
            let outcome = provider.rotate(ctx, &pid).await;
            self.log_refusals(&effects).await;
            let effects = take(&effects);
            let config = outcome?;
            validate::addon_config(&manifest, &config).map_err(|e| {
                error::addon(format!(
                    "add-on {} answered invalid config: {e}; nothing changed",
                    manifest.id
                ))
            })?;
            let description = match actor {
                "user" => format!("Rotate {label} credentials"),
                by => format!("Rotate {label} credentials ({by})"),
            };
            let changes = config
                .iter()
                .map(|(n, v)| (n.clone(), Some(v.clone())))
                .collect();
            let changed = self
                .apply_change(
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
                .await?;
            // Provider mode: a rotation the calling platform did not ask
            // for (scheduled, or from this host) reaches it all the same.
            if actor != "platform" {
                self.forward_to_platforms(
                    &manifest,
                    vec![super::forward::ToPlatform::Config {
                        partner_id: pid.clone(),
                        changes,
                    }],
                );
            }
            Ok(changed)
        })
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
                        r.clone(),
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
                return Err(e);
            }
        };
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

/// The write of a deprovisioning: the call's effects, then the resource's
/// vars and attachments go, with a release on each app.
fn detach(
    manifest: Arc<Manifest>,
    policy: super::Policy,
    r: Resource,
    effects: super::context::Effects,
) -> impl FnMut(&dyn Tx) -> anyhow::Result<(Vec<String>, Option<i64>)> + Send + 'static {
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
            // Removed by the user with --force: still the user's name.
            None if tx.taken_over(att.id, &name)? => {
                tx.audit(
                    &format!("addon:{}", m.id),
                    "refused",
                    Some(&att.app),
                    Some(&r.name),
                    &format!("{name} was taken over by the user: write refused"),
                )?;
            }
            _ => {
                tx.upsert_var(att.app_id, &name, value, Some(att.id))?;
                changed.push((name, value.clone()));
            }
        }
    }
    Ok(changed)
}
