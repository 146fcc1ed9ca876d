//! addonhost's HTTP server: the JSON API, the dashboard, single sign-on, the
//! add-ons' own HTTP routes, and Heroku's protocol both ways (the Partner
//! API of every plugin, the Platform API remote providers call back), on
//! axum.
//!
//! Two kinds of origin share one listener, told apart by the `Host` header:
//! the platform's (the API, the dashboard) and one per add-on
//! (`kv.localhost:5000`: its pages, dashboard and SSO), so that no script an
//! add-on serves ever runs on the platform's origin, where it could read the
//! dashboard. Add-on resources stay reachable on the platform's address for
//! processes too (`/addons/<service>/…`), answered with a sandboxing CSP and
//! never with anyone's identity.
//!
//! The Open Service Broker API answers under its own prefix (`/osb`), with
//! its own credentials ([`osb`]).
//!
//! Handlers are thin: they parse, call [`Host`], and render. State is
//! explicit in [`Server`]: the host, the API token, the broker and the
//! sessions.

#![warn(missing_docs)]

mod addons;
mod api;
mod dashboard;
mod error;
pub mod logs;
pub mod osb;
mod partner;
mod platform_api;
mod sessions;
mod sso;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tower::Service;

use addonhost::Host;
pub use error::MAX_BODY_BYTES;
use sessions::Sessions;

/// How long a dashboard or SSO session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions of each kind held at once.
const MAX_SESSIONS: u64 = 10_000;
/// Most sessions one user holds of one add-on resource: signing in past it
/// drops that user's oldest, never anyone else's.
pub const MAX_SESSIONS_PER_USER: u64 = 10;

/// What a server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Time to send a request's headers, and the most a kept-alive
    /// connection may sit idle.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// A signed-in add-on dashboard session (after SSO).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SsoSession {
    /// The add-on signed in to.
    pub service: String,
    /// Who, as the add-on's `sso.verify` named them.
    pub user: String,
    /// The add-on's id of the resource signed in to.
    pub resource: String,
}

/// Everything the handlers share.
pub struct Server {
    /// The platform it serves.
    pub host: Arc<Host>,
    /// The API bearer token (also the dashboard's sign-in).
    pub token: String,
    /// The email the dashboard user signs in to add-ons as.
    pub email: String,
    /// Bounds on connections and clients.
    pub limits: Limits,
    /// The Open Service Broker API, when it is on.
    pub osb: Option<osb::Broker>,
    /// This process's log lines, for `GET /api/logs`.
    pub logs: logs::LogHub,
    dashboard_sessions: Sessions<()>,
}

impl Server {
    /// A server for `host`, with its API token, the email its dashboard
    /// user signs in to add-ons as, its limits, its service broker (if
    /// the Open Service Broker API is on) and the hub its log lines reach
    /// (a [`logs::LogHub::layer`] of the process's subscriber).
    pub fn new(
        host: Arc<Host>,
        token: String,
        email: String,
        limits: Limits,
        osb: Option<osb::Broker>,
        logs: logs::LogHub,
    ) -> Arc<Server> {
        Arc::new(Server {
            token,
            email,
            limits,
            osb,
            logs,
            dashboard_sessions: Sessions::new(host.clone(), "dashboard", SESSION_TTL, MAX_SESSIONS),
            host,
        })
    }

    /// The SSO sessions of add-on `service` (one kind per add-on, so a
    /// session of one add-on is never one of another).
    fn sso_sessions(&self, service: &str) -> Sessions<SsoSession> {
        Sessions::new(
            self.host.clone(),
            &format!("sso:{service}"),
            SESSION_TTL,
            MAX_SESSIONS,
        )
    }

