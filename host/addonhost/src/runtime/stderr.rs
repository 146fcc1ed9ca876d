//! A plugin's stderr, kept only to explain a crash: the last
//! [`TailPipe::CAPACITY`] bytes, never blocking and never failing a write, so a
//! chatty plugin neither fills the host's memory nor panics on a full pipe,
//! and its last words (the panic message) are always the part kept.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The last bytes a call wrote to stderr.
#[derive(Clone, Default)]
pub struct TailPipe(Arc<Mutex<VecDeque<u8>>>);

impl TailPipe {
    /// Bytes kept.
    pub const CAPACITY: usize = 16 * 1024;

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(Self::CAPACITY)..];
        let overflow = (buf.len() + bytes.len()).saturating_sub(Self::CAPACITY);
        buf.drain(..overflow);
        buf.extend(bytes);
    }

    /// What is kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.iter().copied().collect()
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(Self::CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_never_refuses_a_write() {
        let mut pipe = TailPipe::default();
        for i in 0..10_000 {
            pipe.write(Bytes::from(format!("line {i}\n"))).unwrap();
        }
        let kept = String::from_utf8(pipe.contents()).unwrap();
        assert!(kept.len() <= TailPipe::CAPACITY);
        assert!(
            kept.ends_with("line 9999\n"),
            "{}",
            &kept[kept.len() - 40..]
        );
        pipe.write(Bytes::from(vec![b'z'; 100_000])).unwrap();
        assert_eq!(pipe.contents(), vec![b'z'; TailPipe::CAPACITY]);
    }
}
