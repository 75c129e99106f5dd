//! `scan --unix`: the listening Unix stream sockets of this host, from `/proc/net/unix`, probed
//! for MCP over the socket itself. No web page and no other host can reach a Unix socket, so
//! DNS rebinding does not apply; who can connect is a matter of the socket file's permissions,
//! which the scan reports.
use serde::Serialize;

use super::{
    identify::{Found, Outcome},
    owner::Owner,
    verdict::{Reason, Verdict, reason},
};

/// One listening Unix stream socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixListener {
    /// The file system path, or `@name` for an abstract socket.
    pub path: String,
    pub inode: u32,
}

impl UnixListener {
    pub fn is_abstract(&self) -> bool {
        self.path.starts_with('@')
    }
}

/// `__SO_ACCEPTCON`: the socket listens.
const ACCEPTING: u32 = 0x0001_0000;
/// `SOCK_STREAM`.
const STREAM: u32 = 1;

/// The listening stream sockets with a name in the text of `/proc/net/unix`
/// (`Num RefCount Protocol Flags Type St Inode Path`). Lines that do not parse are skipped.
pub fn parse_proc_net_unix(text: &str) -> Vec<UnixListener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // Seven fields, then the path, which may itself hold spaces.
        let mut rest = line.trim_start();
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let Some((field, tail)) = rest.split_once(' ') else {
                fields.push(rest);
                rest = "";
                break;
            };
            fields.push(field);
            rest = tail.trim_start_matches(' ');
        }
        let [_, _, _, flags, kind, _, inode] = fields[..] else {
            continue;
        };
        let (Ok(flags), Ok(kind), Ok(inode)) = (
            u32::from_str_radix(flags, 16),
            u32::from_str_radix(kind, 16),
            inode.parse::<u32>(),
        ) else {
            continue;
        };
        let path = rest.trim_end_matches('\n');
        if flags & ACCEPTING == 0 || kind != STREAM || path.is_empty() {
            continue;
        }
        out.push(UnixListener {
            path: path
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
            inode,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.inode == b.inode);
    out
}