    /// Whether its cookies are for https only (`--url` is https): then
    /// they are `Secure`, and the session cookies carry the `__Host-`
    /// prefix, which browsers accept only host-only, so no other origin
    /// (an add-on's sibling under `--addons-domain`) can set one.
    fn secure_cookies(&self) -> bool {
        self.host
            .options()
            .public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// `name` as its session cookie is called: `__Host-name` behind https.
    fn session_cookie(&self, name: &str) -> String {
        match self.secure_cookies() {
            true => format!("__Host-{name}"),
            false => name.to_string(),
        }
    }

    /// The attributes every cookie of this server carries: `Secure` behind
    /// https.
    fn cookie_attributes(&self) -> &'static str {
        match self.secure_cookies() {
            true => "; Secure",
            false => "",
        }
    }

    /// Whether `candidate` is this server's API token (constant time).
    fn is_token(&self, candidate: &str) -> bool {
        addonhost::sso::ct_eq(candidate.as_bytes(), self.token.as_bytes())
    }
}

/// The whole application: the add-ons' origins and the platform's routes.
///
/// An axum [`Router`], so it can sit beside routes of your own:
///
/// ```
/// use std::sync::Arc;
/// use addonhost::{Host, HostOptions};
/// use addonhost_server::{app, logs::LogHub, Limits, Server};
/// use axum::routing::get;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # fn main() -> anyhow::Result<()> {
/// # let data = tempfile::tempdir()?;
/// let host = Arc::new(Host::open(HostOptions::new(data.path(), vec![]))?);
/// let server = Server::new(
///     host,
///     "an-api-token".into(),
///     "user@example.com".into(),
///     Limits::default(),
///     None, // no Open Service Broker API
///     LogHub::new(),
/// );
/// let mine = axum::Router::new()
///     .route("/status", get(|| async { "mine\n" }))
///     .merge(app(server));
///
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     tokio::spawn(async move { axum::serve(listener, mine).await });
///     for (path, body) in [("/status", "mine\n"), ("/healthz", "ok\n")] {
///         let mut conn = tokio::net::TcpStream::connect(addr).await?;
///         let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
///         conn.write_all(request.as_bytes()).await?;
///         let mut answer = String::new();
///         conn.read_to_string(&mut answer).await?;
///         assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with(body), "{answer}");
///     }
///     anyhow::Ok(())
/// })
/// # }
/// ```
pub fn app(server: Arc<Server>) -> Router {
    let mut platform = Router::new();
    if let Some(broker) = &server.osb {
        platform = platform.nest(&broker.path, osb::router(server.clone()));
    }
    let platform = platform
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_with_token))
        .nest("/api", api::router(server.clone()))
        .merge(dashboard::router(server.clone()))
        .route("/myapps/{app}/addons/{attachment}", get(sso::start))
        // Provider mode: the Partner API of every plugin.
        .route(
            "/partner/{service}/heroku/resources",
            any(partner::on_platform),
        )
        .route(
            "/partner/{service}/heroku/resources/{*rest}",
            any(partner::on_platform),
        )
        // Platform mode: what remote providers call back.
        .nest("/platform", platform_api::router())
        .route("/addons/{service}", any(addons::consumption))
        .route("/addons/{service}/", any(addons::consumption))
        .route("/addons/{service}/{*rest}", any(addons::consumption))
        .with_state(server.clone())
        .layer(middleware::from_fn(refuse_nul_in_url));
    platform
        .layer(middleware::from_fn_with_state(
            server.clone(),
            addons::route_addon_origins,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            server.limits.body_timeout,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(server, observe_request))
}

/// A percent-encoded NUL in the path or query of a platform route names
/// nothing: no app, add-on, var or id holds one (a process environment
/// cannot, nor can PostgreSQL's text). Refused before any route looks the
/// name up, so a store never sees it.
async fn refuse_nul_in_url(req: Request, next: Next) -> Response {
    let nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    let uri = req.uri();
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return crate::error::json_error(
            axum::http::StatusCode::BAD_REQUEST,
            "the URL holds a NUL character (%00), which no name or id here can hold",
        );
    }
    next.run(req).await
}

/// `GET /metrics` on the main address: the Prometheus text format, for
/// the API token (a scraper's `bearer_token`).
async fn metrics_with_token(
    axum::extract::State(server): axum::extract::State<Arc<Server>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| server.is_token(t)) {
        return error::unauthorized_bearer();
    }
    metrics_page(&server)
}

