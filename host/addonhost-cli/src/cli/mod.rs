//! The `addonhost` command line: Heroku CLI habits (`apps:create`,
//! `addons:create kv:mini -a app`, `config:set K=V`), one file per topic,
//! each a thin layer over [`addonhost::Host`].

mod addons;
mod apps;
mod config;
mod local;
pub mod logs;
mod output;
mod partner;
mod plugins;
mod server;
mod signal;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use addonhost::{Host, HostOptions};

#[derive(Parser, Debug)]
#[command(
    name = "addonhost",
    version,
    about = "Heroku's add-on platform as one host: apps, config vars, releases, and add-ons that run as sandboxed WASM plugins",
    propagate_version = true
)]
// (No doc comment: clap would print it as the long help.)
#[allow(missing_docs)]
pub struct Cli {
    /// Data dir (SQLite store and compiled-plugin cache).
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_DATA",
        default_value = ".addonhost"
    )]
    pub data: PathBuf,
    /// Plugin folders to search, separated by ':' (each holds add-on folders
    /// with an addon-manifest.json).
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_PLUGINS",
        default_value = "plugins"
    )]
    pub plugins: String,
    /// The URL the server is reached at; add-ons build resource URLs on it
    /// [default: http://127.0.0.1:5000, or the address `serve` binds].
    #[arg(long, global = true, env = "ADDONHOST_URL")]
    pub url: Option<String>,
    /// The domain whose subdomains are the add-ons' own origins
    /// (`kv.<domain>`), for their pages and SSO; when set (a domain that
    /// resolves for every client), resource URLs use it too
    /// [default: localhost, with resource URLs on --url].
    #[arg(long, global = true, env = "ADDONHOST_ADDONS_DOMAIN")]
    pub addons_domain: Option<String>,
    /// A PostgreSQL database holding all state, shared by any number of
    /// servers and CLIs (`postgres://user:password@host:port/database`)
    /// [default: SQLite in the data dir].
    #[arg(long, global = true, env = "ADDONHOST_DATABASE_URL")]
    pub database: Option<String>,
    /// The database is reached through a transaction-pooling connection
    /// pooler (PgBouncer with pool_mode = transaction): no named prepared
    /// statements, and no LISTEN but on --database-listen-url.
    #[arg(long, global = true, env = "ADDONHOST_DATABASE_POOLER")]
    pub database_pooler: bool,
    /// A direct connection to the database (not through the pooler) for
    /// LISTEN, so `addonhost local` hears of new releases at once [default:
    /// --database, unless --database-pooler: then releases are polled for].
    #[arg(long, global = true, env = "ADDONHOST_DATABASE_LISTEN_URL")]
    pub database_listen_url: Option<String>,
    /// On a shared database, serve each add-on with this machine's
    /// component even when the platform accepted another one (see
    /// `plugins:deploy`).
    #[arg(long, global = true, env = "ADDONHOST_ALLOW_PLUGIN_MISMATCH")]
    pub allow_plugin_mismatch: bool,
    /// Most memory (MiB) a manifest's limits.memory_mb may ask.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_MAX_MEMORY_MB",
        default_value_t = 256,
        help_heading = "Operator limits"
    )]
    pub max_memory_mb: u64,
    /// Longest deadline (ms) a manifest's limits.timeout_ms may ask.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_MAX_TIMEOUT_MS",
        default_value_t = 30_000,
        help_heading = "Operator limits"
    )]
    pub max_timeout_ms: u64,
    /// Most calls at once a manifest's limits.concurrency may ask.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_MAX_CONCURRENCY",
        default_value_t = 256,
        help_heading = "Operator limits"
    )]
    pub max_concurrency: u64,
    /// Each add-on's KV storage quota in MiB (keys plus values).
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_MAX_KV_MB",
        default_value_t = 1024,
        help_heading = "Operator limits"
    )]
    pub max_kv_mb: u64,
    /// Each add-on's KV storage quota in keys.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_MAX_KV_KEYS",
        default_value_t = 1_000_000,
        help_heading = "Operator limits"
    )]
    pub max_kv_keys: u64,
    /// Audit entries kept of each actor (the user, each add-on, each
    /// platform): the newest; 0 keeps every one.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_AUDIT_KEEP",
        default_value_t = addonhost::store::DEFAULT_AUDIT_KEEP,
        help_heading = "Operator limits"
    )]
    pub audit_keep: u64,
    /// Refuse every outbound HTTP request of every add-on, or (with
    /// `=ADDON,…`) of the add-ons named, whatever their manifests declare.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_DENY_OUTBOUND",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "*",
        value_name = "ADDON,…",
        help_heading = "Operator limits"
    )]
    pub deny_outbound: Option<String>,
    /// The most any add-on may reach over HTTP: `scheme://host[:port]`
    /// patterns, comma-separated; a host an add-on declares outside them is
    /// refused [default: what each add-on declares].
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_OUTBOUND_HOSTS",
        value_delimiter = ',',
        value_parser = allowed_host,
        value_name = "URL,…",
        help_heading = "Operator limits"
    )]
    pub outbound_hosts: Option<Vec<addonhost::outbound::AllowedHost>>,
    /// What one add-on may reach beyond the rest: `ADDON=URL[,URL…]`,
    /// repeatable (`;` between grants in the environment variable). The
    /// only way, besides --outbound-hosts, to a loopback, private or
    /// link-local address an add-on declares.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_OUTBOUND_GRANT",
        value_delimiter = ';',
        value_parser = outbound_grant,
        value_name = "ADDON=URL,…",
        help_heading = "Operator limits"
    )]
    pub outbound_grant: Vec<(String, addonhost::outbound::AllowList)>,
    /// A PEM file of certificate authorities to trust besides Mozilla's
    /// roots, for every HTTPS request this host makes: to remote providers,
    /// to the calling platform, and the add-ons' outbound requests. The only
    /// way to trust a private CA; certificate checks are never turned off.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_EXTRA_CA",
        value_name = "FILE",
        help_heading = "Operator limits"
    )]
    pub extra_ca: Option<PathBuf>,
    /// The DNS server (IP:PORT) add-ons' outbound names are resolved with,
    /// instead of the system's resolver: asked for every request, its
    /// answers kept by nobody. Whatever it answers, a name never reaches a
    /// loopback, private or link-local address.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_OUTBOUND_RESOLVER",
        value_name = "IP:PORT",
        help_heading = "Operator limits"
    )]
    pub outbound_resolver: Option<std::net::SocketAddr>,
    /// Let the host's own client (remote providers, the calling platform)
    /// call plain http:// URLs off the loopback; without it only
    /// 127.0.0.0/8, ::1 and localhost are called without TLS.
    #[arg(
        long,
        global = true,
        env = "ADDONHOST_ALLOW_PLAIN_HTTP",
        help_heading = "Operator limits"
    )]
    pub allow_plain_http: bool,
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

