//! Outbound HTTP: an add-on calling its partner's backend through
//! `wasi:http/outgoing-handler`, to the hosts its call was granted and
//! nowhere else.
//!
//! Every request of a call is checked here, by the host, whatever the guest
//! does:
//! - its scheme, host and port must be within the call's [`Grant`] (the
//!   manifest's `outbound.allowed_hosts` as the operator narrowed them);
//! - the host resolves the name itself, checks every address, and connects
//!   to the address it checked: a name never leads to a loopback, private,
//!   link-local or otherwise non-public address — only a pattern naming the
//!   address itself does — so no DNS answer (rebinding included) reaches
//!   127.0.0.1 or 169.254.169.254;
//! - redirects are not followed: a 3xx goes back to the add-on as it is,
//!   and a request it makes to follow one is checked like any other;
//! - connecting has [`OUTBOUND_CONNECT_TIMEOUT`], and the whole request —
//!   body included — ends a margin before the call's own deadline, so the
//!   add-on gets an error it can answer with instead of being cut off;
//! - a call makes at most [`MAX_OUTBOUND_REQUESTS`] requests (the next one
//!   ends the call, like every budget), has at most
//!   [`MAX_OUTBOUND_IN_FLIGHT`] of them open at once (the next waits) and
//!   receives at most [`MAX_OUTBOUND_RESPONSE_BYTES`](super::limits::MAX_OUTBOUND_RESPONSE_BYTES) of response bodies;
//! - the host adds nothing to a request but its `host` header: no platform
//!   credential, cookie or proxy setting ever leaves with it.
//!
//! Refusals are reported to the add-on as `internal-error` with a sentence
//! saying what was refused and why, and kept for the call's capabilities
//! (the audit trail, `plugins:check`). Every request is counted in the
//! metrics by add-on and outcome (`addonhost_outbound_requests_total`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

mod body;
mod lookup;

pub use lookup::{Resolver, MAX_LOOKUPS, MAX_LOOKUPS_PER_ADDON};

use super::limits::{
    BudgetExceeded, MAX_OUTBOUND_IN_FLIGHT, MAX_OUTBOUND_REQUESTS, OUTBOUND_CONNECT_TIMEOUT,
};
use super::CallState;
use crate::metrics::Metrics;
use crate::outbound::{self, AllowList, Target, TargetHost};
use body::{declared_over_cap, over_cap, Capped};
#[cfg(test)]
use lookup::{lookup, system_lookup};

/// What one call may reach: its add-on's allowed hosts as the operator
/// narrowed them, and, when the operator cut them, how (for messages).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The hosts the call may reach (shared: most calls get
    /// [`AllowList::none`]).
    pub allowed: Arc<AllowList>,
    /// The operator's option that narrowed or emptied the add-on's list.
    pub narrowed_by: Option<&'static str>,
    /// Non-public addresses the add-on declares that the operator has not
    /// granted (for messages: they are not in `allowed`).
    pub not_granted: Arc<AllowList>,
    /// The roots an `https` request's certificate must chain to (Mozilla's,
    /// and the operator's `--extra-ca`): the same as the host's own client.
    pub trust: crate::tls::Trust,
    /// Where names are resolved (the operator's `--outbound-resolver`, or
    /// the system's).
    pub resolver: Resolver,
}

impl Grant {
    /// Nothing: what a call gets unless its add-on declared hosts.
    pub fn none() -> Grant {
        Grant {
            allowed: AllowList::none(),
            narrowed_by: None,
            not_granted: AllowList::none(),
            trust: crate::tls::Trust::default(),
            resolver: Resolver::default(),
        }
    }
}

/// One refused outbound request: (URL, why).
pub type Refusal = (String, String);

/// What the requests of one call share, with the tasks that carry them.
struct Spent {
    /// Response body bytes received, all requests together.
    received: AtomicU64,
    refusals: Mutex<Vec<Refusal>>,
    /// A permit per open request; held until its connection ends.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Where each request's outcome is counted, under this add-on.
    addon: String,
    metrics: Arc<Metrics>,
}

impl Spent {
    fn record(&self, outcome: &'static str) {
        self.metrics.outbound_request(&self.addon, outcome);
    }

    fn refuse(&self, url: &str, why: &str) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        // The budget caps requests, so this stays small.
        r.push((url.to_string(), why.to_string()));
    }
}

/// The `wasi:http` hooks of one call: where its requests may go, by when
/// they must end, and what they have spent.
pub struct Outbound {
    grant: Grant,
    /// When every request of the call must be over.
    until: Instant,
    /// Requests made so far.
    requests: usize,
    spent: Arc<Spent>,
}

