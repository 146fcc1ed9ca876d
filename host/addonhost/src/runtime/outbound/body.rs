//! Outbound response bodies, held to the call's response-byte cap and its
//! deadline whatever the partner declares or sends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody};

use super::super::limits::MAX_OUTBOUND_RESPONSE_BYTES;
use super::Spent;

/// The call's response bytes with a response declaring `length`, when that
/// is over the cap.
pub(super) fn declared_over_cap(already: u64, length: u64) -> Option<u64> {
    // A partner chooses `length`: up to u64::MAX.
    let total = already.saturating_add(length);
    (total > MAX_OUTBOUND_RESPONSE_BYTES).then_some(total)
}

pub(super) fn over_cap(bytes: u64) -> String {
    format!(
        "its response would bring this call's response bodies to {bytes} bytes, over the cap of {} MiB per call",
        MAX_OUTBOUND_RESPONSE_BYTES >> 20
    )
}

/// A response body that ends in an error past the call's response-byte cap
/// or its deadline.
pub(super) struct Capped {
    pub(super) url: String,
    pub(super) started: Instant,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) spent: Arc<Spent>,
}

struct CappedBody {
    inner: hyper::body::Incoming,
    capped: Capped,
    done: bool,
}

impl Capped {
    pub(super) fn wrap(self, inner: hyper::body::Incoming) -> WasiBody {
        CappedBody {
            inner,
            capped: self,
            done: false,
        }
        .boxed_unsync()
    }

    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::InternalError(Some(format!("outbound request to {}: {what}", self.url)))
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    let total = this.capped.spent.received.fetch_add(n, Ordering::Relaxed) + n;
                    if total > MAX_OUTBOUND_RESPONSE_BYTES {
                        this.done = true;
                        this.capped.spent.record("body_too_large");
                        return Poll::Ready(Some(Err(this.capped.error(format_args!(
                            "the response bodies of this call passed the cap of {} MiB; the rest was not read",
                            MAX_OUTBOUND_RESPONSE_BYTES >> 20
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(this
                    .capped
                    .error(format_args!("reading the response: {e}")))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.capped.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.capped.spent.record("body_timeout");
                    let ms = this.capped.started.elapsed().as_millis();
                    Poll::Ready(Some(Err(this.capped.error(format_args!(
                        "timed out after {ms} ms reading the response (outbound requests end before the call's deadline)"
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}
