//! The gateway's own system calls (the BPF ones are in `ebpf::sys`, the sock_diag ones in
//! `lockdown::sockets`): the only places besides those where the crate uses `unsafe`. Each
//! function is safe to call with any argument.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// Raises the soft limit on open files to the hard limit; the limit now in force, if it could
/// be read.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, a valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, a valid local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

/// This process's (uid, gid).
pub fn ids() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: getuid/getgid cannot fail and take no pointers.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The first buffer size tried for getpwuid_r, and the largest: a passwd entry longer than
/// this (a huge GECOS field from a directory service) is treated as unknown.
const PASSWD_BUF: (usize, usize) = (1024, 1024 * 1024);

/// The name of user `uid`, when the passwd database has it.
pub fn user_name(uid: libc::uid_t) -> Option<String> {
    with_growing_buffer(PASSWD_BUF, |buf| {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `pwd` and `result` are writable, `buf`
        // is writable for its whole length, which is passed.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success getpwuid_r filled `pwd` (which `result` points to), whose pw_name
        // points into `buf`, still alive here.
        let name = unsafe { std::ffi::CStr::from_ptr((*result).pw_name) };
        Ok(Some(name.to_string_lossy().into_owned()))
    })
    .flatten()
}

/// The uid and primary gid of user `name`, when the passwd database has it.
pub fn user_by_name(name: &str) -> Option<(libc::uid_t, libc::gid_t)> {
    let name = std::ffi::CString::new(name).ok()?;
    with_growing_buffer(PASSWD_BUF, |buf| {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is a C string, `pwd` and `result`
        // are writable, `buf` is writable for its whole length, which is passed.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success getpwnam_r filled `pwd`, which `result` points to.
        let pwd = unsafe { &*result };
        Ok(Some((pwd.pw_uid, pwd.pw_gid)))
    })
    .flatten()
}

/// The gid of group `name`, when the group database has it.
pub fn group_by_name(name: &str) -> Option<libc::gid_t> {
    let name = std::ffi::CString::new(name).ok()?;
    with_growing_buffer(PASSWD_BUF, |buf| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `user_by_name`, with getgrnam_r.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success getgrnam_r filled `grp`, which `result` points to.
        Ok(Some(unsafe { (*result).gr_gid }))
    })
    .flatten()
}

/// Calls `call` with a buffer of `first` bytes, doubled for as long as it answers `ERANGE`
/// (the buffer was too small), up to `max` bytes; `None` on any other error or past `max`.
fn with_growing_buffer<T>(
    (first, max): (usize, usize),
    mut call: impl FnMut(&mut [u8]) -> Result<T, libc::c_int>,
) -> Option<T> {
    let mut size = first.max(1);
    loop {
        let mut buf = vec![0_u8; size];
        match call(&mut buf) {
            Ok(value) => return Some(value),
            Err(libc::ERANGE) if size < max => size = (size * 2).min(max),
            Err(_) => return None,
        }
    }
}

/// Copies the bytes waiting on socket `fd` into `buf`, leaving them there; never waits.
pub fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) into a buffer we own, of its length, on an open descriptor.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// What a supervised child gets between fork and exec.
#[derive(Clone, Copy, Debug)]
pub struct ChildConfinement {
    /// `cgroup.procs` of its cgroup, open for writing: it joins it.
    pub procs: Option<std::os::fd::RawFd>,
    /// A Landlock ruleset: it restricts itself with it.
    pub landlock: Option<std::os::fd::RawFd>,
    /// The highest capability number of this kernel (/proc/sys/kernel/cap_last_cap).
    pub cap_last: u32,
}

/// The highest capability number of this kernel.
pub fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Prepares `cmd`'s child, between fork and exec, for supervision: it joins its cgroup (before
/// the program runs, so all of it is confined); it leads a new session (its whole process group
/// can be signalled); it gets SIGKILL when the thread that spawned it exits (spawn from a
/// runtime worker thread, which lives as long as the gateway); it can never gain privileges
/// (`no_new_privs`); it has no capability left, in any set; and it is restricted by its
/// Landlock ruleset.
pub fn supervise_child(cmd: &mut std::process::Command, how: ChildConfinement) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (write, setsid, prctl, syscall) on values it owns: no allocation, no locks. The
    // descriptors are ones the parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(io::Error::last_os_error());
            if let Some(fd) = how.procs {
                // Writing 0 moves the writing process.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail();
                }
            }
            if libc::setsid() < 0 {
                return fail();
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return fail();
            }
            // Capabilities: none ambient, none in the bounding set (where we may drop them:
            // CAP_SETPCAP; without it the bounding set is already the unit's), none at all.
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
            {
                return fail();
            }
            let mut cap = 0;
            while cap <= how.cap_last {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                cap += 1;
            }
            let mut header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [CapData::default(); 2];
            if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
                return fail();
            }
            if let Some(fd) = how.landlock
                && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sends `signal` to process group `pgid` (a supervised server and everything it forked in its
/// session). `false` when there is no such group any more.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers; a negative pid names the process group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Sends `signal` to process `pid`. `false` when there is no such process.
pub fn signal_pid(pid: i32, signal: i32) -> bool {
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_on_erange_within_its_bound() {
        // (first, max, the size the call needs, what comes back)
        let cases: [(usize, usize, usize, Option<usize>); 5] = [
            (1024, 1 << 20, 100, Some(1024)),
            (1024, 1 << 20, 5000, Some(8192)),
            (1024, 1 << 20, 1 << 20, Some(1 << 20)),
            // Past the bound: given up, not grown forever.
            (1024, 1 << 20, (1 << 20) + 1, None),
            (0, 4, 3, Some(4)),
        ];
        for (first, max, needs, want) in cases {
            let mut calls = 0;
            let got = with_growing_buffer((first, max), |buf| {
                calls += 1;
                if buf.len() >= needs {
                    Ok(buf.len())
                } else {
                    Err(libc::ERANGE)
                }
            });
            assert_eq!(got, want, "first {first}, max {max}, needs {needs}");
            assert!(calls <= 21, "{calls} calls");
        }
        // Any other error ends it at once.
        let mut calls = 0;
        let got = with_growing_buffer((8, 1024), |_| -> Result<(), _> {
            calls += 1;
            Err(libc::EIO)
        });
        assert_eq!((got, calls), (None, 1));
    }

    #[test]
    fn this_process_has_a_user_name() {
        let (uid, _) = ids();
        // The test runs as a user the passwd database knows (root in CI).
        assert!(user_name(uid).is_some_and(|n| !n.is_empty()));
        assert_eq!(user_name(u32::MAX - 7), None);
    }
}
