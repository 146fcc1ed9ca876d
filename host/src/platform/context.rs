//! What one plugin call may see and change: the platform's implementation of
//! the runtime's `Capabilities`, and the single place the config-ownership
//! rule is enforced for plugins.
//!
//! A call is a unit: its KV writes and config updates are buffered here
//! (reads see them) and written by the platform in the same transaction as the
//! call's outcome — or dropped if the call traps, times out or fails. So a
//! plugin that dies half-way leaves the store exactly as it was.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::manifest::Manifest;
use crate::runtime::{Capabilities, Level};
use crate::store::{self, Db};

use super::naming;
use super::validate;

/// Largest KV key and value a plugin may store.
pub const MAX_KV_KEY: usize = 1024;
pub const MAX_KV_VALUE: usize = 1 << 20;

/// Which resources this call may touch.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Provisioning: the resource does not exist yet; its config is the
    /// call's return value.
    Provisioning,
    /// A call about one resource: only its vars (by the add-on's id).
    Resource { partner_id: String },
    /// A call the add-on makes on its own behalf (HTTP, schedule): any of
    /// its own resources.
    Service,
}

/// Writes the call asked for, applied when it succeeds.
#[derive(Debug, Default)]
pub struct Effects {
    pub kv: BTreeMap<String, Option<Vec<u8>>>,
    pub updates: Vec<Update>,
    pub completions: Vec<Completion>,
    pub failures: Vec<(String, String)>,
    /// Writes that were refused: logged to the audit trail whatever the
    /// call's outcome.
    pub refusals: Vec<(String, String)>,
}

impl Effects {
    /// Nothing to write (refusals are logged separately).
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
            && self.updates.is_empty()
            && self.completions.is_empty()
            && self.failures.is_empty()
    }
}

/// A partner-initiated change of one resource's vars (manifest names).
#[derive(Debug)]
pub struct Update {
    pub partner_id: String,
    pub changes: Vec<(String, Option<String>)>,
    pub reason: String,
}

/// A pending provisioning the add-on completed.
#[derive(Debug)]
pub struct Completion {
    pub partner_id: String,
    pub config: Vec<(String, String)>,
    pub message: Option<String>,
}

/// The capabilities of one call of one add-on.
pub struct CallContext {
    db: Arc<Db>,
    manifest: Arc<Manifest>,
    scope: Scope,
    effects: Arc<Mutex<Effects>>,
}

impl CallContext {
    /// A context and the handle the platform keeps to read the effects back.
    pub fn new(
        db: Arc<Db>,
        manifest: Arc<Manifest>,
        scope: Scope,
    ) -> (Box<CallContext>, Arc<Mutex<Effects>>) {
        let effects = Arc::new(Mutex::new(Effects::default()));
        let ctx = CallContext {
            db,
            manifest,
            scope,
            effects: effects.clone(),
        };
        (Box::new(ctx), effects)
    }

    fn service(&self) -> &str {
        &self.manifest.id
    }

    /// A read connection; a store failure is logged and told to the plugin
    /// as an error string (the WIT interface speaks strings).
    fn conn(&self) -> Result<store::ReadGuard<'_>, String> {
        self.db.read().map_err(|e| {
            tracing::error!(addon = %self.service(), "store unavailable: {e:#}");
            format!("store error: {e:#}")
        })
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource `partner_id` names, if this call may touch it.
    fn resource_in_scope(&self, partner_id: &str) -> Result<store::Resource, String> {
        match &self.scope {
            Scope::Provisioning => {
                return Err(
                    "the resource is still being provisioned: return its config from provision"
                        .into(),
                )
            }
            Scope::Resource { partner_id: own } if own != partner_id => {
                return Err(format!(
                    "this call is about resource {own}; resource {partner_id} is out of reach"
                ))
            }
            _ => {}
        }
        let conn = self.conn()?;
        match store::resource_by_partner_id(&conn, self.service(), partner_id) {
            Ok(Some(r)) if r.state != "deprovisioned" => Ok(r),
            Ok(_) => Err(format!(
                "no resource {partner_id} of add-on {}",
                self.service()
            )),
            Err(e) => Err(format!("store error: {e}")),
        }
    }

    /// The resource's own vars, by manifest name, as stored plus this call's
    /// buffered updates.
    fn own_vars(&self, r: &store::Resource) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let Ok(conn) = self.conn() else {
            return vars;
        };
        let prefix = &self.manifest.api.config_vars_prefix;
        if let Ok(atts) = store::attachments_of_resource(&conn, r.id) {
            // The first attachment (the one made at provisioning) is the
            // canonical view; the others carry the same values.
            if let Some(att) = atts.first() {
                for var in store::vars_of_attachment(&conn, att.id).unwrap_or_default() {
                    if let Some(name) = naming::manifest_var(&var.name, prefix, &att.name) {
                        vars.insert(name, var.value);
                    }
                }
            }
        }
        drop(conn);
        let pid = r.partner_id.as_deref().unwrap_or_default();
        for u in &self.effects().updates {
            if u.partner_id == pid {
                for (name, value) in &u.changes {
                    match value {
                        Some(v) => vars.insert(name.clone(), v.clone()),
                        None => vars.remove(name),
                    };
                }
            }
        }
        vars
    }

    fn refuse(&self, what: String) -> String {
        tracing::warn!(addon = %self.service(), "refused: {what}");
        self.effects()
            .refusals
            .push((self.service().to_string(), what.clone()));
        what
    }
}

