//! addonhost: Heroku's add-on platform as an embeddable library.
//!
//! The host plays Heroku's side — apps, config vars, releases, the add-on
//! catalog, SSO — and every add-on partner's logic is a sandboxed WASM
//! component implementing `wit/addon.wit`. [`Host`] is the embedding API; the
//! HTTP server (`addonhost-server`) and the `addonhost` command line
//! (`addonhost-cli`) are layers over it.
//!
//! # A platform of your own
//!
//! Open a host on a data dir and the folders that hold add-ons, then drive
//! the lifecycle: an app, an add-on provisioned by its sandboxed plugin, the
//! config var it set, a rotation, a deprovision. (This runs as a doctest
//! against the example `kv` add-on that `addonhost plugins:build` builds.)
//!
//! ```
//! use addonhost::platform::CreateAddon;
//! use addonhost::{Host, HostOptions};
//!
//! # fn main() -> anyhow::Result<()> {
//! # let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
//! # let data = tempfile::tempdir()?;
//! let host = Host::open(HostOptions::new(data.path(), vec![plugins]))?;
//! host.create_app("shop", None)?;
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! let created = runtime.block_on(host.create_addon(CreateAddon {
//!     app: "shop".into(),
//!     spec: "kv:mini".into(),
//!     ..Default::default()
//! }))?;
//! let url = |host: &Host| -> addonhost::Result<String> {
//!     let vars = host.config("shop")?;
//!     Ok(vars.into_iter().find(|v| v.name == "KV_URL").expect("KV_URL").value)
//! };
//! let before = url(&host)?;
//!
//! // New credentials from the plugin, a new release on the app.
//! let rotated = runtime.block_on(host.rotate_addon(&created.addon.name, Some("shop")))?;
//! assert_eq!(rotated.changed, ["KV_URL"]);
//! assert_ne!(url(&host)?, before);
//!
//! // The plugin destroys the resource; its vars leave the app.
//! // (Destroying data is confirmed with the app's name, like `--confirm`.)
//! runtime.block_on(host.destroy_addon(&created.addon.name, Some("shop"), Some("shop")))?;
//! assert!(host.config("shop")?.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Serving the same host over HTTP (the JSON API, the dashboard, SSO, the
//! add-ons' routes) is `addonhost-server`'s `Server`, an axum router you can
//! nest in your own app.
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
