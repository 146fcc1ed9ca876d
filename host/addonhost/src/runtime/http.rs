//! Add-ons that serve their resource over HTTP: one request is one call of
//! the component's `wasi:http/incoming-handler`, in a fresh instance under the
//! same deadline and memory cap as any other call. Outbound HTTP is denied.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::{CallError, CallState, Capabilities, Plugin, EPOCH_TICK};

/// Largest response body an add-on may answer.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Hooks that refuse every outgoing request: a plugin has no network.
pub struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

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
        let span = tracing::info_span!("call", addon = %self.id(), call = "http");
        let r = tracing::Instrument::instrument(self.serve_http(caps, request), span).await;
        self.observe("http", started, r)
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
        let mut store = self.new_store(caps);
        let deadline = Duration::from_millis(self.limits.timeout_ms) + EPOCH_TICK * 4;
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
        let outcome = tokio::time::timeout(deadline, async {
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
