//! Calls into a loaded plugin: a fresh store per call within the plugin's
//! slots and limits, run to its deadline, and its outcome sorted into a
//! [`CallError`] that names the plugin, the call and the reason.

use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::component::{ComponentNamedList, Lift, Lower, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{AddonError, Login, ProvisionRequest, ProvisionResult, Verdict};
use super::error::outcome_of;
use super::exports::Export;
use super::limits::{self, LogBudget, MemoryLimiter, MAX_RESOURCES};
use super::stderr::TailPipe;
use super::{
    error, outbound, report_refusals, CallError, CallState, Capabilities, Plugin, EPOCH_TICK,
};
use crate::manifest::Limits;

/// A call cut off by the outer timer of [`until`].
pub(super) struct Elapsed;

/// Runs `call` until `deadline`, past which a call blocked in the host (a
/// WASI sleep, a slow outbound request) is cut off; a call running guest code
/// is interrupted sooner, by its epoch deadline. The timer is armed only if
/// the first poll does not finish the call: most calls never wait, and
/// registering a timer and removing it is a measurable part of a short one.
pub(super) async fn until<F: Future>(deadline: Instant, call: F) -> Result<F::Output, Elapsed> {
    let mut call = std::pin::pin!(call);
    match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout_at(deadline.into(), call)
            .await
            .map_err(|_| Elapsed),
    }
}

impl Plugin {
    /// The add-on id the plugin serves.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The limits its calls run under (its manifest's, within the operator's
    /// ceilings).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The language of a development build (`plugins:dev`), or `None` for a
    /// production build.
    pub fn dev_build(&self) -> Option<&str> {
        self.dev.as_deref().map(|d| d.language.as_str())
    }

    /// Whether the component exports `wasi:http/incoming-handler`.
    pub fn serves_http(&self) -> bool {
        self.proxy.is_some()
    }

    /// A slot for one more call of this plugin, or why there is none.
    pub(super) fn slot(&self, call: &'static str) -> Result<limits::Slot, CallError> {
        self.slots.try_acquire().map_err(|full| CallError::Busy {
            plugin: self.id.clone(),
            call,
            full,
        })
    }

