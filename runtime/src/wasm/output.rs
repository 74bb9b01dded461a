//! A wasm guest's stdout and stderr: written as records into its log ([`crate::logs`]),
//! timed as the guest writes them. The guest runs in our process, so no pipe is needed: its
//! writes go straight to the log, blocking as a file's do.

use crate::error::Result;
use crate::logs::{Recorder, Stream};
use bytes::Bytes;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// What one write may hand over at most (as wasmtime-wasi's own files allow).
const MAX_WRITE: usize = 64 * 1024;

/// One stream of a guest, shared by every handle the guest opens on it; the line begun is
/// ended when the last handle goes.
#[derive(Clone)]
pub struct LogOutput(Arc<Mutex<Recorder>>);

impl LogOutput {
    /// The guest's stdout and stderr, recorded into the log at `path`.
    pub fn pair(path: &Path) -> Result<(LogOutput, LogOutput)> {
        let open = |stream| {
            Ok::<_, crate::Error>(LogOutput(Arc::new(Mutex::new(Recorder::open(
                stream, path,
            )?))))
        };
        Ok((open(Stream::Stdout)?, open(Stream::Stderr)?))
    }

    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut recorder = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recorder.write(bytes)
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for LogOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_all(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE)
    }
}

impl tokio::io::AsyncWrite for LogOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.write_all(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