impl Outbound {
    /// The hooks of a call of `addon` granted `grant`, whose deadline is
    /// `deadline` (`timeout_ms` after its start), counting its requests in
    /// `metrics`.
    pub fn new(
        addon: &str,
        grant: Grant,
        deadline: Instant,
        timeout_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Outbound {
        Outbound {
            grant,
            until: deadline - margin(timeout_ms),
            requests: 0,
            spent: Arc::new(Spent {
                received: AtomicU64::new(0),
                refusals: Mutex::default(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_OUTBOUND_IN_FLIGHT)),
                addon: addon.to_string(),
                metrics,
            }),
        }
    }

    /// Counts one request against the call's budget.
    fn count(&mut self) -> Result<(), BudgetExceeded> {
        self.requests += 1;
        if self.requests > MAX_OUTBOUND_REQUESTS {
            self.spent.record("over_budget");
            return Err(BudgetExceeded(format!(
                "more than {MAX_OUTBOUND_REQUESTS} outbound HTTP requests in one call"
            )));
        }
        Ok(())
    }

    /// The requests refused so far (each once).
    pub fn take_refusals(&self) -> Vec<Refusal> {
        std::mem::take(
            &mut *self
                .spent
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Where `request` goes, if its URL is within the grant.
    fn plan(&self, request: &http::Request<WasiBody>) -> Result<Plan, String> {
        let uri = request.uri();
        let url = uri.to_string();
        let refused = |why: String| format!("outbound request to {url} refused: {why}");
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(refused(
                "credentials in the URL are not sent; put them in a header".into(),
            ));
        }
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(refused("the URL has no scheme or host".into()));
        };
        let target = Target::new(scheme, host, uri.port_u16()).map_err(refused)?;
        if self.grant.allowed.find(&target).is_none() {
            if let Some(p) = self.grant.not_granted.find(&target) {
                return Err(refused(format!(
                    "{p} is declared but not granted: a loopback, private or link-local address is \
                     reached only with the operator's consent (--outbound-grant {}={p}, or --outbound-hosts)",
                    self.spent.addon
                )));
            }
            let how = match self.grant.narrowed_by {
                Some(option) => format!(" (the operator's {option} narrowed what it declared)"),
                None => String::new(),
            };
            return Err(refused(format!(
                "{target} is not among the hosts add-on {} may reach: {}{how}; declare it in outbound.allowed_hosts",
                self.spent.addon,
                self.grant.allowed.describe()
            )));
        }
        Ok(Plan {
            url,
            target,
            allowed: self.grant.allowed.clone(),
            trust: self.grant.trust.clone(),
            resolver: self.grant.resolver.clone(),
            until: self.until,
            spent: self.spent.clone(),
        })
    }
}

/// How long before the call's deadline its requests must end: a tenth of
/// the deadline, from 20 ms to half a second — the add-on's time to turn an
/// error into an answer.
fn margin(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 10).clamp(20, 500))
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        match self.plan(&request) {
            Ok(plan) => Box::new(plan.send(request, options)),
            Err(message) => {
                self.spent.record("refused");
                self.spent.refuse(&request.uri().to_string(), &message);
                Box::new(async move { Err(Error::InternalError(Some(message))) })
            }
        }
    }
}

/// Hooks that refuse every outgoing request, for an embedding of
/// `wasi:http` with no outbound access at all (the benchmark's bare
/// baseline).
pub struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

