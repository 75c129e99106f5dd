//! `mcp-gateway run`: resolve settings, start logging, bind every server, enforce the union of
//! their ports, serve until a signal.
use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    config::{
        self, LogFormat, MetricsSettings, RunArgs, ServerSettings, Settings, kernel::EbpfMode,
    },
    ebpf::{
        confine::{Egress, ServerEgress},
        enforce::KernelCheck,
        startup::{self as kernel, ServerPorts},
    },
    lockdown,
    mcp::audit::AuditLog,
    metrics::{self, Metrics, ServerInfo},
    proxy::{self, Gateway, slots::PENDING_PER_SLOT},
    reload,
    security_log::{self, RejectionLog},
    supervise,
};

/// How often a running gateway checks that its kernel claim is still in force.
const ENFORCEMENT_CHECK_EVERY: Duration = Duration::from_secs(5);

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.resolve().context("invalid configuration")?;
    if args.check_config {
        print!("{}", config::summary::render(&settings));
        return Ok(ExitCode::SUCCESS);
    }
    // Held until the process ends: dropping it flushes the queued log lines.
    let _log = init_tracing(settings.log_format);
    let open_files = raise_open_files_limit();
    let needed = descriptors_needed(settings.servers.iter().map(|s| s.limits.max_connections));
    if let Some(limit) = open_files.filter(|&limit| limit < needed) {
        tracing::warn!(
            limit,
            needed,
            "the open-files limit is below what max_connections needs (each slot, its pending \
             connections and its upstream connection are descriptors): at the limit new \
             connections fail. Raise it (LimitNOFILE= in the unit, ulimit -n) or lower \
             max_connections"
        );
    }
    // One worker: a single-threaded runtime, with no work-stealing or cross-thread wakeups (the
    // per-core shape nginx workers have). More: tokio's multi-threaded scheduler.
    let runtime = match settings.workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the async runtime")?;
    runtime.block_on(serve(settings))?;
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft limit on open files to the hard limit: each client connection and each
/// upstream connection is a file descriptor, and the usual soft limit (1024) is below what the
/// default `max_connections` needs. Returns the limit now in force, if it could be read.
fn raise_open_files_limit() -> Option<u64> {
    crate::sys::raise_open_files_limit()
}

/// The descriptors a gateway with these `max_connections` may hold at once: per slot, the
/// served connection, its pending ones ([`PENDING_PER_SLOT`]) and an upstream connection; plus
/// a margin for listeners, the metrics endpoint, files and the kernel layer's maps.
fn descriptors_needed(caps: impl Iterator<Item = usize>) -> u64 {
    let per_slot = 2 + PENDING_PER_SLOT as u64;
    caps.map(|cap| cap as u64 * per_slot).sum::<u64>() + 128
}

/// Logs go to stderr, through a bounded queue to a writer thread: a stderr pipe that is full
/// (its reader stalled) drops lines, counted in `mcp_gateway_log_dropped_total`, and never
/// blocks a request. `RUST_LOG` overrides the default `info` level. Dropping the guard
/// flushes what is queued.
pub fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and tests get plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(security_log::LOG_QUEUE_LINES)
        .thread_name("log")
        .finish(std::io::stderr());
    security_log::count_dropped(writer.error_counter());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        // A closed stderr (a log pipe that went away) must not take the gateway down: by
        // default tracing reports a failed write with eprintln!, which panics on a broken pipe.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// Binds every server's listener; a busy address fails the start before anything is enforced.
