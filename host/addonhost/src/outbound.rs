//! Where an add-on may send HTTP requests: the patterns of its manifest's
//! `outbound.allowed_hosts` (`https://api.partner.example`,
//! `https://*.partner.example`, `http://127.0.0.1:9000`), how the operator's
//! own list narrows them, and which addresses are not the public internet.
//!
//! Pure: no I/O. The runtime enforces it per request (`runtime::outbound`),
//! the manifest parses it, the platform narrows it.
//!
//! A pattern is a scheme, a host and a port — nothing by default, no path,
//! no "everything". A name never leads to a private address: loopback,
//! private, link-local and other non-public destinations are reachable only
//! through a pattern naming that address itself (`http://127.0.0.1:9000`),
//! so no DNS answer can turn an allowed name into 127.0.0.1 or
//! 169.254.169.254.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};

/// Most patterns one list may hold.
pub const MAX_PATTERNS: usize = 100;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain `http://`, port 80 by default.
    Http,
    /// `https://`, port 443 by default.
    Https,
}

impl Scheme {
    /// The scheme named `s` (any case), `None` for anything but `http` and
    /// `https`.
    pub fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The scheme as a URL writes it, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name ending in `.<suffix>` (`*.partner.example`), not the suffix
    /// itself.
    Wildcard(String),
    /// Exactly this address: the only way to a non-public one.
    Ip(IpAddr),
}

/// One entry of an allow-list: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedHost {
    /// The scheme a request must use.
    pub scheme: Scheme,
    /// The host or hosts it may reach.
    pub host: HostPattern,
    /// The one port allowed (the scheme's default when the pattern names none).
    pub port: u16,
}

/// Where a request goes, as the host reads its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request's scheme.
    pub scheme: Scheme,
    /// A lowercase name without a trailing dot, or an address.
    pub host: TargetHost,
    /// The port it goes to (the scheme's default when the URL names none).
    pub port: u16,
}

