//! `addonhost serve`: the JSON API, the dashboard, single sign-on and the
//! add-ons' own HTTP routes, on hyper.
//!
//! Handlers are thin: they parse, call [`Host`], and render. State is
//! explicit in [`Server`]: the host, the API token and the sessions.

mod api;
mod dashboard;
mod sso;
pub mod token;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use addonhost::Host;
use web::{Req, Resp};

/// Largest request body the server reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a dashboard or SSO session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A signed-in add-on dashboard session (after SSO).
#[derive(Debug, Clone)]
pub struct SsoSession {
    pub service: String,
    pub user: String,
    pub resource: String,
    pub expires: Instant,
}

/// Everything the handlers share.
pub struct Server {
    pub host: Arc<Host>,
    pub token: String,
    /// The email the dashboard user signs in to add-ons as.
    pub email: String,
    dashboard_sessions: Mutex<HashMap<String, Instant>>,
    sso_sessions: Mutex<HashMap<String, SsoSession>>,
}

impl Server {
    pub fn new(host: Arc<Host>, token: String, email: String) -> Arc<Server> {
        Arc::new(Server {
            host,
            token,
            email,
            dashboard_sessions: Mutex::new(HashMap::new()),
            sso_sessions: Mutex::new(HashMap::new()),
        })
    }

    fn new_dashboard_session(&self) -> String {
        let id = web::random_id();
        let mut s = self
            .dashboard_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.retain(|_, exp| *exp > Instant::now());
        s.insert(id.clone(), Instant::now() + SESSION_TTL);
        id
    }

    fn dashboard_session_valid(&self, id: &str) -> bool {
        let s = self
            .dashboard_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.get(id).is_some_and(|exp| *exp > Instant::now())
    }

    fn end_dashboard_session(&self, id: &str) {
        self.dashboard_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn new_sso_session(&self, session: SsoSession) -> String {
        let id = web::random_id();
        let mut s = self.sso_sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, v| v.expires > Instant::now());
        s.insert(id.clone(), session);
        id
    }

    /// The SSO session `id` names, if it is for `service` and still valid.
    fn sso_session(&self, id: &str, service: &str) -> Option<SsoSession> {
        let s = self.sso_sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.get(id)
            .filter(|v| v.service == service && v.expires > Instant::now())
            .cloned()
    }

    /// Routes one request.
    async fn route(self: &Arc<Self>, req: Req) -> Resp {
        let segs: Vec<String> = req.segments();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["healthz"] => Resp::text(200, "ok\n"),
            ["api", rest @ ..] => api::route(self, &req, rest).await,
            ["addons", service, "sso", "login"] if req.method == http::Method::POST => {
                sso::login(self, &req, service).await
            }
            ["addons", service, ..] => sso::addon_route(self, req.clone(), service).await,
            ["myapps", app, "addons", attachment] => sso::start(self, &req, app, attachment),
            _ => dashboard::route(self, &req, &segs).await,
        }
    }
}

async fn handle(
    server: Arc<Server>,
    request: http::Request<Incoming>,
    peer: SocketAddr,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (parts, body) = request.into_parts();
    let resp = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => {
            let req = Req::new(parts, collected.to_bytes());
            server.route(req).await
        }
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Resp::json_error(413, &format!("request body over {MAX_BODY_BYTES} bytes"))
        }
        Err(e) => Resp::json_error(400, &format!("cannot read the request body: {e}")),
    };
    let status = resp.status;
    tracing::info!(%peer, %method, path, status, ms = started.elapsed().as_millis() as u64, "request");
    Ok(resp.into_hyper())
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (up to 10 s).
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let server = server.clone();
                let svc = service_fn(move |req| handle(server.clone(), req, peer));
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("gave up waiting for in-flight requests"),
    }
    Ok(())
}
