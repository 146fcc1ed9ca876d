//! Name lookups for outbound requests: the system resolver on tokio's
//! blocking threads, bounded per add-on and for the host — or the DNS
//! server the operator names (`--outbound-resolver`), asked directly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// Where add-ons' outbound names are resolved: the system's resolver
/// (`/etc/hosts`, `/etc/resolv.conf`), or one DNS server the operator names
/// (`--outbound-resolver`), asked over UDP (TCP for a truncated answer)
/// with no cache of its own, so each request sees the server's current
/// answer. Either way every address an answer holds is checked before
/// anything connects.
#[derive(Clone, Default)]
pub enum Resolver {
    /// The system's resolver, on a blocking thread.
    #[default]
    System,
    /// The DNS server at this address.
    Dns(SocketAddr, Arc<hickory_resolver::TokioResolver>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolver::System => f.write_str("the system resolver"),
            Resolver::Dns(addr, _) => write!(f, "the DNS server at {addr}"),
        }
    }
}

impl Resolver {
    /// Asks the DNS server at `server` (UDP, and TCP for a truncated
    /// answer), keeping no answer past the lookup that got it.
    pub fn dns(server: SocketAddr) -> Resolver {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
        use hickory_resolver::name_server::TokioConnectionProvider;
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut opts = ResolverOpts::default();
        // Every request asks again: a cached answer would hide a change,
        // and checking what the server answers now is the point.
        opts.cache_size = 0;
        opts.attempts = 1;
        opts.timeout = std::time::Duration::from_secs(2);
        // Names are the manifest's, whole: never completed with a search
        // domain of the host's.
        opts.ndots = 0;
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build();
        Resolver::Dns(server, Arc::new(resolver))
    }

    /// The addresses of `name` (at most 16), with `port`, for `addon`.
    pub(super) async fn resolve(
        &self,
        addon: &str,
        name: &str,
        port: u16,
    ) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Resolver::System => lookup(addon, name, port, system_lookup).await,
            Resolver::Dns(server, resolver) => {
                // A fully qualified name: asked as it is.
                let fqdn = format!("{}.", name.trim_end_matches('.'));
                let answer = resolver
                    .lookup_ip(fqdn.as_str())
                    .await
                    .map_err(|e| std::io::Error::other(format!("{e} (asked {server})")))?;
                Ok(answer
                    .iter()
                    .take(16)
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect())
            }
        }
    }
}

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