/// One Unix socket of the report.
#[derive(Clone, Debug, Serialize)]
pub struct UnixRow {
    pub path: String,
    /// The socket file's permission bits (`0660`), when it could be read.
    pub mode: Option<String>,
    /// `null` when the owning process is not visible (another user's, without root).
    pub owner: Option<Owner>,
    /// As for TCP sockets: `mcp`, `not-http`, `not-mcp`, `no-answer`, `closed`,
    /// `connect-failed`, `not-probed`.
    pub probe: &'static str,
    pub requests: Vec<String>,
    pub mcp: Option<Found>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

impl UnixRow {
    pub fn new(
        listener: &UnixListener,
        mode: Option<u32>,
        owner: Option<Owner>,
        outcome: Result<Outcome, String>,
        requests: Vec<String>,
    ) -> Self {
        let (verdict, reasons) = judge(&outcome, mode);
        let (probe, mcp) = match outcome {
            Err(_) => ("not-probed", None),
            Ok(Outcome::ConnectFailed(_)) => ("connect-failed", None),
            Ok(Outcome::NoAnswer) => ("no-answer", None),
            Ok(Outcome::ClosedEmpty) => ("closed", None),
            Ok(Outcome::NotHttp) => ("not-http", None),
            Ok(Outcome::NotMcp) => ("not-mcp", None),
            Ok(Outcome::Mcp { found, .. }) => ("mcp", Some(found)),
        };
        Self {
            path: listener.path.clone(),
            mode: mode.map(|m| format!("{:04o}", m & 0o7777)),
            owner,
            probe,
            requests,
            mcp,
            verdict,
            reasons,
        }
    }
}

/// The verdict on a Unix socket: an MCP server there is out of reach of web pages and other
/// hosts (`protected`); what is said of it is who else on this host may connect.
pub fn judge(outcome: &Result<Outcome, String>, mode: Option<u32>) -> (Verdict, Vec<Reason>) {
    let outcome = match outcome {
        Err(why) => {
            return (
                Verdict::Unknown,
                vec![reason(
                    "not-probed",
                    format!("not probed: {why}"),
                    "connect to it yourself to see what it serves",
                )],
            );
        }
        Ok(outcome) => outcome,
    };
    match outcome {
        Outcome::NotHttp | Outcome::NotMcp => (Verdict::NotMcp, Vec::new()),
        Outcome::ConnectFailed(e) => (
            Verdict::Unknown,
            vec![reason(
                "connect-failed",
                format!("could not connect: {e}"),
                "run the scan as root (or as the socket's owner) to probe it",
            )],
        ),
        Outcome::NoAnswer | Outcome::ClosedEmpty => (
            Verdict::Unknown,
            vec![reason(
                "no-answer",
                "accepted the connection but answered nothing within the timeout".to_owned(),
                "a service that waits for the client to speak first; --timeout 5s if it is slow",
            )],
        ),
        Outcome::Mcp { .. } => {
            let others_may_connect = mode.is_some_and(|m| m & 0o002 != 0);
            let mut reasons = vec![reason(
                "unix-socket",
                "a Unix socket: no web page and no other host can reach it".to_owned(),
                "nothing to do against DNS rebinding",
            )];
            if others_may_connect {
                reasons.push(reason(
                    "any-local-user",
                    format!(
                        "any local user may connect (mode {:04o})",
                        mode.unwrap_or_default() & 0o7777
                    ),
                    "restrict it to the users who need it (chmod 0660 and a group), or put it \
                     behind the gateway: --upstream unix:PATH",
                ));
            }
            (Verdict::Protected, reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::identify::{Replay, test_found};

    const PROC: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 24151 /run/mcp/weather.sock
0000000000000000: 00000002 00000000 00010000 0001 01 24152 @/tmp/.X11-unix/X0
0000000000000000: 00000003 00000000 00000000 0001 03 24153 /run/mcp/weather.sock
0000000000000000: 00000002 00000000 00010000 0002 01 24154 /run/systemd/notify
0000000000000000: 00000002 00000000 00010000 0001 01 24155
0000000000000000: 00000002 00000000 00010000 0001 01 24156 /tmp/with space.sock
0000000000000000: garbage line
0000000000000000: 00000002 00000000 00010000 0005 01 24157 /run/seqpacket.sock
";

    #[test]
    fn only_named_listening_stream_sockets_are_listed() {
        let found = parse_proc_net_unix(PROC);
        let listed: Vec<(&str, u32)> = found.iter().map(|l| (l.path.as_str(), l.inode)).collect();
        assert_eq!(
            listed,
            [
                ("/run/mcp/weather.sock", 24151),
                ("/tmp/with space.sock", 24156),
                ("@/tmp/.X11-unix/X0", 24152),
            ],
            "connected, datagram, seqpacket, unnamed and garbage lines are left out"
        );
        assert!(found[2].is_abstract());
        assert!(parse_proc_net_unix("").is_empty());
        let hostile = "h\n0: 00000002 00000000 00010000 0001 01 1 /tmp/\u{1b}[31mred\n";
        assert_eq!(parse_proc_net_unix(hostile)[0].path, "/tmp/?[31mred");
    }

    fn mcp() -> Result<Outcome, String> {
        Ok(Outcome::Mcp {
            found: test_found(),
            foreign_host: Replay::NotTested,
            foreign_origin: Replay::NotTested,
        })
    }

    #[test]
    fn verdicts() {
        let codes = |(v, reasons): (Verdict, Vec<Reason>)| {
            (v, reasons.into_iter().map(|r| r.code).collect::<Vec<_>>())
        };
        for (outcome, mode, verdict, expected) in [
            (
                mcp(),
                Some(0o140660),
                Verdict::Protected,
                vec!["unix-socket"],
            ),
            (
                mcp(),
                Some(0o140777),
                Verdict::Protected,
                vec!["unix-socket", "any-local-user"],
            ),
            (mcp(), None, Verdict::Protected, vec!["unix-socket"]),
            (Ok(Outcome::NotMcp), Some(0o140777), Verdict::NotMcp, vec![]),
            (Ok(Outcome::NotHttp), None, Verdict::NotMcp, vec![]),
            (
                Ok(Outcome::ConnectFailed("Permission denied".into())),
                None,
                Verdict::Unknown,
                vec!["connect-failed"],
            ),
            (
                Ok(Outcome::NoAnswer),
                None,
                Verdict::Unknown,
                vec!["no-answer"],
            ),
            (
                Err("an abstract socket".into()),
                None,
                Verdict::Unknown,
                vec!["not-probed"],
            ),
        ] {
            assert_eq!(
                codes(judge(&outcome, mode)),
                (verdict, expected),
                "{outcome:?} {mode:?}"
            );
        }
    }
}
