//! Service instances: provision, update, deprovision, fetch, and the last
//! operation of an asynchronous provisioning.
//!
//! The instance id is the broker's idempotency key, as the uuid is the
//! platform's: the first request with an id records what it asked for and a
//! fresh resource uuid, and every request after it with the same id reuses
//! that uuid (so a retry, even one racing the first, gets the same add-on
//! through `create_addon`'s own idempotency) or is a conflict.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::{error, CreateAddon, Host};
use super::catalog::Offering;
use super::{check_id, Caller, OsbError, Place};
use crate::store::{OsbInstance, Resource, ResourceState};
use crate::util::unix_now;

/// What a provisioning asked for; a retry with the same id must ask the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Asked {
    pub service_id: String,
    pub plan_id: String,
    pub place: Place,
    pub parameters: BTreeMap<String, String>,
}

impl Asked {
    /// How `retry` differs, in words.
    fn differences(&self, retry: &Asked) -> String {
        let mut d = Vec::new();
        if self.service_id != retry.service_id {
            d.push("service_id");
        }
        if self.plan_id != retry.plan_id {
            d.push("plan_id");
        }
        if self.place != retry.place {
            d.push("organization/space (or namespace)");
        }
        if self.parameters != retry.parameters {
            d.push("parameters");
        }
        d.join(", ")
    }
}

/// `PUT /v2/service_instances/:instance_id`.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The id the platform chose for the instance: the broker's idempotency
    /// key.
    pub instance_id: String,
    /// The offering asked for, by its catalog id (derived from the add-on id,
    /// see [`super::catalog::Offering`]).
    pub service_id: String,
    /// The plan asked for, by its catalog id.
    pub plan_id: String,
    /// The platform-side group (organization and space, or cluster and
    /// namespace) asking; it chooses the app the add-on is provisioned on.
    pub place: Place,
    /// The request's `parameters`, handed to the add-on as its options.
    pub parameters: BTreeMap<String, String>,
    /// The `accepts_incomplete=true` query: the platform can poll, so an add-on
    /// answering `pending` may be answered 202 instead of 422 `AsyncRequired`.
    pub accepts_incomplete: bool,
    /// `maintenance_info.version`, if the platform sent it.
    pub maintenance_version: Option<String>,
}

/// What a provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionOutcome {
    /// Provisioned by this request (201).
    Created {
        /// The platform's SSO link to the resource, once it has an
        /// attachment.
        dashboard_url: Option<String>,
    },
    /// Already provisioned, for the same request (200).
    Existing {
        /// The platform's SSO link to the resource, once it has an
        /// attachment.
        dashboard_url: Option<String>,
    },
    /// The add-on completes it later (202); poll `last_operation`.
    Pending {
        /// The platform's SSO link to the resource, once it has an attachment.
        dashboard_url: Option<String>,
        /// The operation id to pass to `last_operation` (`provision-<resource
        /// name>`).
        operation: String,
    },
}

/// The operation id of a resource's asynchronous provisioning.
pub(super) fn operation_of(r: &Resource) -> String {
    format!("provision-{}", r.name)
}

/// Answered by the add-on (or failed by it): nothing left to provision.
pub(super) fn answered(r: &Resource) -> bool {
    r.partner_id.is_some() || r.state == ResourceState::Failed
}

/// 422 `MaintenanceInfoConflict` when the platform asks for another
/// maintenance version than the catalog's.
pub(super) fn check_maintenance(o: &Offering, asked: Option<&str>) -> Result<(), OsbError> {
    match (asked, &o.maintenance_version) {
        (Some(asked), Some(current)) if asked != current => Err(OsbError::MaintenanceInfo(format!(
            "maintenance_info.version {asked:?} is not {current:?}, the version of add-on {} the catalog offers now; fetch the catalog again",
            o.name
        ))),
        (Some(asked), None) => Err(OsbError::MaintenanceInfo(format!(
            "maintenance_info.version {asked:?} was asked, but add-on {} is not loaded and has no version now",
            o.name
        ))),
        _ => Ok(()),
    }
}

pub(super) fn parse_asked(row: &OsbInstance) -> Result<Asked, OsbError> {
    serde_json::from_str(&row.request).map_err(|e| {
        OsbError::Platform(anyhow::anyhow!(
            "instance {}: its recorded request is unreadable: {e}",
            row.instance_id
        ))
    })
}

impl Host {
    /// The recorded request of instance `row`, once `service_id` and
    /// `plan_id` of a request about it are checked to be its own.
    pub(super) fn osb_check_ids(
        &self,
        row: &OsbInstance,
        service_id: &str,
        plan_id: &str,
    ) -> Result<Asked, OsbError> {
        let asked = parse_asked(row)?;
        let id = &row.instance_id;
        if service_id != asked.service_id {
            return Err(OsbError::BadRequest(format!(
                "instance {id} is of service_id {}, not {service_id}",
                asked.service_id
            )));
        }
        if let Some(o) = self.osb_offering(&asked.service_id)? {
            if o.plan_by_id(plan_id).is_none() {
                return Err(OsbError::BadRequest(format!(
                    "service {} has no plan_id {plan_id:?}",
                    o.name
                )));
            }
        }
        Ok(asked)
    }

