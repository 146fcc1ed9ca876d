#![warn(missing_docs)]
//! The `addonhost` command line: Heroku CLI habits over [`addonhost::Host`],
//! the server, add-on authoring (`plugins:new`, `plugins:build`,
//! `plugins:dev`), the conformance check (`plugins:check`) and hot reload.

pub mod authoring;
pub mod check;
pub mod cli;
pub mod reload;
pub mod watch;
