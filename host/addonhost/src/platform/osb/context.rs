//! Where a broker instance lives: the platform's own grouping of the
//! services it provisions — a Cloud Foundry space, a Kubernetes namespace —
//! as one addonhost app.
//!
//! Config vars, releases and the one-per-app rule of add-ons are all about
//! apps, so every instance needs one. A space (or namespace) is the unit a
//! platform's users share services in, so each gets its app, named after a
//! hash of its platform-side ids (`osb-3f9c0e…`): stable whatever the space
//! is renamed to, and never a name a user would pick. A request that names
//! no group (OSB 2.15 made `organization_guid` and `space_guid` optional)
//! lands on the app `osb-default`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::super::{error, Host};

/// The app of requests that name no group.
const DEFAULT_APP: &str = "osb-default";

/// A platform-side group of instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// `cloudfoundry`, `kubernetes`, … (`""` when the request said none).
    pub platform: String,
    /// The organization guid, or the Kubernetes cluster id.
    pub scope: String,
    /// The space guid, or the Kubernetes namespace.
    pub group: String,
}

impl Place {
    /// The place a provisioning names: a Kubernetes context's cluster and
    /// namespace, else the organization and space guids (the context's, or
    /// the deprecated top-level fields); `None` if it names none.
    pub fn of(body: &Map<String, Value>) -> Option<Place> {
        let context = body.get("context").and_then(Value::as_object);
        let text = |m: Option<&Map<String, Value>>, key: &str| {
            m.and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let platform = text(context, "platform").unwrap_or_default();
        if platform == "kubernetes" {
            if let Some(namespace) = text(context, "namespace") {
                return Some(Place {
                    scope: text(context, "clusterid").unwrap_or_default(),
                    group: namespace,
                    platform,
                });
            }
        }
        let org =
            text(context, "organization_guid").or_else(|| text(Some(body), "organization_guid"));
        let space = text(context, "space_guid").or_else(|| text(Some(body), "space_guid"));
        match (org, space) {
            (org, Some(space)) => Some(Place {
                platform,
                scope: org.unwrap_or_default(),
                group: space,
            }),
            _ => None,
        }
    }

    /// The place of requests that name none.
    pub fn unplaced() -> Place {
        Place {
            platform: String::new(),
            scope: String::new(),
            group: String::new(),
        }
    }

    /// The app standing for this place.
    pub fn app_name(&self) -> String {
        if self.group.is_empty() {
            return DEFAULT_APP.into();
        }
        let mut h = Sha256::new();
        for part in [&self.platform, &self.scope, &self.group] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("osb-{}", &hex::encode(h.finalize())[..16])
    }

    /// In words, for the audit trail.
    fn describe(&self) -> String {
        if self.group.is_empty() {
            return "no organization, space or namespace".into();
        }
        match self.platform.as_str() {
            "kubernetes" => format!(
                "kubernetes cluster {:?} namespace {:?}",
                self.scope, self.group
            ),
            p => format!(
                "{} organization {} space {}",
                if p.is_empty() { "platform" } else { p },
                self.scope,
                self.group
            ),
        }
    }
}

impl Host {
    /// The app of `place`, created on first use.
    pub(super) async fn osb_place_app(
        &self,
        place: &Place,
        caller: &super::Caller,
    ) -> anyhow::Result<String> {
        let name = place.app_name();
        if self.store.read(|tx| tx.app_by_name(&name))?.is_some() {
            return Ok(name);
        }
        match self.create_app_as(&name, None, crate::platform::actor::OSB) {
            Ok(_) => {
                self.osb_audit(
                    caller,
                    "osb:place",
                    Some(name.clone()),
                    None,
                    format!("app for {}", place.describe()),
                )
                .await;
                Ok(name)
            }
            // Made by a request running alongside.
            Err(e) if e.kind() == Some(error::Kind::Conflict) => Ok(name),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(body: Value) -> Option<Place> {
        Place::of(body.as_object().unwrap())
    }

    #[test]
    fn a_space_is_one_app_whether_named_by_context_or_the_deprecated_fields() {
        let by_context = place(serde_json::json!({"context": {"platform": "cloudfoundry",
            "organization_guid": "org-1", "space_guid": "space-1"}}))
        .unwrap();
        let both = place(serde_json::json!({"context": {"platform": "cloudfoundry",
            "organization_guid": "org-1", "space_guid": "space-1"},
            "organization_guid": "org-1", "space_guid": "space-1"}))
        .unwrap();
        assert_eq!(by_context.app_name(), both.app_name());
        let other = place(serde_json::json!({"context": {"platform": "cloudfoundry",
            "organization_guid": "org-1", "space_guid": "space-2"}}))
        .unwrap();
        assert_ne!(by_context.app_name(), other.app_name());
        let name = by_context.app_name();
        assert!(name.len() <= 30 && name.starts_with("osb-"), "{name}");
    }

    #[test]
    fn a_kubernetes_namespace_is_one_app_per_cluster() {
        let a = place(serde_json::json!({"context": {"platform": "kubernetes",
            "namespace": "shop", "clusterid": "c1"}}))
        .unwrap();
        let b = place(serde_json::json!({"context": {"platform": "kubernetes",
            "namespace": "shop", "clusterid": "c2"}}))
        .unwrap();
        assert_eq!(a.group, "shop");
        assert_ne!(a.app_name(), b.app_name());
    }

    #[test]
    fn a_request_naming_no_group_has_no_place() {
        assert_eq!(place(serde_json::json!({})), None);
        assert_eq!(place(serde_json::json!({"organization_guid": "o"})), None);
        assert_eq!(Place::unplaced().app_name(), DEFAULT_APP);
    }
}
