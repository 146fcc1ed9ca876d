//! The baseline of the request rows: a bare wasmtime-wasi-http server, as
//! `wasmtime serve` embeds it, in a process of its own (`bench serve-bare
//! COMPONENT`). Each request gets a fresh `Store` and instance of the
//! component's `wasi:http/incoming-handler` on the engine of the call rows'
//! baseline (pooling with addonhost's settings, copy-on-write images from the
//! mapped compiled artifact, as addonhost's cache maps it); the response
//! streams straight back. Nothing else: no deadline, no memory cap, no
//! metrics, no routing. The component's `addon` imports are linked to
//! [`Bare`]'s stubs (a hello component never calls them).

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use wasmtime::component::Component;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::call::{bare_engine, bare_linker, Bare};

/// Serves `component` on 127.0.0.1 until killed; prints `listening on ADDR`.
pub fn serve(component: &Path) -> anyhow::Result<()> {
    let engine = bare_engine()?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    // Compiled once, then mapped from a file like addonhost's artifact
    // cache does: the memory images are the file's pages.
    let compiled = Component::new(&engine, &bytes).map_err(anyhow::Error::from)?;
    let artifact = tempfile::NamedTempFile::new()?;
    std::fs::write(
        artifact.path(),
        compiled.serialize().map_err(anyhow::Error::from)?,
    )?;
    // SAFETY: the artifact was serialized just now by this engine.
    let compiled = unsafe { Component::deserialize_file(&engine, artifact.path()) }
        .map_err(anyhow::Error::from)?;
    let linker = bare_linker(&engine)?;
    let pre = ProxyPre::new(
        linker
            .instantiate_pre(&compiled)
            .map_err(anyhow::Error::from)?,
    )
    .map_err(anyhow::Error::from)
    .context("the component does not export wasi:http/incoming-handler")?;
    let server = Arc::new(BareServer { engine, pre });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { server.handle(req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

struct BareServer {
    engine: Engine,
    pre: ProxyPre<Bare>,
}

impl BareServer {
    async fn handle(
        &self,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Infallible> {
        match self.call(req).await {
            Ok(response) => Ok(response),
            Err(e) => {
                let body = http_body_util::BodyExt::boxed_unsync(
                    http_body_util::Full::new(bytes::Bytes::from(format!("{e:#}\n")))
                        .map_err(|never| match never {}),
                );
                let mut response = hyper::Response::new(body);
                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                Ok(response)
            }
        }
    }

    async fn call(
        &self,
        req: hyper::Request<Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = Store::new(&self.engine, Bare::new());
        let (sender, receiver) = tokio::sync::oneshot::channel::<
            Result<hyper::Response<HyperOutgoingBody>, ErrorCode>,
        >();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(anyhow::Error::from)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(anyhow::Error::from)?;
        let pre = self.pre.clone();
        // The guest runs on while the response body streams out.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => anyhow::bail!("the component answered an error: {code:?}"),
            Err(_) => match task.await {
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the component failed")),
                _ => anyhow::bail!("the component set no response"),
            },
        }
    }
}
