//! The verdict on one listening socket, from what the scan found: pure, table-tested.
use std::net::IpAddr;

use serde::Serialize;

use super::identify::{Outcome, Replay};

/// Who can reach the socket, judged from its bind address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindScope {
    /// 127.0.0.0/8, ::1 (or an IPv4-mapped loopback).
    Loopback,
    /// 0.0.0.0 or ::: every interface.
    All,
    /// One specific non-loopback address.
    Address,
}

impl BindScope {
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_unspecified() {
            Self::All
        } else {
            Self::Address
        }
    }
}

/// The kernel layer's state for the socket's port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Kernel {
    /// In the pinned protected set, with these flags (`loopback-only`, `exclusive`, ...).
    Protected { flags: Vec<String> },
    /// Pins readable, port not in the set (or nothing pinned at all).
    None,
    /// The pins could not be read (with why).
    Unknown { detail: String },
}

impl Kernel {
    fn has(&self, flag: &str) -> bool {
        matches!(self, Self::Protected { flags } if flags.iter().any(|f| f == flag))
    }
}

/// The running gateway instance whose upstream this port is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayOf {
    pub instance: String,
    pub server: Option<String>,
    pub pid: u32,
    /// `exclusive_upstream` on (the port's kernel flags carry `exclusive`).
    pub exclusive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Protected,
    Exposed,
    NotMcp,
    Unknown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Protected => "protected",
            Self::Exposed => "exposed",
            Self::NotMcp => "not-mcp",
            Self::Unknown => "unknown",
        }
    }
}

/// Why a socket got its verdict, with what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable, for scripts: `binds-all-interfaces`, `binds-address`, `foreign-host-accepted`,
    /// `foreign-origin-accepted`, `around-gateway`, `no-kernel-protection`, `not-probed`,
    /// `no-answer`, `test-incomplete`; for Unix sockets `unix-socket`, `any-local-user`,
    /// `connect-failed`.
    pub code: &'static str,
    pub text: String,
    pub fix: String,
}

/// Everything the verdict depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub ip: IpAddr,
    pub port: u16,
    pub scope: BindScope,
    /// `None`: not probed (with why).
    pub outcome: Result<Outcome, String>,
    pub kernel: Kernel,
    pub gateway: Option<GatewayOf>,
}

pub(super) fn reason(
    code: &'static str,
    text: impl Into<String>,
    fix: impl Into<String>,
) -> Reason {
    Reason {
        code,
        text: text.into(),
        fix: fix.into(),
    }
}

const BEHIND_GATEWAY: &str = "put it behind the gateway with the kernel layer: `mcp-gateway scan \
                              --config-out FILE`, then `mcp-gateway run --config FILE`";

