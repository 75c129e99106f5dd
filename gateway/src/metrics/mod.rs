//! Metrics for Prometheus, served on their own listener (`server`), never on the proxy port.
//!
//! - [`store`]: rejection counters, written through to the pinned `COUNTERS` map the kernel
//!   programs also write (so they survive restarts and crashes), or kept in this process when
//!   there is no kernel layer.
//! - [`series`]: the exported rejection series, bounded by the label budget and monotonic.
//! - [`encode`]: the text exposition (Prometheus 0.0.4 and OpenMetrics), escaping hostile labels.
//! - [`server`]: the `/metrics` listener.
//!
//! Every per-request series carries a `server` label (one value per configured server). The
//! request path only calls the cheap hooks on [`ServerStats`] and [`Metrics::reject`]; a
//! rejection costs one lock and, with a pinned map, two bpf(2) calls (lookup and update).
pub mod credentials;
pub mod encode;
pub mod series;
pub mod server;
pub mod store;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use gateway_common::{LAYOUT_VERSION, Reason};
use http::{Method, StatusCode};

use self::{
    encode::{Encoder, Format, Kind},
    series::Series,
    store::Store,
};
use crate::ebpf::{counters::Counter, enforce::KernelCheck};

/// Why connections were shed at the cap (the `why` label of
/// `mcp_gateway_connections_shed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// A served connection waiting on its client was closed for a newcomer's request.
    Evicted,
    /// The oldest pending connection was closed: too many had not sent a request.
    Pending,
    /// A newcomer's request got 503: every served connection was busy upstream.
    Busy,
}

impl Shed {
    pub const ALL: [Self; 3] = [Self::Evicted, Self::Pending, Self::Busy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::Pending => "pending",
            Self::Busy => "busy",
        }
    }
}

pub use crate::config::metrics::{DEFAULT_LABEL_BUDGET, DEFAULT_LISTEN, Listen, MAX_LABEL_BUDGET};

/// The counter reason of a policy rejection.
pub fn counted_reason(reason: crate::policy::Reason) -> Reason {
    match reason {
        crate::policy::Reason::Host => Reason::Host,
        crate::policy::Reason::Origin => Reason::Origin,
        crate::policy::Reason::FetchMetadata => Reason::FetchMetadata,
    }
}

/// Upper bounds of the upstream duration histogram, in seconds (Prometheus' defaults).
const BUCKETS: [(f64, &str); 11] = [
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1.0"),
    (2.5, "2.5"),
    (5.0, "5.0"),
    (10.0, "10.0"),
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A server as metrics know it.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub name: String,
    /// The bound listen port: HTTP rejections of this server are counted under it.
    pub listen_port: u16,
    /// Kernel events on this port are this server's too.
    pub upstream_port: Option<u16>,
}