/// The metrics, read now.
pub fn metrics_page(server: &Server) -> Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.host.metrics_text(),
    )
        .into_response()
}

/// A router serving only `GET /metrics`, without the token: for a separate
/// address only the scraper reaches (`serve --metrics-bind`).
pub fn metrics_app(server: Arc<Server>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Server>>| async move {
                    metrics_page(&s)
                },
            ),
        )
        .with_state(server)
}

/// Serves [`metrics_app`] on `listener` until the process ends.
pub async fn serve_metrics(server: Arc<Server>, listener: TcpListener) {
    if let Err(e) = axum::serve(listener, metrics_app(server)).await {
        tracing::error!("the metrics listener stopped: {e}");
    }
}

/// Which kind of route a request is for, as the metrics' `route` label
/// says it: a fixed set, whatever the path.
fn route_class(server: &Server, req: &Request) -> &'static str {
    if host_of(req).is_some_and(|h| server.host.addon_of_host(&h).is_some()) {
        return "addon_origin";
    }
    let path = req.uri().path();
    if let Some(broker) = &server.osb {
        let prefix = broker.path.as_str();
        if path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return "osb";
        }
    }
    match path.split('/').nth(1).unwrap_or("") {
        "api" => "api",
        "addons" => "consumption",
        "myapps" => "sso",
        "partner" => "partner",
        "platform" => "platform_api",
        "healthz" => "healthz",
        "metrics" => "metrics",
        "" | "apps" | "login" | "logout" | "static" => "dashboard",
        _ => "other",
    }
}

/// Every request: counted and timed by route class and status, logged
/// with `ADDONHOST_LOG=info`, and run in a span carrying its request id
/// (also answered as `x-request-id`), so every line it logs names it.
async fn observe_request(
    axum::extract::State(server): axum::extract::State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let route = route_class(&server, &req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let request_id = sessions::random_id()[..16].to_string();
    // The app or add-on a request is about, as its path names them: what
    // `addonhost logs -a APP` and `--addon ID` pick lines by.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route,
        app = app_of_path(&path),
        addon = addon_of_path(&path)
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let took = started.elapsed();
    let m = server.host.metrics();
    m.http_requests
        .get_or_create(&addonhost::metrics::HttpLabels { route, status })
        .inc();
    m.http_request_seconds
        .get_or_create(&addonhost::metrics::RouteLabel { route })
        .observe(took.as_secs_f64());
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    span.in_scope(|| {
        tracing::info!(
            kind = "request",
            %peer,
            %method,
            path,
            status,
            ms = took.as_millis() as u64,
            "request"
        );
    });
    resp
}

/// The app a platform path names (`/api/apps/shop/…`, `/apps/shop`,
/// `/myapps/shop/addons/…`), or "".
fn app_of_path(path: &str) -> &str {
    let mut segs = path.split('/').skip(1);
    let app = match (segs.next(), segs.next()) {
        (Some("api"), Some("apps")) => segs.next(),
        (Some("apps" | "myapps"), app) => app,
        _ => None,
    };
    app.unwrap_or("")
}

/// The add-on service a resource route names (`/addons/kv/…`), or "".
fn addon_of_path(path: &str) -> &str {
    let mut segs = path.split('/').skip(1);
    match (segs.next(), segs.next()) {
        (Some("addons"), Some(service)) => service,
        _ => "",
    }
}

/// A request's `Host` (its authority, for HTTP/1.1), lowercased.
fn host_of(req: &Request) -> Option<String> {
    req.headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (up to 10 s). Every connection has a header (and idle) timeout, every
/// body a read timeout, and the number of connections is capped.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = server.limits;
    let server_logs = server.logs.clone();
    let app = app(server);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(100);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: wait a moment rather
                        // than spin on the error.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                        )).await;
                    });
                    continue;
                };
                let app = app.clone();
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().call(req.map(axum::body::Body::new))
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Log streams never end by themselves: end them, or they hold the
    // shutdown up.
    server_logs.close();
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("gave up waiting for in-flight requests"),
    }
    Ok(())
}
