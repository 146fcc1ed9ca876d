//! Name lookups for outbound requests: the system resolver on tokio's
//! blocking threads, bounded per add-on and for the host.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// Name lookups of one add-on outstanding at once, across all its calls.
/// A lookup runs on one of tokio's blocking threads and cannot be cancelled:
/// when the request's timeout fires the thread keeps waiting for the
/// resolver, so a partner answering its own names slowly could otherwise
/// park every blocking thread of the host (which the PostgreSQL store and
/// every other add-on's lookups need). Each lookup holds its add-on's permit
/// until the resolver answers, not until the request gives up.
pub const MAX_LOOKUPS_PER_ADDON: usize = 4;
/// Name lookups outstanding at once for all add-ons together, well below
/// tokio's 512 blocking threads.
pub const MAX_LOOKUPS: usize = 64;

/// The system resolver, as `lookup` runs it (on a blocking thread).
pub(super) fn system_lookup(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs()?.take(16).collect())
}

/// Resolves `name` with `resolve` on a blocking thread, under the host's and
/// `addon`'s lookup limits (see [`MAX_LOOKUPS_PER_ADDON`]).
pub(super) async fn lookup(
    addon: &str,
    name: &str,
    port: u16,
    resolve: fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> std::io::Result<Vec<SocketAddr>> {
    use tokio::sync::Semaphore;
    static ALL: OnceLock<Arc<Semaphore>> = OnceLock::new();
    static PER_ADDON: OnceLock<Mutex<std::collections::HashMap<String, Arc<Semaphore>>>> =
        OnceLock::new();
    let mine = PER_ADDON
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(addon.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(MAX_LOOKUPS_PER_ADDON)))
        .clone();
    let busy =
        |what: &str| std::io::Error::other(format!("too many name lookups in flight {what}"));
    // Waiting for a permit holds nothing: the request's timeout may cancel it.
    let own = (mine.acquire_owned().await).map_err(|_| busy("for this add-on"))?;
    let all = ALL
        .get_or_init(|| Arc::new(Semaphore::new(MAX_LOOKUPS)))
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy("on this host"))?;
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let _held = (own, all);
        resolve(&name, port)
    })
    .await
    .map_err(std::io::Error::other)?
}
