//! Keep-alive connections to the upstream. One upstream, HTTP/1.1 only: a locked stack of idle
//! connections is all it takes. (hyper-util's general-purpose pool hashed its key and kept its
//! bookkeeping on every request; it showed up in the profiles.)
//!
//! A connection goes back on the stack when the answer's body has been read to its end; one
//! whose body was not (a client that went away, an SSE stream cut short) is closed instead. A
//! request that an idle connection could not even start (the upstream closed it meanwhile) is
//! retried once on a fresh one, as no byte of it was sent.
use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::{
    body::{Body as HttpBody, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use tower_service::Service as _;

use super::{body::Outbound, connect::Connector};

/// Idle connections kept at most; more are closed when they finish.
const MAX_IDLE: usize = 256;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made (refused, timed out, no such socket).
    #[error("connecting to the upstream: {0}")]
    Connect(#[source] super::connect::BoxError),
    /// The exchange failed on an established connection (closed early, malformed answer, or
    /// the client's request body failed).
    #[error("exchanging with the upstream: {0}")]
    Exchange(#[source] hyper::Error),
}

/// The upstream's idle connections.
#[derive(Debug)]
pub struct Pool {
    connector: Connector,
    /// What the TCP connector connects to (the upstream's `http://host:port`).
    target: Uri,
    idle: Mutex<Vec<SendRequest<Outbound>>>,
}

impl Pool {
    pub fn new(connector: Connector, target: Uri) -> Arc<Self> {
        Arc::new(Self {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn pop(&self) -> Option<SendRequest<Outbound>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: SendRequest<Outbound>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Outbound>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (conn, driver) = http1::handshake(io).await.map_err(PoolError::Exchange)?;
        // The connection's own task reads and writes; it ends when the connection closes.
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(conn)
    }

    /// Sends `req` on an idle connection, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Outbound>,
    ) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut conn, reused) = match self.pop() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            // A reused connection finishes its previous exchange a moment after that body ends.
            if let Err(e) = conn.ready().await {
                if reused {
                    continue;
                }
                return Err(PoolError::Exchange(e));
            }
            match conn.try_send_request(req).await {
                Ok(resp) => {
                    let pool = Arc::downgrade(self);
                    return Ok(resp.map(|body| PooledBody {
                        inner: body,
                        conn: Some((conn, pool)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never started: the upstream had closed this idle connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Exchange(e.into_error())),
                },
            }
        }
    }
}

/// An answer's body that gives its connection back when read to the end.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<Outbound>, Weak<Pool>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((conn, pool)) = self.conn.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.put(conn);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.give_back();
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

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end (hyper stops polling once the body says so): reusable. Otherwise the
        // connection is mid-answer and is dropped, which closes it.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