async fn bind(servers: Vec<ServerSettings>) -> anyhow::Result<Vec<(ServerSettings, TcpListener)>> {
    let mut bound = Vec::with_capacity(servers.len());
    for mut server in servers {
        announce_access(&server);
        if server.listen.ip().is_loopback() && !server.sources.is_empty() {
            tracing::warn!(server = %server.name, listen = %server.listen, "allow_sources has no effect on a loopback listener: only this host can connect, and loopback is always allowed");
        }
        let listen = server.listen;
        let listener = proxy::listen(listen).with_context(|| {
            format!(
                "server `{}`: listening on {listen}: is another process using it? Choose another \
                 address with --listen (or `listen` in its [[server]] table)",
                server.name
            )
        })?;
        // The real port (`--listen 127.0.0.1:0`) is the one allowed in Host.
        server.listen = listener.local_addr()?;
        server.policy.listen = server.listen;
        bound.push((server, listener));
    }
    Ok(bound)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        instance,
        servers,
        log_format: _,
        workers: _,
        metrics: metrics_settings,
        kernel: kernel_settings,
        audit_log,
        scan_interval,
        egress_refresh,
    } = settings;
    let audit = audit_log
        .map(|target| {
            AuditLog::open(&target).map(Arc::new).with_context(|| {
                format!("audit_log: opening {target:?}: is the directory there and writable?")
            })
        })
        .transpose()?;
    let bound = bind(servers).await?;
    let listens: Vec<_> = bound.iter().map(|(s, _)| s.listen).collect();
    let instance = instance.unwrap_or_else(|| config::default_instance(&listens));
    let ports: Vec<ServerPorts> = bound
        .iter()
        .map(|(s, _)| ServerPorts {
            name: s.name.clone(),
            upstream: s.upstream.to_string(),
            upstream_port: s.upstream.port(),
            listen: s.listen,
            exclusive_upstream: s.exclusive_upstream,
            allow_cgroups: s.allow_cgroups.clone(),
            sources: s.sources.cidrs().to_vec(),
        })
        .collect();
    // Before any upstream connection: with --exclusive-upstream this moves us into our own
    // cgroup, the one allowed to connect. Held until exit; the pins keep enforcing after it.
    let enforcement = kernel::start(&kernel_settings, &instance, &ports)?;
    // The servers the gateway starts itself: their cgroups first, so the egress rules below
    // are in force before their first instruction.
    let mut supervised: Vec<(usize, Arc<supervise::Server>)> = Vec::new();
    for (i, (s, _)) in bound.iter().enumerate() {
        if let Some(spec) = &s.supervised {
            let server = supervise::Server::prepare(
                &s.name,
                &instance,
                spec.clone(),
                s.upstream.addr.clone(),
                kernel_settings.mode == EbpfMode::Required,
                &supervise::state::dir(&kernel_settings.pin_dir),
            )?;
            supervised.push((i, server));
        }
    }
    // What each confined server may reach. Always started: it also releases the cgroups an
    // earlier run of this instance confined and this one no longer does.
    let confined: Vec<ServerEgress> = bound
        .iter()
        .enumerate()
        .filter_map(|(i, (s, _))| {
            let e = s.egress.as_ref()?;
            // A server the gateway starts is confined in the cgroup made for it.
            let own = supervised
                .iter()
                .find(|(j, _)| *j == i)
                .and_then(|(_, server)| server.cgroup.clone());
            Some(ServerEgress {
                name: s.name.clone(),
                rules: e.rules.clone(),
                dns: e.dns,
                cgroup: e.cgroup.clone().or(own).unwrap_or_default(),
            })
        })
        .collect();
    let egress = Egress::start(
        enforcement
            .as_ref()
            .map(|e| (e.status().pin_dir.clone(), e.status().cgroup_id)),
        kernel_settings.mode == EbpfMode::Required,
        &instance,
        confined,
    )
    .await?;
    let refresher = egress.spawn_watch(egress_refresh);
    let infos: Vec<ServerInfo> = bound
        .iter()
        .map(|(s, _)| ServerInfo {
            name: s.name.clone(),
            listen_port: s.listen.port(),
            upstream_port: s.upstream.port(),
        })
        .collect();
    let budget = metrics_settings.label_budget;
    // Rejections go to the pinned map the kernel also counts in, when there is one.
    let metrics = Arc::new(match &enforcement {
        Some(e) => Metrics::pinned(budget, &infos, e.check().clone()),
        None => Metrics::in_process(budget, &infos),
    });
    metrics.expect_kernel(kernel_settings.mode != EbpfMode::Off);
    metrics.watch_egress(egress);
    metrics.watch_supervised(supervised.iter().map(|(_, s)| s.clone()).collect());
    if let Some(audit) = &audit {
        metrics.watch_audit(audit.clone());
    }
    if let Some(every) = scan_interval {
        let stats = Arc::new(crate::scan::watch::ScanStats::default());
        metrics.watch_scan(stats.clone());
        crate::scan::watch::spawn(every, kernel_settings.pin_dir.clone(), stats)
            .context("starting the background scan thread")?;
    }

    let shutdown = CancellationToken::new();
    let hup = Arc::new(tokio::sync::Notify::new());
    spawn_signal_handler(shutdown.clone(), audit.clone(), hup.clone())?;
    start_metrics(&metrics_settings, metrics.clone(), shutdown.clone()).await?;
    let rejections = Arc::new(RejectionLog::default());
    let mut servers = JoinSet::new();
    let mut watched = Vec::new();
    let mut reloadable = Vec::new();
    let mut children = Vec::new();
    for (index, (server, listener)) in bound.into_iter().enumerate() {
        let mut gw = Gateway::new(
            server,
            index,
            metrics.clone(),
            rejections.clone(),
            audit.clone(),
            shutdown.clone(),
        )?;
        let mut child = None;
        if let Some((_, server)) = supervised.iter().find(|(i, _)| *i == index) {
            gw.ready = Some(server.ready.clone());
            let grace = gw.limits.shutdown_grace;
            child = Some(tokio::spawn(server.clone().run(grace)));
        }
        children.extend(child);
        let listen = listener.local_addr()?;
        let targets = [
            gw.credentials.clone().map(reload::Target::Credentials),
            gw.tls.clone().map(reload::Target::Tls),
        ];
        for target in targets.into_iter().flatten() {
            reloadable.push(reload::Watched {
                server: gw.name.clone(),
                target,
                stats: gw.stats.clone(),
            });
        }
        watched.push(lockdown::Watched {
            name: gw.name.clone(),
            ports: std::iter::once(listen.port())
                .chain(gw.upstream.port())
                .collect(),
            locked: gw.locked.clone(),
        });
        tracing::info!(
            server = %gw.name,
            mode = ?gw.policy.mode(),
            "mcp-gateway listening on {scheme}://{listen}{path} -> upstream {upstream}",
            scheme = if gw.tls.is_some() { "https" } else { "http" },
            path = gw.upstream.path,
            upstream = gw.upstream,
        );
        servers.spawn(proxy::serve(listener, Arc::new(gw)));
    }
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(security_log::WINDOW);
        loop {
            every.tick().await;
            rejections.tick();
        }
    });
    // Credentials and certificates are rotated under a running gateway.
    let reloader = tokio::spawn(reload::run(reloadable, hup));
    let watcher = enforcement
        .as_ref()
        .map(|e| tokio::spawn(watch_enforcement(e.check().clone())));
    // Lockdowns are engaged from outside (`mcp-gateway lockdown`): watch the pinned state.
    let lock_watcher = enforcement.as_ref().map(|e| {
        tokio::spawn(lockdown::watch(
            e.status().pin_dir.clone(),
            watched,
            metrics.lockdown_flag(),
        ))
    });
    // A server that fails stops them all: half a gateway is not what was configured.
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        let failed = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(anyhow::Error::from(e).context("a server task failed")),
        };
        if let Some(e) = failed {
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    // The servers the gateway started stop after its listeners: SIGTERM, the grace period,
    // SIGKILL.
    for (_, server) in &supervised {
        server.stop();
    }
    for child in children {
        let _ = child.await;
    }
    drop(enforcement);
    ticker.abort();
    reloader.abort();
    for task in [watcher, lock_watcher, refresher].into_iter().flatten() {
        task.abort();
    }
    tracing::info!("mcp-gateway stopped");
    result
}

