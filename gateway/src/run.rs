//! `mcp-gateway run`: resolve settings, start logging, bind, enforce, serve until a signal.
use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    cli::kernel,
    config::{LogFormat, MetricsSettings, RunArgs, Settings},
    metrics::{self, Metrics},
    policy::{Policy, PolicySettings},
    proxy::{self, Gateway},
    security_log,
};

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.resolve().context("invalid configuration")?;
    init_tracing(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, settings))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and tests get plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A closed stderr (a log pipe that went away) must not take the gateway down: by
        // default tracing reports a failed write with eprintln!, which panics on a broken pipe.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn serve(args: &RunArgs, settings: Settings) -> anyhow::Result<()> {
    let Settings {
        upstream,
        listen,
        policy,
        auth_token,
        limits,
        log_format: _,
        metrics: metrics_settings,
    } = settings;
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "LISTENING ON A NON-LOOPBACK ADDRESS: other hosts can reach this gateway; every request must carry the bearer token"
        );
    }
    if auth_token.is_some() {
        tracing::warn!("bearer-token authentication is ON: requests without the token get 401");
    }
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("listening on {listen}: is another process using it? Choose another address with --listen")
    })?;
    let listen = listener.local_addr()?;
    let policy = Policy::new(&PolicySettings { listen, ..policy })?;
    // Before any upstream connection: with --exclusive-upstream this moves us into our own
    // cgroup, the one allowed to connect. Held until exit; the pins keep enforcing after it.
    let enforcement = kernel::start(&args.ebpf, upstream.port, listen)?;
    // Rejections go to the pinned map the kernel also counts in, when there is one.
    let metrics = Arc::new(match &enforcement {
        Some(e) => Metrics::pinned(&e.status().pin_dir, metrics_settings.label_budget),
        None => Metrics::in_process(metrics_settings.label_budget),
    });

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    start_metrics(&metrics_settings, metrics.clone(), shutdown.clone()).await?;
    let gw = Arc::new(
        Gateway::new(policy, upstream, auth_token, limits, shutdown.clone()).with_metrics(metrics),
    );
    let ticker = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(security_log::WINDOW);
            loop {
                every.tick().await;
                gw.rejections.tick();
            }
        })
    };
    tracing::info!(
        mode = ?gw.policy.mode(),
        "mcp-gateway listening on http://{listen}{path} -> upstream http://{up}{path}",
        path = gw.upstream.path,
        up = gw.upstream.authority,
    );
    let served = proxy::serve(listener, gw).await;
    drop(enforcement);
    ticker.abort();
    tracing::info!("mcp-gateway stopped");
    served
}

/// Binds the `/metrics` listener and serves it in the background. A configured address must
/// bind; the default one only warns when busy (the gateway's protection matters more).
async fn start_metrics(
    settings: &MetricsSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = settings.listen else {
        tracing::info!("metrics listener is off (--metrics-listen off)");
        return Ok(());
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) if !settings.explicit => {
            tracing::warn!(%addr, error = %e, "METRICS ARE OFF: the default metrics address is not available; choose one with --metrics-listen ADDR (or `off`)");
            return Ok(());
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("metrics listener on {addr}: is another process using it? Choose another address with --metrics-listen, or `off`")
            });
        }
    };
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics listen on a non-loopback address: other hosts can read them");
    }
    tracing::info!(
        pinned = metrics.is_pinned(),
        "metrics on http://{addr}/metrics"
    );
    tokio::spawn(metrics::server::serve(listener, metrics, shutdown));
    Ok(())
}

/// SIGINT and SIGTERM start a graceful shutdown.
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        shutdown.cancel();
    });
    Ok(())
}
