//! The SDK for writing addonhost add-ons in Rust.
//!
//! It carries the generated bindings of the `addon` world (`wit/addon.wit`),
//! the `export_addon!` macro that makes a type the component's exports, and the
//! helpers every add-on needs and that are easy to get subtly wrong: the SSO
//! token check (freshness window, constant-time compare), credential
//! generation, reading the add-on's own manifest, and calling the partner's
//! backend over HTTP ([`http::fetch`]).
//!
//! ```ignore
//! struct MyAddon;
//! impl addonhost_sdk::Lifecycle for MyAddon { /* provision, deprovision, change_plan */ }
//! impl addonhost_sdk::Credentials for MyAddon { /* rotate */ }
//! impl addonhost_sdk::Sso for MyAddon { /* verify */ }
//! addonhost_sdk::export_addon!(MyAddon);
//! ```

pub mod credentials;
mod fetch;
pub mod http;
pub mod manifest;
pub mod sso;

/// The WASI bindings, for `export_http!` and add-ons that need more of WASI.
pub use wasip2;

wit_bindgen::generate!({
    path: "../../wit",
    world: "addon",
    pub_export_macro: true,
    export_macro_name: "export_addon",
    default_bindings_module: "addonhost_sdk",
    generate_all,
});

pub use addonhost::addon::types::{AddonError, Config};
pub use exports::addonhost::addon::credentials::Guest as Credentials;
pub use exports::addonhost::addon::lifecycle::{
    Guest as Lifecycle, Pending, ProvisionRequest, ProvisionResult, Provisioned,
};
pub use exports::addonhost::addon::sso::{Guest as Sso, Login, Session, Verdict};

/// The host capabilities an add-on imports: its own config vars, its private
/// key-value store, and the host log.
pub mod host {
    pub use crate::addonhost::addon::config;
    pub use crate::addonhost::addon::kv;
    pub use crate::addonhost::addon::log::{self, Level};
}

impl AddonError {
    /// An error the user reads as it is.
    pub fn new(message: impl Into<String>) -> Self {
        AddonError {
            message: message.into(),
        }
    }
}

/// Logs at info level into the host's log.
pub fn info(message: &str) {
    host::log::log(host::Level::Info, message);
}

/// Logs at warn level into the host's log.
pub fn warn(message: &str) {
    host::log::log(host::Level::Warn, message);
}

/// Seconds since the Unix epoch, from the WASI wall clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Typed access to the add-on's private key-value store, values as JSON.
pub mod store {
    use serde::{de::DeserializeOwned, Serialize};

    use crate::{host::kv, AddonError};

    /// Reads and decodes `key`; a value that does not decode is an error, not
    /// an absence, so corrupt state is never silently replaced.
    pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, AddonError> {
        match kv::get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AddonError::new(format!("stored record {key} is unreadable: {e}"))),
        }
    }

    /// Encodes and stores `value` under `key`.
    pub fn put<T: Serialize>(key: &str, value: &T) -> Result<(), AddonError> {
        let bytes = serde_json::to_vec(value).map_err(|e| AddonError::new(e.to_string()))?;
        kv::set(key, &bytes).map_err(AddonError::new)
    }

    /// Deletes every key starting with `prefix`, a page of keys at a time
    /// (`list-keys` answers at most 1,000).
    pub fn delete_prefix(prefix: &str) {
        loop {
            let keys = kv::list_keys(prefix);
            if keys.is_empty() {
                break;
            }
            for key in keys {
                kv::delete(&key);
            }
        }
    }

    /// Every key starting with `prefix`, in order, paging through
    /// `list-keys-after` (each page is one kv operation of the call's budget).
    pub fn keys(prefix: &str) -> Vec<String> {
        let mut all = kv::list_keys(prefix);
        while all.len() % 1000 == 0 && !all.is_empty() {
            let page = kv::list_keys_after(prefix, all.last().unwrap(), 1000);
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        all
    }
}
