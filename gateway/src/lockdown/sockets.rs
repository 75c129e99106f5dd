//! Resetting established TCP connections, as `ss -K` does: a `sock_diag` dump of the TCP
//! sockets of this network namespace, then `SOCK_DESTROY` for each one whose local or remote
//! port is locked (the kernel aborts it: both ends see the connection reset). Listening sockets
//! are left alone, so the server can accept again once the lockdown is released.
//!
//! Needs CAP_NET_ADMIN and a kernel with `CONFIG_INET_DIAG_DESTROY`.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u8 = 10;
/// Every TCP state but LISTEN (bit n = state n).
const NOT_LISTENING: u32 = !(1 << TCP_LISTEN);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid`: ports and addresses in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Request {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct inet_diag_msg` (the kernel always sends all of it, attributes follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// One socket of the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    family: u8,
    state: u8,
    id: SockId,
}

impl Socket {
    pub fn local_port(&self) -> u16 {
        u16::from_be_bytes(self.id.sport)
    }

    pub fn remote_port(&self) -> u16 {
        u16::from_be_bytes(self.id.dport)
    }

    pub fn is_listening(&self) -> bool {
        self.state == TCP_LISTEN
    }
}

/// Which sockets a lockdown resets: connected ones with a locked local or remote port.
pub fn to_reset(sockets: &[Socket], locked: impl Fn(u16) -> bool) -> Vec<Socket> {
    sockets
        .iter()
        .filter(|s| !s.is_listening() && (locked(s.local_port()) || locked(s.remote_port())))
        .copied()
        .collect()
}

/// Plain old data: a `#[repr(C)]` struct of integers without padding, so every byte of a value
/// is initialised and every bit pattern is a valid value. What makes [`as_bytes`] and
/// [`read_struct`] sound for a type, checked where the type implements it.
///
/// # Safety
/// Implement only for such types (the tests assert their sizes add up: no padding).
unsafe trait Plain: Copy + Default {}

// SAFETY: each is #[repr(C)] with integer and integer-array fields only, naturally aligned and
// without padding (sizes asserted in the tests).
unsafe impl Plain for NlMsgHdr {}
// SAFETY: as above.
unsafe impl Plain for SockId {}
// SAFETY: as above.
unsafe impl Plain for Request {}
// SAFETY: as above.
unsafe impl Plain for DiagMsg {}

fn as_bytes<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: `T: Plain`: all `size_of::<T>()` bytes of the value are initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

fn read_struct<T: Plain>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..size_of::<T>())?;
    let mut out = T::default();
    // SAFETY: `out` is exactly `size_of::<T>()` bytes, and `T: Plain` makes any bit pattern a
    // valid value of it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            std::ptr::from_mut(&mut out).cast::<u8>(),
            size_of::<T>(),
        );
    }
    Some(out)
}

struct Netlink(OwnedFd);

impl Netlink {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, kind: u16, flags: u16, seq: u32, req: &Request) -> io::Result<()> {
        let hdr = NlMsgHdr {
            len: (size_of::<NlMsgHdr>() + size_of::<Request>()) as u32,
            kind,
            flags,
            seq,
            pid: 0,
        };
        let mut buf = Vec::with_capacity(hdr.len as usize);
        buf.extend_from_slice(as_bytes(&hdr));
        buf.extend_from_slice(as_bytes(req));
        // SAFETY: `buf` is valid for its length; the kernel is the destination (pid 0) by
        // default for an unbound netlink socket's send.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads messages until `done` says stop; each message is (header, payload).
    fn recv(&self, mut each: impl FnMut(&NlMsgHdr, &[u8]) -> io::Result<bool>) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while let Some(hdr) = read_struct::<NlMsgHdr>(rest) {
                let len = (hdr.len as usize).max(size_of::<NlMsgHdr>());
                let payload = rest
                    .get(size_of::<NlMsgHdr>()..len.min(rest.len()))
                    .unwrap_or(&[]);
                if !each(&hdr, payload)? {
                    return Ok(());
                }
                // Messages are 4-byte aligned.
                let next = (len + 3) & !3;
                if next >= rest.len() {
                    break;
                }
                rest = &rest[next..];
            }
        }
    }
}

/// The error code of an `NLMSG_ERROR` payload (0 is an acknowledgement).
fn nl_error(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Every TCP socket of this namespace but the listening ones, IPv4 and IPv6.
pub fn tcp_sockets() -> io::Result<Vec<Socket>> {
    Ok(dump(NOT_LISTENING)?
        .into_iter()
        .map(|msg| Socket {
            family: msg.family,
            state: msg.state,
            id: msg.id,
        })
        .collect())
}

/// One listening TCP socket of this network namespace, as `sock_diag` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: std::net::SocketAddr,
    /// The owner's uid.
    pub uid: u32,
    /// The socket's inode: `/proc/PID/fd/N` links to `socket:[inode]`.
    pub inode: u32,
}