/// Says at start who may use `server`: what the network sees, which credentials, which
/// certificate.
fn announce_access(server: &ServerSettings) {
    let name = &server.name;
    if !server.listen.ip().is_loopback() {
        tracing::warn!(
            server = %name, listen = %server.listen,
            "LISTENING ON A NON-LOOPBACK ADDRESS: other hosts can reach this gateway; every request must be authenticated"
        );
    }
    if server.plaintext_beyond_loopback {
        tracing::warn!(
            server = %name, listen = %server.listen,
            "PLAIN HTTP ON A NON-LOOPBACK ADDRESS (--allow-plaintext): bearer tokens and MCP messages cross the network in clear unless a TLS terminator in front of this host protects them"
        );
    }
    if let Some(c) = &server.credentials {
        let names: Vec<&str> = c.set.names().collect();
        tracing::warn!(server = %name, file = %c.path.display(), credentials = ?names, "bearer-token authentication is ON: requests without a valid token get 401");
        for c in c.set.credentials().iter().filter(|c| c.short) {
            tracing::warn!(server = %name, credential = %c.name, "this credential's token is short (under {} characters): replace it with a long random one, e.g. `openssl rand -hex 32`", crate::credentials::file::SHORT_TOKEN);
        }
    }
    if let Some(config::access::TlsConfig { files, loaded, .. }) = &server.tls {
        let until = loaded
            .cert
            .not_after
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        tracing::info!(server = %name, cert = %files.cert.display(), names = ?loaded.cert.names, valid_until = ?until, "TLS is ON");
        if let Some(ca) = &files.client_ca {
            tracing::info!(server = %name, client_ca = %ca.display(), allowed_names = ?files.client_names, "client certificates are REQUIRED: a client without one from this CA fails the handshake");
        }
    }
}

