//! The broker's catalog: one service offering per add-on, its plans from
//! the manifest, and ids that stay the same across restarts.
//!
//! Platforms know offerings and plans only by id, and an id must mean the
//! same thing wherever they see it. So ids are derived — a UUID from a hash
//! of this broker's own id (made once per store) and the add-on and plan
//! ids — rather than stored: the same add-on always gets the same id from
//! this broker, and two addonhost brokers registered with one platform never
//! claim each other's ids.

use sha2::{Digest, Sha256};

use super::super::Host;
use crate::manifest::Manifest;

/// The store setting holding this broker's id.
const BROKER_ID_SETTING: &str = "osb-broker-id";

/// A service offering: one add-on.
#[derive(Debug, Clone)]
pub struct Offering {
    /// The offering's catalog id: a UUID derived from this broker's id and the
    /// add-on id, the same across restarts and servers.
    pub id: String,
    /// The add-on id (`kv`): CLI-friendly, `^[a-z][a-z0-9-]*$`.
    pub name: String,
    /// The manifest's name.
    pub description: String,
    /// More than one plan to change between.
    pub plan_updateable: bool,
    /// Bindings may be rotated: the add-on keeps rotated-out credentials
    /// working for a grace window.
    pub binding_rotatable: bool,
    /// That window, in seconds.
    pub grace_seconds: Option<u64>,
    /// `1.0.0+<component hash>` once the plugin is loaded: changes when
    /// another component serves the add-on.
    pub maintenance_version: Option<String>,
    /// Its plans, in the manifest's order.
    pub plans: Vec<OfferedPlan>,
}

/// A plan of an offering.
#[derive(Debug, Clone)]
pub struct OfferedPlan {
    /// The plan's catalog id, derived like the offering's.
    pub id: String,
    /// The manifest's plan id (`mini`).
    pub name: String,
    /// The manifest's plan name.
    pub description: String,
    /// Whether it is the manifest's default plan.
    pub default: bool,
}

impl Offering {
    /// The plan with catalog id `id`.
    pub fn plan_by_id(&self, id: &str) -> Option<&OfferedPlan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The plan whose manifest id is `name` (`mini`).
    pub fn plan_named(&self, name: &str) -> Option<&OfferedPlan> {
        self.plans.iter().find(|p| p.name == name)
    }
}

/// A version-8 UUID made of the hash of `parts`.
fn derived_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn offering(broker: &str, m: &Manifest, component_hash: Option<&str>) -> Offering {
    let grace = m.rotation.grace_seconds.filter(|g| *g > 0);
    Offering {
        id: derived_id(&[broker, "service", &m.id]),
        name: m.id.clone(),
        description: m.name.clone(),
        plan_updateable: m.plans.len() > 1,
        binding_rotatable: grace.is_some(),
        grace_seconds: grace,
        maintenance_version: component_hash.map(|h| format!("1.0.0+{}", &h[..h.len().min(12)])),
        plans: m
            .plans
            .iter()
            .map(|p| OfferedPlan {
                id: derived_id(&[broker, "plan", &m.id, &p.id]),
                name: p.id.clone(),
                description: p.name.clone(),
                default: p.default,
            })
            .collect(),
    }
}

impl Host {
    /// This broker's id, made on first use and kept in the store (so every
    /// server sharing it derives the same catalog ids).
    pub fn osb_broker_id(&self) -> crate::Result<String> {
        self.shared_setting(BROKER_ID_SETTING, || uuid::Uuid::new_v4().to_string())
    }

    /// The catalog: every add-on with a valid manifest, by id.
    pub fn osb_offerings(&self) -> crate::Result<Vec<Offering>> {
        let broker = self.osb_broker_id()?;
        Ok(self
            .catalog()
            .services()
            .map(|s| {
                let hash = s.loaded().map(|p| p.content_hash.clone());
                offering(&broker, &s.manifest, hash.as_deref())
            })
            .collect())
    }

    /// The offering with catalog id `id`.
    pub fn osb_offering(&self, id: &str) -> crate::Result<Option<Offering>> {
        Ok(self.osb_offerings()?.into_iter().find(|o| o.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_uuids_that_depend_on_every_part() {
        let a = derived_id(&["broker-1", "service", "kv"]);
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 8);
        assert_eq!(a, derived_id(&["broker-1", "service", "kv"]));
        assert_ne!(a, derived_id(&["broker-2", "service", "kv"]));
        assert_ne!(a, derived_id(&["broker-1", "plan", "kv"]));
        // Parts are delimited: ("ab", "c") is not ("a", "bc").
        assert_ne!(derived_id(&["ab", "c"]), derived_id(&["a", "bc"]));
    }
}