impl Capabilities for CallContext {
    fn config_get(&mut self, id: &str, name: &str) -> Option<String> {
        let r = self.resource_in_scope(id).ok()?;
        self.own_vars(&r).remove(name)
    }

    fn config_list(&mut self, id: &str) -> Vec<(String, String)> {
        match self.resource_in_scope(id) {
            Ok(r) => self.own_vars(&r).into_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        reason: &str,
    ) -> Result<(), String> {
        let r = self.resource_in_scope(id).map_err(|e| self.refuse(e))?;
        if r.state != "provisioned" {
            return Err(self.refuse(format!("resource {id} is {}, not provisioned", r.state)));
        }
        if changes.is_empty() {
            return Ok(());
        }
        for (name, value) in &changes {
            validate::var_allowed(&self.manifest, name).map_err(|e| self.refuse(e))?;
            if let Some(v) = value {
                validate::value_ok(name, v).map_err(|e| self.refuse(e))?;
            }
        }
        // Ownership: each var must be this resource's own on every app it is
        // attached to, or not set at all.
        let conn = self.conn()?;
        let atts = store::attachments_of_resource(&conn, r.id).map_err(|e| e.to_string())?;
        for att in &atts {
            for (name, _) in &changes {
                let app_name =
                    naming::app_var(name, &self.manifest.api.config_vars_prefix, &att.name);
                if let Ok(Some(var)) = store::config_var(&conn, att.app_id, &app_name) {
                    if var.attachment_id != Some(att.id) {
                        drop(conn);
                        return Err(self.refuse(format!(
                            "{app_name} on app {} is not owned by {id}: write refused",
                            att.app
                        )));
                    }
                }
            }
        }
        drop(conn);
        self.effects().updates.push(Update {
            partner_id: id.to_string(),
            changes,
            reason: crate::util::truncate(reason, 200).to_string(),
        });
        Ok(())
    }

    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Result<(), String> {
        if matches!(self.scope, Scope::Provisioning) {
            return Err("complete is for a later call; return the config from provision".into());
        }
        let conn = self.conn()?;
        let r = store::resource_by_partner_id(&conn, self.service(), id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no resource {id} of add-on {}", self.service()))?;
        drop(conn);
        if r.state != "provisioning" {
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

    fn fail(&mut self, id: &str, message: &str) -> Result<(), String> {
        let conn = self.conn()?;
        let r = store::resource_by_partner_id(&conn, self.service(), id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no resource {id} of add-on {}", self.service()))?;
        drop(conn);
        if r.state != "provisioning" {
            return Err(format!("resource {id} is {}, not provisioning", r.state));
        }
        self.effects().failures.push((
            id.to_string(),
            crate::util::truncate(message, 1000).to_string(),
        ));
        Ok(())
    }

    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.effects().kv.get(key) {
            return v.clone();
        }
        let conn = self.conn().ok()?;
        store::kv_get(&conn, self.service(), key).ok().flatten()
    }

    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KV_KEY {
            return Err(format!("kv key must be 1 to {MAX_KV_KEY} bytes"));
        }
        if value.len() > MAX_KV_VALUE {
            return Err(format!(
                "kv value of {} bytes for {key} exceeds the cap of {MAX_KV_VALUE} bytes",
                value.len()
            ));
        }
        self.effects().kv.insert(key.to_string(), Some(value));
        Ok(())
    }

    fn kv_delete(&mut self, key: &str) {
        self.effects().kv.insert(key.to_string(), None);
    }

    fn kv_list_keys(&mut self, prefix: &str) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> = match self.conn() {
            Ok(conn) => store::kv_keys(&conn, self.service(), prefix).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
        .into_iter()
        .collect();
        for (k, v) in self.effects().kv.iter() {
            if k.starts_with(prefix) {
                match v {
                    Some(_) => keys.insert(k.clone()),
                    None => keys.remove(k),
                };
            }
        }
        keys.into_iter().collect()
    }

    fn log(&mut self, level: Level, message: &str) {
        let addon = self.service();
        match level {
            Level::Debug => tracing::debug!(addon, "{message}"),
            Level::Info => tracing::info!(addon, "{message}"),
            Level::Warn => tracing::warn!(addon, "{message}"),
            Level::Error => tracing::error!(addon, "{message}"),
        }
    }
}
