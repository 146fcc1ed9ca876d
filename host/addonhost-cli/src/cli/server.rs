//! `serve`, `addons:open`.

use std::net::IpAddr;
use std::sync::Arc;

use clap::Args;

use super::Cli;
use addonhost::Host;
use addonhost_server::{self as server, Server};

#[derive(Args, Debug)]
pub struct Serve {
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// The email the dashboard user signs in to add-ons as.
    #[arg(long, env = "ADDONHOST_EMAIL", default_value = "owner@addonhost.local")]
    pub email: String,
    /// Connections open at once; past it new ones get a 503.
    #[arg(long, default_value_t = 8192)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and the longest a
    /// kept-alive connection may sit idle).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value_t = 10)]
    pub body_timeout: u64,
    /// Provider mode: the Platform API base of the platform calling this
    /// server's add-ons, where their own config updates and async
    /// completions go; the only platform called back (a provision request
    /// whose callback_url is elsewhere is refused) [default:
    /// https://api.heroku.com].
    #[arg(long, env = "ADDONHOST_PLATFORM_API")]
    pub platform_api: Option<String>,
    /// Platform API requests an hour each add-on's partner may make (a
    /// bucket that size, refilled continuously, per server; 0: no limit).
    /// Past it the Platform API answers 429 with Retry-After.
    #[arg(long, env = "ADDONHOST_PLATFORM_API_RATE", default_value_t = 4500)]
    pub platform_api_rate: u32,
    /// Provider mode: Partner API requests an hour each add-on's partner
    /// credential may make (a bucket that size, refilled continuously, per
    /// server; 0: no limit). Past it the Partner API answers 429 with
    /// Retry-After, and nothing is written.
    #[arg(long, env = "ADDONHOST_PARTNER_API_RATE", default_value_t = 4500)]
    pub partner_api_rate: u32,
    /// Where the Open Service Broker API answers (`addonhost osb:credentials`
    /// prints its credentials).
    #[arg(long, env = "ADDONHOST_OSB_PATH", default_value = "/osb")]
    pub osb_path: String,
    /// Turn the Open Service Broker API off.
    #[arg(long)]
    pub no_osb: bool,
    /// Also serve `GET /metrics` on this address, without the API token
    /// (for a scraper on a private network); on the main address it needs
    /// the token.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

/// `osb:credentials`.
#[derive(Args, Debug)]
pub struct OsbCredentials {
    #[command(flatten)]
    pub json: super::output::JsonFlag,
}

/// A broker path: `/` and one or more segments, no trailing slash.
fn check_osb_path(path: &str) -> anyhow::Result<String> {
    let trimmed = path.trim_end_matches('/');
    let ok = trimmed.starts_with('/')
        && trimmed.len() > 1
        && trimmed[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if !ok {
        anyhow::bail!(
            "--osb-path {path:?} is not a path like /osb (a slash, then segments of letters, digits, '-', '.', '_', '~')"
        );
    }
    for taken in [
        "/api",
        "/addons",
        "/myapps",
        "/apps",
        "/login",
        "/logout",
        "/healthz",
        "/partner",
        "/platform",
    ] {
        if trimmed == taken || trimmed.starts_with(&format!("{taken}/")) {
            anyhow::bail!("--osb-path {path:?} is inside the platform's own {taken} routes");
        }
    }
    Ok(trimmed.to_string())
}

#[derive(Args, Debug)]
pub struct Open {
    pub addon: String,
    #[arg(short, long)]
    pub app: String,
}

/// Connections the kernel queues before the server accepts them (capped by
/// `net.core.somaxconn`). Tokio's own `bind` queues 1,024: a thousand
/// clients flooding one add-on filled it, and another client's connection
/// then waited for its SYN to be sent again (a second or more).
const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// tokio's `bind` sets it).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub async fn serve(
    cli: &Cli,
    s: &Serve,
    logs: addonhost_server::logs::LogHub,
) -> anyhow::Result<()> {
    let listener = listen(std::net::SocketAddr::new(s.bind, s.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", s.bind, s.port))?;
    let addr = listener.local_addr()?;
    let mut opts = cli.options()?;
    if cli.url.is_none() {
        opts.public_url = format!("http://{addr}");
    }
    if let Some(p) = &s.platform_api {
        // Grants and tokens go there: over TLS, or to the loopback.
        if let Some(why) = addonhost::platform::remote_http::refused(p, opts.allow_plain_http) {
            anyhow::bail!("--platform-api {p}: {why}");
        }
    }
    opts.platform_api = s.platform_api.clone();
    opts.platform_api_rate = s.platform_api_rate;
    opts.partner_api_rate = s.partner_api_rate;
    let host = Arc::new(Host::open(opts)?);
    for (id, e) in host.load_all() {
        tracing::error!(addon = %id, "not loaded: {e}");
        eprintln!("warning: add-on {id} is not loaded: {e}");
    }
    for b in &host.catalog().broken {
        eprintln!("warning: {}: {}", b.dir.display(), b.error);
    }
    // Hot reload: plugin changes are compiled in the background and swapped in.
    crate::reload::watch(host.clone())?;
    // Scheduled credential rotation (manifests with rotation.every_seconds).
    let scheduler = host.clone();
    tokio::spawn(async move {
        loop {
            scheduler.rotate_due();
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    // Provider mode: what calling platforms are owed, delivered (on a
    // shared store, each entry by one server).
    tokio::spawn(host.clone().deliver_owed());
    let token = server::token::for_host(&host)?;
    let osb = match s.no_osb {
        true => None,
        false => Some(server::osb::Broker {
            path: check_osb_path(&s.osb_path)?,
            credentials: server::osb::credentials::for_host(&host)?,
        }),
    };
    // On a shared store: say this server is up, with the components it
    // runs, every few seconds (GET /api/servers lists the servers heard of).
    let beating = host.clone();
    let address = format!("http://{addr}");
    let heartbeat = tokio::spawn(async move {
        loop {
            if let Err(e) = beating.heartbeat(&address).await {
                tracing::warn!("heartbeat not recorded: {e:#}");
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let limits = server::Limits {
        max_connections: s.max_connections,
        header_timeout: std::time::Duration::from_secs(s.header_timeout),
        body_timeout: std::time::Duration::from_secs(s.body_timeout),
    };
    let broker = osb
        .as_ref()
        .map(|b| {
            format!(
                ", service broker: http://{addr}{} (`addonhost osb:credentials`)",
                b.path
            )
        })
        .unwrap_or_default();
    let server = Server::new(host.clone(), token, s.email.clone(), limits, osb, logs);
    if let Some(bind) = s.metrics_bind {
        let metrics = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind} for metrics: {e}"))?;
        eprintln!(
            "addonhost metrics on http://{}/metrics",
            metrics.local_addr()?
        );
        tokio::spawn(server::serve_metrics(server.clone(), metrics));
    }
    eprintln!(
        "addonhost serving on http://{addr} (dashboard: http://{addr}/, API token: `addonhost auth:token`{broker})"
    );
    let served = server::serve(server, listener, super::signal::shutdown_signal()).await;
    heartbeat.abort();
    if let Err(e) = host.leave().await {
        tracing::warn!("cannot take this server off the list: {e:#}");
    }
    served
}

/// Prints the broker's credentials (made on first use) and how to register
/// the broker with a platform.
pub fn osb_credentials(cli: &Cli, o: &OsbCredentials) -> anyhow::Result<()> {
    let c = match cli.database {
        Some(_) => server::osb::credentials::for_host(&cli.host()?)?,
        None => server::osb::credentials::load_or_create(&cli.data)?,
    };
    let url = format!(
        "{}/osb",
        cli.url
            .as_deref()
            .unwrap_or("http://127.0.0.1:5000")
            .trim_end_matches('/')
    );
    if o.json.json {
        println!(
            "{}",
            serde_json::json!({ "username": c.username, "password": c.password, "url": url })
        );
        return Ok(());
    }
    println!("Broker URL: {url}   (serve --osb-path changes /osb)");
    println!("Username:   {}", c.username);
    println!("Password:   {}", c.password);
    println!();
    println!(
        "  cf create-service-broker addonhost {} {} {url}",
        c.username, c.password
    );
    Ok(())
}

pub fn open(host: &Host, o: &Open) -> anyhow::Result<()> {
    let addon = host.addon_info(&o.addon, Some(&o.app))?;
    let attachment = addon
        .attachments
        .iter()
        .find_map(|t| t.strip_prefix(&format!("{}::", o.app)))
        .unwrap_or(&o.addon)
        .to_string();
    println!(
        "{}/myapps/{}/addons/{}",
        host.options().public_url.trim_end_matches('/'),
        o.app,
        attachment
    );
    Ok(())
}
