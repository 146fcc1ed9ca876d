//! What a plugin may import from its host, as one trait.
//!
//! The runtime knows nothing of apps, ownership or SQL: for every call the
//! platform hands it a `Capabilities` value already narrowed to what this call
//! may see (its own resource's vars, its own KV). The generated WIT host
//! traits below only forward to it, so a plugin can reach nothing else.

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