fn allowed_host(s: &str) -> Result<addonhost::outbound::AllowedHost, String> {
    addonhost::outbound::AllowedHost::parse(s.trim())
}

fn outbound_grant(s: &str) -> Result<(String, addonhost::outbound::AllowList), String> {
    addonhost::platform::outbound::parse_grant(s.trim())
}

// Each variant's doc comment is its help line (clap).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List apps.
    #[command(name = "apps")]
    Apps(output::JsonFlag),
    /// Create an app.
    #[command(name = "apps:create")]
    AppsCreate(apps::Create),
    /// Show an app: add-ons, config var count, current release.
    #[command(name = "apps:info")]
    AppsInfo(apps::Info),
    /// Destroy an app, deprovisioning its add-ons.
    #[command(name = "apps:destroy")]
    AppsDestroy(apps::Destroy),
    /// List the add-on services in the catalog.
    #[command(name = "addons:services")]
    AddonsServices(output::JsonFlag),
    /// List the plans of a service.
    #[command(name = "addons:plans")]
    AddonsPlans(addons::Plans),
    /// Provision an add-on and attach it to an app.
    #[command(name = "addons:create")]
    AddonsCreate(addons::Create),
    /// List add-ons (of one app with -a).
    #[command(name = "addons")]
    Addons(addons::List),
    /// Show one add-on.
    #[command(name = "addons:info")]
    AddonsInfo(addons::Info),
    /// Change an add-on's plan.
    #[command(name = "addons:upgrade", alias = "addons:downgrade")]
    AddonsUpgrade(addons::Upgrade),
    /// Rotate an add-on's credentials.
    #[command(name = "addons:rotate")]
    AddonsRotate(addons::Rotate),
    /// Deprovision an add-on and remove its config vars.
    #[command(name = "addons:destroy", alias = "addons:remove")]
    AddonsDestroy(addons::Destroy),
    /// Show an app's config vars.
    #[command(name = "config")]
    Config(config::Show),
    /// Print one config var's value.
    #[command(name = "config:get")]
    ConfigGet(config::Get),
    /// Set config vars (NAME=value …) in one release.
    #[command(name = "config:set")]
    ConfigSet(config::Set),
    /// Remove config vars in one release.
    #[command(name = "config:unset")]
    ConfigUnset(config::Unset),
    /// List an app's releases, newest first.
    #[command(name = "releases")]
    Releases(config::Releases),
    /// Run a command with the app's config vars in its environment.
    #[command(name = "run")]
    Run(config::Run),
    /// Run the Procfile's processes with the app's config vars; restart them
    /// on every new release.
    #[command(name = "local")]
    Local(local::Local),
    /// Show the audit trail (who changed what, refused add-on writes).
    #[command(name = "audit")]
    Audit(config::Audit),
    /// List plugins: id, language, component hash, status.
    #[command(name = "plugins")]
    Plugins(output::JsonFlag),
    /// Scaffold a working add-on in Rust, Python or JavaScript.
    #[command(name = "plugins:new")]
    PluginsNew(plugins::New),
    /// Build add-on folders (Rust, Python or JavaScript) into components next
    /// to their manifests, installing the language toolchain on first use.
    #[command(name = "plugins:build")]
    PluginsBuild(plugins::Build),
    /// Rebuild an add-on on every change to its sources; a running `serve`
    /// hot-reloads each good build.
    #[command(name = "plugins:dev")]
    PluginsDev(plugins::Dev),
    /// Check an add-on folder against the contract (like Heroku's kensa).
    #[command(name = "plugins:check")]
    PluginsCheck(plugins::Check),
    /// Confirm that an add-on folder may serve its id in this data dir
    /// (after the folder moved).
    #[command(name = "plugins:trust")]
    PluginsTrust(plugins::Trust),
    /// Accept an add-on folder's component for every server sharing the
    /// database (a rolling deploy; `--only` ends it).
    #[command(name = "plugins:deploy")]
    PluginsDeploy(plugins::Deploy),
    /// Print the Heroku add-on manifest of a plugin served in provider mode
    /// (`serve` answers its Partner API under `<url>/partner/<service>`).
    #[command(name = "partner:manifest")]
    PartnerManifest(partner::Manifest),
    /// List the changes calling platforms are owed (provider mode): pending,
    /// being delivered, or given up on and why.
    #[command(name = "partner:pending")]
    PartnerPending(partner::Pending),
    /// Deliver again the owed changes given up on (all, or those of the
    /// uuids named); a running `serve` sends them.
    #[command(name = "partner:retry")]
    PartnerRetry(partner::Retry),
    /// Print the SSO URL of an add-on's dashboard.
    #[command(name = "addons:open")]
    AddonsOpen(server::Open),
    /// Run the server: JSON API, dashboard, SSO and the add-ons' HTTP routes.
    #[command(name = "serve")]
    Serve(server::Serve),
    /// Stream a running server's log lines: plugin output, plugin calls,
    /// requests, refusals (`--tail`; `-a APP`, `--addon ID` to narrow).
    #[command(name = "logs")]
    Logs(logs::Logs),
    /// Print the API bearer token (created on first use).
    #[command(name = "auth:token")]
    AuthToken,
    /// Print the Open Service Broker credentials (created on first use) and
    /// the command that registers the broker with Cloud Foundry.
    #[command(name = "osb:credentials")]
    OsbCredentials(server::OsbCredentials),
}

