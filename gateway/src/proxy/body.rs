//! Body plumbing: one boxed body type both ways, a size cap on requests, and SSE streams that
//! end cleanly on shutdown.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request sent upstream and every response sent to clients.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The client's request body, streamed, failing once it exceeds `max` bytes.
pub fn limited(body: Incoming, max: u64) -> Body {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    Limited::new(body, max).boxed_unsync()
}

/// A streamed upstream body that ends (cleanly, at a frame boundary) when `shutdown` fires.
///
/// Used for SSE: such streams are idle by design and would otherwise hold a graceful shutdown
/// until its deadline, then be cut mid-stream.
pub struct EndOnShutdown {
    inner: Body,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl EndOnShutdown {
    pub fn wrap(inner: Body, shutdown: CancellationToken) -> Body {
        Self {
            inner,
            shutdown: Box::pin(shutdown.cancelled_owned()),
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
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.shutdown.as_mut().poll(cx));
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