/// The verdict on one socket and every reason for it.
pub fn judge(facts: &Facts) -> (Verdict, Vec<Reason>) {
    let loopback_only = facts.kernel.has("loopback-only");
    // Only the gateway can connect, and only over loopback: nothing else reaches the server,
    // whatever it answers (the scan itself is usually refused the connection).
    if let Some(gw) = &facts.gateway
        && gw.exclusive
        && loopback_only
    {
        return (
            Verdict::Protected,
            vec![reason(
                "gateway-exclusive",
                format!(
                    "only gateway instance `{}` (pid {}) can reach it",
                    gw.instance, gw.pid
                ),
                "nothing to do",
            )],
        );
    }
    let outcome = match &facts.outcome {
        Err(why) => {
            return (
                Verdict::Unknown,
                vec![reason(
                    "not-probed",
                    format!("not probed: {why}"),
                    match facts.scope {
                        BindScope::Address => {
                            "rerun with --probe-bound-addresses to probe it on its address"
                        }
                        _ => "rerun without --ports, or with its port in the list",
                    },
                )],
            );
        }
        Ok(outcome) => outcome,
    };
    let (foreign_host, foreign_origin) = match outcome {
        Outcome::NotHttp | Outcome::NotMcp => return (Verdict::NotMcp, Vec::new()),
        Outcome::ConnectFailed(e) => {
            return (
                Verdict::Unknown,
                vec![reason(
                    "no-answer",
                    format!("the scan could not connect: {e}"),
                    "if a kernel policy refused the connection, rerun as root to read the pins",
                )],
            );
        }
        Outcome::NoAnswer | Outcome::ClosedEmpty => {
            let what = if *outcome == Outcome::NoAnswer {
                "accepted the connection but answered nothing within the timeout"
            } else {
                "closed the connection without answering"
            };
            return (
                Verdict::Unknown,
                vec![reason(
                    "no-answer",
                    what,
                    "check what process owns it; rerun with a longer --timeout if it is slow",
                )],
            );
        }
        Outcome::Mcp {
            foreign_host,
            foreign_origin,
            ..
        } => (foreign_host, foreign_origin),
    };
    let mut reasons = Vec::new();
    if !loopback_only {
        match facts.scope {
            BindScope::All => reasons.push(reason(
                "binds-all-interfaces",
                format!("binds {}: reachable from other hosts", facts.ip),
                format!("bind it to 127.0.0.1:{} (or {BEHIND_GATEWAY})", facts.port),
            )),
            BindScope::Address => reasons.push(reason(
                "binds-address",
                format!("binds {}: reachable from that network", facts.ip),
                format!("bind it to 127.0.0.1:{} (or {BEHIND_GATEWAY})", facts.port),
            )),
            BindScope::Loopback => {}
        }
    }
    if *foreign_host == Replay::Accepted {
        reasons.push(reason(
            "foreign-host-accepted",
            "accepts a foreign Host: a DNS-rebinding page can drive it",
            format!("turn on the server's Host validation, or {BEHIND_GATEWAY}"),
        ));
    }
    if *foreign_origin == Replay::Accepted {
        reasons.push(reason(
            "foreign-origin-accepted",
            "accepts a foreign Origin: any web page can call it",
            format!("turn on the server's Origin validation, or {BEHIND_GATEWAY}"),
        ));
    }
    if let Some(gw) = &facts.gateway
        && !gw.exclusive
    {
        reasons.push(reason(
            "around-gateway",
            format!(
                "reachable around its gateway `{}`: other processes connect to it directly",
                gw.instance
            ),
            format!(
                "set exclusive_upstream = true on {} of gateway `{}`",
                gw.server
                    .as_deref()
                    .map_or("its server".to_owned(), |s| format!("server `{s}`")),
                gw.instance
            ),
        ));
    }
    if !reasons.is_empty() {
        if facts.kernel == Kernel::None {
            reasons.push(reason(
                "no-kernel-protection",
                "no kernel protection on its port",
                BEHIND_GATEWAY,
            ));
        }
        return (Verdict::Exposed, reasons);
    }
    let incomplete: Vec<String> = [
        ("foreign Host", foreign_host),
        ("foreign Origin", foreign_origin),
    ]
    .into_iter()
    .filter_map(|(what, replay)| match replay {
        Replay::Accepted | Replay::Refused { .. } => None,
        Replay::Inconclusive { detail } => Some(format!("{what}: {detail}")),
        Replay::NotTested => Some(format!("{what}: not tested (request budget)")),
    })
    .collect();
    if !incomplete.is_empty() {
        return (
            Verdict::Unknown,
            vec![reason(
                "test-incomplete",
                format!(
                    "the rebinding test did not finish: {}",
                    incomplete.join("; ")
                ),
                "rerun the scan; if it repeats, test by hand (see docs/scan.md)",
            )],
        );
    }
    (Verdict::Protected, Vec::new())
}