/// Links `wasi:http/outgoing-handler`: each `handle` counts the request
/// against the call's budget — ending the call past it, as every budget
/// does — then hands it to wasi:http, which calls [`Outbound::send_request`].
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut instance = linker.instance("wasi:http/outgoing-handler@0.2.12")?;
    instance.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, CallState>,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<RequestOptions>>,
        )| {
            let state = store.data_mut();
            state.http_hooks.count()?;
            let mut view = state.http();
            match outgoing_handler::Host::handle(&mut view, request, options) {
                Ok(future) => Ok((Ok::<_, ErrorCode>(future),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )
}

/// A request found within the grant, on its way.
struct Plan {
    /// For messages.
    url: String,
    target: Target,
    allowed: Arc<AllowList>,
    trust: crate::tls::Trust,
    resolver: Resolver,
    until: Instant,
    spent: Arc<Spent>,
}

/// Why a request failed, as the metrics' `outcome` says it, and the error
/// the add-on gets.
struct Failure(&'static str, Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure("failed", e)
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Plan {
    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::InternalError(Some(format!("outbound request to {}: {what}", self.url)))
    }

    fn timed_out(&self, started: Instant) -> Failure {
        Failure(
            "timeout",
            self.error(format!(
                "timed out after {} ms (outbound requests end before the call's deadline)",
                started.elapsed().as_millis()
            )),
        )
    }

    /// Sends `request` and counts how it went.
    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let spent = self.spent.clone();
        match self.exchange(request, options).await {
            Ok(answered) => {
                spent.record("answered");
                Ok(answered)
            }
            Err(Failure(outcome, e)) => {
                spent.record(outcome);
                Err(e)
            }
        }
    }

    async fn exchange(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Failure> {
        let waiting = Instant::now();
        let acquire = self.spent.in_flight.clone().acquire_owned();
        let permit = match tokio::time::timeout_at(self.until.into(), acquire).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(self.error("the call has ended").into()),
            Err(_) => {
                return Err(Failure(
                    "timeout",
                    self.error(format!(
                        "timed out after {} ms waiting for one of the call's {MAX_OUTBOUND_IN_FLIGHT} open requests to end (outbound requests end before the call's deadline)",
                        waiting.elapsed().as_millis()
                    )),
                ))
            }
        };
        let started = Instant::now();
        let options = options.unwrap_or_default();
        let connect_by = earliest(
            self.until,
            started + options.connect_timeout.unwrap_or(OUTBOUND_CONNECT_TIMEOUT),
        );
        let connect_by = earliest(connect_by, started + OUTBOUND_CONNECT_TIMEOUT);
        let stream = match tokio::time::timeout_at(connect_by.into(), self.connect()).await {
            Ok(stream) => stream?,
            // The connect limit ran out, not the call's time: say which.
            Err(_) if connect_by < self.until => {
                return Err(Failure(
                    "timeout",
                    self.error(format!(
                        "could not connect within {} ms (resolving and connecting end after {} s, or the request's own connect timeout when shorter)",
                        started.elapsed().as_millis(),
                        OUTBOUND_CONNECT_TIMEOUT.as_secs()
                    )),
                ))
            }
            Err(_) => return Err(self.timed_out(started)),
        };
        // Origin form on the wire: the scheme and authority are the
        // connection's.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = path.parse().map_err(|e| self.error(e))?;
        let head_by = match options.first_byte_timeout {
            Some(t) => earliest(self.until, Instant::now() + t),
            None => self.until,
        };
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                .handshake::<_, WasiBody>(wasmtime_wasi_http::io::TokioIo::new(stream))
                .await
                .map_err(|e| self.error(format_args!("HTTP handshake: {e}")))?;
            // The connection is driven while the answer is awaited; it may
            // end first (a server that closes after answering), and then the
            // answer, or why there is none, is already in `send`.
            let mut conn = Some(Box::pin(conn));
            let send = sender.send_request(request);
            tokio::pin!(send);
            let response = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(|e| self.error(e)));
                }
                if let Some(c) = conn.as_mut() {
                    if let Poll::Ready(ended) = c.as_mut().poll(cx) {
                        conn = None;
                        if let Err(e) = ended {
                            return Poll::Ready(Err(self.error(e)));
                        }
                        return send.as_mut().poll(cx).map(|r| r.map_err(|e| self.error(e)));
                    }
                }
                Poll::Pending
            })
            .await?;
            Ok::<_, Error>((response, conn))
        };
        let (response, conn) = match tokio::time::timeout_at(head_by.into(), exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(self.timed_out(started)),
        };
        let already = self.spent.received.load(Ordering::Relaxed);
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(total) = declared.and_then(|length| declared_over_cap(already, length)) {
            return Err(Failure("too_large", self.error(over_cap(total))));
        }
        let body = Capped {
            url: self.url.clone(),
            started,
            deadline: Box::pin(tokio::time::sleep_until(self.until.into())),
            spent: self.spent.clone(),
        };
        let response = response.map(move |incoming| body.wrap(incoming));
        let io: IoFuture = Box::new(async move {
            // The request counts as open until its connection ends.
            let _permit = permit;
            match conn {
                Some(conn) => conn.await.map_err(Error::from),
                None => Ok(()),
            }
        });
        Ok((response, io))
    }

    /// Resolves the target, checks every address, connects to a checked
    /// one, and speaks TLS over it for `https`.
    async fn connect(&self) -> Result<Box<dyn Stream>, Failure> {
        let port = self.target.port;
        let addrs: Vec<SocketAddr> = match &self.target.host {
            TargetHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            TargetHost::Name(name) => self
                .resolver
                .resolve(&self.spent.addon, name, port)
                .await
                .map_err(|e| self.error(format_args!("resolving {name}: {e}")))?,
        };
        if addrs.is_empty() {
            return Err(self
                .error(format_args!("{} has no address", self.target.host))
                .into());
        }
        for addr in &addrs {
            let ip = outbound::canonical(addr.ip());
            if let Some(kind) = outbound::non_public(ip) {
                if !self.allowed.names_address(&self.target, ip) {
                    let why = format!(
                        "{} resolved to {ip}, a {kind} address: refused (a non-public address is reached only when declared as itself, as in {}://{}:{port})",
                        self.target.host,
                        self.target.scheme.as_str(),
                        TargetHost::Ip(ip),
                    );
                    let message = format!("outbound request to {} refused: {why}", self.url);
                    self.spent.refuse(&self.url, &message);
                    return Err(Failure("refused", Error::InternalError(Some(message))));
                }
            }
        }
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            // The address just checked, never the name again: what was
            // checked is what is reached.
            match TcpStream::connect(*addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("connecting to {addr}: {e}")),
            }
        }
        let Some(tcp) = tcp else {
            return Err(self.error(last.unwrap_or_default()).into());
        };
        let _ = tcp.set_nodelay(true);
        match self.target.scheme {
            outbound::Scheme::Http => Ok(Box::new(tcp)),
            outbound::Scheme::Https => {
                use tokio_rustls::rustls::pki_types::ServerName;
                let name = match &self.target.host {
                    TargetHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
                    TargetHost::Name(n) => ServerName::try_from(n.clone())
                        .map_err(|e| self.error(format_args!("TLS server name {n}: {e}")))?,
                };
                let tls = tokio_rustls::TlsConnector::from(self.trust.client_config())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| match crate::tls::explain(&e) {
                        Some(why) => self.error(format_args!("TLS: {why}")),
                        None => self.error(format_args!("TLS: {e}")),
                    })?;
                Ok(Box::new(tls))
            }
        }
    }
}