/// Every listening TCP socket of this namespace, IPv4 and IPv6 (no privilege needed).
pub fn tcp_listeners() -> io::Result<Vec<Listener>> {
    Ok(dump(1 << TCP_LISTEN)?
        .into_iter()
        .filter_map(|msg| {
            let port = u16::from_be_bytes(msg.id.sport);
            let ip: std::net::IpAddr = match i32::from(msg.family) {
                libc::AF_INET => std::net::Ipv4Addr::new(
                    msg.id.src[0],
                    msg.id.src[1],
                    msg.id.src[2],
                    msg.id.src[3],
                )
                .into(),
                libc::AF_INET6 => std::net::Ipv6Addr::from(msg.id.src).into(),
                _ => return None,
            };
            Some(Listener {
                addr: (ip, port).into(),
                uid: msg.uid,
                inode: msg.inode,
            })
        })
        .collect())
}

/// The TCP sockets in `states` (bit n = state n), IPv4 and IPv6.
fn dump(states: u32) -> io::Result<Vec<DiagMsg>> {
    let nl = Netlink::open()?;
    let mut out = Vec::new();
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        let req = Request {
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            states,
            ..Request::default()
        };
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        nl.send(SOCK_DIAG_BY_FAMILY, flags, seq, &req)?;
        nl.recv(|hdr, payload| match hdr.kind {
            NLMSG_DONE => Ok(false),
            NLMSG_ERROR => Err(io::Error::from_raw_os_error(-nl_error(payload))),
            _ => {
                if let Some(msg) = read_struct::<DiagMsg>(payload) {
                    out.push(msg);
                }
                Ok(true)
            }
        })?;
    }
    Ok(out)
}

/// Resets `socket` (SOCK_DESTROY). A socket already gone is not an error.
pub fn destroy(socket: &Socket) -> io::Result<()> {
    let nl = Netlink::open()?;
    let req = Request {
        family: socket.family,
        protocol: libc::IPPROTO_TCP as u8,
        states: u32::MAX,
        id: socket.id,
        ..Request::default()
    };
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    nl.send(SOCK_DESTROY, flags, 1, &req)?;
    let mut result = Ok(());
    nl.recv(|hdr, payload| {
        if hdr.kind == NLMSG_ERROR {
            let code = -nl_error(payload);
            result = match code {
                0 | libc::ENOENT => Ok(()),
                libc::EOPNOTSUPP => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this kernel cannot reset sockets: it was built without \
                     CONFIG_INET_DIAG_DESTROY",
                )),
                code => Err(io::Error::from_raw_os_error(code)),
            };
        }
        Ok(false)
    })?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const _: () = assert!(size_of::<SockId>() == 48);
    const _: () = assert!(size_of::<Request>() == 56);
    const _: () = assert!(size_of::<NlMsgHdr>() == 16);
    const _: () = assert!(size_of::<DiagMsg>() == 72);

    #[test]
    fn the_listener_dump_lists_a_listener_of_this_process_with_its_inode() {
        use std::{net::TcpListener, os::unix::fs::MetadataExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let found = tcp_listeners().expect("sock_diag dump of listeners");
        let mine = found
            .iter()
            .find(|l| l.addr == addr)
            .expect("our listener is in the dump");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        assert_eq!(u64::from(mine.inode), inode);
        assert_eq!(mine.uid, own_uid());
    }

    fn own_uid() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap()
    }

    fn sock(state: u8, sport: u16, dport: u16) -> Socket {
        Socket {
            family: libc::AF_INET as u8,
            state,
            id: SockId {
                sport: sport.to_be_bytes(),
                dport: dport.to_be_bytes(),
                ..SockId::default()
            },
        }
    }

    #[test]
    fn connected_sockets_on_locked_ports_are_reset_listeners_kept() {
        const ESTABLISHED: u8 = 1;
        let sockets = [
            sock(TCP_LISTEN, 8000, 0),
            sock(ESTABLISHED, 8000, 51000),
            sock(ESTABLISHED, 51000, 8000),
            sock(ESTABLISHED, 51001, 9000),
            sock(ESTABLISHED, 22, 51002),
        ];
        let reset = to_reset(&sockets, |p| p == 8000);
        let ports: Vec<(u16, u16)> = reset
            .iter()
            .map(|s| (s.local_port(), s.remote_port()))
            .collect();
        assert_eq!(ports, [(8000, 51000), (51000, 8000)]);
    }

    #[test]
    fn the_dump_lists_a_connection_of_this_process() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _server = listener.accept().expect("accept");
        let sockets = match tcp_sockets() {
            Ok(sockets) => sockets,
            // sock_diag needs no privilege to list, but a sandbox may forbid netlink.
            Err(e) => panic!("sock_diag dump failed: {e}"),
        };
        let local = client.local_addr().unwrap().port();
        assert!(
            sockets
                .iter()
                .any(|s| s.local_port() == local && s.remote_port() == port)
        );
        assert!(
            sockets
                .iter()
                .any(|s| s.local_port() == port && s.remote_port() == local)
        );
        assert!(
            !sockets.iter().any(Socket::is_listening),
            "listeners are not dumped"
        );
    }
}