/// `(credential label, method, status)`: a `mcp_gateway_requests_total` series.
type RequestKey = (Arc<str>, &'static str, u16);

/// The per-request series of one server.
#[derive(Debug)]
pub struct ServerStats {
    pub name: String,
    pub listen_port: u16,
    /// Requests by credential (`""`: none), method and status. Methods outside the standard set
    /// count as `other` and credentials are bounded, so this holds at most 65 × 10 × 900
    /// entries.
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    credentials: credentials::CredentialLabels,
    /// The `credential` of unauthenticated requests (`""`, allocated once).
    no_credential: Arc<str>,
    /// Reloads by what was reloaded (`credentials`, `tls`): `[succeeded, failed]`.
    reloads: Mutex<BTreeMap<&'static str, [u64; 2]>>,
    /// When the TLS certificate in force expires (Unix seconds); 0 without TLS.
    certificate_not_after: AtomicI64,
    upstream: Mutex<Histogram>,
    open_connections: AtomicI64,
    /// Connections accepted at the cap, held until their first request.
    pending_connections: AtomicI64,
    /// Connections shed at the cap, by [`Shed`] (in `Shed::ALL` order).
    shed: [AtomicU64; 3],
    sse_streams: Arc<AtomicI64>,
}

impl ServerStats {
    fn new(info: &ServerInfo) -> Self {
        Self {
            name: info.name.clone(),
            listen_port: info.listen_port,
            requests: Mutex::new(BTreeMap::new()),
            credentials: credentials::CredentialLabels::default(),
            no_credential: Arc::from(""),
            reloads: Mutex::new(BTreeMap::new()),
            certificate_not_after: AtomicI64::new(0),
            upstream: Mutex::new(Histogram::default()),
            open_connections: AtomicI64::new(0),
            pending_connections: AtomicI64::new(0),
            shed: Default::default(),
            sse_streams: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The bounded `credential` label of the credential `name`.
    pub fn credential_label(&self, name: &str) -> Arc<str> {
        self.credentials.label(name)
    }

    /// Exports zeroed reload counters for `kind`, so they exist before the first reload.
    pub fn expect_reloads(&self, kind: &'static str) {
        let mut reloads = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        reloads.entry(kind).or_default();
    }

    /// The TLS certificate in force now expires at `not_after`.
    pub fn certificate_in_force(&self, not_after: Option<std::time::SystemTime>) {
        let secs = not_after
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.certificate_not_after.store(secs, Ordering::Relaxed);
    }

    /// One reload of `kind`, successful or not.
    pub fn reloaded(&self, kind: &'static str, ok: bool) {
        let mut reloads = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        reloads.entry(kind).or_default()[usize::from(!ok)] += 1;
    }

    /// One answered request, by credential label, method and status.
    pub fn request(&self, credential: Option<&Arc<str>>, method: &Method, status: StatusCode) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            Method::HEAD => "HEAD",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::CONNECT => "CONNECT",
            Method::TRACE => "TRACE",
            _ => "other",
        };
        let credential = credential.unwrap_or(&self.no_credential).clone();
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests
            .entry((credential, method, status.as_u16()))
            .or_insert(0) += 1;
    }

    /// Time from sending a request upstream to its response head (or the failure).
    pub fn upstream_duration(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut h = self.upstream.lock().unwrap_or_else(PoisonError::into_inner);
        for (slot, (bound, _)) in h.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *slot += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts an open client connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Counts a pending connection until the guard drops.
    pub fn pending_connection(self: &Arc<Self>) -> PendingGuard {
        self.pending_connections.fetch_add(1, Ordering::Relaxed);
        PendingGuard(self.clone())
    }

    /// A connection shed at the cap.
    pub fn shed(&self, why: Shed) {
        self.shed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an SSE stream until the guard drops (the stream ended or the client went).
    pub fn sse_stream(&self) -> SseGuard {
        self.sse_streams.fetch_add(1, Ordering::Relaxed);
        SseGuard(self.sse_streams.clone())
    }
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    store: Store,
    series: Mutex<Series>,
    servers: Vec<Arc<ServerStats>>,
    /// Port -> server index: a counter whose port is a server's listen or upstream port is that
    /// server's.
    port_server: HashMap<u16, usize>,
    /// Ports of this instance's kernel claim that belong to no server (`--protect-port`): their
    /// kernel events are exported with `server=""`.
    instance_ports: HashSet<u16>,
    /// Set when kernel enforcement started: what `mcp_gateway_ebpf_enforcing` checks.
    enforcing: Option<KernelCheck>,
    /// Whether kernel enforcement was asked for (`--ebpf auto` or `required`).
    kernel_expected: AtomicBool,
    /// Set while one of this gateway's ports is under lockdown (by the lock watcher).
    lockdown: Arc<AtomicBool>,
    /// Failed reads of the counters.
    read_errors: AtomicU64,
    /// The audit log, when one is written: its dropped and failed lines are exported.
    audit: std::sync::OnceLock<Arc<crate::mcp::audit::AuditLog>>,
    /// The background scan's results, when `--scan-interval` runs one.
    scan: std::sync::OnceLock<Arc<crate::scan::watch::ScanStats>>,
    /// The confined servers' egress rules: in force or not, and their denials.
    egress: std::sync::OnceLock<Arc<crate::ebpf::confine::Egress>>,
    /// The servers the gateway starts itself.
    supervised: std::sync::OnceLock<Vec<Arc<crate::supervise::Server>>>,
}

impl Metrics {
    /// Rejections counted in this process only (no kernel layer).
    pub fn in_process(label_budget: usize, servers: &[ServerInfo]) -> Self {
        Self::with_store(Store::in_process(), label_budget, servers, None)
    }

    /// Rejections counted in the map pinned beside `check`'s claim (kernel enforcement is on);
    /// falls back to in-process counting, with a warning, when the map can't be opened.
    pub fn pinned(label_budget: usize, servers: &[ServerInfo], check: KernelCheck) -> Self {
        let store = match Store::pinned(&check.pin_dir) {
            Ok(Some(store)) => store,
            Ok(None) => {
                tracing::warn!(pin_dir = %check.pin_dir.display(), "no pinned counters map: rejections are counted in this process only");
                Store::in_process()
            }
            Err(e) => {
                tracing::warn!(error = %e, "opening the pinned counters map failed: rejections are counted in this process only");
                Store::in_process()
            }
        };
        Self::with_store(store, label_budget, servers, Some(check))
    }

    fn with_store(
        store: Store,
        label_budget: usize,
        servers: &[ServerInfo],
        enforcing: Option<KernelCheck>,
    ) -> Self {
        let mut port_server = HashMap::new();
        for (i, s) in servers.iter().enumerate() {
            port_server.insert(s.listen_port, i);
            if let Some(port) = s.upstream_port {
                port_server.entry(port).or_insert(i);
            }
        }
        let instance_ports = enforcing
            .iter()
            .flat_map(|c| c.claim.ports.keys().copied())
            .filter(|p| !port_server.contains_key(p))
            .collect();
        let metrics = Self {
            store,
            series: Mutex::new(Series::new(label_budget)),
            servers: servers
                .iter()
                .map(|s| Arc::new(ServerStats::new(s)))
                .collect(),
            port_server,
            instance_ports,
            enforcing,
            kernel_expected: AtomicBool::new(false),
            lockdown: Arc::default(),
            read_errors: AtomicU64::new(0),
            audit: std::sync::OnceLock::new(),
            scan: std::sync::OnceLock::new(),
            egress: std::sync::OnceLock::new(),
            supervised: std::sync::OnceLock::new(),
        };
        // Seed the budget from what the map already holds, busiest first, so the series a
        // previous run exported keep their labels.
        metrics.refresh();
        metrics
    }

    /// Records whether kernel enforcement was asked for (`mcp_gateway_ebpf_expected`).
    pub fn expect_kernel(&self, expected: bool) {
        self.kernel_expected.store(expected, Ordering::Relaxed);
    }

    /// Exports the audit log's dropped and failed lines.
    pub fn watch_audit(&self, log: Arc<crate::mcp::audit::AuditLog>) {
        let _ = self.audit.set(log);
    }

    /// Exports the background scan's results (`mcp_gateway_scan_*`).
    pub fn watch_scan(&self, stats: Arc<crate::scan::watch::ScanStats>) {
        let _ = self.scan.set(stats);
    }

    /// Exports the confined servers' egress state (`mcp_gateway_egress_*`).
    pub fn watch_egress(&self, egress: Arc<crate::ebpf::confine::Egress>) {
        let _ = self.egress.set(egress);
    }

    /// Exports the supervised servers' state (`mcp_gateway_server_*`).
    pub fn watch_supervised(&self, servers: Vec<Arc<crate::supervise::Server>>) {
        let _ = self.supervised.set(servers);
    }

    /// The flag behind `mcp_gateway_lockdown`.
    pub fn lockdown_flag(&self) -> Arc<AtomicBool> {
        self.lockdown.clone()
    }

    /// The per-request series of server `index` (in configuration order).
    pub fn server(&self, index: usize) -> Arc<ServerStats> {
        self.servers[index].clone()
    }

    /// Whether rejections go to the pinned map (shared with the kernel, persistent).
    pub fn is_pinned(&self) -> bool {
        self.store.is_pinned()
    }

    /// One HTTP rejection by the server listening on `port`. `origin` is the sanitised Origin
    /// or Host value; `credential` the client's credential label, once known.
    pub fn reject(&self, reason: Reason, port: u16, origin: &str, credential: Option<&str>) {
        self.store
            .add(reason, port, origin, credential.unwrap_or(""));
    }

    /// The `server` label of a counter: its server's name, `""` for this instance's extra
    /// protected ports, `None` for another instance's counter (that instance exports it).
    fn server_label(&self, counter: &Counter) -> Option<String> {
        let port = counter.owner_port();
        if let Some(i) = self.port_server.get(&port) {
            return Some(self.servers[*i].name.clone());
        }
        let kernel = counter.reason().is_some_and(Reason::is_kernel);
        (kernel && self.instance_ports.contains(&port)).then(String::new)
    }

    /// Reads the counters into the exported series. The series lock is held across the read:
    /// two scrapes folding their snapshots in the wrong order would look like a reset.
    fn refresh(&self) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        match self.store.snapshot() {
            Ok(snapshot) => series.update(
                snapshot
                    .into_iter()
                    .filter_map(|c| Some((self.server_label(&c)?, c)))
                    .collect(),
            ),
            Err(e) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "reading the rejection counters failed; /metrics shows the last values read");
            }
        }
    }

    /// Whether this instance's claim is in force: its record, ports, flags, allowed cgroups and
    /// links are all still pinned (another instance, or `mcp-gateway detach`, can't have taken
    /// them away unnoticed).
    fn ebpf_enforcing(&self) -> bool {
        self.enforcing.as_ref().is_some_and(|c| c.lost().is_empty())
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        self.refresh();
        let mut enc = Encoder::new(format);

        enc.family(
            "mcp_gateway_rejections",
            Kind::Counter,
            "Rejected requests (HTTP), refused handshakes (TLS) and refused packets, binds and connects (kernel), by server, credential (once the client was identified), reason and origin (origin=\"other\" once the label budget is used up).",
        );
        {
            let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            for (server, credential, reason, origin, count) in series.totals() {
                enc.sample(
                    "mcp_gateway_rejections_total",
                    &with_credential(
                        ("server", server),
                        credential,
                        &[("reason", reason.name()), ("origin", origin)],
                    ),
                    count,
                );
            }
        }

        enc.family(
            "mcp_gateway_requests",
            Kind::Counter,
            "Requests answered by the gateway, by server, credential (when authenticated), method and status.",
        );
        for s in &self.servers {
            let requests = s.requests.lock().unwrap_or_else(PoisonError::into_inner);
            for ((credential, method, status), count) in requests.iter() {
                enc.sample(
                    "mcp_gateway_requests_total",
                    &with_credential(
                        ("server", &s.name),
                        credential,
                        &[("method", method), ("status", &status.to_string())],
                    ),
                    count,
                );
            }
        }

        for (i, (name, help)) in [
            (
                "mcp_gateway_config_reloads",
                "Reloads of credentials and TLS files that took effect, by server and what (credentials, tls).",
            ),
            (
                "mcp_gateway_config_reload_errors",
                "Reloads that failed (unreadable or malformed file): the previous credentials or certificate stay in force.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            enc.family(name, Kind::Counter, help);
            for s in &self.servers {
                let reloads = s.reloads.lock().unwrap_or_else(PoisonError::into_inner);
                for (what, counts) in reloads.iter() {
                    enc.sample(
                        &format!("{name}_total"),
                        &[("server", &s.name), ("what", what)],
                        counts[i],
                    );
                }
            }
        }

        enc.family(
            "mcp_gateway_upstream_request_duration_seconds",
            Kind::Histogram,
            "Time from sending a request to the MCP server to its response head (for SSE, the start of the stream).",
        );
        for s in &self.servers {
            let h = s.upstream.lock().unwrap_or_else(PoisonError::into_inner);
            let name = "mcp_gateway_upstream_request_duration_seconds";
            let server = ("server", s.name.as_str());
            for (count, (_, le)) in h.buckets.iter().zip(BUCKETS) {
                enc.sample(&format!("{name}_bucket"), &[server, ("le", le)], count);
            }
            enc.sample(
                &format!("{name}_bucket"),
                &[server, ("le", "+Inf")],
                h.count,
            );
            enc.sample(&format!("{name}_sum"), &[server], h.sum);
            enc.sample(&format!("{name}_count"), &[server], h.count);
        }

        enc.family(
            "mcp_gateway_tls_certificate_not_after_seconds",
            Kind::Gauge,
            "When the TLS certificate in force expires, in Unix seconds (servers with TLS only).",
        );
        for s in &self.servers {
            let t = s.certificate_not_after.load(Ordering::Relaxed);
            if t > 0 {
                enc.sample(
                    "mcp_gateway_tls_certificate_not_after_seconds",
                    &[("server", &s.name)],
                    t,
                );
            }
        }

        let per_server = [
            (
                "mcp_gateway_open_connections",
                "Client connections served now (at most max_connections).",
            ),
            (
                "mcp_gateway_pending_connections",
                "Client connections accepted at max_connections and held until their first request is complete (slow clients show here).",
            ),
            ("mcp_gateway_sse_streams", "SSE streams being relayed now."),
        ];
        for (name, help) in per_server {
            enc.family(name, Kind::Gauge, help);
            for s in &self.servers {
                let value = match name {
                    "mcp_gateway_open_connections" => s.open_connections.load(Ordering::Relaxed),
                    "mcp_gateway_pending_connections" => {
                        s.pending_connections.load(Ordering::Relaxed)
                    }
                    _ => s.sse_streams.load(Ordering::Relaxed),
                };
                enc.sample(name, &[("server", &s.name)], value);
            }
        }

        enc.family(
            "mcp_gateway_connections_shed",
            Kind::Counter,
            "Client connections shed at max_connections, by why: evicted, a connection waiting on its client (a slow client, an idle keep-alive) closed for a new client's request; pending, the oldest of the connections held without a request closed for a newer one; busy, a new client's request answered 503 as every connection was busy upstream.",
        );
        for s in &self.servers {
            for why in Shed::ALL {
                enc.sample(
                    "mcp_gateway_connections_shed_total",
                    &[("server", &s.name), ("why", why.as_str())],
                    s.shed[why as usize].load(Ordering::Relaxed),
                );
            }
        }

        let gauges = [
            (
                "mcp_gateway_ebpf_enforcing",
                "1 when every port this gateway instance claims is protected by the kernel programs as it asked (checked at each scrape), else 0.",
                i64::from(self.ebpf_enforcing()),
            ),
            (
                "mcp_gateway_ebpf_expected",
                "1 when kernel enforcement was asked for (--ebpf auto or required), 0 with --ebpf off.",
                i64::from(self.kernel_expected.load(Ordering::Relaxed)),
            ),
            (
                "mcp_gateway_lockdown",
                "1 while a lockdown (mcp-gateway lockdown) cuts one of this gateway's ports, else 0.",
                i64::from(self.lockdown.load(Ordering::Relaxed)),
            ),
            (
                "mcp_gateway_rejections_persistent",
                "1 when rejections are counted in the pinned BPF map (persistent), 0 when only in this process.",
                i64::from(self.is_pinned()),
            ),
        ];
        for (name, help, value) in gauges {
            enc.family(name, Kind::Gauge, help);
            enc.sample(name, &[], value);
        }

        let supervised = self.supervised.get().map(Vec::as_slice).unwrap_or_default();
        enc.family(
            "mcp_gateway_server_up",
            Kind::Gauge,
            "1 while the process of a server the gateway starts itself (`command`) runs, else 0 (exited, crashed, waiting to be started again).",
        );
        for s in supervised {
            enc.sample(
                "mcp_gateway_server_up",
                &[("server", &s.name)],
                i64::from(s.up.load(Ordering::Relaxed)),
            );
        }
        enc.family(
            "mcp_gateway_sandbox_enforcing",
            Kind::Gauge,
            "1 when a server the gateway starts runs in its Landlock file system sandbox, 0 when it does not (sandbox = \"off\", or no Landlock in this kernel).",
        );
        for s in supervised {
            enc.sample(
                "mcp_gateway_sandbox_enforcing",
                &[("server", &s.name)],
                i64::from(s.sandboxed),
            );
        }
        enc.family(
            "mcp_gateway_server_limit_enforcing",
            Kind::Gauge,
            "1 when the kernel enforces a limit of a server the gateway starts (memory_max, cpu_max, pids_max), 0 when it cannot here (the controller is not in cgroup v2, or not enabled for the gateway's cgroup).",
        );
        for s in supervised {
            for (limit, enforced) in &s.limits {
                enc.sample(
                    "mcp_gateway_server_limit_enforcing",
                    &[("server", &s.name), ("limit", limit.key)],
                    i64::from(*enforced),
                );
            }
        }
        enc.family(
            "mcp_gateway_server_restarts",
            Kind::Counter,
            "Times a server the gateway starts itself was started again after it exited.",
        );
        for s in supervised {
            enc.sample(
                "mcp_gateway_server_restarts_total",
                &[("server", &s.name)],
                s.restarts.load(Ordering::Relaxed),
            );
        }

        // The families are always described (dashboards and alerts can name them); the
        // samples are the confined servers'.
        let reports = self.egress.get().map(|e| e.report()).unwrap_or_default();
        enc.family(
            "mcp_gateway_egress_enforcing",
            Kind::Gauge,
            "1 when the kernel enforces this confined server's egress rules (its cgroup's programs are attached and the maps hold its rules, checked at each scrape), else 0.",
        );
        for r in &reports {
            enc.sample(
                "mcp_gateway_egress_enforcing",
                &[("server", &r.name)],
                i64::from(r.enforcing),
            );
        }
        enc.family(
            "mcp_gateway_egress_denied",
            Kind::Counter,
            "Connections and datagrams of a confined server refused by its egress rules, by destination address and port (destination=\"other\" past 32 destinations per server).",
        );
        for r in &reports {
            for (destination, count) in &r.denied {
                enc.sample(
                    "mcp_gateway_egress_denied_total",
                    &[("server", &r.name), ("destination", destination)],
                    *count,
                );
            }
        }

        enc.family(
            "mcp_gateway_rejection_store_errors",
            Kind::Counter,
            "Rejections that could not be written to, or counter reads that failed on, the pinned map.",
        );
        enc.sample(
            "mcp_gateway_rejection_store_errors_total",
            &[("op", "write")],
            self.store.failed(),
        );
        enc.sample(
            "mcp_gateway_rejection_store_errors_total",
            &[("op", "read")],
            self.read_errors.load(Ordering::Relaxed),
        );

        let audit = self.audit.get();
        let queues = [
            (
                "mcp_gateway_audit_dropped",
                "Audit lines dropped because the audit log's queue was full (its writer is stuck or too slow: a full disk, a pipe nobody reads).",
                audit.map_or(0, |a| a.dropped()),
            ),
            (
                "mcp_gateway_audit_write_errors",
                "Audit lines the audit log's writer could not write (disk full, permissions).",
                audit.map_or(0, |a| a.failed()),
            ),
            (
                "mcp_gateway_log_dropped",
                "Log lines dropped because stderr could not take them (its reader stalled).",
                crate::security_log::log_dropped(),
            ),
        ];
        for (name, help, value) in queues {
            enc.family(name, Kind::Counter, help);
            enc.sample(&format!("{name}_total"), &[], value);
        }

        // The families are always declared; samples only while a background scan runs (a 0
        // from a gateway that does not scan would claim a host with nothing exposed).
        let scan = self.scan.get();
        enc.family(
            "mcp_gateway_scan_servers",
            Kind::Gauge,
            "Listening sockets of this host by the verdict of the last successful scan (run --scan-interval; see docs/scan.md).",
        );
        if let Some(scan) = scan {
            for (verdict, count) in crate::scan::watch::VERDICTS.iter().zip(&scan.servers) {
                enc.sample(
                    "mcp_gateway_scan_servers",
                    &[("verdict", verdict.name())],
                    count.load(Ordering::Relaxed),
                );
            }
        }
        enc.family(
            "mcp_gateway_scan_last_success_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last successful background scan (0 before the first).",
        );
        if let Some(scan) = scan {
            enc.sample(
                "mcp_gateway_scan_last_success_timestamp_seconds",
                &[],
                scan.last_success.load(Ordering::Relaxed),
            );
        }
        enc.family(
            "mcp_gateway_scan_failures",
            Kind::Counter,
            "Background scans that failed (the log says why).",
        );
        if let Some(scan) = scan {
            enc.sample(
                "mcp_gateway_scan_failures_total",
                &[],
                scan.failures.load(Ordering::Relaxed),
            );
        }

        enc.family(
            "mcp_gateway_build_info",
            Kind::Gauge,
            "Always 1; the labels describe the build.",
        );
        enc.sample(
            "mcp_gateway_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("MCP_GATEWAY_COMMIT")),
                ("map_layout", &LAYOUT_VERSION.to_string()),
            ],
            1,
        );
        enc.finish()
    }
}

/// `server`, then `credential` unless empty, then `rest`.
fn with_credential<'a>(
    server: (&'a str, &'a str),
    credential: &'a str,
    rest: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut labels = Vec::with_capacity(2 + rest.len());
    labels.push(server);
    if !credential.is_empty() {
        labels.push(("credential", credential));
    }
    labels.extend_from_slice(rest);
    labels
}

/// Holds one `mcp_gateway_open_connections`.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ServerStats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one `mcp_gateway_pending_connections`.
#[derive(Debug)]
pub struct PendingGuard(Arc<ServerStats>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one `mcp_gateway_sse_streams` while alive.
#[derive(Debug)]
pub struct SseGuard(Arc<AtomicI64>);

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
