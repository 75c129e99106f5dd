//! The few bpf(2) commands aya 0.14 doesn't expose: open a pinned object, force-detach a link,
//! and list the programs attached to a cgroup.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_DETACH: libc::c_long = 34;

/// Kernel attach types (`enum bpf_attach_type`) of our programs.
pub mod attach_type {
    pub const INGRESS: u32 = 0;
    pub const BIND4: u32 = 8;
    pub const BIND6: u32 = 9;
    pub const CONNECT4: u32 = 10;
    pub const CONNECT6: u32 = 11;

    /// The attach type of each of our programs, by program name.
    pub fn of(program: &str) -> Option<u32> {
        use gateway_common::program as p;
        Some(match program {
            p::INGRESS => INGRESS,
            p::BIND4 => BIND4,
            p::BIND6 => BIND6,
            p::CONNECT4 => CONNECT4,
            p::CONNECT6 => CONNECT6,
            _ => return None,
        })
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid and writable for
    // its whole size; the kernel reads and writes at most `size_of::<T>()` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = Attr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Detaches a link from its hook now, even if other descriptors or pins still hold it
/// (Linux 5.9). The link object lives on, defunct, until its last reference goes.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
    }
    let mut attr = Attr {
        link_fd: link.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// Ids of the programs attached directly to `cgroup` for `attach_type` (not inherited ones).
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    #[repr(C)]
    struct Attr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        reserved: u32,
    }
    let mut ids = vec![0u32; 64];
    let mut attr = Attr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        reserved: 0,
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Names of the programs attached directly to the cgroup directory `cgroup`, for our attach
/// types, as (program name, attach type).
pub fn attached_programs(cgroup: &Path) -> io::Result<Vec<(String, u32)>> {
    let dir = std::fs::File::open(cgroup)?;
    let loaded: Vec<_> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .collect();
    let mut out = Vec::new();
    for kind in [
        attach_type::INGRESS,
        attach_type::BIND4,
        attach_type::BIND6,
        attach_type::CONNECT4,
        attach_type::CONNECT6,
    ] {
        use std::os::fd::AsFd as _;
        for id in prog_query(dir.as_fd(), kind)? {
            let name = loaded
                .iter()
                .find(|p| p.id() == id)
                .and_then(|p| p.name_as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("prog#{id}"));
            out.push((name, kind));
        }
    }
    Ok(out)
}
