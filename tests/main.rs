//! The end-to-end suite, one binary (one module per area, in the style of
//! wasmtime's `tests/all`): the real `addonhost` binary, real plugins built
//! from `plugins/` and `tests/plugins/`, real SQLite files, a real
//! PostgreSQL, a real server on 127.0.0.1, real Chromium. One binary links
//! wasmtime once instead of once per file. Run one area with a filter:
//! `cargo test -p addonhost-cli --test all -- lifecycle::`.

mod support;

mod authoring;
mod browser;
mod check;
mod clients;
mod cluster;
mod config;
mod crash;
mod database;
mod faults;
mod isolation;
mod lifecycle;
mod logs;
mod metrics;
mod osb;
mod outbound;
mod ownership;
mod partner;
mod partner_wire;
mod properties;
mod races;
mod reload;
mod rotation;
mod sandbox;
mod server;
mod sso;
mod tidy;