fn earliest(a: Instant, b: Instant) -> Instant {
    a.min(b)
}

#[cfg(test)]
mod tests {
    use super::super::limits::MAX_OUTBOUND_RESPONSE_BYTES;
    use super::*;

    #[test]
    fn requests_end_before_the_call_does() {
        assert_eq!(margin(1000), Duration::from_millis(100));
        assert_eq!(margin(100), Duration::from_millis(20));
        assert_eq!(margin(30_000), Duration::from_millis(500));
    }

    /// A partner declares the largest Content-Length there is after the
    /// call received some bytes: refused as too large, never an overflow
    /// (a panic in the host).
    #[test]
    fn a_huge_declared_content_length_is_too_large_not_an_overflow() {
        assert_eq!(declared_over_cap(0, 10), None);
        assert_eq!(declared_over_cap(1, u64::MAX), Some(u64::MAX));
        assert_eq!(declared_over_cap(u64::MAX, u64::MAX), Some(u64::MAX));
        assert_eq!(
            declared_over_cap(MAX_OUTBOUND_RESPONSE_BYTES, 1),
            Some(MAX_OUTBOUND_RESPONSE_BYTES + 1)
        );
    }

    static HANGING: AtomicU64 = AtomicU64::new(0);
    static MOST_HANGING: AtomicU64 = AtomicU64::new(0);

    /// A partner's resolver that takes its time over every name.
    fn slow_resolver(_: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let now = HANGING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_HANGING.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        HANGING.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![SocketAddr::from(([192, 0, 2, 1], port))])
    }

    /// A partner whose names resolve slowly gives each request a 1 ms
    /// timeout and makes hundreds of them: the lookups its timeouts gave up
    /// on keep their blocking threads, and without a bound that outlives the
    /// timeout they would take every blocking thread of the host.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_a_partner_gave_up_on_still_count_against_its_bound() {
        let mut tries = Vec::new();
        for i in 0..200 {
            tries.push(tokio::spawn(async move {
                let name = format!("n{i}.slow.example");
                let _ = tokio::time::timeout(
                    Duration::from_millis(1),
                    lookup("slow-dns", &name, 80, slow_resolver),
                )
                .await;
            }));
        }
        for t in tries {
            t.await.unwrap();
        }
        // Everything the partner started is still running on blocking threads.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let most = MOST_HANGING.load(Ordering::SeqCst);
        assert!(
            most as usize <= MAX_LOOKUPS_PER_ADDON,
            "{most} lookups of one add-on hung at once"
        );
        // Another add-on still resolves.
        let other = lookup("other", "localhost", 80, system_lookup).await;
        assert!(other.is_ok(), "{other:?}");
    }
}
