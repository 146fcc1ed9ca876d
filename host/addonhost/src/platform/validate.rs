//! Checks on what an add-on returns, before anything is written.

use std::collections::BTreeSet;

use crate::manifest::Manifest;

/// Largest value of one config var an add-on may set.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Largest config an add-on may set on one app in total.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Longest add-on id for a resource.
pub const MAX_PARTNER_ID: usize = 255;

/// Validates config returned by (or written through) an add-on: every name is
/// one of the manifest's `config_vars`, no name twice, sizes within caps, and
/// every `*_URL` value a URL with a scheme and a host. The error names the var.
pub fn addon_config(m: &Manifest, config: &[(String, String)]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut total = 0usize;
    for (name, value) in config {
        var_allowed(m, name)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("config var {name} is returned twice"));
        }
        value_ok(name, value)?;
        total += name.len() + value.len();
    }
    if total > MAX_CONFIG_BYTES {
        return Err(format!(
            "config of {total} bytes exceeds the cap of {MAX_CONFIG_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The name is one the manifest lists.
pub fn var_allowed(m: &Manifest, name: &str) -> Result<(), String> {
    if !m.api.config_vars.iter().any(|v| v == name) {
        return Err(format!(
            "config var {} is not in the manifest's api.config_vars ({})",
            crate::util::truncate(name, 100),
            m.api.config_vars.join(", ")
        ));
    }
    Ok(())
}

/// The value fits and, for `*_URL`, parses as a URL with scheme and host.
pub fn value_ok(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "config var {name} is {} bytes; the cap is {MAX_VALUE_BYTES} bytes",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "config var {name} contains a NUL character, which no environment variable can hold"
        ));
    }
    if name.ends_with("_URL") {
        match url::Url::parse(value) {
            Ok(u) if u.has_host() && !u.scheme().is_empty() => {}
            // The value is named, its password never: errors go to users,
            // logs and the audit trail.
            Ok(_) => {
                return Err(format!(
                    "config var {name} is not a URL with a host: {:?}",
                    crate::util::redact_url(value)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "config var {name} is not a valid URL ({e}): {:?}",
                    crate::util::redact_url(value)
                ))
            }
        }
    }
    Ok(())
}

/// The add-on's id for a resource.
pub fn partner_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("the add-on returned an empty id for the resource".into());
    }
    if id.len() > MAX_PARTNER_ID || id.chars().any(|c| c.is_control()) {
        return Err("the add-on returned an id that is too long or has control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"{"id":"kv","name":"KV","api":{"config_vars":["KV_URL","KV_TOKEN"],
            "password":"0123456789abcdef0123456789abcdef","sso_salt":"0123456789abcdef0123456789abcdef",
            "regions":["*"]},"plans":[{"id":"mini","name":"Mini"}],"component":"kv.wasm"}"#,
            Path::new("/p"),
        )
        .unwrap()
    }

    #[test]
    fn rejects_var_not_in_manifest() {
        let e = addon_config(
            &manifest(),
            &[("DATABASE_URL".into(), "postgres://h/db".into())],
        )
        .unwrap_err();
        assert!(e.contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn rejects_a_value_holding_a_nul() {
        let e = addon_config(&manifest(), &[("KV_TOKEN".into(), "a\0b".into())]).unwrap_err();
        assert!(e.contains("KV_TOKEN") && e.contains("NUL"), "{e}");
    }

    #[test]
    fn rejects_url_var_without_scheme_or_host() {
        let e = addon_config(&manifest(), &[("KV_URL".into(), "not a url".into())]).unwrap_err();
        assert!(e.contains("KV_URL"), "{e}");
        assert!(addon_config(&manifest(), &[("KV_URL".into(), "mailto:x".into())]).is_err());
        assert!(addon_config(
            &manifest(),
            &[("KV_URL".into(), "redis://u:p@h:1/0".into())]
        )
        .is_ok());
        // Only *_URL vars must be URLs.
        assert!(addon_config(&manifest(), &[("KV_TOKEN".into(), "abc".into())]).is_ok());
    }

    #[test]
    fn rejects_oversized_value_and_duplicates() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(addon_config(&manifest(), &[("KV_TOKEN".into(), big)])
            .unwrap_err()
            .contains("KV_TOKEN"));
        let dup = [
            ("KV_TOKEN".into(), "a".into()),
            ("KV_TOKEN".into(), "b".into()),
        ];
        assert!(addon_config(&manifest(), &dup)
            .unwrap_err()
            .contains("twice"));
    }
}
