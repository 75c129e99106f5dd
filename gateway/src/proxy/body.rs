//! Body plumbing: one boxed body type both ways, a size cap on requests, the client's framing
//! errors told apart from the upstream's, and SSE streams that end cleanly on shutdown or when
//! the upstream fails.
use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request sent upstream and every response sent to clients.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Set when the client's request body broke (a bad chunk size, a cut connection): the upstream
/// exchange failed because of the client, not the MCP server.
#[derive(Debug, Default)]
pub struct ClientFault(OnceLock<String>);

impl ClientFault {
    /// What went wrong, when the client's body broke.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The client's body, recording its own errors.
struct Watched {
    inner: Incoming,
    fault: Arc<ClientFault>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.fault.0.set(e.to_string());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body, streamed, failing once it exceeds `max` bytes; a failure of the
/// client's own is recorded in the returned [`ClientFault`].
pub fn limited(body: Incoming, max: u64) -> (Body, Arc<ClientFault>) {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let fault = Arc::new(ClientFault::default());
    let watched = Watched {
        inner: body,
        fault: fault.clone(),
    };
    (Limited::new(watched, max).boxed_unsync(), fault)
}

/// Why a request body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// Over the cap (413).
    TooLarge,
    /// The client's framing broke, or it went away (400).
    Client(String),
}

/// Reads the client's whole body, up to `max` bytes.
pub async fn read_all(body: Incoming, max: u64) -> Result<Bytes, ReadError> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Client(e.to_string())),
    }
}

/// Reads a whole (upstream) body of at most `max` bytes.
pub async fn read_bounded(mut body: Body, max: usize) -> Result<Bytes, BoxError> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > max {
                return Err(format!("more than {max} bytes").into());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// An upstream answer's body that, once dropped (sent whole, or the client went away), leaves
/// its connection waiting on the client again: evictable at the cap.
pub struct Released<B> {
    inner: B,
    slot: Arc<super::slots::Slot>,
}

impl<B> Released<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub fn wrap(inner: B, slot: Arc<super::slots::Slot>) -> Body {
        Self { inner, slot }.boxed_unsync()
    }
}

impl<B> HttpBody for Released<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Released<B> {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

/// Called once when an SSE stream's upstream fails mid-stream.
pub type OnUpstreamError = Box<dyn FnOnce(&BoxError) + Send>;

/// An SSE stream from the upstream that ends cleanly (at a frame boundary, with the chunked
/// terminator) when `shutdown` fires or when the upstream fails mid-stream.
///
/// On shutdown: such streams are idle by design and would otherwise hold a graceful shutdown
/// until its deadline, then be cut mid-stream. On an upstream failure (the MCP server died or
/// was restarted): cutting the client's connection would make it see a transport error, while
/// a clean end is what SSE clients resume from (reconnect with `Last-Event-ID`); an event cut in
/// half is discarded by the client, as the SSE format says for a stream ending mid-event.
pub struct EndOnShutdown {
    inner: Body,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    on_error: Option<OnUpstreamError>,
}

impl EndOnShutdown {
    pub fn wrap(inner: Body, shutdown: CancellationToken, on_error: OnUpstreamError) -> Body {
        Self {
            inner,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            on_error: Some(on_error),
        }
        .boxed_unsync()
    }
}

impl HttpBody for EndOnShutdown {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Data already available wins over shutdown, so no event is cut in half.
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                if let Some(report) = self.on_error.take() {
                    report(&e);
                }
                return Poll::Ready(None);
            }
            Poll::Ready(frame) => return Poll::Ready(frame),
            Poll::Pending => {}
        }
        ready!(self.shutdown.as_mut().poll(cx));
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