/// Logs loudly when this instance's kernel claim stops being in force (another tool removed
/// it, an operator detached it), and when it is back; `/metrics` reports the same at each
/// scrape.
async fn watch_enforcement(check: KernelCheck) {
    let mut every = tokio::time::interval(ENFORCEMENT_CHECK_EVERY);
    let mut was_lost = false;
    loop {
        every.tick().await;
        let check = check.clone();
        let Ok(lost) = tokio::task::spawn_blocking(move || check.lost()).await else {
            return;
        };
        match (lost.is_empty(), was_lost) {
            (false, false) => tracing::warn!(
                lost = %lost.join("; "),
                "KERNEL ENFORCEMENT LOST: this gateway's ports are no longer protected by the kernel as configured; restart it to claim them again (see `mcp-gateway status`)"
            ),
            (true, true) => tracing::info!("kernel enforcement is in force again"),
            _ => {}
        }
        was_lost = !lost.is_empty();
    }
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

/// SIGINT and SIGTERM start a graceful shutdown; SIGHUP reopens the audit log (logrotate) and
/// reloads credentials and TLS files (through `reload`).
fn spawn_signal_handler(
    shutdown: CancellationToken,
    audit: Option<Arc<AuditLog>>,
    reload: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading credentials and TLS files");
                    reload.notify_one();
                    // The audit log's writer reopens it and logs how that went.
                    if let Some(audit) = &audit {
                        audit.reopen();
                    }
                }
            }
        }
        shutdown.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_budget_counts_every_tier_of_every_server() {
        let cases: &[(&[usize], u64)] = &[
            (&[], 128),
            (&[1], 128 + 10),
            // The default cap needs more than the usual soft limit of 1024: hence the raise.
            (&[512], 128 + 5120),
            (&[512, 64], 128 + 5120 + 640),
        ];
        for (caps, want) in cases {
            assert_eq!(
                descriptors_needed(caps.iter().copied()),
                *want,
                "caps {caps:?}"
            );
        }
    }
}