/// The host a request names: a DNS name, to be resolved and checked, or an
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// An address written in the URL (IPv4-mapped IPv6 already made IPv4 by
    /// [`canonical`]).
    Ip(IpAddr),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Name(n) => f.write_str(n),
            TargetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            TargetHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl Target {
    /// The target of a request to `scheme://host[:port]` (`host` as a URL
    /// carries it: an IPv6 address in brackets).
    pub fn new(scheme: &str, host: &str, port: Option<u16>) -> Result<Target, String> {
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("scheme {scheme:?} is not http or https"))?;
        let host = match parse_host(host)? {
            HostPattern::Name(n) => TargetHost::Name(n),
            HostPattern::Ip(ip) => TargetHost::Ip(ip),
            HostPattern::Wildcard(_) => return Err(format!("{host:?} is not a host name")),
        };
        Ok(Target {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }
}

impl AllowedHost {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed, nothing
    /// else after the authority). The error says what is wrong with it.
    pub fn parse(s: &str) -> Result<AllowedHost, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("must be scheme://host[:port], such as https://api.partner.example")?;
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("scheme {scheme:?} is not allowed: use http or https"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err("has no host".into());
        }
        if let Some(c) = authority
            .chars()
            .find(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace())
        {
            return Err(match c {
                '@' => "must not carry credentials (user@): send them in a header".into(),
                '/' | '?' | '#' => {
                    "must not have a path, query or fragment: hosts are allowed whole".into()
                }
                _ => "must not contain whitespace".into(),
            });
        }
        let (host, port) = split_port(authority)?;
        let host = parse_host(host)?;
        Ok(AllowedHost {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// Whether a request to `target` is within this pattern.
    pub fn matches(&self, target: &Target) -> bool {
        if self.scheme != target.scheme || self.port != target.port {
            return false;
        }
        match (&self.host, &target.host) {
            (HostPattern::Name(a), TargetHost::Name(b)) => a == b,
            (HostPattern::Wildcard(suffix), TargetHost::Name(b)) => in_wildcard(b, suffix),
            (HostPattern::Ip(a), TargetHost::Ip(b)) => a == b,
            _ => false,
        }
    }

    /// What both patterns allow, if anything: how an operator's list
    /// narrows an add-on's.
    pub fn intersect(&self, other: &AllowedHost) -> Option<AllowedHost> {
        if self.scheme != other.scheme || self.port != other.port {
            return None;
        }
        use HostPattern::*;
        let host = match (&self.host, &other.host) {
            (Name(a), Name(b)) if a == b => Name(a.clone()),
            (Ip(a), Ip(b)) if a == b => Ip(*a),
            (Name(n), Wildcard(s)) | (Wildcard(s), Name(n)) if in_wildcard(n, s) => Name(n.clone()),
            (Wildcard(a), Wildcard(b)) if a == b || in_wildcard(a, b) => Wildcard(a.clone()),
            (Wildcard(a), Wildcard(b)) if in_wildcard(b, a) => Wildcard(b.clone()),
            _ => return None,
        };
        Some(AllowedHost {
            scheme: self.scheme,
            host,
            port: self.port,
        })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(n) => f.write_str(n)?,
            HostPattern::Wildcard(s) => write!(f, "*.{s}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl Serialize for AllowedHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The patterns one call may reach (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AllowList(pub Vec<AllowedHost>);

impl AllowList {
    /// The shared empty list: what every call gets unless its add-on
    /// declared hosts (no allocation per call).
    pub fn none() -> Arc<AllowList> {
        static NONE: OnceLock<Arc<AllowList>> = OnceLock::new();
        NONE.get_or_init(|| Arc::new(AllowList::default())).clone()
    }

    /// Parses a list of patterns; the error is (index, rule).
    pub fn parse<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<AllowList, (usize, String)> {
        let mut list = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if i >= MAX_PATTERNS {
                return Err((i, format!("more than {MAX_PATTERNS} hosts")));
            }
            let pattern = AllowedHost::parse(item).map_err(|e| (i, format!("{item:?} {e}")))?;
            if !list.contains(&pattern) {
                list.push(pattern);
            }
        }
        Ok(AllowList(list))
    }

    /// Whether the list allows nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pattern a request to `target` is within, if any.
    pub fn find(&self, target: &Target) -> Option<&AllowedHost> {
        self.0.iter().find(|p| p.matches(target))
    }

    /// Whether a non-public `ip` may be reached for `target`: only when the
    /// list names that address itself, with the target's scheme and port.
    pub fn names_address(&self, target: &Target, ip: IpAddr) -> bool {
        self.0.iter().any(|p| {
            p.scheme == target.scheme && p.port == target.port && p.host == HostPattern::Ip(ip)
        })
    }

    /// What this list and `ceiling` both allow.
    pub fn narrowed(&self, ceiling: &AllowList) -> AllowList {
        let mut out: Vec<AllowedHost> = Vec::new();
        for a in &self.0 {
            for b in &ceiling.0 {
                if let Some(both) = a.intersect(b) {
                    if !out.contains(&both) {
                        out.push(both);
                    }
                }
            }
        }
        AllowList(out)
    }

    /// The patterns as text, for messages.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Splits `host[:port]` (`[v6]:port` for IPv6).
fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (_, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 address without its closing ]")?;
        let host = &authority[..authority.len() - after.len()];
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("has something after the IPv6 address that is not :port")?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("port {p:?} must be a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

/// A host as a URL carries it: a name, `*.`name, an IPv4 address or an IPv6
/// address in brackets.
fn parse_host(host: &str) -> Result<HostPattern, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("has an unclosed [")?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| HostPattern::Ip(canonical(IpAddr::V6(ip))))
            .map_err(|_| format!("[{inner}] is not an IPv6 address"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(HostPattern::Ip(IpAddr::V4(ip)));
    }
    // As some URL parsers hand it over, without its brackets.
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Ok(HostPattern::Ip(canonical(IpAddr::V6(ip))));
    }
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(suffix) = name.strip_prefix("*.") {
        check_name(suffix)?;
        if !suffix.contains('.') {
            return Err(format!(
                "*.{suffix} is too wide: a wildcard needs at least two labels after it (*.partner.example)"
            ));
        }
        return Ok(HostPattern::Wildcard(suffix.to_string()));
    }
    if name.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard may only be the first label, as in *.partner.example"
        ));
    }
    check_name(name)?;
    Ok(HostPattern::Name(name.to_string()))
}

/// A DNS name: labels of letters, digits and dashes.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a host name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "{name:?} is not a host name (labels of letters, digits and dashes)"
            ));
        }
    }
    // `127.1` or `2130706433` would reach an address through a resolver's
    // shorthand: names never end in a number.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{name:?} looks like an address but is not one in dotted form"
        ));
    }
    Ok(())
}