    /// The platform's dashboard URL of a resource (its SSO link), from its
    /// first attachment.
    pub(super) fn osb_dashboard_url(&self, app: &str, attachments: &[String]) -> Option<String> {
        let attachment = attachments
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{app}::")))?;
        Some(format!(
            "{}/myapps/{app}/addons/{attachment}",
            self.opts.public_url.trim_end_matches('/')
        ))
    }

    pub(super) fn osb_dashboard_of(&self, r: &Resource) -> Option<String> {
        let atts = self
            .store
            .read(|tx| tx.attachments_of_resource(r.id))
            .ok()?;
        let names: Vec<String> = atts
            .iter()
            .map(|a| format!("{}::{}", a.app, a.name))
            .collect();
        self.osb_dashboard_url(&r.app, &names)
    }

    /// The instance `id` and the resource it names (`None` when that is
    /// not made yet, or gone).
    pub(super) fn osb_lookup(
        &self,
        id: &str,
    ) -> anyhow::Result<Option<(OsbInstance, Option<Resource>)>> {
        self.store.read(|tx| {
            let Some(row) = tx.osb_instance(id)? else {
                return Ok(None);
            };
            let r = tx.resource_by_uuid(&row.resource_uuid)?;
            Ok(Some((row, r)))
        })
    }

