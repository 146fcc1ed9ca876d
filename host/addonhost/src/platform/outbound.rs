//! What the operator lets add-ons reach over HTTP. An add-on declares the
//! hosts it calls (`outbound.allowed_hosts`); the operator may take them all
//! away (`--deny-outbound`, for every add-on or the ones named) or cap them
//! with a list of their own (`--outbound-hosts`), and each call is granted
//! what is left. The runtime enforces the grant per request
//! (`runtime::outbound`).

use std::sync::Arc;

use serde::Serialize;

use crate::manifest::Manifest;
use crate::outbound::AllowList;
use crate::runtime::Grant;

/// The operator's say over add-ons' outbound requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// The add-ons that may make no outbound request at all, whatever they
    /// declare (`--deny-outbound`).
    pub deny: Deny,
    /// The most any add-on may reach: a declared host outside it is
    /// dropped (`None`: what add-ons declare).
    pub ceiling: Option<AllowList>,
}

/// Add-ons whose outbound requests the operator refuses outright.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Deny {
    /// Nothing denied: each add-on reaches what it declares (within the
    /// ceiling).
    #[default]
    Nobody,
    /// Every add-on.
    All,
    /// The add-ons with these ids.
    Addons(Vec<String>),
}

impl Deny {
    /// `--deny-outbound` with no value (or `*`) denies all; `a,b` denies
    /// add-ons a and b.
    pub fn parse(s: &str) -> Deny {
        let ids: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if ids.is_empty() || ids.iter().any(|i| i == "*") {
            Deny::All
        } else {
            Deny::Addons(ids)
        }
    }

    fn denies(&self, id: &str) -> bool {
        match self {
            Deny::Nobody => false,
            Deny::All => true,
            Deny::Addons(ids) => ids.iter().any(|i| i == id),
        }
    }
}

/// What an add-on may reach, as `addonhost plugins` and `GET /api/plugins`
/// show it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundView {
    /// What its manifest declares.
    pub declared: AllowList,
    /// What its calls may reach.
    pub allowed: AllowList,
    /// The operator's option that took some or all of it away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub narrowed_by: Option<&'static str>,
}

impl OutboundPolicy {
    /// What `m`'s calls may reach.
    pub fn grant(&self, m: &Manifest) -> Grant {
        let declared = &m.outbound.allowed_hosts;
        if declared.is_empty() {
            return Grant::none();
        }
        let (allowed, narrowed_by) = self.narrow(&m.id, declared);
        Grant {
            allowed: Arc::new(allowed),
            narrowed_by,
        }
    }

    /// What `m` declares, what its calls may reach after the operator's
    /// options, and which option narrowed it.
    pub fn view(&self, m: &Manifest) -> OutboundView {
        let declared = m.outbound.allowed_hosts.clone();
        let (allowed, narrowed_by) = self.narrow(&m.id, &declared);
        OutboundView {
            declared,
            allowed,
            narrowed_by,
        }
    }

    fn narrow(&self, id: &str, declared: &AllowList) -> (AllowList, Option<&'static str>) {
        if declared.is_empty() {
            return (AllowList::default(), None);
        }
        if self.deny.denies(id) {
            return (AllowList::default(), Some("--deny-outbound"));
        }
        match &self.ceiling {
            None => (declared.clone(), None),
            Some(ceiling) => {
                let allowed = declared.narrowed(ceiling);
                let narrowed = (allowed != *declared).then_some("--outbound-hosts");
                (allowed, narrowed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, hosts: &[&str]) -> Manifest {
        let text = serde_json::json!({
            "id": id, "name": "x",
            "api": {"config_vars": [], "regions": ["*"],
                    "password": "0123456789abcdef0123456789abcdef",
                    "sso_salt": "0123456789abcdef0123456789abcdef"},
            "plans": [{"id": "a", "name": "A"}],
            "component": "x.wasm",
            "outbound": {"allowed_hosts": hosts},
        });
        Manifest::parse(&text.to_string(), std::path::Path::new("/p")).unwrap()
    }

    #[test]
    fn the_operator_denies_all_or_the_named_add_ons() {
        let m = manifest("mailer", &["https://api.mail.example"]);
        let open = OutboundPolicy::default();
        assert_eq!(
            open.grant(&m).allowed.describe(),
            "https://api.mail.example"
        );
        let all = OutboundPolicy {
            deny: Deny::parse(""),
            ceiling: None,
        };
        let grant = all.grant(&m);
        assert!(grant.allowed.is_empty());
        assert_eq!(grant.narrowed_by, Some("--deny-outbound"));
        let named = OutboundPolicy {
            deny: Deny::parse("kv, mailer"),
            ceiling: None,
        };
        assert!(named.grant(&m).allowed.is_empty());
        let other = OutboundPolicy {
            deny: Deny::parse("kv"),
            ceiling: None,
        };
        assert!(!other.grant(&m).allowed.is_empty());
    }

    #[test]
    fn the_operator_list_caps_what_add_ons_declare() {
        let m = manifest(
            "mailer",
            &["https://*.mail.example", "http://127.0.0.1:9000"],
        );
        let capped = OutboundPolicy {
            deny: Deny::Nobody,
            ceiling: Some(AllowList::parse(["https://eu.mail.example"]).unwrap()),
        };
        let view = capped.view(&m);
        assert_eq!(view.allowed.describe(), "https://eu.mail.example");
        assert_eq!(view.narrowed_by, Some("--outbound-hosts"));
        assert_eq!(view.declared.0.len(), 2);
        // An add-on that declares nothing is granted nothing, and nothing
        // was taken from it.
        let none = capped.view(&manifest("kv", &[]));
        assert!(none.allowed.is_empty() && none.narrowed_by.is_none());
    }
}
