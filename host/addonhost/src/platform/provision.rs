//! Provisioning (CONTRACT §Provision): reserve, call the plugin, complete.
//!
//! The uuid is the idempotency key, and retries race: a client that timed
//! out retries while its first request is still inside the plugin. So each
//! reservation has an owner — the call that made it — and a lease (the
//! plugin's deadline plus a margin). A retry that finds a reservation whose
//! owner is alive waits for it and answers the same add-on; one whose owner
//! died (a crash, a kill) takes the reservation over and asks the plugin
//! again. Only the owner completes or releases a reservation, so an answered
//! add-on is never provisioned twice, never attached twice, and never
//! deleted except by deprovisioning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::addons::{AddonCreated, CreateAddon};
use super::change::write_config;
use super::context::Scope;
use super::reads;
use super::{apply_effects, error, lock_effects, naming, take, validate, Host};
use crate::manifest::Manifest;
use crate::runtime::{ProvisionRequest, ProvisionResult};
use crate::store::{self, Ahead, Resource, ResourceState, Tx};
use crate::util::unix_now;

/// Added to the plugin's deadline for a reservation's lease: validation and
/// the completion's commit.
const LEASE_MARGIN_SECONDS: i64 = 10;
/// How often a retry looks whether the call it waits for has answered.
const WAIT_STEP: Duration = Duration::from_millis(25);

/// A completion found its reservation gone: the batch that held it failed
/// to commit.
#[derive(Debug, thiserror::Error)]
#[error("the provisioning's reservation is gone")]
struct ReservationLost;

/// What a provisioning asked for; a retry must ask for the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Asked {
    plan: String,
    #[serde(rename = "as")]
    as_name: Option<String>,
    options: BTreeMap<String, String>,
}

impl Asked {
    /// How `retry` differs from the original request, in words.
    fn differences(&self, retry: &Asked) -> Vec<String> {
        let mut d = Vec::new();
        if self.plan != retry.plan {
            d.push(format!("plan {} (was {})", retry.plan, self.plan));
        }
        if self.as_name != retry.as_name {
            let show = |n: &Option<String>| n.clone().unwrap_or_else(|| "(default)".into());
            d.push(format!(
                "attachment name {} (was {})",
                show(&retry.as_name),
                show(&self.as_name)
            ));
        }
        if self.options != retry.options {
            d.push("options".to_string());
        }
        d
    }
}

/// What the reservation step found.
enum Reservation {
    /// The uuid already names this add-on, answered: nothing to provision.
    Existing(Box<Resource>),
    /// Reserved by this call (new, or taken over from a call that died).
    Reserved {
        app: store::App,
        resource_id: i64,
        attachment: store::Attachment,
    },
    /// Another call is provisioning this uuid right now.
    InFlight,
}

impl Host {
    /// Provisions an add-on and attaches it to the app (CONTRACT §Provision).
    pub async fn create_addon(&self, req: CreateAddon) -> crate::Result<AddonCreated> {
        let service = req.spec.split(':').next().unwrap_or("").to_string();
        let r = self.provision(req).await;
        // Only ids of the catalog become label values.
        if self.catalog().get(&service).is_some() {
            let outcome = match &r {
                Ok(c) if c.existing => "existing",
                Ok(c) if c.addon.state == ResourceState::Provisioned => "provisioned",
                Ok(_) => "pending",
                Err(_) => "failed",
            };
            self.metrics()
                .provisionings
                .get_or_create(&crate::metrics::AddonOutcome {
                    addon: service,
                    outcome,
                })
                .inc();
        }
        r.map_err(Into::into)
    }

