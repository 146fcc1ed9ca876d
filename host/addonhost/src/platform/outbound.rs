//! What the operator lets add-ons reach over HTTP. An add-on declares the
//! hosts it calls (`outbound.allowed_hosts`); the operator may take them all
//! away (`--deny-outbound`, for every add-on or the ones named) or cap them
//! with a list of their own (`--outbound-hosts`), and each call is granted
//! what is left. The runtime enforces the grant per request
//! (`runtime::outbound`).
//!
//! A declared loopback, private, link-local (cloud metadata) or otherwise
//! non-public address is the operator's to open, never the manifest's: it
//! is granted only when `--outbound-hosts` names it or a per-add-on grant
//! does (`--outbound-grant mailer=http://127.0.0.1:9025`). Otherwise it is
//! declared but not granted, and shown as such.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::manifest::Manifest;
use crate::outbound::{non_public, AllowList, AllowedHost, HostPattern};
use crate::runtime::Grant;

/// The operator's say over add-ons' outbound requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// The add-ons that may make no outbound request at all, whatever they
    /// declare (`--deny-outbound`).
    pub deny: Deny,
    /// The most any add-on may reach: a declared host outside it is
    /// dropped (`None`: what add-ons declare). A non-public address it
    /// names is granted to every add-on that declares it.
    pub ceiling: Option<AllowList>,
    /// Per add-on, what the operator grants beyond the ceiling: the only
    /// other way a declared non-public address is reached
    /// (`--outbound-grant ADDON=URL,…`).
    pub grants: BTreeMap<String, AllowList>,
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
    /// Declared non-public addresses the operator has not granted (with
    /// `--outbound-grant` or `--outbound-hosts`): refused until it does.
    pub not_granted: AllowList,
}

/// `ADDON=URL[,URL…]`: what the operator grants one add-on (`--outbound-grant`).
pub fn parse_grant(s: &str) -> Result<(String, AllowList), String> {
    let (id, urls) = s.split_once('=').ok_or_else(|| {
        format!("{s:?} is not ADDON=URL[,URL…] (such as mailer=http://127.0.0.1:9025)")
    })?;
    let id = id.trim();
    if !crate::manifest::is_slug(id) {
        return Err(format!("{id:?} is not an add-on id"));
    }
    let list = AllowList::parse(urls.split(',').map(str::trim).filter(|u| !u.is_empty()))
        .map_err(|(i, e)| format!("{id}: entry {i}: {e}"))?;
    if list.is_empty() {
        return Err(format!("{s:?} grants add-on {id} nothing"));
    }
    Ok((id.to_string(), list))
}

/// Whether `p` names a non-public address (which needs the operator's
/// consent).
fn needs_consent(p: &AllowedHost) -> bool {
    matches!(p.host, HostPattern::Ip(ip) if non_public(ip).is_some())
}

/// What `p` and `list` both allow, pushed onto `out` (once each).
fn allow_within(out: &mut Vec<AllowedHost>, p: &AllowedHost, list: &AllowList) -> bool {
    let mut any = false;
    for q in &list.0 {
        if let Some(both) = p.intersect(q) {
            any = true;
            if !out.contains(&both) {
                out.push(both);
            }
        }
    }
    any
}

/// An add-on's declared list as the operator narrows it.
struct Narrowed {
    allowed: AllowList,
    narrowed_by: Option<&'static str>,
    not_granted: AllowList,
}

impl OutboundPolicy {
    /// Adds `list` to what add-on `id` is granted.
    pub fn grant_to(&mut self, id: &str, list: AllowList) {
        let entry = self.grants.entry(id.to_string()).or_default();
        for p in list.0 {
            if !entry.0.contains(&p) {
                entry.0.push(p);
            }
        }
    }

    /// What `m`'s calls may reach.
    pub fn grant(&self, m: &Manifest) -> Grant {
        let declared = &m.outbound.allowed_hosts;
        if declared.is_empty() {
            return Grant::none();
        }
        let n = self.narrow(&m.id, declared);
        Grant {
            allowed: Arc::new(n.allowed),
            narrowed_by: n.narrowed_by,
            not_granted: Arc::new(n.not_granted),
            trust: crate::tls::Trust::default(),
            resolver: Default::default(),
        }
    }

