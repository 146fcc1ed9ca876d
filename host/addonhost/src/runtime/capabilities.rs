//! What a plugin may import from its host, as one trait.
//!
//! The runtime knows nothing of apps, ownership or SQL: for every call the
//! platform hands it a `Capabilities` value already narrowed to what this call
//! may see (its own resource's vars, its own KV). The generated WIT host
//! traits below only forward to it, so a plugin can reach nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::bindings::addonhost::addon::{config, kv, log, types};
use super::bindings::Level;
use super::limits::BudgetExceeded;
use super::outbound::{Grant, Refusal};
use super::CallState;

/// The answer of a capability, or the budget whose end stops the call.
pub type Budgeted<T> = Result<T, BudgetExceeded>;

/// Most keys one `list-keys` or `list-keys-after` answers.
pub const MAX_LIST_KEYS: usize = 1000;

/// The host side of the `config`, `kv` and `log` imports for one call.
/// Every function may end the call instead of answering, when the call has
/// spent a budget (its `Err`): the guest traps there.
pub trait Capabilities: Send {
    /// One of the resource's own vars, by manifest name.
    fn config_get(&mut self, id: &str, name: &str) -> Budgeted<Option<String>>;
    /// All of the resource's own vars, by manifest name.
    fn config_list(&mut self, id: &str) -> Budgeted<Vec<(String, String)>>;
    /// Sets (`Some`) or removes (`None`) own vars, all or none.
    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        reason: &str,
    ) -> Budgeted<Result<(), String>>;
    /// Completes a pending provisioning.
    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Budgeted<Result<(), String>>;
    /// Fails a pending provisioning.
    fn fail(&mut self, id: &str, message: &str) -> Budgeted<Result<(), String>>;
    /// The value of `key` in the add-on's own KV, as this call sees it (its own
    /// buffered writes first); `None` if unset.
    fn kv_get(&mut self, key: &str) -> Budgeted<Option<Vec<u8>>>;
    /// Stores `value` under `key` in the add-on's own KV, kept only if the call
    /// succeeds. `Err` (answered to the plugin) for a key or value over the
    /// size caps.
    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Budgeted<Result<(), String>>;
    /// Deletes `key` from the add-on's own KV, kept only if the call succeeds.
    fn kv_delete(&mut self, key: &str) -> Budgeted<()>;
    /// Up to `limit` (at most [`MAX_LIST_KEYS`]) keys starting with
    /// `prefix` that sort after `after` (all, when `None`), in order.
    fn kv_list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Budgeted<Vec<String>>;
    /// How many keys start with `prefix`.
    fn kv_count_keys(&mut self, prefix: &str) -> Budgeted<u64>;
    /// Logs `message` for the operator at `level`, tagged with the add-on (and
    /// the resource the call is about).
    fn log(&mut self, level: Level, message: &str);
    /// Where this call's outbound HTTP requests may go. Nothing unless the
    /// implementation grants it.
    fn outbound(&self) -> Grant {
        Grant::none()
    }
    /// An outbound request the host refused (`why` says what and why).
    fn outbound_refused(&mut self, _url: &str, _why: &str) {}
    /// The add-on's id of the resource this call is about, if one: named in
    /// the call's log lines.
    fn resource_id(&self) -> Option<&str> {
        None
    }
}

impl types::Host for CallState {}

impl config::Host for CallState {
    fn get(&mut self, id: String, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.caps.config_get(&id, &name)?)
    }

    fn list(&mut self, id: String) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.caps.config_list(&id)?)
    }

    fn update(
        &mut self,
        id: String,
        changes: Vec<(String, Option<String>)>,
        reason: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.caps.config_update(&id, changes, &reason)?)
    }

    fn complete(
        &mut self,
        id: String,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.caps.complete(&id, config, message)?)
    }

    fn fail(&mut self, id: String, message: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.caps.fail(&id, &message)?)
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.caps.kv_get(&key)?)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        Ok(self.caps.kv_set(&key, value)?)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        Ok(self.caps.kv_delete(&key)?)
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.caps.kv_list_keys(&prefix, None, MAX_LIST_KEYS)?)
    }

    fn list_keys_after(
        &mut self,
        prefix: String,
        after: String,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        let limit = (limit as usize).min(MAX_LIST_KEYS);
        Ok(self.caps.kv_list_keys(&prefix, Some(&after), limit)?)
    }

    fn count_keys(&mut self, prefix: String) -> wasmtime::Result<u64> {
        Ok(self.caps.kv_count_keys(&prefix)?)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        // A plugin cannot flood the log: lines are cut, and a call's log
        // text is capped (then one marker line says so).
        if let Some(line) = self.log.admit(&message) {
            self.caps.log(level, &line);
        }
        Ok(())
    }
}

