//! Add-ons that serve their resource over HTTP: one request is one call of
//! the component's `wasi:http/incoming-handler`, in a fresh instance under the
//! same deadline and memory cap as any other call. Its outbound requests go
//! through [`super::outbound`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::call::until;
use super::{CallError, CallState, Capabilities, Plugin, EPOCH_TICK};

/// Largest response body an add-on may answer.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl Plugin {
    /// Serves one HTTP request. `request`'s URI is what the add-on sees
    /// (its path relative to the add-on's base URL).
    pub async fn handle_http(
        &self,
        caps: Box<dyn Capabilities>,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, CallError> {
        let started = std::time::Instant::now();
        let span = self.span("http", &*caps);
        let r = tracing::Instrument::instrument(self.serve_http(caps, request), span.clone()).await;
        let status = r.as_ref().ok().map(|response| response.status().as_u16());
        span.in_scope(|| self.observe("http", started, status, r))
    }

    async fn serve_http(
        &self,
        caps: Box<dyn Capabilities>,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, CallError> {
        let proxy = self.proxy.as_ref().ok_or_else(|| CallError::Addon {
            plugin: self.id.clone(),
            message: "this add-on does not serve HTTP".into(),
        })?;
        let _slot = self.slot("http")?;
        let deadline = Instant::now() + Duration::from_millis(self.limits.timeout_ms);
        let mut store = self.new_store(caps, deadline);
        let (sender, receiver) = tokio::sync::oneshot::channel::<
            Result<hyper::Response<HyperOutgoingBody>, ErrorCode>,
        >();
        // The response body streams out while the guest runs: collect it
        // concurrently, or a guest writing many chunks would wait forever.
        let collector = tokio::spawn(async move {
            let response = receiver
                .await
                .map_err(|_| "the add-on set no response".to_string())?;
            let response = response.map_err(|e| format!("the add-on answered an error: {e:?}"))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the add-on's response body: {e}"))?
                .to_bytes();
            Ok::<_, String>(http::Response::from_parts(parts, body))
        });
        let outcome = until(deadline + EPOCH_TICK * 4, async {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request.map(Full::new))?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            let proxy = proxy.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        })
        .await;
        let hit_memory = store.data().limiter.hit;
        super::report_refusals(store.data_mut());
        let stderr = store.data().stderr.clone();
        // Dropping the store drops the response sender if the guest never
        // used it, so the collector ends.
        drop(store);
        self.classify("http", outcome, hit_memory, &stderr)?;
        match tokio::time::timeout(Duration::from_secs(1), collector).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(message))) => Err(CallError::Trap {
                plugin: self.id.clone(),
                call: "http",
                reason: message,
            }),
            _ => Err(CallError::Timeout {
                plugin: self.id.clone(),
                call: "http",
                timeout_ms: self.limits.timeout_ms,
            }),
        }
    }
}
