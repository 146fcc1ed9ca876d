//! Small helpers shared across modules.

/// `s` cut to at most `max` bytes, on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `value` with the password of a URL in it replaced by `***`
/// (`postgres://admin:***@db/x`), for errors and the audit trail. Works on
/// values that do not parse too, which are the ones refused and echoed:
/// whatever lies between the scheme's `://` and the last `@` after it,
/// past the first `:`, is taken for the password.
pub fn redact_url(value: &str) -> String {
    let Some(start) = value.find("://").map(|i| i + 3) else {
        return value.to_string();
    };
    let rest = &value[start..];
    let Some(at) = rest.rfind('@') else {
        return value.to_string();
    };
    let Some(colon) = rest[..at].find(':') else {
        return value.to_string();
    };
    format!("{}:***{}", &value[..start + colon], &rest[at..])
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Creates `dir` (and its parents) readable only by its owner, or makes an
/// existing one so: a data dir holds every add-on's credentials.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Makes the file at `path`, if it exists, readable and writable only by its
/// owner.
pub fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Writes `data` to a new file at `path` readable only by its owner.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)?;
    private_file(path)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn url_passwords_are_redacted_whether_or_not_the_url_parses() {
        for (value, shown) in [
            ("postgres://admin:s3cr3t@db/x", "postgres://admin:***@db/x"),
            (
                "postgres://admin:s3cr3t@db host:5432/x",
                "postgres://admin:***@db host:5432/x",
            ),
            ("redis://:s3cr3t@h:6379", "redis://:***@h:6379"),
            (
                "postgres://admin:pa/ss@w@rd@db/x",
                "postgres://admin:***@db/x",
            ),
            ("https://user@host/x", "https://user@host/x"),
            ("not a url", "not a url"),
            ("mailto:someone@example.com", "mailto:someone@example.com"),
        ] {
            assert_eq!(redact_url(value), shown, "{value}");
        }
    }
}
