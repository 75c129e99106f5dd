//! Connections to the upstream: TCP (no Nagle, bounded connect time) or a Unix socket, behind
//! one connector so the pooled client is the same type for both.
use std::{
    future::Future,
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{Upstream, UpstreamAddr};

/// Connects to one upstream.
#[derive(Clone, Debug)]
pub enum Connector {
    /// Connects to the request URI's authority (the upstream's `host:port`).
    Tcp(HttpConnector),
    /// Connects to the socket, whatever the URI says.
    Unix {
        path: Arc<PathBuf>,
        timeout: Duration,
    },
}

impl Connector {
    pub fn new(upstream: &Upstream, connect_timeout: Duration) -> Self {
        match &upstream.addr {
            UpstreamAddr::Tcp { .. } => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(connect_timeout));
                http.set_nodelay(true);
                Self::Tcp(http)
            }
            UpstreamAddr::Unix(path) => Self::Unix {
                path: Arc::new(path.clone()),
                timeout: connect_timeout,
            },
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Tcp(http) => http.poll_ready(cx).map_err(Into::into),
            Self::Unix { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Tcp(http) => {
                let connecting = http.call(uri);
                Box::pin(async move { Ok(Io::Tcp(connecting.await?)) })
            }
            Self::Unix { path, timeout } => {
                let (path, timeout) = (path.clone(), *timeout);
                Box::pin(async move {
                    let stream = tokio::time::timeout(timeout, UnixStream::connect(&*path))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                    Ok(Io::Unix(TokioIo::new(stream)))
                })
            }
        }
    }
}

/// A connection to the upstream.
#[derive(Debug)]
pub enum Io {
    Tcp(TokioIo<TcpStream>),
    Unix(TokioIo<UnixStream>),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(io) => io.connected(),
            Self::Unix(_) => Connected::new(),
        }
    }
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Unix(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::Unix(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::Unix(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::Unix(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(io) => io.is_write_vectored(),
            Self::Unix(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Unix(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}

/// The user and group this process runs as, for "permission denied" logs.
pub fn process_user() -> String {
    let (uid, gid) = crate::sys::ids();
    let name = crate::sys::user_name(uid)
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!("uid {uid}{name}, gid {gid}")
}
