//! The parts of an add-on's own `addon-manifest.json` it needs at run time.
//!
//! A partner knows its own secrets: an add-on embeds its manifest at build
//! time (`include_str!("../addon-manifest.json")`) and reads the SSO salt and
//! its rotation settings from it, so the secret lives in one place.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub api: Api,
    #[serde(default)]
    pub rotation: Rotation,
    #[serde(default)]
    pub outbound: Outbound,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Api {
    pub sso_salt: String,
    pub config_vars_prefix: Option<String>,
    /// The partner API secret: what a partner's backend knows the add-on by.
    #[serde(default)]
    pub password: String,
}

/// addonhost's `outbound` manifest key: the hosts the add-on's calls may
/// reach (the host enforces it; an add-on reads it to find its backend).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Outbound {
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// addonhost's `rotation` manifest key.
#[derive(Debug, Clone, Deserialize)]
pub struct Rotation {
    /// How long a rotated-out credential keeps working.
    #[serde(default = "default_grace")]
    pub grace_seconds: i64,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            grace_seconds: default_grace(),
        }
    }
}

fn default_grace() -> i64 {
    3600
}

impl Manifest {
    /// Parses an embedded manifest. Panics on a malformed one: that is a build
    /// mistake the host's manifest validation reports first anyway.
    pub fn embedded(json: &str) -> Manifest {
        serde_json::from_str(json).expect("embedded addon-manifest.json is valid")
    }
}
