//! Source-address allowlists for non-loopback listeners (`--allow-source CIDR`): which client
//! addresses may talk to a server. The kernel drops other sources' packets to the listen port;
//! the gateway answers 403 to any that still reach it (defence in depth, and the only check on
//! hosts without eBPF). Loopback clients are always allowed.
//!
//! Addresses are kept as IPv6; IPv4 as v4-mapped (`::ffff:a.b.c.d`, prefix + 96), so one rule
//! form serves both families and a dual-stack listener's v4-mapped peers match IPv4 rules.
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// One allowed network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// Network address, host bits zero, IPv4 v4-mapped.
    pub addr: [u8; 16],
    /// Prefix length in IPv6 bits (an IPv4 /24 is 120).
    pub prefix_len: u8,
}

/// IPv6 bits before a v4-mapped address's IPv4 bits.
const V4_MAPPED_BITS: u8 = 96;

fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `addr` with every bit after `prefix_len` cleared.
fn masked(mut addr: [u8; 16], prefix_len: u8) -> [u8; 16] {
    for (i, byte) in addr.iter_mut().enumerate() {
        let bits = i32::from(prefix_len) - (i as i32) * 8;
        *byte &= match bits {
            b if b >= 8 => 0xff,
            b if b <= 0 => 0,
            b => 0xff << (8 - b),
        };
    }
    addr
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `192.0.2.7` (one host), `2001:db8::/32`. A host address with a
    /// prefix (`10.0.0.1/8`) is refused: say the network you mean.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IPv4 or IPv6 address"))?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let offset = if ip.is_ipv4() { V4_MAPPED_BITS } else { 0 };
        let prefix_len = offset + prefix;
        let bytes = v6_bytes(ip);
        let network = masked(bytes, prefix_len);
        if network != bytes {
            let shown = Self {
                addr: network,
                prefix_len,
            };
            return Err(format!("`{text}` has host bits set; did you mean {shown}?"));
        }
        Ok(Self {
            addr: network,
            prefix_len,
        })
    }

    /// The network of one host.
    pub fn host(ip: IpAddr) -> Self {
        Self {
            addr: v6_bytes(ip.to_canonical()),
            prefix_len: 128,
        }
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        masked(v6_bytes(ip.to_canonical()), self.prefix_len) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.prefix_len >= V4_MAPPED_BITS => {
                write!(f, "{v4}/{}", self.prefix_len - V4_MAPPED_BITS)
            }
            _ => write!(f, "{v6}/{}", self.prefix_len),
        }
    }
}

/// A server's allowlist; empty allows every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceList(Vec<Cidr>);

impl SourceList {
    /// Parses every entry; the error names the first bad one.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| Cidr::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn cidrs(&self) -> &[Cidr] {
        &self.0
    }

    /// Whether a client at `ip` may talk to the server: loopback always; otherwise any source
    /// when the list is empty, else one in a listed network.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.0.is_empty() || self.0.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_table() {
        #[rustfmt::skip]
        let rows: &[(&str, Result<&str, &str>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("192.0.2.7", Ok("192.0.2.7/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("::1", Ok("::1/128")),
            ("::/0", Ok("::/0")),
            (" 198.18.0.0/15 ", Ok("198.18.0.0/15")),
            ("10.0.0.1/8", Err("host bits set; did you mean 10.0.0.0/8?")),
            ("2001:db8::1/32", Err("did you mean 2001:db8::/32?")),
            ("10.0.0.0/33", Err("prefix length must be 0 to 32")),
            ("2001:db8::/129", Err("prefix length must be 0 to 128")),
            ("10.0.0.0/x", Err("prefix length")),
            ("10.0.0/8", Err("not an IPv4 or IPv6 address")),
            ("localhost", Err("not an IPv4 or IPv6 address")),
            ("", Err("not an IPv4 or IPv6 address")),
        ];
        for (text, want) in rows {
            match (Cidr::parse(text), want) {
                (Ok(c), Ok(shown)) => assert_eq!(c.to_string(), *shown, "{text}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn allowing_table() {
        let list =
            SourceList::parse(&["198.18.0.0/24".into(), "2001:db8::/48".into()]).expect("valid");
        #[rustfmt::skip]
        let rows: &[(&str, bool)] = &[
            ("198.18.0.2", true),
            ("198.18.0.255", true),
            ("198.18.1.2", false),
            ("198.19.0.2", false),
            ("::ffff:198.18.0.9", true),
            ("::ffff:198.18.1.9", false),
            ("2001:db8::5", true),
            ("2001:db8:0:ffff::1", true),
            ("2001:db8:1::1", false),
            ("127.0.0.1", true),
            ("127.0.0.5", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::", false),
            ("0.0.0.0", false),
        ];
        for (ip, want) in rows {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(list.allows(ip), *want, "{ip}");
        }
        assert!(
            SourceList::default().allows("10.9.9.9".parse().unwrap()),
            "empty: any"
        );
        let everything = SourceList::parse(&["0.0.0.0/0".into()]).expect("valid");
        assert!(everything.allows("10.9.9.9".parse().unwrap()));
        assert!(
            !everything.allows("2001:db8::1".parse().unwrap()),
            "IPv4 /0 is not IPv6"
        );
    }
}