impl Cli {
    pub(crate) fn options(&self) -> anyhow::Result<HostOptions> {
        let mut opts = HostOptions::new(&self.data, std::env::split_paths(&self.plugins).collect());
        if let Some(url) = &self.url {
            opts.public_url = url.clone();
        }
        opts.addons_domain = self.addons_domain.clone();
        opts.database = self.database.clone();
        opts.database_options = addonhost::store::PgOptions {
            pooler: self.database_pooler,
            listen_url: self.database_listen_url.clone(),
        };
        opts.allow_plugin_mismatch = self.allow_plugin_mismatch;
        opts.outbound = addonhost::platform::OutboundPolicy {
            deny: match &self.deny_outbound {
                Some(ids) => addonhost::platform::Deny::parse(ids),
                None => addonhost::platform::Deny::Nobody,
            },
            ceiling: self
                .outbound_hosts
                .clone()
                .map(addonhost::outbound::AllowList),
            ..Default::default()
        };
        for (id, list) in &self.outbound_grant {
            opts.outbound.grant_to(id, list.clone());
        }
        opts.policy = addonhost::platform::Policy {
            max_memory_mb: self.max_memory_mb,
            max_timeout_ms: self.max_timeout_ms,
            max_concurrency: self.max_concurrency,
            kv_quota_bytes: self.max_kv_mb.saturating_mul(1 << 20),
            kv_quota_keys: self.max_kv_keys,
            audit_keep: self.audit_keep,
        };
        if let Some(ca) = &self.extra_ca {
            opts.trust = addonhost::tls::Trust::with_extra_ca(ca)?;
        }
        opts.allow_plain_http = self.allow_plain_http;
        if let Some(server) = self.outbound_resolver {
            opts.outbound_resolver = addonhost::runtime::outbound::Resolver::dns(server);
        }
        Ok(opts)
    }