    /// What `m` declares, what its calls may reach after the operator's
    /// options, which option narrowed it, and what is declared but not
    /// granted.
    pub fn view(&self, m: &Manifest) -> OutboundView {
        let declared = m.outbound.allowed_hosts.clone();
        let n = self.narrow(&m.id, &declared);
        OutboundView {
            declared,
            allowed: n.allowed,
            narrowed_by: n.narrowed_by,
            not_granted: n.not_granted,
        }
    }

    fn narrow(&self, id: &str, declared: &AllowList) -> Narrowed {
        let nothing = |narrowed_by| Narrowed {
            allowed: AllowList::default(),
            narrowed_by,
            not_granted: AllowList::default(),
        };
        if declared.is_empty() {
            return nothing(None);
        }
        if self.deny.denies(id) {
            return nothing(Some("--deny-outbound"));
        }
        let granted = self.grants.get(id);
        let (mut allowed, mut not_granted) = (Vec::new(), Vec::new());
        for p in &declared.0 {
            let by_grant = granted.is_some_and(|g| allow_within(&mut allowed, p, g));
            let by_ceiling = self
                .ceiling
                .as_ref()
                .is_some_and(|c| allow_within(&mut allowed, p, c));
            if by_grant || by_ceiling {
                continue;
            }
            if needs_consent(p) {
                not_granted.push(p.clone());
            } else if self.ceiling.is_none() && !allowed.contains(p) {
                allowed.push(p.clone());
            }
        }
        // The ceiling is named when it took a public host away or cut a
        // wildcard down (what is not granted is shown on its own).
        let cut = self.ceiling.is_some()
            && declared
                .0
                .iter()
                .any(|p| !needs_consent(p) && !allowed.contains(p));
        let (allowed, narrowed_by) = (AllowList(allowed), cut.then_some("--outbound-hosts"));
        Narrowed {
            allowed,
            narrowed_by,
            not_granted: AllowList(not_granted),
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
            ..Default::default()
        };
        let grant = all.grant(&m);
        assert!(grant.allowed.is_empty());
        assert_eq!(grant.narrowed_by, Some("--deny-outbound"));
        let named = OutboundPolicy {
            deny: Deny::parse("kv, mailer"),
            ..Default::default()
        };
        assert!(named.grant(&m).allowed.is_empty());
        let other = OutboundPolicy {
            deny: Deny::parse("kv"),
            ..Default::default()
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
            ceiling: Some(AllowList::parse(["https://eu.mail.example"]).unwrap()),
            ..Default::default()
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

    #[test]
    fn a_non_public_address_needs_the_operators_grant_whatever_the_manifest_says() {
        let m = manifest(
            "mailer",
            &[
                "https://api.mail.example",
                "http://127.0.0.1:9025",
                "http://169.254.169.254",
                "http://[fd00:ec2::254]",
                "http://10.0.0.5:8080",
            ],
        );
        let open = OutboundPolicy::default().view(&m);
        assert_eq!(open.allowed.describe(), "https://api.mail.example");
        assert_eq!(
            open.not_granted.describe(),
            "http://127.0.0.1:9025, http://169.254.169.254, http://[fd00:ec2::254], http://10.0.0.5:8080"
        );
        assert_eq!(open.narrowed_by, None);
        // A grant of the add-on's own opens what it names, for it alone.
        let mut granted = OutboundPolicy::default();
        let (id, list) = parse_grant("mailer=http://127.0.0.1:9025").unwrap();
        granted.grant_to(&id, list);
        let view = granted.view(&m);
        assert_eq!(
            view.allowed.describe(),
            "https://api.mail.example, http://127.0.0.1:9025"
        );
        assert_eq!(view.not_granted.0.len(), 3);
        let other = manifest("hostile", &["http://127.0.0.1:9025"]);
        assert!(granted.grant(&other).allowed.is_empty());
        // So does the operator's list, for every add-on declaring it.
        let ceiling = OutboundPolicy {
            ceiling: Some(
                AllowList::parse(["https://api.mail.example", "http://10.0.0.5:8080"]).unwrap(),
            ),
            ..Default::default()
        };
        let view = ceiling.view(&m);
        assert_eq!(
            view.allowed.describe(),
            "https://api.mail.example, http://10.0.0.5:8080"
        );
        assert_eq!(view.narrowed_by, None);
        // Bad grants say what is wrong.
        for (bad, says) in [
            ("mailer", "ADDON=URL"),
            ("Mailer=http://127.0.0.1:9025", "add-on id"),
            ("mailer=ftp://x.example", "http or https"),
            ("mailer=", "nothing"),
        ] {
            let e = parse_grant(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