    async fn provision(&self, req: CreateAddon) -> anyhow::Result<AddonCreated> {
        let (manifest, plan) = self.parse_spec(&req.spec)?;
        let uuid = match &req.uuid {
            Some(u) => uuid::Uuid::parse_str(u)
                .map_err(|e| error::invalid(format!("--uuid {u:?} is not a UUID: {e}")))?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let asked = Asked {
            plan: plan.clone(),
            as_name: req
                .as_name
                .as_deref()
                .map(naming::attachment_name)
                .transpose()
                .map_err(error::invalid)?,
            options: req.options.iter().cloned().collect(),
        };
        // This call's mark on the reservation it makes or takes over.
        let owner = uuid::Uuid::new_v4().to_string();
        let actor = req
            .actor
            .clone()
            .unwrap_or_else(|| super::actor::USER.to_string());
        let lease = Host::call_timeout_ms(&manifest).div_ceil(1000) as i64 + LEASE_MARGIN_SECONDS;
        let reserved_at = std::time::Instant::now();
        let (app, resource_id, att) = loop {
            // Whether the plugin is loaded decides only once we know this
            // is not a retry of an add-on already answered (which needs no
            // plugin).
            let plugin_error = self.provider(&manifest.id).err();
            let reserve = reserve(
                (manifest.clone(), uuid.clone(), req.app.clone()),
                asked.clone(),
                (owner.clone(), lease, actor.clone()),
                plugin_error,
            );
            // Not waited for, not even its commit: later writes see it at
            // once (one writer), and the plugin call has no effect in the
            // store until the completion below, which checks the
            // reservation is still this call's and whose sync covers it too.
            match self.store.write_staged(reserve).await? {
                Reservation::Reserved {
                    app,
                    resource_id,
                    attachment,
                } => break (app, resource_id, attachment),
                Reservation::Existing(r) => {
                    // What the writer saw may not be committed yet: answer
                    // only once it is durable, from a snapshot that has it.
                    self.store.write(|_| Ok(())).await?;
                    return self.store.read(|tx| {
                        let r = tx.resource_by_id(r.id)?.ok_or_else(|| {
                            error::conflict(format!("add-on {} went away", r.name))
                        })?;
                        self.existing(tx, &r)
                    });
                }
                Reservation::InFlight => self.wait_for_reservation(&uuid).await?,
            }
        };
        let (_, provider) = self.provider(&manifest.id)?;
        let request = ProvisionRequest {
            uuid: uuid.clone(),
            app: app.name.clone(),
            name: att.name.clone(),
            plan: plan.clone(),
            region: app.region.clone(),
            options: req.options.clone(),
            base_url: self.base_url(&manifest.id),
        };
        let mut attempt = 0;
        let (r, att, config) = loop {
            attempt += 1;
            let (ctx, effects) = self.context(&manifest, Scope::Provisioning);
            let outcome = provider.provision(ctx, request.clone()).await;
            self.log_refusals(&effects).await;
            let effects = take(&effects);
            let result = match outcome.and_then(|r| check_provision(&manifest, r)) {
                Ok(r) => r,
                Err(e) => {
                    self.release_reservation(
                        resource_id,
                        (&owner, &actor),
                        format!("provision failed: {e}"),
                    )
                    .await?;
                    return Err(e);
                }
            };
            let complete = complete(
                (manifest.clone(), self.opts.policy),
                (resource_id, owner.clone(), uuid.clone(), actor.clone()),
                att.clone(),
                result,
                effects,
            );
            match self.store.write(complete).await {
                Ok(w) => break w,
                // What the call read changed meanwhile: run it again.
                Err(e) if reads::is_stale(&e) && attempt < reads::ATTEMPTS => {
                    reads::back_off(attempt).await;
                    continue;
                }
                Err(e) if e.is::<ReservationLost>() => {
                    let why = self
                        .store
                        .write_failure_since(reserved_at)
                        .unwrap_or_else(|| "its commit failed".into());
                    return Err(error::unavailable(format!(
                        "add-on {}: the reservation of this provisioning was not kept ({why}); nothing was stored, try again",
                        manifest.id
                    )));
                }
                Err(e) => {
                    let e = stale_to_conflict(e, &manifest.id, "provision");
                    self.release_reservation(
                        resource_id,
                        (&owner, &actor),
                        format!("provision failed: {e}"),
                    )
                    .await?;
                    return Err(e);
                }
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

    /// Waits until the provisioning of `uuid` that another call holds is
    /// answered, fails, or its holder's lease ends (the caller then looks
    /// again, and answers, retries or takes over).
    async fn wait_for_reservation(&self, uuid: &str) -> anyhow::Result<()> {
        loop {
            tokio::time::sleep(WAIT_STEP).await;
            let r = self.store.read(|tx| tx.resource_by_uuid(uuid))?;
            let pending = r.is_some_and(|r| {
                r.state == ResourceState::Provisioning
                    && r.partner_id.is_none()
                    && r.reserved_until.is_some_and(|until| until > unix_now())
            });
            if !pending {
                return Ok(());
            }
        }
    }

    pub(super) fn existing(&self, c: &dyn Tx, r: &Resource) -> anyhow::Result<AddonCreated> {
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

    /// Forgets this call's reservation after its provisioning failed:
    /// nothing of it stays. A reservation another call holds now, or one
    /// already answered, is left alone.
    async fn release_reservation(
        &self,
        resource_id: i64,
        (owner, actor): (&str, &str),
        why: String,
    ) -> anyhow::Result<()> {
        let (owner, actor) = (owner.to_string(), actor.to_string());
        self.store
            .write(move |tx| {
                let Some(r) = tx.resource_by_id(resource_id)? else {
                    return Ok(());
                };
                if r.reserved_by.as_deref() != Some(owner.as_str())
                    || r.state != ResourceState::Provisioning
                    || r.partner_id.is_some()
                {
                    return Ok(());
                }
                for att in tx.attachments_of_resource(r.id)? {
                    tx.delete_vars_of_attachment(att.id)?;
                }
                tx.delete_resource(r.id)?;
                tx.audit(&actor, "addons:create", Some(&r.app), Some(&r.name), &why)?;
                Ok(())
            })
            .await
    }
}

/// What a completion wrote: the resource, its attachment, the vars set.
type Completed = (Resource, store::Attachment, Vec<(String, String)>);

/// The completion write of a provisioning: only by the call holding the
/// reservation, with the plugin's answer validated, the call's effects, the
/// vars and the `Attach` release, in one transaction.
fn complete(
    (manifest, policy): (Arc<Manifest>, super::Policy),
    (resource_id, owner, uuid, actor): (i64, String, String, String),
    reserved: store::Attachment,
    result: ProvisionResult,
    effects: super::context::Effects,
) -> impl FnMut(&dyn Tx) -> anyhow::Result<Completed> + Send + 'static {
    move |tx: &dyn Tx| {
        lock_effects(tx, &manifest, &effects)?;
        read_ahead_completion(tx, &manifest, resource_id, &reserved, &result, &effects)?;
        // A reservation is answered before its commit: if that commit
        // failed (a full disk), the row is not there.
        let r = tx.resource_by_id(resource_id)?.ok_or(ReservationLost)?;
        let r = Some(r)
            .filter(|r| {
                r.reserved_by.as_deref() == Some(&owner)
                    && r.state == ResourceState::Provisioning
                    && r.partner_id.is_none()
            })
            .ok_or_else(|| {
                error::conflict(format!(
                    "provisioning of uuid {uuid} took longer than its lease and another request took it over; \
                     retry with the same uuid to get its answer"
                ))
            })?;
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
            ProvisionResult::Pending(p) => (&p.id, &p.message, None, ResourceState::Provisioning),
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
                r.app_id,
                &format!("Attach {} ({})", att.name, r.name),
                &actor,
            )?;
        }
        tx.update_resource(r.id, Some(pid), state, &r.plan, message.as_deref())?;
        tx.audit(
            &actor,
            "addons:create",
            Some(&r.app),
            Some(&r.name),
            state.as_str(),
        )?;
        // The resource as just written, for the answer: no read
        // after the commit.
        let r = Resource {
            partner_id: Some(pid.clone()),
            state,
            message: message.clone(),
            updated_at: unix_now(),
            ..r
        };
        Ok((r, att, set))
    }
}

/// Names the reads of a completion ahead (see [`Tx::read_ahead`]): the
/// reservation, the partner id's owner, the KV the call read and writes,
/// the vars the answer sets on the reserved attachment, the release.
fn read_ahead_completion(
    tx: &dyn Tx,
    m: &Manifest,
    resource_id: i64,
    att: &store::Attachment,
    result: &ProvisionResult,
    effects: &super::context::Effects,
) -> anyhow::Result<()> {
    let (pid, config) = match result {
        ProvisionResult::Provisioned(p) => (&p.id, Some(&p.config)),
        ProvisionResult::Pending(p) => (&p.id, None),
    };
    let vars: Vec<String> = config
        .into_iter()
        .flatten()
        .map(|(n, _)| naming::app_var(n, &m.api.config_vars_prefix, &att.name))
        .collect();
    let mut reads = vec![
        Ahead::ResourceById(resource_id),
        Ahead::AttachmentsOfResource(resource_id),
        Ahead::ResourceByPartnerId {
            service: &m.id,
            partner_id: pid,
        },
    ];
    reads.extend(effects.reads.read_keys().map(|key| Ahead::Kv {
        service: &m.id,
        key,
    }));
    if !effects.kv.is_empty() {
        reads.push(Ahead::KvUsage(&m.id));
        reads.extend(effects.kv.keys().map(|key| Ahead::KvWrite {
            service: &m.id,
            key,
        }));
    }
    if config.is_some() {
        reads.push(Ahead::VarsOfAttachment(att.id));
        for name in &vars {
            reads.push(Ahead::ConfigVar {
                app_id: att.app_id,
                name,
            });
            reads.push(Ahead::TakenOver {
                attachment_id: att.id,
                name,
            });
        }
        reads.push(Ahead::Release(att.app_id));
    }
    tx.read_ahead(&reads)
}

/// The reservation step, run on the writer: the app, the idempotency check
/// and the reservation of the resource and its attachment name, in one
/// step before calling out, so a concurrent provision cannot take the same
/// name (and no read transaction of its own is needed: the writer's cache
/// is warm).
fn reserve(
    (manifest, uuid, app_name): (Arc<Manifest>, String, String),
    asked: Asked,
    (owner, lease, actor): (String, i64, String),
    mut plugin_error: Option<anyhow::Error>,
) -> impl FnMut(&dyn Tx) -> anyhow::Result<Reservation> + Send + 'static {
    move |tx: &dyn Tx| {
        // The name a new resource will likely get, checked with the rest.
        let candidate = naming::resource_name(&manifest.id);
        tx.read_ahead(&[
            Ahead::App(&app_name),
            Ahead::ResourceByUuid(&uuid),
            Ahead::ResourceByName(&candidate),
            Ahead::NewResource,
            Ahead::NewAttachment,
        ])?;
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
        let now = unix_now();
        // Idempotency: the same uuid answers the same resource, for the
        // same request.
        if let Some(r) = tx.resource_by_uuid(&uuid)? {
            if r.service != manifest.id || r.app_id != app.id {
                return Err(error::conflict(format!(
                    "uuid {uuid} already names add-on {} ({}) on app {}",
                    r.name, r.service, r.app
                )));
            }
            if let Some(original) = r
                .request
                .as_deref()
                .and_then(|j| serde_json::from_str::<Asked>(j).ok())
            {
                let differs = original.differences(&asked);
                if !differs.is_empty() {
                    return Err(error::conflict(format!(
                        "uuid {uuid} already names add-on {} ({}:{}), provisioned for another request: this one asks for {}; use a new uuid",
                        r.name,
                        r.service,
                        original.plan,
                        differs.join(", ")
                    )));
                }
            }
            match r.state {
                ResourceState::Provisioned | ResourceState::Failed => {
                    return Ok(Reservation::Existing(Box::new(r)))
                }
                ResourceState::Provisioning if r.partner_id.is_some() => {
                    return Ok(Reservation::Existing(Box::new(r)))
                }
                // Unanswered: held by a call still running, or left by one
                // that died, whose reservation this call takes over.
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
            if !tx.claim_reservation(r.id, &owner, now + lease, now)? {
                return Ok(Reservation::InFlight);
            }
            let att = tx
                .attachments_of_resource(r.id)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("reserved add-on {} lost its attachment", r.name))?;
            return Ok(Reservation::Reserved {
                app,
                resource_id: r.id,
                attachment: att,
            });
        }
        if let Some(e) = plugin_error.take() {
            return Err(e);
        }
        let att_name = choose_attachment_name(tx, &manifest, app.id, asked.as_name.as_deref())?;
        let mut name = candidate;
        while tx.resource_by_name(&name)?.is_some() {
            name = naming::resource_name(&manifest.id);
        }
        let request = serde_json::to_string(&asked)?;
        let id = tx.insert_resource(&store::NewResource {
            uuid: &uuid,
            name: &name,
            service: &manifest.id,
            plan: &asked.plan,
            app_id: app.id,
            reserved_by: &owner,
            reserved_until: now + lease,
            request: &request,
        })?;
        let attachment_id = tx.insert_attachment(id, app.id, &att_name)?;
        tx.audit(
            &actor,
            "addons:create",
            Some(&app.name),
            Some(&name),
            &format!("{}:{} as {att_name}", manifest.id, asked.plan),
        )?;
        Ok(Reservation::Reserved {
            resource_id: id,
            attachment: store::Attachment {
                id: attachment_id,
                resource_id: id,
                app: app.name.clone(),
                app_id: app.id,
                name: att_name,
            },
            app,
        })
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
        let vars: Vec<String> = m
            .api
            .config_vars
            .iter()
            .map(|v| naming::app_var(v, prefix, name))
            .collect();
        let mut reads = vec![Ahead::AttachmentByName { app_id, name }];
        reads.extend(vars.iter().map(|name| Ahead::ConfigVar { app_id, name }));
        c.read_ahead(&reads)?;
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

/// The error of a call whose reads kept changing through all its attempts.
pub(super) fn stale_to_conflict(e: anyhow::Error, addon: &str, call: &str) -> anyhow::Error {
    if !reads::is_stale(&e) {
        return e;
    }
    error::conflict(format!(
        "add-on {addon}: {call} ran {} times and each time other calls changed what it read before it could apply; nothing changed, try again",
        reads::ATTEMPTS
    ))
}
