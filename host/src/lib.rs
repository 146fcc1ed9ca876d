//! addonhost: Heroku's add-on platform as one embeddable host.
//!
//! The host plays Heroku's side — apps, config vars, releases, the add-on
//! catalog, SSO — and every add-on partner's logic is a sandboxed WASM
//! component implementing `wit/addon.wit`. [`Host`] is the embedding API; the
//! `addonhost` command line is a thin layer over it.
//!
//! Data flows one way: `cli` → `platform` → {`store`, `runtime`}; `manifest`
//! and `sso` are leaves.

pub mod authoring;
pub mod check;
pub mod cli;
pub mod manifest;
pub mod platform;
pub mod reload;
pub mod reserved;
pub mod runtime;
pub mod server;
pub mod sso;
pub mod store;
pub mod util;

pub use platform::{Host, HostOptions};
