//! An independent reading of the Host/Origin policy (README, "The policy"), deliberately simple
//! and built on the `url` crate's WHATWG parser instead of the gateway's own grammar.
//!
//! The URL parser is more liberal than the gateway: it normalises what a browser would
//! (`127.1`, `0x7f.0.0.1`, `%6c`ocalhost, `[0:0::1]`, a port with leading zeros, tabs, an empty
//! port), where the gateway refuses anything not written in one plain form. So each parsed value
//! also says whether it was *canonical*: its text is exactly what the URL parser serialises it
//! to (ASCII case aside, and a default port may be written out). The fuzz targets assert that
//! the gateway never allows what this reference refuses, and that both agree on requests whose
//! values are all canonical.
//!
//! Rules of the policy that no URL parser knows are spelled out here as the README states them:
//! the length caps (255 bytes for a `Host`, 263 for an `Origin`), no port 0, exactly one `Host`,
//! at most one `Origin`, `null` is never allowed, and strict mode's `Sec-Fetch-Site` rule.
use url::Url;

/// Longest `Host` the policy accepts (README: "at most 255 bytes").
const MAX_HOST: usize = 255;
/// Longest `Origin`: `https://` and the longest `Host`.
const MAX_ORIGIN: usize = "https://".len() + MAX_HOST;

/// A host and port as the URL parser reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// The URL parser's serialisation: lowercase name or punycode, dotted IPv4, bracketed IPv6.
    pub host: String,
    pub port: u16,
    /// The text was exactly that serialisation.
    pub canonical: bool,
}

/// An origin (or, with `port: None`, a `scheme://host:*` pattern).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    pub canonical: bool,
}

/// Whether `text` ends in an explicit `:port` (after any bracketed IPv6 address).
fn has_port(text: &str) -> bool {
    let after_brackets = text.rsplit_once(']').map_or(text, |(_, rest)| rest);
    after_brackets.contains(':')
}

/// `host[:port]` as a `Host` value or the authority of a request target; a missing port is
/// `default_port`. `None`: not an authority at all.
pub fn authority(raw: &[u8], default_port: u16) -> Option<Authority> {
    if raw.len() > MAX_HOST {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    // The URL parser would read these as userinfo, path, query or fragment and drop them from
    // the host; an authority has none of them.
    if text.is_empty() || text.contains(['@', '/', '\\', '?', '#']) {
        return None;
    }
    let url = Url::parse(&format!("http://{text}")).ok()?;
    let host = url.host_str()?.to_owned();
    let port = match has_port(text) {
        true => url.port_or_known_default()?,
        false => default_port,
    };
    if port == 0 {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let canonical = lower == host || lower == format!("{host}:{port}");
    Some(Authority {
        host,
        port,
        canonical,
    })
}

/// An `Origin` header value, or with `pattern` an allowed-origin setting (`:*` for any port).
pub fn origin(raw: &[u8], pattern: bool) -> Option<Origin> {
    if raw.len() > MAX_ORIGIN {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let (text, any_port) = match text.strip_suffix(":*") {
        Some(rest) if pattern => (rest, true),
        _ => (text, false),
    };
    let (_, rest) = text.split_once("://")?;
    // An origin is `scheme://host[:port]`: nothing the URL parser would put elsewhere.
    if rest.is_empty() || rest.contains(['@', '/', '\\', '?', '#']) {
        return None;
    }
    let url = Url::parse(text).ok()?;
    let scheme = url.scheme().to_owned();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = url.host_str()?.to_owned();
    let port = url.port_or_known_default()?;
    if port == 0 || (any_port && has_port(rest)) {
        return None;
    }
    let serialised = url.origin().ascii_serialization();
    let lower = text.to_ascii_lowercase();
    let canonical = lower == serialised || lower == format!("{scheme}://{host}:{port}");
    Some(Origin {
        scheme,
        host,
        port: (!any_port).then_some(port),
        canonical,
    })
}

/// The verdict on one request, and whether every value it depended on was canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub canonical: bool,
}

/// What the reference needs of a request.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    pub hosts: Vec<&'a [u8]>,
    pub origins: Vec<&'a [u8]>,
    pub fetch_sites: Vec<&'a [u8]>,
    /// The request target's scheme and authority, when it is in absolute or authority form.
    pub target: Option<(Option<&'a str>, &'a [u8])>,
}

/// The policy of one server.
#[derive(Clone, Debug)]
pub struct Policy {
    strict: bool,
    hosts: Vec<Authority>,
    origins: Vec<Origin>,
}

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Policy {
    /// `None` when a setting is not a canonical value to the URL parser (the gateway may accept
    /// settings such as `xn--a` that no URL can contain; nothing is compared then).
    pub fn new(
        strict: bool,
        listen_port: u16,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Option<Self> {
        let mut hosts: Vec<Authority> = LOOPBACK
            .iter()
            .map(|host| Authority {
                host: (*host).to_owned(),
                port: listen_port,
                canonical: true,
            })
            .collect();
        for text in allowed_hosts {
            hosts.push(authority(text.as_bytes(), listen_port).filter(|a| a.canonical)?);
        }
        let origins = allowed_origins
            .iter()
            .map(|text| origin(text.as_bytes(), true).filter(|o| o.canonical))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            strict,
            hosts,
            origins,
        })
    }

    /// Decides a request: Host, then Origin, then (strict mode, no Origin) fetch metadata.
    pub fn verify(&self, req: &Request<'_>) -> Verdict {
        let deny = |canonical| Verdict {
            allowed: false,
            canonical,
        };
        let [host] = req.hosts[..] else {
            return deny(true);
        };
        let Some(host) = authority(host, 80) else {
            return deny(false);
        };
        let mut canonical = host.canonical;
        if let Some((scheme, target)) = req.target {
            if !scheme.is_none_or(|s| s.eq_ignore_ascii_case("http")) {
                return deny(canonical);
            }
            let Some(target) = authority(target, 80) else {
                return deny(false);
            };
            canonical &= target.canonical;
            if (&target.host, target.port) != (&host.host, host.port) {
                return deny(canonical);
            }
        }
        if !self
            .hosts
            .iter()
            .any(|a| a.host == host.host && a.port == host.port)
        {
            return deny(canonical);
        }
        match req.origins[..] {
            [] => {}
            [raw] => {
                if raw.eq_ignore_ascii_case(b"null") {
                    return deny(canonical);
                }
                let Some(origin) = origin(raw, false) else {
                    return deny(false);
                };
                canonical &= origin.canonical;
                let loopback = !self.strict && LOOPBACK.contains(&origin.host.as_str());
                let listed = self.origins.iter().any(|p| {
                    p.scheme == origin.scheme
                        && p.host == origin.host
                        && (p.port.is_none() || p.port == origin.port)
                });
                return Verdict {
                    allowed: loopback || listed,
                    canonical,
                };
            }
            _ => return deny(canonical),
        }
        let fetch_ok = match req.fetch_sites[..] {
            [] => true,
            [site] => {
                site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")
            }
            _ => false,
        };
        Verdict {
            allowed: !self.strict || fetch_ok,
            canonical,
        }
    }
}
