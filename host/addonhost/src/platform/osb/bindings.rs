//! Service bindings: the instance's config vars handed out as credentials,
//! and binding rotation.
//!
//! An add-on keeps one set of credentials per resource, so every binding of
//! an instance carries the same ones, named as in the add-on's manifest
//! (`KV_URL`, whatever the attachment is called). Unbinding forgets the
//! binding; the credentials live on with the instance.
//!
//! Rotating a binding (`predecessor_binding_id`, OSB 2.17) rotates the
//! add-on's credentials — the plugin's `rotate`, in one release, as
//! `addons:rotate` does — and hands the new ones to the successor. The
//! add-on keeps the credentials it replaced working for its grace window
//! (the manifest's `rotation.grace_seconds`), so the predecessor keeps what
//! it had, with `expires_at` at the end of that window. A rotation makes the
//! credentials of the rotation before it stop at once (the add-on keeps one
//! previous set), so bindings still holding those expire now.

use serde::{Deserialize, Serialize};

use super::super::Host;
use super::{check_id, Caller, Credentials, OsbError};
use crate::store::{OsbBinding, Resource};
use crate::util::unix_now;

/// Added to the plugin's deadline for the lease of a rotation in flight.
const LEASE_MARGIN_SECONDS: i64 = 10;

/// What a binding's creation asked for; a retry with the same id must ask
/// the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Asked {
    service_id: String,
    plan_id: String,
    app_guid: Option<String>,
    route: Option<String>,
    predecessor_binding_id: Option<String>,
}

/// `PUT /v2/service_instances/:instance_id/service_bindings/:binding_id`.
#[derive(Debug, Clone)]
pub struct BindRequest {
    /// The instance to bind, by the platform's id for it.
    pub instance_id: String,
    /// The id the platform chose for the binding: the bind's idempotency key.
    pub binding_id: String,
    /// The offering's catalog id; must be the instance's own (else 400).
    pub service_id: String,
    /// A plan id of that offering.
    pub plan_id: String,
    /// `bind_resource.app_guid` (or the deprecated top-level `app_guid`).
    pub app_guid: Option<String>,
    /// `bind_resource.route`.
    pub route: Option<String>,
    /// Whether the request carried non-empty `parameters` (bindings take none).
    pub has_parameters: bool,
    /// The binding this one replaces (rotation; OSB 2.17).
    pub predecessor_binding_id: Option<String>,
}

/// Whether a bind made the binding or found it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingState {
    /// Made by this request (201).
    Created,
    /// Made before, for the same request (200).
    Existing,
}

/// A binding as the platform gets it.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The credentials the app gets: the resource's config vars by manifest
    /// name (for a binding a rotation replaced, the ones it held).
    pub credentials: Credentials,
    /// When its credentials stop working (Unix seconds): set once a
    /// rotation replaced them.
    pub expires_at: Option<i64>,
}

impl Binding {
    /// `expires_at` as the spec writes it: `yyyy-mm-ddThh:mm:ss.sZ` (UTC).
    pub fn expires_at_iso(&self) -> Option<String> {
        let t = time::OffsetDateTime::from_unix_timestamp(self.expires_at?).ok()?;
        t.format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].0Z"
        ))
        .ok()
    }

    /// The network endpoints inside the credentials: the host and port of
    /// every URL among them, once each.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        for value in self.credentials.values() {
            let Ok(url) = url::Url::parse(value) else {
                continue;
            };
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let endpoint = (host.to_string(), port.to_string());
            if !seen.contains(&endpoint) {
                seen.push(endpoint);
            }
        }
        seen
    }
}

/// What the claim of a binding id found.
enum Claim {
    /// Made before, ready.
    Existing(OsbBinding),
    /// Made now, ready (a plain binding).
    Created,
    /// Claimed by this request: a rotation to run.
    Rotating,
    /// A rotation making it is running.
    InFlight,
    Refused(OsbError),
}

impl Host {
    /// The credentials an instance's resource holds now, by manifest name.
    fn osb_credentials(&self, r: &Resource) -> anyhow::Result<Credentials> {
        let prefix = self
            .service(&r.service)
            .map(|s| s.manifest.api.config_vars_prefix.clone())
            .ok();
        self.store.read(|tx| {
            let mut credentials = Credentials::new();
            for att in tx.attachments_of_resource(r.id)? {
                for var in tx.vars_of_attachment(att.id)? {
                    let name = prefix
                        .as_deref()
                        .and_then(|p| super::super::naming::manifest_var(&var.name, p, &att.name))
                        .unwrap_or(var.name);
                    credentials.insert(name, var.value);
                }
            }
            Ok(credentials)
        })
    }