/// An MCP server on `ip:port` with no kernel layer and no gateway, whose answer to a foreign
/// Host is `host` (a foreign Origin is refused), for other modules' tests.
#[cfg(test)]
pub(crate) fn test_mcp_facts(ip: &str, port: u16, host: Replay) -> Facts {
    let ip: IpAddr = ip.parse().expect("an address");
    Facts {
        ip,
        port,
        scope: BindScope::of(ip),
        outcome: Ok(Outcome::Mcp {
            found: super::identify::test_found(),
            foreign_host: host,
            foreign_origin: Replay::Refused { status: 403 },
        }),
        kernel: Kernel::None,
        gateway: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::identify::Found;

    fn found() -> Found {
        crate::scan::identify::test_found()
    }

    fn mcp(host: Replay, origin: Replay) -> Outcome {
        Outcome::Mcp {
            found: found(),
            foreign_host: host,
            foreign_origin: origin,
        }
    }

    fn facts(
        ip: &str,
        outcome: Result<Outcome, String>,
        kernel: Kernel,
        gateway: Option<GatewayOf>,
    ) -> Facts {
        Facts {
            ip: ip.parse().unwrap(),
            port: 8000,
            scope: BindScope::of(ip.parse().unwrap()),
            outcome,
            kernel,
            gateway,
        }
    }

    fn kernel(flags: &[&str]) -> Kernel {
        Kernel::Protected {
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn gw(exclusive: bool) -> Option<GatewayOf> {
        Some(GatewayOf {
            instance: "default".into(),
            server: Some("weather".into()),
            pid: 42,
            exclusive,
        })
    }

    #[test]
    fn scopes() {
        for (ip, scope) in [
            ("127.0.0.1", BindScope::Loopback),
            ("127.4.5.6", BindScope::Loopback),
            ("::1", BindScope::Loopback),
            ("::ffff:127.0.0.1", BindScope::Loopback),
            ("0.0.0.0", BindScope::All),
            ("::", BindScope::All),
            ("::ffff:0.0.0.0", BindScope::All),
            ("198.18.0.1", BindScope::Address),
            ("fe80::1", BindScope::Address),
        ] {
            assert_eq!(BindScope::of(ip.parse().unwrap()), scope, "{ip}");
        }
    }

    #[test]
    fn verdicts() {
        use Replay::{Accepted, NotTested};
        let refused = || Replay::Refused { status: 421 };
        let odd = || Replay::Inconclusive {
            detail: "status 500".into(),
        };
        let cases: Vec<(&str, Facts, Verdict, Vec<&str>)> = vec![
            (
                "SDK on 0.0.0.0, protection off",
                facts("0.0.0.0", Ok(mcp(Accepted, Accepted)), Kernel::None, None),
                Verdict::Exposed,
                vec![
                    "binds-all-interfaces",
                    "foreign-host-accepted",
                    "foreign-origin-accepted",
                    "no-kernel-protection",
                ],
            ),
            (
                "SDK on loopback, protection on",
                facts(
                    "127.0.0.1",
                    Ok(mcp(refused(), refused())),
                    Kernel::None,
                    None,
                ),
                Verdict::Protected,
                vec![],
            ),
            (
                "loopback but rebindable",
                facts("::1", Ok(mcp(Accepted, refused())), Kernel::None, None),
                Verdict::Exposed,
                vec!["foreign-host-accepted", "no-kernel-protection"],
            ),
            (
                "pins unreadable: no claim about the kernel",
                facts(
                    "::1",
                    Ok(mcp(Accepted, refused())),
                    Kernel::Unknown {
                        detail: "EPERM".into(),
                    },
                    None,
                ),
                Verdict::Exposed,
                vec!["foreign-host-accepted"],
            ),
            (
                "0.0.0.0 but the kernel keeps it loopback-only",
                facts(
                    "0.0.0.0",
                    Ok(mcp(refused(), refused())),
                    kernel(&["loopback-only"]),
                    None,
                ),
                Verdict::Protected,
                vec![],
            ),
            (
                "exclusive upstream of a live gateway, even unreachable",
                facts(
                    "0.0.0.0",
                    Ok(Outcome::ConnectFailed("EPERM".into())),
                    kernel(&["loopback-only", "exclusive"]),
                    gw(true),
                ),
                Verdict::Protected,
                vec!["gateway-exclusive"],
            ),
            (
                "exclusive flag without the kernel layer is no protection",
                facts(
                    "127.0.0.1",
                    Ok(mcp(Accepted, Accepted)),
                    Kernel::None,
                    gw(true),
                ),
                Verdict::Exposed,
                vec![
                    "foreign-host-accepted",
                    "foreign-origin-accepted",
                    "no-kernel-protection",
                ],
            ),
            (
                "upstream of a gateway without exclusive_upstream",
                facts(
                    "127.0.0.1",
                    Ok(mcp(refused(), refused())),
                    kernel(&["loopback-only"]),
                    gw(false),
                ),
                Verdict::Exposed,
                vec!["around-gateway"],
            ),
            (
                "a web server",
                facts("0.0.0.0", Ok(Outcome::NotMcp), Kernel::None, None),
                Verdict::NotMcp,
                vec![],
            ),
            (
                "ssh",
                facts("0.0.0.0", Ok(Outcome::NotHttp), Kernel::None, None),
                Verdict::NotMcp,
                vec![],
            ),
            (
                "silent socket",
                facts("127.0.0.1", Ok(Outcome::NoAnswer), Kernel::None, None),
                Verdict::Unknown,
                vec!["no-answer"],
            ),
            (
                "closes at once",
                facts("127.0.0.1", Ok(Outcome::ClosedEmpty), Kernel::None, None),
                Verdict::Unknown,
                vec!["no-answer"],
            ),
            (
                "refused connection, no gateway",
                facts(
                    "127.0.0.1",
                    Ok(Outcome::ConnectFailed("refused".into())),
                    Kernel::None,
                    None,
                ),
                Verdict::Unknown,
                vec!["no-answer"],
            ),
            (
                "bound to one address, not probed",
                facts(
                    "198.18.0.1",
                    Err("bound to 198.18.0.1".into()),
                    Kernel::None,
                    None,
                ),
                Verdict::Unknown,
                vec!["not-probed"],
            ),
            (
                "hostile: server errors on the replay is not protection",
                facts("127.0.0.1", Ok(mcp(odd(), refused())), Kernel::None, None),
                Verdict::Unknown,
                vec!["test-incomplete"],
            ),
            (
                "budget ran out before the Origin test",
                facts(
                    "127.0.0.1",
                    Ok(mcp(refused(), NotTested)),
                    Kernel::None,
                    None,
                ),
                Verdict::Unknown,
                vec!["test-incomplete"],
            ),
            (
                "an exposure outweighs an unfinished test",
                facts("0.0.0.0", Ok(mcp(refused(), NotTested)), Kernel::None, None),
                Verdict::Exposed,
                vec!["binds-all-interfaces", "no-kernel-protection"],
            ),
        ];
        for (what, facts, verdict, codes) in cases {
            let (got, reasons) = judge(&facts);
            let got_codes: Vec<&str> = reasons.iter().map(|r| r.code).collect();
            assert_eq!((got, got_codes), (verdict, codes), "{what}");
            assert!(
                reasons
                    .iter()
                    .all(|r| !r.fix.is_empty() && !r.fix.contains('\n')),
                "{what}: one-line fixes"
            );
        }
    }
}