/// What [`InMemory`] holds.
#[derive(Default)]
struct Memory {
    kv: BTreeMap<String, Vec<u8>>,
    config: HashMap<String, Vec<(String, String)>>,
    outbound: Option<Grant>,
    refused: Vec<Refusal>,
}

/// Capabilities over memory instead of the store, for running a plugin
/// outside a platform (`plugins:check`, tests, an embedder trying an add-on):
/// a KV and each resource's config vars, shared by the clones of one value,
/// so calls made with clones see each other's writes. Nothing is narrowed or
/// refused: ownership is the platform's (`platform::context`).
#[derive(Clone, Default)]
pub struct InMemory(Arc<Mutex<Memory>>);

impl InMemory {
    /// Records `id`'s config vars, as a platform does with a provision's
    /// answer (the plugin then reads them through `config`).
    pub fn set_config(&self, id: &str, vars: Vec<(String, String)>) {
        self.mem().config.insert(id.to_string(), vars);
    }

    /// Grants every call made with this value (and its clones) `grant`.
    pub fn grant_outbound(&self, grant: Grant) {
        self.mem().outbound = Some(grant);
    }

    /// The outbound requests the host refused in calls made with this value
    /// (and its clones), oldest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.mem().refused.clone()
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Capabilities for InMemory {
    fn config_get(&mut self, id: &str, name: &str) -> Budgeted<Option<String>> {
        Ok(self
            .mem()
            .config
            .get(id)
            .and_then(|vars| vars.iter().find(|(n, _)| n == name))
            .map(|(_, v)| v.clone()))
    }
    fn config_list(&mut self, id: &str) -> Budgeted<Vec<(String, String)>> {
        Ok(self.mem().config.get(id).cloned().unwrap_or_default())
    }
    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        _: &str,
    ) -> Budgeted<Result<(), String>> {
        let mut m = self.mem();
        let vars = m.config.entry(id.to_string()).or_default();
        for (name, value) in changes {
            vars.retain(|(n, _)| *n != name);
            if let Some(v) = value {
                vars.push((name, v));
            }
        }
        Ok(Ok(()))
    }
    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        _: Option<String>,
    ) -> Budgeted<Result<(), String>> {
        self.mem().config.insert(id.to_string(), config);
        Ok(Ok(()))
    }
    fn fail(&mut self, _: &str, _: &str) -> Budgeted<Result<(), String>> {
        Ok(Ok(()))
    }
    fn kv_get(&mut self, key: &str) -> Budgeted<Option<Vec<u8>>> {
        Ok(self.mem().kv.get(key).cloned())
    }
    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Budgeted<Result<(), String>> {
        self.mem().kv.insert(key.to_string(), value);
        Ok(Ok(()))
    }
    fn kv_delete(&mut self, key: &str) -> Budgeted<()> {
        self.mem().kv.remove(key);
        Ok(())
    }
    fn kv_list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Budgeted<Vec<String>> {
        Ok(self
            .mem()
            .kv
            .range::<str, _>((
                after.map_or(std::ops::Bound::Included(prefix), std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k)
            .skip_while(|k| !k.starts_with(prefix) && k.as_str() < prefix)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
    fn kv_count_keys(&mut self, prefix: &str) -> Budgeted<u64> {
        Ok(self
            .mem()
            .kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count() as u64)
    }
    fn log(&mut self, _: Level, _: &str) {}
    fn outbound(&self) -> Grant {
        self.mem().outbound.clone().unwrap_or_else(Grant::none)
    }
    fn outbound_refused(&mut self, url: &str, why: &str) {
        self.mem().refused.push((url.to_string(), why.to_string()));
    }
}
