//! One egress rule (`api.github.com:443`, `10.20.0.0/16:5432`, `[2001:db8::1]:*`) and the
//! kernel entries a server's rules come to once its names are resolved.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use crate::source::Cidr;

/// Where a rule lets a server go.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// An address or a network.
    Net(Cidr),
    /// A DNS name, resolved by the gateway (lower case, no trailing dot).
    Name(String),
}

/// A destination and a port (`None`: any port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub dest: Dest,
    pub port: Option<u16>,
}

/// One allowed (network, port) pair for the kernel; port 0 means any port.
pub type Entry = (Cidr, u16);

/// The DNS port, for `egress_dns`.
pub const DNS_PORT: u16 = 53;

impl Rule {
    /// Parses `HOST:PORT`, where HOST is an IPv4 address or network, a bracketed IPv6 address
    /// or network, or a DNS name, and PORT is 1 to 65535 or `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: an IPv6 address needs its closing `]`"))?;
            let port = after.strip_prefix(':').ok_or_else(|| {
                format!("`{text}`: give a port after the address: `[{host}]:443` or `[{host}]:*`")
            })?;
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| {
                format!("`{text}`: give a port: `{text}:443`, or `{text}:*` for any port")
            })?;
            if host.contains(':') {
                return Err(format!(
                    "`{text}`: write an IPv6 address in brackets: `[{host}]:{port}`"
                ));
            }
            (host, port)
        };
        let port = match port.trim() {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{text}`: the port must be 1 to 65535, or `*`"))?,
            ),
        };
        let host = host.trim();
        if host.is_empty() {
            return Err(format!("`{text}`: the host is empty"));
        }
        let looks_numeric = host.contains('/')
            || host.parse::<IpAddr>().is_ok()
            || host.chars().all(|c| c.is_ascii_digit() || c == '.');
        let dest = if looks_numeric {
            Dest::Net(Cidr::parse(host).map_err(|e| format!("`{text}`: {e}"))?)
        } else {
            Dest::Name(name(host).map_err(|e| format!("`{text}`: {e}"))?)
        };
        Ok(Self { dest, port })
    }

    /// The kernel entries of this rule, given what its name resolves to now.
    fn entries(&self, resolved: &BTreeMap<String, BTreeSet<IpAddr>>) -> Vec<Entry> {
        let port = self.port.unwrap_or(0);
        match &self.dest {
            Dest::Net(cidr) => vec![(*cidr, port)],
            Dest::Name(name) => resolved
                .get(name)
                .into_iter()
                .flatten()
                .map(|ip| (Cidr::host(*ip), port))
                .collect(),
        }
    }
}

/// A DNS name as the resolver wants it, or why it isn't one.
fn name(host: &str) -> Result<String, String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err("a DNS name must be 1 to 253 characters".into());
    }
    for label in lower.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{host}` is not a DNS name (each label is 1 to 63 characters)"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "`{host}` is not a DNS name (letters, digits and inner hyphens only)"
            ));
        }
    }
    Ok(lower)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.port.map_or("*".to_owned(), |p| p.to_string());
        match &self.dest {
            Dest::Name(name) => write!(f, "{name}:{port}"),
            Dest::Net(cidr) => {
                let shown = match (cidr.prefix_len, egress_ip(cidr)) {
                    (128, Some(ip @ IpAddr::V6(_))) => format!("[{ip}]"),
                    (128, Some(ip)) => ip.to_string(),
                    (_, Some(IpAddr::V6(_))) => format!("[{cidr}]"),
                    _ => cidr.to_string(),
                };
                write!(f, "{shown}:{port}")
            }
        }
    }
}

/// The address of a network, IPv4 when v4-mapped.
fn egress_ip(cidr: &Cidr) -> Option<IpAddr> {
    let v6 = std::net::Ipv6Addr::from(cidr.addr);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) if cidr.prefix_len >= 96 => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    })
}

/// Every kernel entry of a server: its rules with their names' addresses, and the resolvers
/// on port 53 when `dns` is on.
pub fn entries(
    rules: &[Rule],
    resolved: &BTreeMap<String, BTreeSet<IpAddr>>,
    resolvers: &[IpAddr],
    dns: bool,
) -> BTreeSet<Entry> {
    let mut out: BTreeSet<Entry> = rules.iter().flat_map(|r| r.entries(resolved)).collect();
    if dns {
        out.extend(resolvers.iter().map(|ip| (Cidr::host(*ip), DNS_PORT)));
    }
    out
}

/// What `mcp-gateway status` shows of a confined server: its cgroup, then each rule, a name
/// with the addresses allowed for it now, and the resolvers `dns` allows.
pub fn summary(
    cgroup: &str,
    rules: &[Rule],
    resolved: &BTreeMap<String, BTreeSet<IpAddr>>,
    resolvers: &[IpAddr],
    dns: bool,
) -> String {
    let mut out = format!("cgroup {cgroup}\n");
    for rule in rules {
        out.push_str(&rule.to_string());
        if let Dest::Name(name) = &rule.dest {
            let addrs: Vec<String> = resolved
                .get(name)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            if addrs.is_empty() {
                out.push_str(" = (not resolved yet)");
            } else {
                out.push_str(" = ");
                out.push_str(&addrs.join(" "));
            }
        }
        out.push('\n');
    }
    if dns {
        let addrs: Vec<String> = resolvers.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "dns (/etc/resolv.conf):53 = {}\n",
            addrs.join(" ")
        ));
    }
    out
}

