//! The gateway under test, run in-process on `127.0.0.1:0` with the same code as the binary.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use mcp_gateway::{
    config::{Limits, Token, Upstream},
    policy::{Mode, Policy, PolicySettings},
    proxy::{self, Gateway},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Knobs the tests turn; everything else is the production default.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub allowed_origins: Vec<String>,
    pub auth_token: Option<&'static str>,
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Permissive,
            allowed_origins: Vec::new(),
            auth_token: None,
            limits: Limits {
                max_body_bytes: 4 * 1024 * 1024,
                header_timeout: Duration::from_secs(10),
                max_header_bytes: 16 * 1024,
                max_headers: 64,
                max_connections: 512,
                connect_timeout: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(10),
            },
        }
    }
}

/// A running in-process gateway.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl TestGateway {
    pub async fn start(upstream: SocketAddr, opts: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        let policy = Policy::new(&PolicySettings {
            mode: opts.mode,
            listen: addr,
            allowed_hosts: Vec::new(),
            allowed_origins: opts.allowed_origins,
        })
        .expect("valid policy");
        let shutdown = CancellationToken::new();
        let gw = Gateway::new(
            policy,
            Upstream {
                authority: upstream.to_string(),
                port: upstream.port(),
                path: "/mcp".into(),
            },
            opts.auth_token.map(|t| Token(t.as_bytes().to_vec())),
            opts.limits,
            shutdown.clone(),
        );
        let task = tokio::spawn(proxy::serve(listener, Arc::new(gw)));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// The `Host` value a legitimate local client sends.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}
