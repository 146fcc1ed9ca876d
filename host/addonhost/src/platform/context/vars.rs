//! What a call writes to config vars: its own vars updated (renamed for
//! each attachment, never a var the user took over or another add-on owns),
//! and pending provisionings completed or failed.

use super::super::{naming, validate};
use super::{CallContext, Completion, Refusal, Scope, Update};
use crate::store::{self, ResourceState};

impl CallContext {
    /// `config.update`: ownership checks, then buffered.
    pub(super) fn update_vars(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        reason: &str,
    ) -> Result<(), String> {
        let r = match self.resource_in_scope(id) {
            Ok(r) => r,
            Err(e) => return Err(self.refuse(Refusal::Resource, e)),
        };
        if r.state != ResourceState::Provisioned {
            return Err(self.refuse(
                Refusal::State,
                format!("resource {id} is {}, not provisioned", r.state),
            ));
        }
        if changes.is_empty() {
            return Ok(());
        }
        for (name, value) in &changes {
            if let Err(e) = validate::var_allowed(&self.manifest, name) {
                return Err(self.refuse(Refusal::Var, e));
            }
            if let Some(v) = value {
                if let Err(e) = validate::value_ok(name, v) {
                    return Err(self.refuse(Refusal::Value, e));
                }
            }
        }
        // Ownership: each var must be this resource's own on every app it is
        // attached to, or not set at all.
        let prefix = &self.manifest.api.config_vars_prefix;
        let refused = self.read(|tx| {
            for att in tx.attachments_of_resource(r.id)? {
                for (name, _) in &changes {
                    let app_name = naming::app_var(name, prefix, &att.name);
                    match tx.config_var(att.app_id, &app_name)? {
                        Some(var) if var.attachment_id != Some(att.id) => {
                            return Ok(Some(format!(
                                "{app_name} on app {} is not owned by {id}: write refused",
                                att.app
                            )));
                        }
                        None if tx.taken_over(att.id, &app_name)? => {
                            return Ok(Some(format!(
                                "{app_name} on app {} was taken over by the user: write refused",
                                att.app
                            )));
                        }
                        _ => {}
                    }
                }
            }
            Ok(None)
        })?;
        if let Some(why) = refused {
            return Err(self.refuse(Refusal::Ownership, why));
        }
        self.effects().updates.push(Update {
            partner_id: id.to_string(),
            changes,
            reason: crate::util::truncate(reason, 200).to_string(),
        });
        Ok(())
    }

    pub(super) fn complete_pending(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Result<(), String> {
        if matches!(self.scope, Scope::Provisioning) {
            return Err("complete is for a later call; return the config from provision".into());
        }
        let r = self.pending_in_scope(id)?;
        if r.state != ResourceState::Provisioning {
            return Err(format!("resource {id} is {}, not provisioning", r.state));
        }
        validate::addon_config(&self.manifest, &config)?;
        self.effects().completions.push(Completion {
            partner_id: id.to_string(),
            config,
            message,
        });
        Ok(())
    }

    pub(super) fn fail_pending(&mut self, id: &str, message: &str) -> Result<(), String> {
        let r = self.pending_in_scope(id)?;
        if r.state != ResourceState::Provisioning {
            return Err(format!("resource {id} is {}, not provisioning", r.state));
        }
        self.effects().failures.push((
            id.to_string(),
            crate::util::truncate(message, 1000).to_string(),
        ));
        Ok(())
    }

    /// The resource a `complete` or `fail` names, if this call may touch it.
    pub(super) fn pending_in_scope(&self, id: &str) -> Result<store::Resource, String> {
        if let Scope::Resource { partner_id: own } = &self.scope {
            if own != id {
                return Err(format!(
                    "this call is about resource {own}; resource {id} is out of reach"
                ));
            }
        }
        self.read(|tx| tx.resource_by_partner_id(self.service(), id))?
            .ok_or_else(|| format!("no resource {id} of add-on {}", self.service()))
    }
}
