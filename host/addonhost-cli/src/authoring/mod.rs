//! Add-on authoring: scaffolding (`plugins:new`), building any of the three
//! languages into a component (`plugins:build`), and the edit–build loop
//! (`plugins:dev`). The SDKs, the WIT and the language toolchains come from
//! the [`kit`], so the binary is all an author installs.

pub mod build;
pub mod dev;
pub mod esm;
pub mod kit;
mod location;
pub mod scaffold;

pub use build::{build, Built, Language};