    /// A fresh store for one call that must end by `deadline`.
    pub(super) fn new_store(
        &self,
        caps: Box<dyn Capabilities>,
        deadline: Instant,
    ) -> Store<CallState> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let http_hooks = outbound::Outbound::new(
            &self.id,
            caps.outbound(),
            deadline,
            self.limits.timeout_ms,
            self.metrics.clone(),
        );
        let state = CallState {
            wasi: None,
            stderr: TailPipe::default(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks,
            table,
            limiter: MemoryLimiter::new((self.limits.memory_mb as usize) << 20),
            log: LogBudget::default(),
            caps,
            dev: self.dev.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_max_component_handles(MAX_RESOURCES);
        // Every epoch tick the guest yields to the executor, so a busy plugin
        // never holds a server thread; past the deadline it is interrupted.
        // (Running a first slice without yielding was measured: no gain on a
        // release build, see docs/performance.md.)
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    /// Runs one export in a fresh instance under the plugin's limits.
    async fn run<P, R>(
        &self,
        call: &'static str,
        caps: Box<dyn Capabilities>,
        export: &Export<P, R>,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let _slot = self.slot(call)?;
        let deadline = Instant::now() + Duration::from_millis(self.limits.timeout_ms);
        let mut store = self.new_store(caps, deadline);
        let outcome = until(deadline + EPOCH_TICK * 4, async {
            let instance = self
                .pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await?;
            export.call(&mut store, &instance, params).await
        })
        .await;
        let hit_memory = store.data().limiter.hit;
        report_refusals(store.data_mut());
        self.classify(call, outcome, hit_memory, &store.data().stderr)
    }

    /// Maps a call's outcome (`Err(_)` from the outer timer) to a [`CallError`]
    /// naming the plugin, the call and the reason.
    pub(super) fn classify<R>(
        &self,
        call: &'static str,
        outcome: Result<wasmtime::Result<R>, Elapsed>,
        hit_memory: bool,
        stderr: &TailPipe,
    ) -> Result<R, CallError> {
        let timeout = || CallError::Timeout {
            plugin: self.id.clone(),
            call,
            timeout_ms: self.limits.timeout_ms,
        };
        match outcome {
            Ok(Ok(r)) => Ok(r),
            // Blocked in the host (e.g. a WASI sleep) past the deadline.
            Err(_elapsed) => Err(timeout()),
            Ok(Err(e)) => {
                if hit_memory {
                    return Err(CallError::MemoryLimit {
                        plugin: self.id.clone(),
                        call,
                        memory_mb: self.limits.memory_mb,
                    });
                }
                match error::limit_of(&e) {
                    Some(error::Limit::Budget(what)) => {
                        return Err(CallError::Budget {
                            plugin: self.id.clone(),
                            call,
                            what,
                        })
                    }
                    Some(error::Limit::Unavailable(reason)) => {
                        return Err(CallError::Unavailable {
                            plugin: self.id.clone(),
                            call,
                            reason,
                        })
                    }
                    Some(error::Limit::Pool) => {
                        return Err(CallError::Busy {
                            plugin: self.id.clone(),
                            call,
                            full: limits::Full::Host(limits::MAX_CALLS_IN_FLIGHT),
                        })
                    }
                    None => {}
                }
                match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => Err(timeout()),
                    trap => Err(CallError::Trap {
                        plugin: self.id.clone(),
                        call,
                        reason: error::explain(trap, &e, &stderr.contents()),
                    }),
                }
            }
        }
    }

    /// The span one call runs in: every line it logs names the add-on, the
    /// call and the resource the call is about (when one).
    pub(super) fn span(&self, call: &'static str, caps: &dyn Capabilities) -> tracing::Span {
        tracing::info_span!(
            "call",
            addon = %self.id,
            call,
            resource = caps.resource_id().unwrap_or_default()
        )
    }

    /// Counts and times one call, whatever became of it, and logs its
    /// outcome (`status` is an HTTP call's answer).
    pub(super) fn observe<T>(
        &self,
        call: &'static str,
        started: Instant,
        status: Option<u16>,
        r: Result<T, CallError>,
    ) -> Result<T, CallError> {
        let took = started.elapsed();
        let outcome = outcome_of(&r);
        self.calls.record(call, outcome, started, took);
        // One line per call, for `addonhost logs` and `plugins:dev` (and
        // `ADDONHOST_LOG=info`); failures carry the error.
        match &r {
            Ok(_) => tracing::info!(
                kind = "call",
                addon = %self.id,
                call,
                outcome,
                status,
                ms = took.as_secs_f64() * 1e3,
                "{call} {}",
                status.map_or("ok".to_string(), |s| s.to_string())
            ),
            Err(e) => tracing::info!(
                kind = "call",
                addon = %self.id,
                call,
                outcome,
                ms = took.as_secs_f64() * 1e3,
                error = %e,
                "{call} failed ({outcome})"
            ),
        }
        r
    }

    fn addon_error(&self, e: AddonError) -> CallError {
        CallError::Addon {
            plugin: self.id.clone(),
            message: e.message,
        }
    }

    /// `lifecycle.provision`.
    pub async fn provision(
        &self,
        caps: Box<dyn Capabilities>,
        request: ProvisionRequest,
    ) -> Result<ProvisionResult, CallError> {
        let started = Instant::now();
        let span = self.span("provision", &*caps);
        let r = self
            .run("provision", caps, &self.exports.provision, (request,))
            .instrument(span.clone())
            .await
            .and_then(|(r,)| r.map_err(|e| self.addon_error(e)));
        span.in_scope(|| self.observe("provision", started, None, r))
    }

    /// `lifecycle.deprovision`.
    pub async fn deprovision(
        &self,
        caps: Box<dyn Capabilities>,
        id: &str,
    ) -> Result<(), CallError> {
        let id = id.to_string();
        let started = Instant::now();
        let span = self.span("deprovision", &*caps);
        let r = self
            .run("deprovision", caps, &self.exports.deprovision, (id,))
            .instrument(span.clone())
            .await
            .and_then(|(r,)| r.map_err(|e| self.addon_error(e)));
        span.in_scope(|| self.observe("deprovision", started, None, r))
    }

    /// `lifecycle.change-plan`.
    pub async fn change_plan(
        &self,
        caps: Box<dyn Capabilities>,
        id: &str,
        plan: &str,
    ) -> Result<Option<Vec<(String, String)>>, CallError> {
        let (id, plan) = (id.to_string(), plan.to_string());
        let started = Instant::now();
        let span = self.span("change-plan", &*caps);
        let r = self
            .run("change-plan", caps, &self.exports.change_plan, (id, plan))
            .instrument(span.clone())
            .await
            .and_then(|(r,)| r.map_err(|e| self.addon_error(e)));
        span.in_scope(|| self.observe("change-plan", started, None, r))
    }

    /// `credentials.rotate`.
    pub async fn rotate(
        &self,
        caps: Box<dyn Capabilities>,
        id: &str,
    ) -> Result<Vec<(String, String)>, CallError> {
        let id = id.to_string();
        let started = Instant::now();
        let span = self.span("rotate", &*caps);
        let r = self
            .run("rotate", caps, &self.exports.rotate, (id,))
            .instrument(span.clone())
            .await
            .and_then(|(r,)| r.map_err(|e| self.addon_error(e)));
        span.in_scope(|| self.observe("rotate", started, None, r))
    }

    /// `sso.verify`.
    pub async fn verify(
        &self,
        caps: Box<dyn Capabilities>,
        login: Login,
    ) -> Result<Verdict, CallError> {
        let started = Instant::now();
        let span = self.span("sso-verify", &*caps);
        let r = self
            .run("sso-verify", caps, &self.exports.verify, (login,))
            .instrument(span.clone())
            .await
            .map(|(verdict,)| verdict);
        span.in_scope(|| self.observe("sso-verify", started, None, r))
    }
}
