//! A service instance after its provisioning: plan updates,
//! deprovisioning, fetching it, and the last operation of an asynchronous
//! provisioning.

use std::collections::BTreeMap;

use super::super::Host;
use super::instances::{answered, check_maintenance, operation_of, parse_asked};
use super::{check_id, Caller, OsbError};
use crate::store::ResourceState;

/// `PATCH /v2/service_instances/:instance_id`.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    /// The instance to update.
    pub instance_id: String,
    /// The offering's catalog id; must be the instance's own (else 400).
    pub service_id: String,
    /// The plan to change to by its catalog id; `None` keeps the plan.
    pub plan_id: Option<String>,
    /// New parameters, if sent: add-ons take options only when provisioned, so
    /// anything but the original ones is refused (422).
    pub parameters: Option<BTreeMap<String, String>>,
    /// `maintenance_info.version`, if the platform sent it; must match the
    /// catalog's (else 422 `MaintenanceInfoConflict`).
    pub maintenance_version: Option<String>,
}

/// `GET /v2/service_instances/:instance_id`.
#[derive(Debug, Clone)]
pub struct InstanceView {
    /// The offering's catalog id.
    pub service_id: String,
    /// The catalog id of the plan it is on now (after any plan change made
    /// outside the broker).
    pub plan_id: String,
    /// The platform's SSO link to the resource, when it has an attachment.
    pub dashboard_url: Option<String>,
    /// The parameters it was provisioned with.
    pub parameters: BTreeMap<String, String>,
}

/// The state `last_operation` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    /// The add-on has not answered yet (or the instance's resource is not
    /// reserved yet).
    InProgress,
    /// The resource is provisioned.
    Succeeded,
    /// The provisioning failed; the description says why.
    Failed,
}

impl OperationState {
    /// The spec's words.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::InProgress => "in progress",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }
}

/// What `GET …/last_operation` answers about an instance's provisioning.
#[derive(Debug, Clone)]
pub struct LastOperation {
    /// Where the provisioning is.
    pub state: OperationState,
    /// Words for the user: the add-on's message, or why it failed.
    pub description: Option<String>,
}

impl Host {
    /// Updates an instance (`PATCH`): a plan change through the plugin.
    pub async fn osb_update(&self, req: UpdateRequest, caller: &Caller) -> Result<(), OsbError> {
        let id = &req.instance_id;
        check_id("instance_id", id)?;
        let (row, r) = self.osb_ready_resource(id, OsbError::BadRequest)?;
        let mut asked = parse_asked(&row)?;
        if req.service_id != asked.service_id {
            return Err(OsbError::BadRequest(format!(
                "instance {id} is of service_id {}, not {}",
                asked.service_id, req.service_id
            )));
        }
        let offering = self.osb_offering_of(id, &asked.service_id, &r)?;
        check_maintenance(&offering, req.maintenance_version.as_deref())?;
        if let Some(p) = &req.parameters {
            if *p != asked.parameters {
                return Err(OsbError::Unprocessable(format!(
                    "instance {id}: add-ons take parameters when provisioned only; they cannot be changed"
                )));
            }
        }
        let Some(plan_id) = &req.plan_id else {
            return Ok(());
        };
        let plan = offering.plan_by_id(plan_id).ok_or_else(|| {
            OsbError::BadRequest(format!(
                "service {} has no plan_id {plan_id:?}; GET /v2/catalog lists its plans",
                offering.name
            ))
        })?;
        if plan.name == r.plan {
            return Ok(());
        }
        self.upgrade_addon_as(&r.name, &plan.name, None, crate::platform::actor::OSB)
            .await
            .map_err(OsbError::from)?;
        let before = std::mem::replace(&mut asked.plan_id, plan_id.clone());
        let request = serde_json::to_string(&asked).map_err(anyhow::Error::from)?;
        let owned_id = id.clone();
        self.store
            .write(move |tx| tx.set_osb_instance_request(&owned_id, &request))
            .await?;
        let old_plan = offering
            .plan_by_id(&before)
            .map_or(r.plan.clone(), |p| p.name.clone());
        self.osb_audit(
            caller,
            "osb:update",
            Some(r.app.clone()),
            Some(r.name.clone()),
            format!("instance {id}: plan {old_plan} → {}", plan.name),
        )
        .await;
        Ok(())
    }