    /// Provisions an instance (`PUT /v2/service_instances/:id`).
    pub async fn osb_provision(
        &self,
        req: ProvisionRequest,
        caller: &Caller,
    ) -> Result<ProvisionOutcome, OsbError> {
        check_id("instance_id", &req.instance_id)?;
        let offering = self.osb_offering(&req.service_id)?.ok_or_else(|| {
            OsbError::BadRequest(format!(
                "unknown service_id {:?}; GET /v2/catalog lists the services",
                req.service_id
            ))
        })?;
        let plan = offering
            .plan_by_id(&req.plan_id)
            .ok_or_else(|| {
                OsbError::BadRequest(format!(
                    "service {} has no plan_id {:?}; GET /v2/catalog lists its plans",
                    offering.name, req.plan_id
                ))
            })?
            .clone();
        check_maintenance(&offering, req.maintenance_version.as_deref())?;
        let asked = Asked {
            service_id: req.service_id.clone(),
            plan_id: req.plan_id.clone(),
            place: req.place.clone(),
            parameters: req.parameters.clone(),
        };
        let request = serde_json::to_string(&asked).map_err(anyhow::Error::from)?;
        let id = req.instance_id.clone();
        // The uuid of this instance's resource: recorded by the first
        // request with the id, reused by every identical one after it.
        let uuid = loop {
            match self.osb_lookup(&id)? {
                Some((row, r)) => {
                    let original = parse_asked(&row)?;
                    if original != asked {
                        return Err(OsbError::Conflict(format!(
                            "instance {id} already exists with other attributes: this request differs in {}",
                            original.differences(&asked)
                        )));
                    }
                    match r {
                        // Deprovisioned, though the broker had not
                        // forgotten the id yet: the id is free again.
                        Some(r) if r.state == ResourceState::Deprovisioned => {
                            self.osb_forget(&id, &row.resource_uuid).await?;
                            continue;
                        }
                        Some(r) if answered(&r) => {
                            return self.osb_answered(&id, &r, req.accepts_incomplete)
                        }
                        _ => break row.resource_uuid,
                    }
                }
                None => {
                    let row = OsbInstance {
                        instance_id: id.clone(),
                        resource_uuid: uuid::Uuid::new_v4().to_string(),
                        request: request.clone(),
                        created_at: unix_now(),
                    };
                    let uuid = row.resource_uuid.clone();
                    if self
                        .store
                        .write(move |tx| tx.insert_osb_instance(&row))
                        .await?
                    {
                        break uuid;
                    }
                }
            }
        };
        let created = match self.osb_place_app(&req.place, caller).await {
            Ok(app) => {
                self.create_addon(CreateAddon {
                    app,
                    spec: format!("{}:{}", offering.name, plan.name),
                    as_name: None,
                    options: req.parameters.clone().into_iter().collect(),
                    uuid: Some(uuid.clone()),
                    actor: Some(crate::platform::actor::OSB.to_string()),
                })
                .await
            }
            Err(e) => Err(e.into()),
        };
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                // Nothing was provisioned: the id is free for any request.
                self.osb_forget(&id, &uuid).await?;
                return Err(match e.kind() {
                    // One per app, a name taken: the platform's rule, not a
                    // retry gone wrong.
                    Some(error::Kind::Conflict) => OsbError::Unprocessable(format!("{e:#}")),
                    _ => e.into(),
                });
            }
        };
        let view = &created.addon;
        let dashboard_url = self.osb_dashboard_url(&view.app, &view.attachments);
        let r = self
            .store
            .read(|tx| tx.resource_by_uuid(&uuid))?
            .ok_or_else(|| OsbError::Platform(anyhow::anyhow!("add-on {} vanished", view.name)))?;
        if created.existing {
            return self.osb_answered(&id, &r, req.accepts_incomplete);
        }
        let outcome = match r.state {
            ResourceState::Provisioning if !req.accepts_incomplete => {
                // The add-on answers later, and the platform cannot wait:
                // take the provisioning back so that nothing of it stays.
                self.destroy_addon_as(&r.name, None, Some(&r.app), crate::platform::actor::OSB)
                    .await?;
                self.osb_forget(&id, &uuid).await?;
                return Err(OsbError::AsyncRequired(format!(
                    "add-on {} provisions asynchronously; send accepts_incomplete=true",
                    offering.name
                )));
            }
            ResourceState::Provisioning => ProvisionOutcome::Pending {
                dashboard_url,
                operation: operation_of(&r),
            },
            _ => ProvisionOutcome::Created { dashboard_url },
        };
        self.osb_audit(
            caller,
            "osb:provision",
            Some(r.app.clone()),
            Some(r.name.clone()),
            format!(
                "instance {id}: {}:{} {}",
                offering.name,
                plan.name,
                match outcome {
                    ProvisionOutcome::Pending { .. } => "accepted, the add-on completes it later",
                    _ => "provisioned",
                }
            ),
        )
        .await;
        Ok(outcome)
    }

    /// The answer to a provisioning of an instance the add-on already
    /// answered for.
    fn osb_answered(
        &self,
        id: &str,
        r: &Resource,
        accepts_incomplete: bool,
    ) -> Result<ProvisionOutcome, OsbError> {
        let dashboard_url = self.osb_dashboard_of(r);
        match r.state {
            ResourceState::Provisioned => Ok(ProvisionOutcome::Existing { dashboard_url }),
            ResourceState::Provisioning if accepts_incomplete => Ok(ProvisionOutcome::Pending {
                dashboard_url,
                operation: operation_of(r),
            }),
            ResourceState::Provisioning => Err(OsbError::AsyncRequired(format!(
                "instance {id} is still being provisioned by the add-on; send accepts_incomplete=true and poll last_operation"
            ))),
            ResourceState::Failed => Err(OsbError::Conflict(format!(
                "instance {id} failed to provision ({}); deprovision it before using its id again",
                r.message.as_deref().unwrap_or("no reason given")
            ))),
            ResourceState::Deprovisioning => Err(OsbError::Concurrency(format!(
                "instance {id} is being deprovisioned"
            ))),
            ResourceState::Deprovisioned => Err(OsbError::Gone(format!(
                "instance {id} was deprovisioned"
            ))),
        }
    }

    /// Forgets instance `id` if it still names `uuid` and no live resource
    /// does (the id is free again).
    pub(super) async fn osb_forget(&self, id: &str, uuid: &str) -> anyhow::Result<()> {
        let (id, uuid) = (id.to_string(), uuid.to_string());
        self.store
            .write(move |tx| {
                let names_it = tx
                    .osb_instance(&id)?
                    .is_some_and(|row| row.resource_uuid == uuid);
                let live = tx
                    .resource_by_uuid(&uuid)?
                    .is_some_and(|r| r.state != ResourceState::Deprovisioned);
                if names_it && !live {
                    tx.delete_osb_instance(&id)?;
                }
                Ok(())
            })
            .await
    }

    /// The live resource of instance `id`, or the error for a request
    /// about an instance that is not there (`missing`) or not ready.
    pub(super) fn osb_ready_resource(
        &self,
        id: &str,
        missing: impl Fn(String) -> OsbError,
    ) -> Result<(OsbInstance, Resource), OsbError> {
        let (row, r) = self
            .osb_lookup(id)?
            .ok_or_else(|| missing(format!("unknown instance {id}")))?;
        let r = r
            .filter(|r| r.state != ResourceState::Deprovisioned)
            .ok_or_else(|| missing(format!("instance {id} is not provisioned")))?;
        match r.state {
            ResourceState::Provisioned => Ok((row, r)),
            ResourceState::Provisioning => Err(OsbError::Concurrency(format!(
                "instance {id} is still being provisioned; wait for last_operation to succeed"
            ))),
            ResourceState::Deprovisioning => Err(OsbError::Concurrency(format!(
                "instance {id} is being deprovisioned"
            ))),
            _ => Err(OsbError::Unprocessable(format!(
                "instance {id} failed to provision ({})",
                r.message.as_deref().unwrap_or("no reason given")
            ))),
        }
    }

    /// The offering an instance was provisioned from, if still offered.
    pub(super) fn osb_offering_of(
        &self,
        id: &str,
        asked_service: &str,
        r: &Resource,
    ) -> Result<Offering, OsbError> {
        match self.osb_offering(asked_service)? {
            Some(o) => Ok(o),
            None => Err(OsbError::Unprocessable(format!(
                "instance {id} is an add-on {} that is no longer in the catalog",
                r.service
            ))),
        }
    }
}