    pub(crate) fn host(&self) -> anyhow::Result<Host> {
        Ok(Host::open(self.options()?)?)
    }
}

/// Runs the parsed command; the `Ok` value is the process exit code.
/// `logs` is the hub this process's log lines reach (what `serve` streams
/// at `GET /api/logs`).
pub async fn run(cli: Cli, logs: addonhost_server::logs::LogHub) -> anyhow::Result<i32> {
    match &cli.command {
        Command::PluginsBuild(b) => return plugins::build(&cli, b).map(|_| 0),
        Command::PluginsNew(n) => return plugins::new(n).map(|_| 0),
        Command::PluginsDev(d) => return plugins::dev(&cli, d).map(|_| 0),
        Command::Serve(s) => return server::serve(&cli, s, logs).await.map(|_| 0),
        Command::Logs(l) => return logs::run(&cli, l).await.map(|_| 0),
        Command::AuthToken => {
            let token = match cli.database {
                Some(_) => addonhost_server::token::for_host(&cli.host()?)?,
                None => addonhost_server::token::load_or_create(&cli.data)?,
            };
            println!("{token}");
            return Ok(0);
        }
        Command::OsbCredentials(o) => return server::osb_credentials(&cli, o).map(|_| 0),
        Command::Run(r) => return config::run(&cli.host()?, r).await,
        Command::Local(l) => return local::run(&cli.host()?, l).await,
        Command::PluginsCheck(c) => return plugins::check(&cli, c).await,
        _ => {}
    }
    let host = cli.host()?;
    match &cli.command {
        Command::Apps(j) => apps::list(&host, j),
        Command::AppsCreate(c) => apps::create(&host, c),
        Command::AppsInfo(i) => apps::info(&host, i),
        Command::AppsDestroy(d) => apps::destroy(&host, d).await,
        Command::AddonsServices(j) => addons::services(&host, j),
        Command::AddonsPlans(p) => addons::plans(&host, p),
        Command::AddonsCreate(c) => addons::create(&host, c).await,
        Command::Addons(l) => addons::list(&host, l),
        Command::AddonsInfo(i) => addons::info(&host, i),
        Command::AddonsUpgrade(u) => addons::upgrade(&host, u).await,
        Command::AddonsRotate(r) => addons::rotate(&host, r).await,
        Command::AddonsDestroy(d) => addons::destroy(&host, d).await,
        Command::Config(s) => config::show(&host, s),
        Command::ConfigGet(g) => config::get(&host, g),
        Command::ConfigSet(s) => config::set(&host, s),
        Command::ConfigUnset(u) => config::unset(&host, u),
        Command::Releases(r) => config::releases(&host, r),
        Command::Audit(a) => config::audit(&host, a),
        Command::Plugins(j) => plugins::list(&host, j),
        Command::AddonsOpen(o) => server::open(&host, o),
        Command::PartnerManifest(m) => partner::manifest(&host, m),
        Command::PartnerPending(p) => partner::pending(&host, p),
        Command::PartnerRetry(r) => partner::retry(&host, r).await,
        Command::PluginsTrust(t) => plugins::trust(&host, t),
        Command::PluginsDeploy(d) => plugins::deploy(&host, d),
        Command::PluginsBuild(_)
        | Command::PluginsNew(_)
        | Command::PluginsDev(_)
        | Command::Run(_)
        | Command::Local(_)
        | Command::PluginsCheck(_)
        | Command::Serve(_)
        | Command::Logs(_)
        | Command::AuthToken
        | Command::OsbCredentials(_) => {
            unreachable!("handled above")
        }
    }?;
    Ok(0)
}
