//! The API bearer token: generated on first use, kept in the data dir
//! readable only by its owner.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

pub const FILE_NAME: &str = "api-token";

/// The data dir's token, creating it if there is none.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(FILE_NAME);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let token = format!("ah_{}", super::web::random_id());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(token)
}
