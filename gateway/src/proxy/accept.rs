//! Connections: the listener, admission at `max_connections` (`slots`, `probation`), the TLS
//! handshake, and the HTTP/1.1 server that hands each request to [`Gateway::handle`].
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::net::{TcpListener, TcpStream};

use super::{
    Client, Gateway, Identity,
    body::Body,
    head_watch, probation, reply,
    slots::{Admission, Lease, NotServed, Pending},
};
use crate::{config::Limits, metrics::Shed, tls::TlsStore};

/// Pending connections the kernel may queue for `accept` (it caps this at
/// `net.core.somaxconn`, 4096 by default since Linux 5.4).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a deep accept queue: under a connection flood a full queue drops
/// new SYNs, and a legitimate client then waits a whole second for its SYN to be retransmitted.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The HTTP/1.1 settings of every client connection: header timeout, head size and count caps.
///
/// Public (hidden) only for the `request_path` fuzz target, which serves in-memory connections
/// with exactly the settings the listener uses.
#[doc(hidden)]
pub fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    http
}

/// What every connection task of one server shares.
#[derive(Clone)]
struct Server {
    gw: Arc<Gateway>,
    http: http1::Builder,
}

/// Accepts connections until `gw.shutdown` fires, then drains them for up to the grace period.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) -> anyhow::Result<()> {
    let limits = gw.limits.clone();
    let http = http1_builder(&limits);
    let server = Server {
        gw: gw.clone(),
        http,
    };
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = gw.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // Always accepted; at the cap it waits, cheaply, for its first request (see `slots`).
        let (server, watcher) = (server.clone(), graceful.watcher());
        match gw.slots.admit() {
            Admission::Served(lease) => {
                tokio::spawn(server.connection(stream, peer, lease, watcher));
            }
            Admission::Pending { pending, evicted } => {
                if evicted {
                    gw.shed(Shed::Pending);
                }
                tokio::spawn(server.pending(stream, peer, pending, watcher));
            }
        }
    }

    tracing::info!(
        server = %gw.name,
        grace = ?limits.shutdown_grace,
        "shutting down: no new connections; letting in-flight requests finish"
    );
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached; closing the remaining connections");
    }
    Ok(())
}

impl Server {
    /// A connection accepted at the cap: served once its first request is complete, if a
    /// waiting connection can make room; closed at the header timeout, on shutdown, or when
    /// evicted from the pending tier.
    async fn pending(self, stream: TcpStream, peer: SocketAddr, pending: Pending, w: Watcher) {
        let gw = &self.gw;
        let max = gw.limits.max_header_bytes;
        let held = gw.stats.pending_connection();
        let arrived = tokio::select! {
            arrived = tokio::time::timeout(
                gw.limits.header_timeout,
                probation::first_request(&stream, gw.tls.is_some(), max),
            ) => matches!(arrived, Ok(Ok(true))),
            () = pending.evicted() => false,
            () = gw.shutdown.cancelled() => false,
        };
        drop(held);
        if !arrived {
            return;
        }
        match pending.promote() {
            Ok((lease, evicted)) => {
                if evicted {
                    gw.shed(Shed::Evicted);
                }
                self.connection(stream, peer, lease, w).await;
            }
            Err(NotServed::AllBusy) => {
                gw.shed(Shed::Busy);
                self.busy(stream, peer).await;
            }
            Err(NotServed::Evicted) => {}
        }
    }