/// `name` is within `*.suffix`.
fn in_wildcard(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local (169.254.0.0/16, where cloud metadata services live)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4 and broadcast)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Addresses that carry an IPv4 address inside: whatever that one is.
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return non_public_v4(embedded(s[6], s[7])).map(|_| "NAT64 of a non-public IPv4 address");
    }
    // NAT64 for local use (RFC 8215): whatever the local translator reaches,
    // wherever in the address it puts the IPv4 one.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("NAT64 local-use (64:ff9b:1::/48)");
    }
    // IPv4-translated (::ffff:0:a.b.c.d, SIIT): the IPv4 address it is.
    // (IPv4-mapped ::ffff:a.b.c.d is made IPv4 by `canonical`.)
    if s[..5] == [0, 0, 0, 0, 0xffff] && s[5] == 0 {
        return non_public_v4(embedded(s[6], s[7]))
            .map(|_| "IPv4-translated form of a non-public IPv4 address");
    }
    if s[0] == 0x2002 {
        return non_public_v4(embedded(s[1], s[2])).map(|_| "6to4 of a non-public IPv4 address");
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("IPv4-compatible (deprecated)");
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        // Teredo hides an IPv4 address too; no partner lives there.
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AllowedHost {
        AllowedHost::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn t(scheme: &str, host: &str, port: Option<u16>) -> Target {
        Target::new(scheme, host, port).unwrap()
    }

    #[test]
    fn patterns_parse_and_print_in_one_form() {
        for (input, shown) in [
            ("https://api.partner.example", "https://api.partner.example"),
            (
                "HTTPS://API.Partner.Example/",
                "https://api.partner.example",
            ),
            (
                "https://api.partner.example:443",
                "https://api.partner.example",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://[::1]:9000", "http://[::1]:9000"),
            ("http://[::ffff:127.0.0.1]:80", "http://127.0.0.1"),
            ("https://*.partner.example", "https://*.partner.example"),
            ("http://partner-api:8080", "http://partner-api:8080"),
        ] {
            assert_eq!(p(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (input, says) in [
            ("api.partner.example", "scheme://host"),
            ("ftp://api.partner.example", "http or https"),
            ("https://api.partner.example/v1", "path"),
            ("https://user:pw@api.partner.example", "credentials"),
            ("https://*", "first label"),
            ("https://*.example", "too wide"),
            ("https://api.*.example", "first label"),
            ("http://127.0.0.1:0", "port"),
            ("http://127.0.0.1:99999", "port"),
            ("http://127.1", "address"),
            ("http://2130706433", "address"),
            ("http://[::1", "closing ]"),
            ("http://under_score.example", "not a host name"),
            ("https://", "no host"),
        ] {
            let e = AllowedHost::parse(input).expect_err(input);
            assert!(e.contains(says), "{input}: {e}");
        }
    }

    #[test]
    fn matching_takes_scheme_host_and_port_together() {
        let api = p("https://api.partner.example");
        assert!(api.matches(&t("https", "api.partner.example", None)));
        assert!(api.matches(&t("https", "API.partner.example.", Some(443))));
        assert!(!api.matches(&t("http", "api.partner.example", None)));
        assert!(!api.matches(&t("https", "api.partner.example", Some(8443))));
        assert!(!api.matches(&t("https", "evil.example", None)));
        assert!(!api.matches(&t("https", "api.partner.example.evil.example", None)));

        let any = p("https://*.partner.example");
        assert!(any.matches(&t("https", "eu.api.partner.example", None)));
        assert!(!any.matches(&t("https", "partner.example", None)));
        assert!(!any.matches(&t("https", "evilpartner.example", None)));

        let ip = p("http://127.0.0.1:9000");
        assert!(ip.matches(&t("http", "127.0.0.1", Some(9000))));
        assert!(!ip.matches(&t("http", "localhost", Some(9000))));
        assert!(!ip.matches(&t("http", "127.0.0.1", Some(9001))));
        assert!(p("http://[::1]:9000").matches(&t("http", "[::1]", Some(9000))));
    }

    #[test]
    fn an_operator_list_narrows_an_add_on_list() {
        let declared = AllowList::parse([
            "https://*.partner.example",
            "https://billing.other.example",
            "http://127.0.0.1:9000",
        ])
        .unwrap();
        let operator =
            AllowList::parse(["https://api.partner.example", "http://127.0.0.1:9000"]).unwrap();
        assert_eq!(
            declared.narrowed(&operator).describe(),
            "https://api.partner.example, http://127.0.0.1:9000"
        );
        let wide = AllowList::parse(["https://*.example"]);
        assert!(wide.is_err(), "too wide for an operator too");
        let op = AllowList::parse(["https://*.partner.example"]).unwrap();
        let nested = AllowList::parse(["https://*.eu.partner.example"]).unwrap();
        assert_eq!(
            nested.narrowed(&op).describe(),
            "https://*.eu.partner.example"
        );
        assert_eq!(
            op.narrowed(&nested).describe(),
            "https://*.eu.partner.example"
        );
        assert!(declared.narrowed(&AllowList::default()).is_empty());
    }

    #[test]
    fn non_public_addresses_are_named() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "ff02::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(non_public(addr).is_some(), "{ip} must not count as public");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(addr), None, "{ip} is public");
        }
    }

    /// The special-purpose IPv4 ranges, by name, and the public addresses
    /// just outside each (found by mutation testing: deleting any of these
    /// arms went unnoticed).
    #[test]
    fn special_purpose_ipv4_ranges_are_named_and_their_neighbours_are_public() {
        for (ip, kind) in [
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("::ffff:198.18.0.1", "benchmarking"),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let named = non_public(addr).unwrap_or_else(|| panic!("{ip} counted as public"));
            assert!(named.starts_with(kind), "{ip}: {named}");
        }
        for ip in [
            "192.0.1.1",
            "192.0.3.1",
            "198.51.101.1",
            "203.0.114.1",
            "198.17.255.255",
            "198.20.0.0",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(addr), None, "{ip} is public");
        }
    }

    /// The special-purpose IPv6 ranges, by name, and the public addresses
    /// beside each (found by mutation testing: these guards and arms could
    /// change unnoticed).
    #[test]
    fn special_purpose_ipv6_ranges_are_named_and_their_neighbours_are_public() {
        for (ip, kind) in [
            // NAT64 of 198.51.100.7: the third octet decides.
            ("64:ff9b::c633:6407", "NAT64 of a non-public"),
            ("fec0::1", "site-local"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("100::1", "discard-only"),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let named = non_public(addr).unwrap_or_else(|| panic!("{ip} counted as public"));
            assert!(named.starts_with(kind), "{ip}: {named}");
        }
        for ip in [
            "64:ff9b::c633:6507",
            "64::1",
            "2606:4700:1::1111",
            "2001:db9::1",
            "2001:4860::8888",
            "100:0:0:1::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(addr), None, "{ip} is public");
        }
    }

    #[test]
    fn nat64_local_use_and_ipv4_translated_forms_of_internal_addresses_are_not_public() {
        for ip in [
            // NAT64 local-use (RFC 8215): routed to whatever the local
            // translator reaches, the metadata service included.
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            "64:ff9b:1::5db8:d822",
            // IPv4-translated (SIIT, ::ffff:0:0:0/96) of internal addresses.
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:5",
            // IPv4-mapped, written out in hex.
            "::ffff:a9fe:a9fe",
            "::ffff:a00:5",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(non_public(addr).is_some(), "{ip} must not count as public");
        }
        // The same forms of a public IPv4 address stay public.
        for ip in ["::ffff:0:5db8:d822", "::ffff:5db8:d822"] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(addr), None, "{ip} is public");
        }
    }

    #[test]
    fn only_a_listed_address_opens_a_non_public_one() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let by_name = t("http", "localhost", Some(9000));
        // A listed name that resolves to the loopback does not open it…
        let names = AllowList::parse(["http://localhost:9000"]).unwrap();
        assert!(names.find(&by_name).is_some());
        assert!(!names.names_address(&by_name, lo));
        // …the address itself does, for its scheme and port only.
        let both = AllowList::parse(["http://127.0.0.1:9000", "http://localhost:9000"]).unwrap();
        assert!(both.names_address(&t("http", "127.0.0.1", Some(9000)), lo));
        assert!(
            both.names_address(&by_name, lo),
            "that address and port are listed anyway"
        );
        assert!(!both.names_address(&t("http", "localhost", Some(9001)), lo));
        assert!(!both.names_address(&t("https", "127.0.0.1", Some(9000)), lo));
    }
}
