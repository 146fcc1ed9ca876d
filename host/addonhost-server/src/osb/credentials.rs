//! The broker's HTTP Basic credentials: made on first use like the API
//! token, kept in the data dir readable only by its owner — and, on a shared
//! store (PostgreSQL), in the store, so every server checks the same ones.

use std::path::Path;

use anyhow::Context;

/// The data dir's file (and, on a shared store, the setting) holding them.
pub const FILE_NAME: &str = "osb-credentials";
/// The username platforms register the broker with.
pub const USERNAME: &str = "addonhost";

/// What a platform sends as `Authorization: Basic …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Who (`addonhost`).
    pub username: String,
    /// The secret: `osb_` and 32+ random characters.
    pub password: String,
}

impl Credentials {
    fn parse(line: &str) -> Option<Credentials> {
        let (username, password) = line.trim().split_once(':')?;
        (!username.is_empty() && password.len() >= 32).then(|| Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    fn line(&self) -> String {
        format!("{}:{}", self.username, self.password)
    }

    /// Whether `user:password` are these (constant time).
    pub fn accepts(&self, user: &str, password: &str) -> bool {
        let given = format!("{user}:{password}");
        addonhost::sso::ct_eq(given.as_bytes(), self.line().as_bytes())
    }
}

fn new_credentials() -> String {
    Credentials {
        username: USERNAME.into(),
        password: format!("osb_{}", crate::sessions::random_id()),
    }
    .line()
}

/// The broker's credentials: on a shared store the ones every server uses,
/// kept in the store and copied to the data dir; otherwise the data dir's.
/// Created if there are none.
pub fn for_host(host: &addonhost::Host) -> anyhow::Result<Credentials> {
    let data_dir = &host.options().data_dir;
    if !host.shared_store() {
        return load_or_create(data_dir);
    }
    let line = host.shared_setting(FILE_NAME, new_credentials)?;
    let credentials = Credentials::parse(&line)
        .with_context(|| format!("the store's setting {FILE_NAME} is not user:password"))?;
    let path = data_dir.join(FILE_NAME);
    // The data dir and the copy are made private whether or not the copy
    // changes: one loosened by hand is tightened on the next start.
    addonhost::util::private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() != line {
        addonhost::util::write_private(&path, format!("{line}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    } else {
        addonhost::util::private_file(&path)
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(credentials)
}

/// The data dir's credentials, creating them if there are none.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Credentials> {
    let path = data_dir.join(FILE_NAME);
    addonhost::util::private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    if let Some(c) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| Credentials::parse(&t))
    {
        addonhost::util::private_file(&path)
            .with_context(|| format!("cannot make {} private", path.display()))?;
        return Ok(c);
    }
    let line = new_credentials();
    addonhost::util::write_private(&path, format!("{line}\n").as_bytes())
        .with_context(|| format!("creating {}", path.display()))?;
    Credentials::parse(&line).context("fresh broker credentials do not parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(first.username, USERNAME);
        assert!(first.password.len() >= 32);
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
        }
        assert!(first.accepts(&first.username, &first.password));
        assert!(!first.accepts(&first.username, "osb_wrong"));
        assert!(!first.accepts("someone", &first.password));
    }
}
