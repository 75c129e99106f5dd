//! Who owns a socket: the process holding its inode, from /proc. As a user, only that user's
//! processes are visible; root sees every one.
use std::{collections::HashMap, fs, path::Path};

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub exe: Option<String>,
    /// Arguments joined by spaces (at most 512 characters).
    pub cmdline: String,
    /// The cgroup-v2 path.
    pub cgroup: Option<String>,
    /// The systemd unit, when the cgroup path names one.
    pub unit: Option<String>,
}

/// Socket inode → owning pid, for every process whose descriptors this user can read.
pub fn socket_owners() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l.to_string_lossy()))
            {
                out.entry(inode).or_insert(pid);
            }
        }
    }
    out
}

/// The inode of a `socket:[12345]` link.
pub fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The process `pid`, as far as /proc shows it.
pub fn describe(pid: u32) -> Owner {
    let dir = Path::new("/proc").join(pid.to_string());
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|raw| command_line(&raw))
        .unwrap_or_default();
    let cgroup = fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|text| cgroup_v2(&text));
    Owner {
        pid,
        exe: fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.display().to_string()),
        cmdline,
        unit: cgroup.as_deref().and_then(unit),
        cgroup,
    }
}

/// A NUL-separated command line as one printable line.
pub fn command_line(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(512)
        .collect()
}

/// The cgroup-v2 path of a /proc/PID/cgroup text (the `0::` line).
pub fn cgroup_v2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The innermost systemd unit a cgroup path names.
pub fn unit(cgroup: &str) -> Option<String> {
    cgroup
        .rsplit('/')
        .find(|c| {
            [".service", ".scope", ".socket"]
                .iter()
                .any(|s| c.ends_with(s))
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_read() {
        assert_eq!(socket_inode("socket:[1234]"), Some(1234));
        for bad in [
            "pipe:[1]",
            "socket:[x]",
            "socket:[1",
            "/dev/null",
            "socket:[99999999999]",
        ] {
            assert_eq!(socket_inode(bad), None, "{bad}");
        }
        assert_eq!(
            command_line(b"python3\0server.py\0--port\08000\0"),
            "python3 server.py --port 8000"
        );
        assert_eq!(command_line(b"evil\x1b[2J\0x"), "evil?[2J x");
        assert_eq!(command_line(&[b'a'; 2000]).len(), 512);
        let text = "12:pids:/system.slice/x.service\n0::/system.slice/mcp-weather.service\n";
        let cg = cgroup_v2(text).unwrap();
        assert_eq!(cg, "/system.slice/mcp-weather.service");
        assert_eq!(unit(&cg).as_deref(), Some("mcp-weather.service"));
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope").as_deref(),
            Some("run-r1.scope")
        );
        assert_eq!(unit("/"), None);
        assert_eq!(cgroup_v2("1:name=systemd:/x\n"), None);
    }

    #[test]
    fn this_process_owns_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = socket_inode(&link.to_string_lossy()).unwrap();
        assert_eq!(socket_owners().get(&inode), Some(&std::process::id()));
        let me = describe(std::process::id());
        assert!(me.exe.is_some());
        assert!(!me.cmdline.is_empty());
    }
}
