//! Load and measurement helpers for `cargo xtask bench` (wrk drives closed-loop throughput; this
//! does what wrk can't). Each subcommand prints one JSON object on stdout.
//!
//! - `rate URL --rps R --connections C --seconds S [--host H]`: open-loop latency. Requests are
//!   scheduled at a fixed rate over C keep-alive connections and each latency is measured from
//!   its *scheduled* time, so a stall delays (and is charged to) every request behind it: no
//!   coordinated omission.
//! - `sse-server --listen ADDR --events-per-sec N`: an upstream whose `GET /mcp` is an SSE stream
//!   of N events a second, each carrying its send time; `POST` answers a small JSON.
//! - `sse-clients URL --streams N --seconds S`: N streams at once; the delay of every event from
//!   its send time to its arrival.
//! - `hold URL --connections N [--sse]`: opens N keep-alive connections (one request each) or N
//!   SSE streams, prints `{"ready":N}`, and holds them until stdin closes.
//! - `startup BIN ARGS...`: starts BIN and measures until a `POST /mcp` through it is answered
//!   (`--url` says where); stops it.
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Rate {
        url: String,
        #[arg(long)]
        rps: u64,
        #[arg(long, default_value_t = 32)]
        connections: u64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Host header (default: the URL's authority).
        #[arg(long)]
        host: Option<String>,
    },
    SseServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 100)]
        events_per_sec: u64,
    },
    SseClients {
        url: String,
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    Hold {
        url: String,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        sse: bool,
    },
    Startup {
        /// Where the started program answers.
        #[arg(long)]
        url: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

/// `http://HOST:PORT/PATH` -> (address, authority, path).
fn split(url: &str) -> (SocketAddr, String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority.parse().expect("HOST:PORT with an IP address");
    (addr, authority.to_owned(), format!("/{path}"))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

fn post(host: &str, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("request")
}

/// p50, p99, p99.9 of `samples` (sorted in place), in milliseconds.
fn percentiles(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    serde_json::json!({ "count": samples.len(), "p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999) })
}

async fn rate(url: &str, rps: u64, connections: u64, seconds: f64, host: Option<String>) {
    let (addr, authority, path) = split(url);
    let host = host.unwrap_or(authority);
    let total = (rps as f64 * seconds) as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs_f64(1.0 / rps as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..connections {
        let (host, path) = (host.clone(), path.clone());
        let mut sender = connect(addr).await;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut k = j;
            while k < total {
                let scheduled = start + interval * u32::try_from(k).expect("few requests");
                tokio::time::sleep_until(scheduled.into()).await;
                let ok = async {
                    sender.ready().await.ok()?;
                    let resp = sender.send_request(post(&host, &path)).await.ok()?;
                    let status = resp.status();
                    resp.into_body().collect().await.ok()?;
                    status.is_success().then_some(())
                };
                match ok.await {
                    Some(()) => latencies.push(scheduled.elapsed()),
                    None => errors += 1,
                }
                k += connections;
            }
            (latencies, errors)
        });
    }
    let mut all = Vec::with_capacity(total as usize);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (latencies, e) = done.expect("client task");
        all.extend(latencies);
        errors += e;
    }
    let achieved = all.len() as f64 / start.elapsed().as_secs_f64();
    let mut out = percentiles(&mut all);
    out["errors"] = errors.into();
    out["achieved_rps"] = achieved.into();
    println!("{out}");
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// An SSE body fed by a channel.
struct Events(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|b| Ok(Frame::data(b))))
    }
}

async fn sse_server(listen: SocketAddr, events_per_sec: u64) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    let bound = listener.local_addr().expect("address");
    println!("{}", serde_json::json!({ "listening": bound.to_string() }));
    let interval = Duration::from_secs_f64(1.0 / events_per_sec as f64);
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        let service = service_fn(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let stream = req.method() == http::Method::GET;
                let body: BoxBody<Bytes, Infallible> = if stream {
                    let (tx, rx) = tokio::sync::mpsc::channel(16);
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(interval);
                        loop {
                            tick.tick().await;
                            let event = format!("event: message\ndata: {}\n\n", now_ns());
                            if tx.send(Bytes::from(event)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Events(rx).boxed()
                } else {
                    let _ = req.into_body().collect().await;
                    Full::new(Bytes::from_static(
                        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
                    ))
                    .boxed()
                };
                let content_type = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header("content-type", content_type)
                        .body(body)
                        .expect("response"),
                )
            },
        );
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
}

/// Opens an SSE stream; returns the response body.
async fn open_sse(addr: SocketAddr, host: &str, path: &str) -> hyper::body::Incoming {
    let mut sender = connect(addr).await;
    let req = http::Request::get(path)
        .header("host", host)
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("SSE response");
    assert!(resp.status().is_success(), "SSE: {}", resp.status());
    // The connection task lives as long as the body is read.
    let body = resp.into_body();
    std::mem::forget(sender);
    body
}

async fn sse_clients(url: &str, streams: usize, seconds: f64) {
    let (addr, host, path) = split(url);
    let delays = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut body = open_sse(addr, &host, &path).await;
        let delays = delays.clone();
        tasks.spawn(async move {
            let mut pending = String::new();
            let mut mine = Vec::new();
            loop {
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = tokio::time::sleep_until(until.into()) => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let arrived = now_ns();
                pending.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if let Some(sent) = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .and_then(|t| t.parse::<u128>().ok())
                    {
                        let ns = arrived.saturating_sub(sent);
                        mine.push(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)));
                    }
                }
            }
            delays.lock().unwrap().extend(mine);
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut all = std::mem::take(&mut *delays.lock().unwrap());
    println!("{}", percentiles(&mut all));
}

async fn hold(url: &str, connections: usize, sse: bool) {
    let (addr, host, path) = split(url);
    let mut held_conns = Vec::new();
    let mut held_streams = Vec::new();
    for _ in 0..connections {
        if sse {
            held_streams.push(open_sse(addr, &host, &path).await);
        } else {
            let mut sender = connect(addr).await;
            let resp = sender
                .send_request(post(&host, &path))
                .await
                .expect("response");
            resp.into_body().collect().await.expect("body");
            held_conns.push(sender);
        }
    }
    println!("{}", serde_json::json!({ "ready": connections }));
    // Hold until the caller closes stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    })
    .await;
    drop((held_conns, held_streams));
}

/// Whether one `POST` to `addr` got a 2xx answer.
async fn answered(addr: SocketAddr, host: &str, path: &str) -> bool {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_millis(50), TcpStream::connect(addr)).await
    else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    sender
        .send_request(post(host, path))
        .await
        .is_ok_and(|resp| resp.status().is_success())
}

async fn startup(url: &str, command: &[String]) {
    let (addr, host, path) = split(url);
    let started = Instant::now();
    let mut child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .expect("starting the program");
    let served = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not serving after 30 s"
        );
        if answered(addr, &host, &path).await {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{}",
        serde_json::json!({ "first_request_ms": served.as_secs_f64() * 1000.0 })
    );
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match cli.command {
            Command::Rate {
                url,
                rps,
                connections,
                seconds,
                host,
            } => rate(&url, rps, connections, seconds, host).await,
            Command::SseServer {
                listen,
                events_per_sec,
            } => sse_server(listen, events_per_sec).await,
            Command::SseClients {
                url,
                streams,
                seconds,
            } => sse_clients(&url, streams, seconds).await,
            Command::Hold {
                url,
                connections,
                sse,
            } => hold(&url, connections, sse).await,
            Command::Startup { url, command } => startup(&url, &command).await,
        }
    });
}