/// The names among `rules`, each once.
pub fn names(rules: &[Rule]) -> BTreeSet<String> {
    rules
        .iter()
        .filter_map(|r| match &r.dest {
            Dest::Name(n) => Some(n.clone()),
            Dest::Net(_) => None,
        })
        .collect()
}

/// The `nameserver` addresses of a resolv.conf.
pub fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A link-local IPv6 resolver may carry a zone (`fe80::1%eth0`): the kernel sees the
            // address alone.
            words.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Dest {
        Dest::Net(Cidr::parse(text).unwrap())
    }

    #[test]
    fn rules_parse_and_print_back() {
        for (text, dest, port, shown) in [
            (
                "api.github.com:443",
                Dest::Name("api.github.com".into()),
                Some(443),
                "api.github.com:443",
            ),
            (
                "API.GitHub.com.:443",
                Dest::Name("api.github.com".into()),
                Some(443),
                "api.github.com:443",
            ),
            (
                "10.20.0.0/16:5432",
                net("10.20.0.0/16"),
                Some(5432),
                "10.20.0.0/16:5432",
            ),
            (
                "127.0.0.1:6379",
                net("127.0.0.1"),
                Some(6379),
                "127.0.0.1:6379",
            ),
            (
                "[2001:db8::1]:443",
                net("2001:db8::1"),
                Some(443),
                "[2001:db8::1]:443",
            ),
            (
                "[2001:db8::/32]:*",
                net("2001:db8::/32"),
                None,
                "[2001:db8::/32]:*",
            ),
            (
                "localhost:*",
                Dest::Name("localhost".into()),
                None,
                "localhost:*",
            ),
            (" 0.0.0.0/0:53 ", net("0.0.0.0/0"), Some(53), "0.0.0.0/0:53"),
        ] {
            let rule = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((&rule.dest, rule.port), (&dest, port), "{text}");
            assert_eq!(rule.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        for (text, needle) in [
            ("api.github.com", "give a port"),
            ("api.github.com:", "1 to 65535"),
            ("api.github.com:0", "1 to 65535"),
            ("api.github.com:65536", "1 to 65535"),
            ("api.github.com:https", "1 to 65535"),
            (":443", "host is empty"),
            ("10.20.0.0/33:1", "prefix length"),
            ("10.20.0.1/16:1", "host bits"),
            ("10.0.0.300:1", "not an IPv4 or IPv6"),
            ("2001:db8::1:443", "in brackets"),
            ("[2001:db8::1:443", "closing `]`"),
            ("[2001:db8::1]", "give a port"),
            ("bad..name:1", "not a DNS name"),
            ("-bad.example:1", "not a DNS name"),
            ("evil.example/x:1", "not an IPv4 or IPv6"),
            ("sp ace.example:1", "not a DNS name"),
            ("ex\u{e4}mple.com:1", "not a DNS name"),
        ] {
            let err = Rule::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn entries_cover_networks_resolved_names_and_resolvers() {
        let rules: Vec<Rule> = ["api.example:443", "10.20.0.0/16:*", "gone.example:80"]
            .iter()
            .map(|r| Rule::parse(r).unwrap())
            .collect();
        let resolved = BTreeMap::from([(
            "api.example".to_owned(),
            BTreeSet::from(["192.0.2.1".parse().unwrap(), "2001:db8::5".parse().unwrap()]),
        )]);
        let resolvers = ["127.0.0.53".parse().unwrap()];
        let host = |ip: &str| Cidr::host(ip.parse().unwrap());
        let without_dns = entries(&rules, &resolved, &resolvers, false);
        assert_eq!(
            without_dns,
            BTreeSet::from([
                (host("192.0.2.1"), 443),
                (host("2001:db8::5"), 443),
                (Cidr::parse("10.20.0.0/16").unwrap(), 0),
            ]),
            "an unresolved name adds nothing (it is retried); `*` is port 0"
        );
        let with_dns = entries(&rules, &resolved, &resolvers, true);
        assert!(with_dns.contains(&(host("127.0.0.53"), DNS_PORT)));
        assert_eq!(with_dns.len(), without_dns.len() + 1);
        assert_eq!(
            names(&rules),
            BTreeSet::from(["api.example".to_owned(), "gone.example".to_owned()])
        );
    }

    #[test]
    fn the_summary_shows_each_rule_and_its_addresses() {
        let rules: Vec<Rule> = ["api.example:443", "10.0.0.0/8:*", "gone.example:80"]
            .iter()
            .map(|r| Rule::parse(r).unwrap())
            .collect();
        let resolved = BTreeMap::from([(
            "api.example".to_owned(),
            BTreeSet::from(["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()]),
        )]);
        let text = summary(
            "/sys/fs/cgroup/mcp.service",
            &rules,
            &resolved,
            &["127.0.0.53".parse().unwrap()],
            true,
        );
        assert_eq!(
            text,
            "cgroup /sys/fs/cgroup/mcp.service\n\
             api.example:443 = 192.0.2.1 192.0.2.2\n\
             10.0.0.0/8:*\n\
             gone.example:80 = (not resolved yet)\n\
             dns (/etc/resolv.conf):53 = 127.0.0.53\n"
        );
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n\
                    nameserver bogus\noptions edns0\n nameserver 192.0.2.53\n";
        let got: Vec<String> = resolvers(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["127.0.0.53", "fe80::1", "192.0.2.53"]);
    }
}