    /// What a ready binding holds: the credentials a rotation left it, or
    /// the instance's current ones.
    fn osb_binding_view(&self, b: &OsbBinding, r: &Resource) -> Result<Binding, OsbError> {
        let credentials = match &b.credentials {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                OsbError::Platform(anyhow::anyhow!(
                    "binding {}: its credentials are unreadable: {e}",
                    b.binding_id
                ))
            })?,
            None => self.osb_credentials(r)?,
        };
        Ok(Binding {
            credentials,
            expires_at: b.expires_at,
        })
    }

    /// Creates a binding (`PUT …/service_bindings/:binding_id`), or rotates
    /// one into it.
    pub async fn osb_bind(
        &self,
        req: BindRequest,
        caller: &Caller,
    ) -> Result<(BindingState, Binding), OsbError> {
        let (iid, bid) = (req.instance_id.clone(), req.binding_id.clone());
        check_id("instance_id", &iid)?;
        check_id("binding_id", &bid)?;
        let (row, r) = self.osb_ready_resource(&iid, OsbError::BadRequest)?;
        let instance_asked: super::instances::Asked =
            serde_json::from_str(&row.request).map_err(anyhow::Error::from)?;
        if req.service_id != instance_asked.service_id {
            return Err(OsbError::BadRequest(format!(
                "instance {iid} is of service_id {}, not {}",
                instance_asked.service_id, req.service_id
            )));
        }
        let offering = self.osb_offering_of(&iid, &instance_asked.service_id, &r)?;
        if offering.plan_by_id(&req.plan_id).is_none() {
            return Err(OsbError::BadRequest(format!(
                "service {} has no plan_id {:?}",
                offering.name, req.plan_id
            )));
        }
        if req.has_parameters {
            return Err(OsbError::BadRequest(format!(
                "bindings of {} take no parameters",
                offering.name
            )));
        }
        let grace = match (&req.predecessor_binding_id, offering.grace_seconds) {
            (Some(_), None) => {
                return Err(OsbError::BadRequest(format!(
                    "bindings of {} cannot be rotated: the add-on keeps no grace window for replaced credentials (the catalog says binding_rotatable: false)",
                    offering.name
                )))
            }
            (_, g) => g.unwrap_or(0) as i64,
        };
        let asked = Asked {
            service_id: req.service_id.clone(),
            plan_id: req.plan_id.clone(),
            app_guid: req.app_guid.clone(),
            route: req.route.clone(),
            predecessor_binding_id: req.predecessor_binding_id.clone(),
        };
        let request = serde_json::to_string(&asked).map_err(anyhow::Error::from)?;
        let timeout_ms = self
            .service(&r.service)
            .map(|s| s.manifest.limits.timeout_ms)
            .unwrap_or(30_000);
        let lease = timeout_ms.div_ceil(1000) as i64 + LEASE_MARGIN_SECONDS;
        let claim = claim(
            iid.clone(),
            bid.clone(),
            request,
            req.predecessor_binding_id.clone(),
            lease,
        );
        match self.store.write(claim).await? {
            Claim::Refused(e) => Err(e),
            Claim::InFlight => Err(OsbError::Concurrency(format!(
                "binding {bid} is being made by another request; try again shortly"
            ))),
            Claim::Existing(b) => Ok((BindingState::Existing, self.osb_binding_view(&b, &r)?)),
            Claim::Created => {
                let binding = Binding {
                    credentials: self.osb_credentials(&r)?,
                    expires_at: None,
                };
                self.osb_audit(
                    caller,
                    "osb:bind",
                    Some(r.app.clone()),
                    Some(r.name.clone()),
                    format!("binding {bid} of instance {iid}"),
                )
                .await;
                Ok((BindingState::Created, binding))
            }
            Claim::Rotating => {
                let predecessor = req.predecessor_binding_id.clone().unwrap_or_default();
                self.osb_rotate(&r, &iid, &bid, &predecessor, grace, caller)
                    .await
                    .map(|b| (BindingState::Created, b))
            }
        }
    }

    /// Runs a claimed rotation: the add-on's credentials rotate, the
    /// predecessor keeps the ones replaced until the grace window ends, the
    /// successor gets the new ones.
    async fn osb_rotate(
        &self,
        r: &Resource,
        iid: &str,
        bid: &str,
        predecessor: &str,
        grace: i64,
        caller: &Caller,
    ) -> Result<Binding, OsbError> {
        let replaced = self.osb_credentials(r)?;
        if let Err(e) = self.rotate_resource(r, crate::platform::actor::OSB).await {
            let (bid, pid) = (bid.to_string(), predecessor.to_string());
            self.store
                .write(move |tx| {
                    if tx.osb_binding(&bid)?.is_some_and(|b| !b.ready) {
                        tx.delete_osb_binding(&bid)?;
                    }
                    if let Some(mut p) = tx.osb_binding(&pid)? {
                        if p.successor.as_deref() == Some(bid.as_str()) {
                            p.successor = None;
                            tx.update_osb_binding(&p)?;
                        }
                    }
                    Ok(())
                })
                .await?;
            return Err(e.into());
        }
        let now = unix_now();
        let expires_at = now + grace;
        let frozen = serde_json::to_string(&replaced).map_err(anyhow::Error::from)?;
        let (owned_iid, owned_bid, pid) =
            (iid.to_string(), bid.to_string(), predecessor.to_string());
        self.store
            .write(move |tx| {
                for mut b in tx.osb_bindings_of(&owned_iid)? {
                    if b.binding_id == pid {
                        b.credentials = Some(frozen.clone());
                        b.expires_at = Some(expires_at);
                    } else if b.binding_id == owned_bid {
                        b.ready = true;
                    } else if b.expires_at.is_some_and(|at| at > now) {
                        // Two rotations old: the add-on dropped them now.
                        b.expires_at = Some(now);
                    } else {
                        continue;
                    }
                    tx.update_osb_binding(&b)?;
                }
                Ok(())
            })
            .await?;
        let binding = Binding {
            credentials: self.osb_credentials(r)?,
            expires_at: None,
        };
        self.osb_audit(
            caller,
            "osb:rotate-binding",
            Some(r.app.clone()),
            Some(r.name.clone()),
            format!(
                "binding {bid} of instance {iid} replaces {predecessor}, whose credentials work until {} UTC",
                crate::display::when(expires_at)
            ),
        )
        .await;
        Ok(binding)
    }

    /// Deletes a binding (`DELETE …/service_bindings/:binding_id`).
    pub async fn osb_unbind(
        &self,
        iid: &str,
        bid: &str,
        service_id: &str,
        plan_id: &str,
        caller: &Caller,
    ) -> Result<(), OsbError> {
        check_id("instance_id", iid)?;
        check_id("binding_id", bid)?;
        let (binding, row) = self
            .store
            .read(|tx| Ok((tx.osb_binding(bid)?, tx.osb_instance(iid)?)))?;
        let Some(b) = binding.filter(|b| b.instance_id == iid) else {
            return Err(OsbError::Gone(format!(
                "binding {bid} of instance {iid} does not exist"
            )));
        };
        if let Some(row) = &row {
            self.osb_check_ids(row, service_id, plan_id)?;
        }
        if !b.ready {
            return Err(OsbError::Concurrency(format!(
                "binding {bid} is being made by a rotation; try again when it is done"
            )));
        }
        let owned = bid.to_string();
        self.store
            .write(move |tx| tx.delete_osb_binding(&owned))
            .await?;
        let r = row
            .map(|row| {
                self.store
                    .read(|tx| tx.resource_by_uuid(&row.resource_uuid))
            })
            .transpose()?
            .flatten();
        self.osb_audit(
            caller,
            "osb:unbind",
            r.as_ref().map(|r| r.app.clone()),
            r.as_ref().map(|r| r.name.clone()),
            format!("binding {bid} of instance {iid}"),
        )
        .await;
        Ok(())
    }

    /// A binding as `GET …/service_bindings/:binding_id` shows it.
    pub fn osb_fetch_binding(&self, iid: &str, bid: &str) -> Result<Binding, OsbError> {
        let (b, r) = self.osb_ready_binding(iid, bid)?;
        self.osb_binding_view(&b, &r)
    }

    /// The state of a binding's creation (`…/last_operation`): bindings are
    /// made synchronously, so a binding that exists is done.
    pub fn osb_binding_operation(
        &self,
        iid: &str,
        bid: &str,
    ) -> Result<super::OperationState, OsbError> {
        check_id("instance_id", iid)?;
        check_id("binding_id", bid)?;
        match self.store.read(|tx| tx.osb_binding(bid))? {
            Some(b) if b.instance_id == iid && b.ready => Ok(super::OperationState::Succeeded),
            Some(b) if b.instance_id == iid => Ok(super::OperationState::InProgress),
            _ => Err(OsbError::NotFound(format!(
                "binding {bid} of instance {iid} does not exist"
            ))),
        }
    }

    fn osb_ready_binding(&self, iid: &str, bid: &str) -> Result<(OsbBinding, Resource), OsbError> {
        check_id("instance_id", iid)?;
        check_id("binding_id", bid)?;
        let missing =
            || OsbError::NotFound(format!("binding {bid} of instance {iid} does not exist"));
        let (b, r) = self.store.read(|tx| {
            let b = tx.osb_binding(bid)?;
            let r = match tx.osb_instance(iid)? {
                Some(row) => tx.resource_by_uuid(&row.resource_uuid)?,
                None => None,
            };
            Ok((b, r))
        })?;
        let b = b
            .filter(|b| b.instance_id == iid && b.ready)
            .ok_or_else(missing)?;
        Ok((b, r.ok_or_else(missing)?))
    }
}

