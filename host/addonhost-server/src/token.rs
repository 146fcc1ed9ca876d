//! The API bearer token: generated on first use, kept in the data dir
//! readable only by its owner.

use std::path::Path;

use anyhow::Context;

/// The token's file in the data dir (and its name among shared settings).
pub const FILE_NAME: &str = "api-token";

/// The API token: on a shared store (PostgreSQL) the one every server
/// uses, kept in the store and copied to the data dir; otherwise the data
/// dir's. Created if there is none.
pub fn for_host(host: &addonhost::Host) -> anyhow::Result<String> {
    let data_dir = &host.options().data_dir;
    if !host.shared_store() {
        return load_or_create(data_dir);
    }
    let token = host.shared_setting(FILE_NAME, new_token)?;
    let path = data_dir.join(FILE_NAME);
    // The data dir and the copy are made private whether or not the copy
    // changes: one loosened by hand is tightened on the next start.
    addonhost::util::private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() != token {
        addonhost::util::write_private(&path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    } else {
        addonhost::util::private_file(&path)
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(token)
}

fn new_token() -> String {
    format!("ah_{}", crate::sessions::random_id())
}

/// The data dir's token, creating it if there is none.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(FILE_NAME);
    addonhost::util::private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            addonhost::util::private_file(&path)
                .with_context(|| format!("cannot make {} private", path.display()))?;
            return Ok(t);
        }
    }
    let token = new_token();
    addonhost::util::write_private(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(token)
}
