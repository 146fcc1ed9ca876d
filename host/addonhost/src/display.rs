//! How the platform shows values to people: secrets masked, times and sizes
//! readable. Shared by the command line and the dashboard.

/// A value safe to print in a listing: a URL keeps its scheme, user, host
/// and port; secrets are starred.
pub fn mask(value: &str) -> String {
    if let Ok(u) = url::Url::parse(value) {
        if let Some(host) = u.host_str() {
            let user = if u.username().is_empty() {
                String::new()
            } else {
                format!("{}:****@", u.username())
            };
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            return format!("{}://{user}{host}{port}/****", u.scheme());
        }
    }
    if value.chars().count() <= 4 {
        return value.to_string();
    }
    let head: String = value.chars().take(3).collect();
    format!("{head}****")
}

/// A Unix time for people, in UTC: `2026-11-30 03:09:49` (the number itself if
/// it is out of range).
pub fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// A byte count for people: `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn mask_hides_url_password_and_path() {
        assert_eq!(
            mask("http://kv-1:s3cret@127.0.0.1:5000/addons/kv/kv-1"),
            "http://kv-1:****@127.0.0.1:5000/****"
        );
        assert_eq!(mask("supersecret"), "sup****");
        assert_eq!(mask("7"), "7");
    }
}
