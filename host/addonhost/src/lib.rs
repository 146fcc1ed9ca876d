//! addonhost: Heroku's add-on platform as an embeddable library.
//!
//! The host plays Heroku's side — apps, config vars, releases, the add-on
//! catalog, SSO — and every add-on partner's logic is a sandboxed WASM
//! component implementing `wit/addon.wit`. [`Host`] is the embedding API; the
//! HTTP server (`addonhost-server`) and the `addonhost` command line
//! (`addonhost-cli`) are layers over it.
//!
//! Data flows one way: `platform` → {`store`, `runtime`}; `manifest`,
//! `outbound`, `reserved`, `sso` and `display` are leaves. Nothing here knows HTTP
//! servers, command lines or file watchers.

#![warn(missing_docs)]

pub mod display;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod platform;
pub mod reserved;
pub mod runtime;
pub mod sso;
pub mod store;
pub mod tls;
pub mod util;

pub use platform::error::{Error, Kind, Result};
pub use platform::{Host, HostOptions, Policy};