/// The write claiming binding id `bid` for a request asking `request`: a
/// plain binding is made at once; a rotation is claimed (its predecessor
/// marked as being replaced) for the caller to run. A claim left by a
/// request that died is taken over once its lease ends.
fn claim(
    iid: String,
    bid: String,
    request: String,
    predecessor: Option<String>,
    lease: i64,
) -> impl FnMut(&dyn crate::store::Tx) -> anyhow::Result<Claim> + Send + 'static {
    move |tx| {
        let now = unix_now();
        if let Some(mut b) = tx.osb_binding(&bid)? {
            if b.instance_id != iid || b.request != request {
                return Ok(Claim::Refused(OsbError::Conflict(format!(
                    "binding {bid} already exists {}",
                    if b.instance_id != iid {
                        format!("on another instance ({})", b.instance_id)
                    } else {
                        "with other attributes".to_string()
                    }
                ))));
            }
            if b.ready {
                return Ok(Claim::Existing(b));
            }
            if b.created_at + lease > now {
                return Ok(Claim::InFlight);
            }
            b.created_at = now;
            tx.update_osb_binding(&b)?;
            return Ok(Claim::Rotating);
        }
        if let Some(pid) = &predecessor {
            let refused = |why: String| Ok(Claim::Refused(OsbError::BadRequest(why)));
            let Some(mut p) = tx
                .osb_binding(pid)?
                .filter(|p| p.instance_id == iid && p.ready)
            else {
                return refused(format!(
                    "predecessor_binding_id {pid} is not a binding of instance {iid}"
                ));
            };
            if let Some(at) = p.expires_at {
                return refused(format!(
                    "binding {pid} was already rotated{}; its credentials {} at {} UTC",
                    p.successor
                        .as_deref()
                        .map(|s| format!(" (to {s})"))
                        .unwrap_or_default(),
                    if at <= now { "expired" } else { "expire" },
                    crate::display::when(at)
                ));
            }
            if let Some(other) = p.successor.clone().filter(|s| *s != bid) {
                match tx.osb_binding(&other)? {
                    // Left by a request that died: its claim is void.
                    Some(o) if !o.ready && o.created_at + lease <= now => {
                        tx.delete_osb_binding(&other)?
                    }
                    None => {}
                    Some(_) => {
                        return refused(format!("binding {pid} is being rotated to {other}"))
                    }
                }
            }
            p.successor = Some(bid.clone());
            tx.update_osb_binding(&p)?;
        }
        tx.insert_osb_binding(&OsbBinding {
            binding_id: bid.clone(),
            instance_id: iid.clone(),
            request: request.clone(),
            ready: predecessor.is_none(),
            successor: None,
            credentials: None,
            expires_at: None,
            created_at: now,
        })?;
        Ok(if predecessor.is_some() {
            Claim::Rotating
        } else {
            Claim::Created
        })
    }
}
