//! What a plugin may import from its host, as one trait.
//!
//! The runtime knows nothing of apps, ownership or SQL: for every call the
//! platform hands it a `Capabilities` value already narrowed to what this call
//! may see (its own resource's vars, its own KV). The generated WIT host
//! traits below only forward to it, so a plugin can reach nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::bindings::addonhost::addon::{config, kv, log, types};
use super::bindings::Level;
use super::CallState;

/// The host side of the `config`, `kv` and `log` imports for one call.
pub trait Capabilities: Send {
    /// One of the resource's own vars, by manifest name.
    fn config_get(&mut self, id: &str, name: &str) -> Option<String>;
    /// All of the resource's own vars, by manifest name.
    fn config_list(&mut self, id: &str) -> Vec<(String, String)>;
    /// Sets (`Some`) or removes (`None`) own vars, all or none.
    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        reason: &str,
    ) -> Result<(), String>;
    /// Completes a pending provisioning.
    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Result<(), String>;
    /// Fails a pending provisioning.
    fn fail(&mut self, id: &str, message: &str) -> Result<(), String>;
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Result<(), String>;
    fn kv_delete(&mut self, key: &str);
    fn kv_list_keys(&mut self, prefix: &str) -> Vec<String>;
    fn log(&mut self, level: Level, message: &str);
}

impl types::Host for CallState {}

impl config::Host for CallState {
    fn get(&mut self, id: String, name: String) -> Option<String> {
        self.caps.config_get(&id, &name)
    }

    fn list(&mut self, id: String) -> Vec<(String, String)> {
        self.caps.config_list(&id)
    }

    fn update(
        &mut self,
        id: String,
        changes: Vec<(String, Option<String>)>,
        reason: String,
    ) -> Result<(), String> {
        self.caps.config_update(&id, changes, &reason)
    }

    fn complete(
        &mut self,
        id: String,
        config: Vec<(String, String)>,
        message: Option<String>,
    ) -> Result<(), String> {
        self.caps.complete(&id, config, message)
    }

    fn fail(&mut self, id: String, message: String) -> Result<(), String> {
        self.caps.fail(&id, &message)
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.caps.kv_get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.caps.kv_set(&key, value)
    }

    fn delete(&mut self, key: String) {
        self.caps.kv_delete(&key)
    }

    fn list_keys(&mut self, prefix: String) -> Vec<String> {
        self.caps.kv_list_keys(&prefix)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        // A plugin cannot flood the log with one giant line.
        let message = crate::util::truncate(&message, 4096);
        self.caps.log(level, message);
    }
}

/// What [`InMemory`] holds.
#[derive(Default)]
struct Memory {
    kv: HashMap<String, Vec<u8>>,
    config: HashMap<String, Vec<(String, String)>>,
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

    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Capabilities for InMemory {
    fn config_get(&mut self, id: &str, name: &str) -> Option<String> {
        self.mem()
            .config
            .get(id)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    fn config_list(&mut self, id: &str) -> Vec<(String, String)> {
        self.mem().config.get(id).cloned().unwrap_or_default()
    }
    fn config_update(
        &mut self,
        id: &str,
        changes: Vec<(String, Option<String>)>,
        _: &str,
    ) -> Result<(), String> {
        let mut m = self.mem();
        let vars = m.config.entry(id.to_string()).or_default();
        for (name, value) in changes {
            vars.retain(|(n, _)| *n != name);
            if let Some(v) = value {
                vars.push((name, v));
            }
        }
        Ok(())
    }
    fn complete(
        &mut self,
        id: &str,
        config: Vec<(String, String)>,
        _: Option<String>,
    ) -> Result<(), String> {
        self.mem().config.insert(id.to_string(), config);
        Ok(())
    }
    fn fail(&mut self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.mem().kv.get(key).cloned()
    }
    fn kv_set(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.mem().kv.insert(key.to_string(), value);
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) {
        self.mem().kv.remove(key);
    }
    fn kv_list_keys(&mut self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .mem()
            .kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
    fn log(&mut self, _: Level, _: &str) {}
}
