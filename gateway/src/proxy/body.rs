//! Body plumbing. Requests: the body sent upstream ([`Outbound`]), a size cap, the client's
//! framing errors told apart from the upstream's. Answers: one [`Body`] type for everything a
//! client is sent, carrying its guards (slot, SSE stream end and gauge, audit record).
use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{mcp::SseInspector, pool::PooledBody, record::Record, slots::Slot};
use crate::metrics::SseGuard;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request sent upstream: the client's, streamed and capped, or bytes the
/// gateway read whole and checked.
pub type Outbound = UnsyncBoxBody<Bytes, BoxError>;

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
pub fn limited(body: Incoming, max: u64) -> (Outbound, Arc<ClientFault>) {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let fault = Arc::new(ClientFault::default());
    let watched = Watched {
        inner: body,
        fault: fault.clone(),
    };
    (Limited::new(watched, max).boxed_unsync(), fault)
}

/// Bytes read whole (and checked), sent upstream as they are.
pub fn buffered(bytes: Bytes) -> Outbound {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
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

/// Reads a whole (upstream) answer of at most `max` bytes.
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

/// What an SSE stream does when its upstream fails mid-stream (logs it, rate-limited).
pub type OnUpstreamError = Box<dyn FnOnce(&BoxError) + Send>;

/// Where an answer's bytes come from.
pub(super) enum Source {
    /// The upstream's answer, streamed.
    Upstream(PooledBody),
    /// The gateway's own bytes (an error, a filtered answer): one frame, then the end.
    Full(Option<Bytes>),
}

impl HttpBody for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// An SSE stream's own guard: it ends cleanly (at a frame boundary, with the chunked
/// terminator) when `shutdown` fires or when the upstream fails mid-stream, and is counted in
/// `mcp_gateway_sse_streams` while open.
///
/// On shutdown: such streams are idle by design and would otherwise hold a graceful shutdown
/// until its deadline, then be cut mid-stream. On an upstream failure (the MCP server died or
/// was restarted): cutting the client's connection would make it see a transport error, while
/// a clean end is what SSE clients resume from (reconnect with `Last-Event-ID`); an event cut in
/// half is discarded by the client, as the SSE format says for a stream ending mid-event.
struct Stream {
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    on_error: Option<OnUpstreamError>,
    _open: SseGuard,
}

/// The body of every answer the gateway sends a client: the upstream's, streamed, or the
/// gateway's own bytes, with what rides along until it ends. One type and one poll per frame,
/// each concern an optional field, where there were once five nested boxed wrappers:
/// - `events`: an SSE answer read event by event (legacy path learning, `tools/list`
///   filtering, refusals injected into a legacy session);
/// - `stream`: an SSE stream's clean end on shutdown or upstream failure, and its gauge;
/// - `slot`: the client connection waits on its client again once the answer is done;
/// - `audit`: the call's audit record, counting bytes out, written when the answer ends.
pub struct Body {
    source: Source,
    events: Option<SseInspector>,
    stream: Option<Stream>,
    slot: Option<Arc<Slot>>,
    audit: Option<Box<Record>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("upstream", &matches!(self.source, Source::Upstream(_)))
            .field("events", &self.events.is_some())
            .field("stream", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl Body {
    fn new(source: Source, slot: Option<Arc<Slot>>) -> Self {
        Self {
            source,
            events: None,
            stream: None,
            slot,
            audit: None,
        }
    }

    /// The gateway's own bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self::new(Source::Full(Some(data.into())), None)
    }

    /// The upstream's answer, streamed; once the answer is done the client's connection `slot`
    /// waits on its client again (evictable at the cap).
    pub fn upstream(body: PooledBody, slot: Arc<Slot>) -> Self {
        Self::new(Source::Upstream(body), Some(slot))
    }

    /// Makes this an SSE stream that ends cleanly on `shutdown` or an upstream failure
    /// (reported to `on_error`), counted by `open` while it lasts.
    pub fn stream(
        &mut self,
        shutdown: CancellationToken,
        on_error: OnUpstreamError,
        open: SseGuard,
    ) {
        self.stream = Some(Stream {
            shutdown: Box::pin(shutdown.cancelled_owned()),
            on_error: Some(on_error),
            _open: open,
        });
    }

    /// Reads the answer event by event through `inspector`.
    pub fn inspect_events(&mut self, inspector: SseInspector) {
        self.events = Some(inspector);
    }

    /// Writes `record` (with the bytes sent) when the answer ends or is dropped.
    pub fn audit(&mut self, record: Box<Record>) {
        self.audit = Some(record);
    }

    fn write_audit(&mut self) {
        if let Some(record) = self.audit.take() {
            record.write();
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.events {
            Some(events) => events.poll_events(&mut this.source, cx),
            None => Pin::new(&mut this.source).poll_frame(cx),
        };
        let polled = match (&mut this.stream, polled) {
            (None, polled) => polled,
            (Some(stream), Poll::Ready(Some(Err(e)))) => {
                if let Some(report) = stream.on_error.take() {
                    report(&e);
                }
                Poll::Ready(None)
            }
            // Data already available wins over shutdown, so no event is cut in half.
            (Some(stream), Poll::Pending) => match stream.shutdown.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            (Some(_), polled) => polled,
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(record), Some(data)) = (&mut this.audit, frame.data_ref()) {
                    record.sent(data.len());
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.write_audit(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(bytes) => bytes.is_none(),
            Source::Upstream(body) => {
                self.events.is_none() && self.stream.is_none() && body.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            // A rewritten event changes the length; a stream has none.
            Source::Upstream(_) if self.events.is_some() || self.stream.is_some() => {
                SizeHint::default()
            }
            Source::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // Sent whole, or the client went away: the record is written either way.
        self.write_audit();
        if let Some(slot) = &self.slot {
            slot.waiting();
        }
    }
}
