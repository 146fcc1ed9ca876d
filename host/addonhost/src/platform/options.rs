//! How a host is set up: where it keeps its state, where it finds its
//! plugins, and the operator's policy on what they may declare.

use std::path::PathBuf;

use serde::Serialize;

use super::OutboundPolicy;
use crate::manifest::Manifest;

/// Where a host keeps its state and finds its plugins.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The data dir: `addonhost.db` and the compiled-artifact cache.
    pub data_dir: PathBuf,
    /// Folders holding plugin folders.
    pub plugin_dirs: Vec<PathBuf>,
    /// The URL the server is reached at; add-ons build their resource URLs
    /// on `<public_url>/addons/<service>`.
    pub public_url: String,
    /// The domain whose subdomains are the add-ons' own origins
    /// (`kv.<domain>`): their pages, dashboards and SSO live there, apart from
    /// the platform's origin. `None` means `localhost` (browsers resolve
    /// `*.localhost` to the loopback), with resource URLs kept on the
    /// platform's address for processes whose resolver does not; set, it is
    /// a domain whose names resolve everywhere, and resource URLs use it too.
    pub addons_domain: Option<String>,
    /// What the operator allows add-ons.
    pub policy: Policy,
    /// Where the operator lets add-ons send HTTP requests (within what each
    /// declares).
    pub outbound: OutboundPolicy,
    /// A PostgreSQL database (`postgres://…`) holding all state, shared by
    /// any number of servers; `None` keeps it in `addonhost.db` in the data
    /// dir (the compiled-plugin cache stays in the data dir either way).
    pub database: Option<String>,
    /// How `database` is reached: through a transaction-pooling pooler
    /// (PgBouncer), and the direct connection for notifications.
    pub database_options: crate::store::PgOptions,
    /// On a shared store, serve add-ons with this server's components even
    /// when the platform accepted other ones (see
    /// [`Host::deploy_component`](crate::Host::deploy_component)).
    pub allow_plugin_mismatch: bool,
    /// Provider mode: the Platform API base of the platform calling this
    /// host's add-ons, where partner-initiated config updates and async
    /// completions go; `None` is Heroku's (`https://api.heroku.com`). The
    /// only platform called back: a provisioning whose `callback_url` lies
    /// elsewhere is refused.
    pub platform_api: Option<String>,
    /// Platform API requests an hour each add-on's partner may make (a
    /// bucket that size, refilled continuously; Heroku's own limit is 4,500
    /// an hour); 0 turns the limit off.
    pub platform_api_rate: u32,
    /// Provider mode: Partner API requests an hour each add-on's partner
    /// credential may make (a bucket that size, refilled continuously);
    /// 0 turns the limit off.
    pub partner_api_rate: u32,
    /// The roots every HTTPS request of this host trusts — its own calls to
    /// remote providers and calling platforms, and the add-ons' outbound
    /// requests: Mozilla's, plus the operator's extra CA (`--extra-ca`).
    pub trust: crate::tls::Trust,
    /// Whether the host's own client may call plain `http://` URLs off the
    /// loopback (`--allow-plain-http`); loopback addresses (and
    /// `localhost`) are always allowed. The add-ons' outbound requests
    /// follow their declared schemes instead.
    pub allow_plain_http: bool,
    /// Where add-ons' outbound names are resolved: the system's resolver,
    /// or the DNS server of the operator's `--outbound-resolver`.
    pub outbound_resolver: crate::runtime::outbound::Resolver,
}

impl HostOptions {
    /// Options for a host with its state in `data_dir` and its plugins in
    /// the folders under `plugin_dirs`; the rest as a local development
    /// host has them: served at `http://127.0.0.1:5000`, add-on origins
    /// under `localhost`, the default [`Policy`], outbound requests limited
    /// only by what each add-on declares, state in SQLite, and the Platform
    /// API each provisioning's `callback_url` names.
    pub fn new(data_dir: impl Into<PathBuf>, plugin_dirs: Vec<PathBuf>) -> Self {
        HostOptions {
            data_dir: data_dir.into(),
            plugin_dirs,
            public_url: "http://127.0.0.1:5000".into(),
            addons_domain: None,
            policy: Policy::default(),
            outbound: OutboundPolicy::default(),
            database: None,
            database_options: Default::default(),
            allow_plugin_mismatch: false,
            platform_api: None,
            platform_api_rate: 4500,
            partner_api_rate: 4500,
            trust: crate::tls::Trust::default(),
            allow_plain_http: false,
            outbound_resolver: Default::default(),
        }
    }
}

/// What the operator allows every add-on, whatever its manifest asks: the
/// ceilings on a manifest's `limits`, and each add-on's storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Most `limits.memory_mb` a manifest may ask.
    pub max_memory_mb: u64,
    /// Most `limits.timeout_ms` a manifest may ask.
    pub max_timeout_ms: u64,
    /// Most `limits.concurrency` a manifest may ask.
    pub max_concurrency: u64,
    /// Bytes (keys plus values) each add-on may keep in its KV.
    pub kv_quota_bytes: u64,
    /// Keys each add-on may keep in its KV.
    pub kv_quota_keys: u64,
    /// Audit entries kept of each actor (the user, each add-on, each
    /// platform), the newest; 0 keeps them all.
    pub audit_keep: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_memory_mb: 256,
            max_timeout_ms: 30_000,
            max_concurrency: 256,
            kv_quota_bytes: 1 << 30,
            kv_quota_keys: 1_000_000,
            audit_keep: crate::store::DEFAULT_AUDIT_KEEP,
        }
    }
}

impl Policy {
    /// Whether `m`'s limits are within the ceilings; the error names the
    /// limit, the ceiling and the option that raises it.
    pub fn check(&self, m: &Manifest) -> Result<(), String> {
        let over = |field: &str, asked: u64, max: u64, option: &str| {
            (asked > max).then(|| {
                format!("limits.{field} {asked} is over the operator's ceiling of {max} (raise it with {option})")
            })
        };
        let l = m.limits;
        match over(
            "memory_mb",
            l.memory_mb,
            self.max_memory_mb,
            "--max-memory-mb",
        )
        .or_else(|| {
            over(
                "timeout_ms",
                l.timeout_ms,
                self.max_timeout_ms,
                "--max-timeout-ms",
            )
        })
        .or_else(|| {
            over(
                "concurrency",
                l.concurrency,
                self.max_concurrency,
                "--max-concurrency",
            )
        }) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