    /// Deprovisions an instance (`DELETE`) and forgets it and its bindings.
    pub async fn osb_deprovision(
        &self,
        id: &str,
        service_id: &str,
        plan_id: &str,
        caller: &Caller,
    ) -> Result<(), OsbError> {
        check_id("instance_id", id)?;
        let Some((row, r)) = self.osb_lookup(id)? else {
            return Err(OsbError::Gone(format!("instance {id} does not exist")));
        };
        self.osb_check_ids(&row, service_id, plan_id)?;
        let r = match r {
            Some(r) if r.state != ResourceState::Deprovisioned => r,
            _ => {
                self.osb_forget(id, &row.resource_uuid).await?;
                return Err(OsbError::Gone(format!("instance {id} does not exist")));
            }
        };
        if r.state == ResourceState::Deprovisioning || !answered(&r) {
            return Err(OsbError::Concurrency(format!(
                "instance {id} is being {}; try again when that is done",
                if r.state == ResourceState::Deprovisioning {
                    "deprovisioned"
                } else {
                    "provisioned"
                }
            )));
        }
        self.destroy_addon_as(&r.name, None, Some(&r.app), crate::platform::actor::OSB)
            .await
            .map_err(OsbError::from)?;
        self.osb_forget(id, &row.resource_uuid).await?;
        self.osb_audit(
            caller,
            "osb:deprovision",
            Some(r.app.clone()),
            Some(r.name.clone()),
            format!("instance {id}: deprovisioned"),
        )
        .await;
        Ok(())
    }

    /// An instance as `GET /v2/service_instances/:id` shows it.
    pub fn osb_fetch_instance(&self, id: &str) -> Result<InstanceView, OsbError> {
        check_id("instance_id", id)?;
        let (row, r) = self
            .osb_ready_resource(id, OsbError::NotFound)
            .map_err(|e| match e {
                // Not fetchable while provisioning, nor when it failed.
                OsbError::Concurrency(m) | OsbError::Unprocessable(m) => OsbError::NotFound(m),
                e => e,
            })?;
        let asked = parse_asked(&row)?;
        let plan_id = self
            .osb_offering(&asked.service_id)?
            .and_then(|o| o.plan_named(&r.plan).map(|p| p.id.clone()))
            .unwrap_or(asked.plan_id);
        Ok(InstanceView {
            service_id: asked.service_id,
            plan_id,
            dashboard_url: self.osb_dashboard_of(&r),
            parameters: asked.parameters,
        })
    }

    /// The state of an instance's provisioning (`last_operation`).
    pub fn osb_last_operation(
        &self,
        id: &str,
        operation: Option<&str>,
    ) -> Result<LastOperation, OsbError> {
        check_id("instance_id", id)?;
        let Some((_, r)) = self.osb_lookup(id)? else {
            return Err(OsbError::NotFound(format!("unknown instance {id}")));
        };
        let Some(r) = r else {
            // Claimed by a request that has not reserved its resource yet.
            return Ok(LastOperation {
                state: OperationState::InProgress,
                description: Some("provisioning".into()),
            });
        };
        if let Some(op) = operation {
            if op != operation_of(&r) {
                return Err(OsbError::BadRequest(format!(
                    "instance {id} has no operation {op:?}"
                )));
            }
        }
        let message = r.message.clone().filter(|m| !m.trim().is_empty());
        let (state, description) = match r.state {
            ResourceState::Provisioning => (
                OperationState::InProgress,
                message.or_else(|| Some(format!("add-on {} is provisioning", r.name))),
            ),
            ResourceState::Provisioned | ResourceState::Deprovisioning => {
                (OperationState::Succeeded, message)
            }
            ResourceState::Failed => (
                OperationState::Failed,
                message.or_else(|| Some("the add-on failed the provisioning".into())),
            ),
            ResourceState::Deprovisioned => {
                return Err(OsbError::Gone(format!("instance {id} was deprovisioned")))
            }
        };
        Ok(LastOperation { state, description })
    }
}