    /// Serves a connection holding a slot, until it ends or is evicted.
    async fn connection(self, stream: TcpStream, peer: SocketAddr, lease: Lease, w: Watcher) {
        let gw = &self.gw;
        let open = gw.stats.connection();
        let max_head = gw.limits.max_header_bytes;
        // The handshake runs in the connection's task: a slow one never holds up accepting.
        let served = async {
            match &gw.tls {
                None => {
                    let (stream, marks) = head_watch::Watched::new(stream, max_head);
                    let client = Client::new(peer, lease.slot().clone(), marks);
                    let service = service(gw.clone(), client);
                    w.watch(self.http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    let unwatched = Arc::default();
                    let client = Client::new(peer, lease.slot().clone(), unwatched);
                    match handshake(gw, tls, stream, &client).await {
                        Some((stream, credential)) => {
                            // Watched inside TLS: the tracker follows the plaintext.
                            let (stream, marks) = head_watch::Watched::new(stream, max_head);
                            let client = Client {
                                credential,
                                marks,
                                ..client
                            };
                            let service = service(gw.clone(), client);
                            w.watch(self.http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        None => Ok(()),
                    }
                }
            }
        };
        // Evicted: dropping the connection closes it (nothing of it was forwarded).
        let result = tokio::select! {
            result = served => result,
            () = lease.slot().evicted() => Ok(()),
        };
        if let Err(err) = result {
            tracing::debug!(server = %gw.name, peer = %peer, error = %err, "connection ended with an error");
        }
        drop((lease, open));
    }

    /// Answers the one request of a connection that got no slot with 503, then closes it.
    async fn busy(self, stream: TcpStream, peer: SocketAddr) {
        let gw = &self.gw;
        let refuse = service_fn(|_: Request<Incoming>| async {
            let mut resp = reply::json_rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable: the gateway is at its connection limit; retry shortly",
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
            Ok::<_, Infallible>(resp)
        });
        let mut http = self.http.clone();
        http.keep_alive(false);
        let _ = match &gw.tls {
            None => http.serve_connection(TokioIo::new(stream), refuse).await,
            Some(tls) => {
                let client = Client::new(peer, super::slots::Slot::detached(), Arc::default());
                match handshake(gw, tls, stream, &client).await {
                    Some((stream, _)) => http.serve_connection(TokioIo::new(stream), refuse).await,
                    None => Ok(()),
                }
            }
        };
    }
}

impl Gateway {
    /// A connection shed at the cap: counted; logged rate-limited.
    fn shed(&self, why: Shed) {
        self.stats.shed(why);
        if !self
            .rejections
            .admit(&format!("{} shed {}", self.name, why.as_str()))
        {
            return;
        }
        let cap = self.limits.max_connections;
        match why {
            Shed::Evicted => {
                tracing::warn!(server = %self.name, max_connections = cap, "at max_connections: closed the connection that waited longest on its client, for a new client's request (slow clients?)")
            }
            Shed::Pending => {
                tracing::warn!(server = %self.name, max_connections = cap, "at max_connections and too many connections without a request: closed the oldest (a connection flood?)")
            }
            Shed::Busy => {
                tracing::warn!(server = %self.name, max_connections = cap, "at max_connections with every connection busy upstream: answered 503 (raise max_connections if this load is legitimate)")
            }
        }
    }
}

/// Every request of one connection, from `client`.
fn service(
    gw: Arc<Gateway>,
    client: Client,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> {
    service_fn(move |req| {
        let (gw, client) = (gw.clone(), client.clone());
        async move { Ok::<_, Infallible>(gw.handle(client, req).await) }
    })
}

/// The TLS handshake, within the header timeout: the stream and the client certificate's
/// credential (when client certificates are required), or `None` when it failed (counted
/// and logged as the client's, rate-limited).
async fn handshake(
    gw: &Gateway,
    tls: &TlsStore,
    stream: TcpStream,
    client: &Client,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<Identity>)> {
    let accepted = tokio::time::timeout(gw.limits.header_timeout, tls.acceptor().accept(stream));
    let why = match accepted.await {
        Ok(Ok(stream)) => {
            let credential = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::names::info(cert).ok())
                .and_then(|info| {
                    crate::tls::names::identity(&info.names, &tls.files().client_names)
                })
                .map(|name| gw.identity(&name));
            return Some((stream, credential));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {:?}", gw.limits.header_timeout),
    };
    gw.refused_handshake(client, &why);
    None
}
