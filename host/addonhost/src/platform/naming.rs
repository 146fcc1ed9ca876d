//! Names: resources (`kv-shaped-48213`), attachments (`KV`, `CACHE`,
//! `KV_ORANGE`) and the renaming of manifest vars onto an app.

use rand::Rng;

const WORDS: &[&str] = &[
    "amber", "brisk", "calm", "deep", "eager", "fair", "gentle", "hidden", "ivory", "jolly",
    "keen", "lively", "mellow", "noble", "opal", "proud", "quiet", "rapid", "solid", "tidy",
    "urban", "vivid", "warm", "young", "zesty", "shaped", "round", "silver", "sunny", "cubic",
];

/// Second, third… attachments of a service on one app get these (Heroku
/// Postgres style: `HEROKU_POSTGRESQL_ORANGE`).
pub const COLORS: &[&str] = &[
    "ORANGE", "PURPLE", "AQUA", "BLUE", "GREEN", "RED", "YELLOW", "PINK", "GOLD", "SILVER", "TEAL",
    "OLIVE", "CRIMSON", "INDIGO", "MAROON", "NAVY", "CORAL", "IVORY", "JADE", "ONYX",
];

/// A fresh resource name for `service`.
pub fn resource_name(service: &str) -> String {
    let mut rng = rand::rng();
    let word = WORDS[rng.random_range(0..WORDS.len())];
    format!("{service}-{word}-{:05}", rng.random_range(0..100_000))
}

/// A manifest var (`KV_URL`, prefix `KV`) as it appears on an app whose
/// attachment is named `attachment` (`CACHE` → `CACHE_URL`).
pub fn app_var(manifest_var: &str, prefix: &str, attachment: &str) -> String {
    let suffix = manifest_var.strip_prefix(prefix).unwrap_or(manifest_var);
    format!("{attachment}{suffix}")
}

/// The reverse of [`app_var`]: `CACHE_URL` → `KV_URL`.
pub fn manifest_var(app_var: &str, prefix: &str, attachment: &str) -> Option<String> {
    app_var
        .strip_prefix(attachment)
        .filter(|s| s.starts_with('_'))
        .map(|suffix| format!("{prefix}{suffix}"))
}

/// Normalises a user-chosen attachment name (`cache` → `CACHE`) and checks
/// it: `^[A-Z][A-Z0-9_]*$`, at most 60 characters.
pub fn attachment_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_uppercase().replace('-', "_");
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 60
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "attachment name {raw:?} is invalid: use letters, digits and underscores, starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_var_is_renamed_under_attachment_name() {
        assert_eq!(app_var("KV_URL", "KV", "CACHE"), "CACHE_URL");
        assert_eq!(app_var("KV_URL", "KV", "KV"), "KV_URL");
        assert_eq!(app_var("KV_URL", "KV", "KV_ORANGE"), "KV_ORANGE_URL");
        assert_eq!(
            manifest_var("CACHE_URL", "KV", "CACHE").as_deref(),
            Some("KV_URL")
        );
        assert_eq!(manifest_var("CACHEX_URL", "KV", "CACHE"), None);
    }

    #[test]
    fn attachment_names_are_uppercased_and_checked() {
        assert_eq!(attachment_name("cache").unwrap(), "CACHE");
        assert_eq!(attachment_name("my-cache").unwrap(), "MY_CACHE");
        assert!(attachment_name("1X").is_err());
        assert!(attachment_name("").is_err());
        assert!(attachment_name("A B").is_err());
    }

    #[test]
    fn resource_names_start_with_service() {
        let n = resource_name("kv");
        assert!(n.starts_with("kv-") && n.len() > 9, "{n}");
    }
}
