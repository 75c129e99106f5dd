//! Forwards the programs' aya-log records into this process's `tracing` output (debug level).
use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

/// A `log::Log` that re-emits every record as a `tracing` debug event (the records are about
/// single packets or syscalls: debug detail, never warnings in the gateway's log).
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(
            target: "mcp_gateway::ebpf::kernel",
            level = %record.level(),
            "{}",
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Takes the object's `AYA_LOGS` ring buffer. Fails if the object has none.
pub fn logger(bpf: &mut aya::Ebpf) -> Result<EbpfLogger<TracingLog>, aya_log::Error> {
    EbpfLogger::init_with_logger(bpf, TracingLog)
}

/// Drains the ring buffer whenever its descriptor becomes readable. Needs a tokio runtime.
pub fn spawn(logger: EbpfLogger<TracingLog>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the logger owns the ring buffer's descriptor, which stays open and the same for
        // as long as the logger lives, and the AsyncFd owns the logger.
        let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(error = %e, "kernel program logs are not forwarded");
                return;
            }
        };
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::debug!(error = %e, "stopped forwarding kernel program logs");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    })
}

/// Calls `each` with every record of the ring buffer `ring` as it arrives (the egress denial
/// records). Needs a tokio runtime.
pub fn spawn_ring(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    mut each: impl FnMut(&[u8]) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the ring buffer owns its map descriptor, which stays open and the same for as
        // long as it lives, and the AsyncFd owns the ring buffer.
        let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "egress denials are counted but not logged: watching their ring buffer failed");
                return;
            }
        };
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(error = %e, "stopped logging egress denials");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(record) = ring.next() {
                each(&record);
            }
            guard.clear_ready();
        }
    })
}
