//! Changing a provisioned add-on: a plan change or a credential rotation
//! asks the plugin, then writes the config vars it answered, the call's
//! effects and a release in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::context::Scope;
use super::{apply_effects, error, lock_effects, naming, take, validate, AddonChanged, Host};
use crate::manifest::Manifest;
use crate::store::{Attachment, Resource, ResourceState, Tx};

impl Host {
    /// Changes an add-on's plan (`addons:upgrade`/`downgrade`).
    pub async fn upgrade_addon(
        &self,
        addon: &str,
        spec: &str,
        app: Option<&str>,
    ) -> crate::Result<AddonChanged> {
        self.upgrade_addon_as(addon, spec, app, super::actor::USER)
            .await
    }

    /// [`Host::upgrade_addon`], recorded as `actor`.
    pub(crate) async fn upgrade_addon_as(
        &self,
        addon: &str,
        spec: &str,
        app: Option<&str>,
        actor: &str,
    ) -> crate::Result<AddonChanged> {
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
            ))
            .into());
        }
        if plan == r.plan {
            return Err(error::invalid(format!("{} is already on plan {plan}", r.name)).into());
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
                    actor: actor.into(),
                    rotation: false,
                },
            )
            .await
        })
        .await
        .map_err(Into::into)
    }

    /// Rotates an add-on's credentials (`addons:rotate`).
    pub async fn rotate_addon(
        &self,
        addon: &str,
        app: Option<&str>,
    ) -> crate::Result<AddonChanged> {
        let r = self.store.read(|tx| self.resolve(tx, addon, app))?;
        self.rotate_resource(&r, super::actor::USER)
            .await
            .map_err(Into::into)
    }

    /// Rotates one resource's credentials on behalf of `actor` (`user`,
    /// `schedule`, `osb`, `partner:<id>`).
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
                super::actor::USER => format!("Rotate {label} credentials"),
                by => format!("Rotate {label} credentials ({by})"),
            };
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
            Ok(changed)
        })
        .await
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
                lock_effects(tx, &manifest, &effects)?;
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
                    // Provider mode: a rotation the calling platform did not
                    // ask for (scheduled, or from this host) is owed to it,
                    // in this transaction.
                    if let (Some(config), false) = (&config, super::actor::is_partner(&actor)) {
                        let owed: Vec<(String, Option<String>)> = config
                            .iter()
                            .map(|(n, v)| (n.clone(), Some(v.clone())))
                            .collect();
                        super::forward::owe(tx, &manifest, &current, &owed, false)?;
                    }
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
        self.wake_deliveries();
        self.changed(r, changed, release)
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
