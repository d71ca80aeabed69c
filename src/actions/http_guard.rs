//! Where `http_request` may go: by default not to loopback, private, link-local and
//! other non-public addresses, checked on the addresses a name *resolves to* (so a name
//! pointing at 127.0.0.1 or a cloud metadata address is refused too), on literal IPs in
//! the URL and on every redirect. An allow list (`[http_request] allow` in the service,
//! `--http-allow` on `transbordo run`) lets through host names (`api.example.com`,
//! `*.internal.example.com`) and networks (`10.1.2.0/24`, `fd00::/8`, `127.0.0.1`).
//! Programs embedding the engine can also let through one exact address and port
//! ([`HttpGuard::allow_socket`]; the playground allows its sandbox that way).
//!
//! The check happens inside the HTTP client's DNS resolver, so the address checked is
//! the address connected to (no window for DNS rebinding between check and use). The
//! guarded client ignores `HTTP(S)_PROXY`: a proxy would resolve names itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// A refused destination: the error kind `forbidden` of `http_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The host of the URL.
    pub host: String,
    /// The address it resolved to (or the literal address).
    pub ip: IpAddr,
    /// Which kind of non-public range (`loopback`, `private`, `link-local`, …).
    pub range: &'static str,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let literal = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        let a = if self.range.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) {
            "an"
        } else {
            "a"
        };
        match literal {
            Ok(_) => write!(f, "{} is {a} {} address", self.host, self.range)?,
            Err(_) => write!(
                f,
                "{} resolves to {}, {a} {} address",
                self.host, self.ip, self.range
            )?,
        }
        f.write_str("; add the host or network to the http_request allow list to permit it")
    }
}

impl std::error::Error for Forbidden {}

/// An allow list entry that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not a host name, `*.domain`, IP address or CIDR network")]
pub struct BadAllowEntry {
    /// The entry as written.
    pub entry: String,
}

/// The destination policy of `http_request`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGuard {
    hosts: Vec<String>,
    suffixes: Vec<String>,
    nets: Vec<IpNet>,
    sockets: Vec<SocketAddr>,
}

/// The non-public range `ip` falls in, if any (`None`: a public address).
pub fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if o[0] == 0 {
        "unspecified"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared (carrier-grade NAT)"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "IETF protocol assignment"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "benchmarking"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_range(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address that is reached.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return v4_range(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return v4_range(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique local (private)"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // Deprecated IPv4-compatible addresses (::a.b.c.d).
        "reserved"
    } else {
        return None;
    })
}

impl HttpGuard {
    /// The default policy (only public addresses) plus `allow`: host names
    /// (`api.example.com`), subdomain wildcards (`*.example.com`), IP addresses and
    /// CIDR networks.
    pub fn new<S: AsRef<str>>(allow: &[S]) -> Result<HttpGuard, BadAllowEntry> {
        let mut g = HttpGuard::default();
        for entry in allow {
            let raw = entry.as_ref().trim();
            let bad = || BadAllowEntry {
                entry: raw.to_string(),
            };
            if let Ok(net) = raw.parse::<IpNet>() {
                g.nets.push(net.trunc());
            } else if let Ok(ip) = raw.parse::<IpAddr>() {
                g.nets.push(IpNet::from(ip));
            } else if let Some(rest) = raw.strip_prefix("*.") {
                if !valid_host(rest) {
                    return Err(bad());
                }
                g.suffixes.push(format!(".{}", rest.to_ascii_lowercase()));
            } else if valid_host(raw) {
                g.hosts.push(raw.to_ascii_lowercase());
            } else {
                return Err(bad());
            }
        }
        Ok(g)
    }

    /// Also lets through `addr` exactly (that address and that port, nothing else on it),
    /// when a URL names the address literally (`http://127.0.0.1:8910/…`): the port is
    /// only known there, not when a host name is resolved, so `localhost:8910` stays
    /// refused.
    pub fn allow_socket(mut self, addr: SocketAddr) -> HttpGuard {
        self.sockets.push(addr);
        self
    }

    /// Whether the host name itself is allowed (then any address it resolves to is).
    pub fn host_allowed(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&h) || self.suffixes.iter().any(|s| h.ends_with(s))
    }

    /// `Ok` when `host` may be reached at `ip`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Forbidden> {
        if self.host_allowed(host) || self.nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match non_public_range(ip) {
            None => Ok(()),
            Some(range) => Err(Forbidden {
                host: host.to_string(),
                ip,
                range,
            }),
        }
    }

    /// Checks a URL whose host is a literal IP address (names are checked when resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Forbidden> {
        let host = url.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => {
                let port = url.port_or_known_default().unwrap_or(0);
                if self.sockets.contains(&SocketAddr::new(ip, port)) {
                    return Ok(());
                }
                self.check(host, ip)
            }
            Err(_) => Ok(()),
        }
    }

    /// An HTTP client that enforces this policy: names are resolved and checked by the
    /// client's resolver, redirects to literal addresses are checked, proxies are off.
    /// Requests to literal addresses must be checked with [`HttpGuard::check_url`]
    /// before they are sent.
    pub fn client(self: &Arc<Self>) -> reqwest::Result<reqwest::Client> {
        let redirects = self.clone();
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(self.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    return attempt.error("too many redirects");
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .build()
    }
}

/// A name of letters, digits, `-` and `.` (what DNS resolves).
fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Finds the [`Forbidden`] error in a request error's source chain.
pub fn forbidden_in(e: &(dyn std::error::Error + 'static)) -> Option<Forbidden> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<Forbidden>() {
            return Some(f.clone());
        }
        cur = err.source();
    }
    None
}

struct GuardedResolver(Arc<HttpGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(f) => {
                        refused.get_or_insert(f);
                        false
                    }
                })
                .collect();
            match refused {
                Some(f) if allowed.is_empty() => Err(Box::new(f) as _),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        for (a, r) in [
            ("127.0.0.1", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.5.4", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("unique local (private)")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("2002:7f00:1::", Some("loopback")),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("2606:4700::1111", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
        ] {
            assert_eq!(non_public_range(ip(a)), r, "{a}");
        }
    }

    #[test]
    fn allow_list() {
        let g =
            HttpGuard::new(&["api.example.com", "*.corp.example", "10.1.2.0/24", "::1"]).unwrap();
        assert!(g.check("api.example.com", ip("127.0.0.1")).is_ok());
        assert!(g.check("API.example.com.", ip("10.9.9.9")).is_ok());
        assert!(g.check("x.corp.example", ip("192.168.0.1")).is_ok());
        assert!(g.check("corp.example", ip("192.168.0.1")).is_err());
        assert!(g.check("h", ip("10.1.2.200")).is_ok());
        assert!(g.check("h", ip("10.1.3.1")).is_err());
        assert!(g.check("h", ip("::1")).is_ok());
        assert!(g.check("h", ip("8.8.8.8")).is_ok());
        let e = g.check("evil.test", ip("169.254.169.254")).unwrap_err();
        assert_eq!(e.range, "link-local");
        // One exact socket: that port of that address, and only when named literally.
        let g = HttpGuard::default().allow_socket("127.0.0.1:8910".parse().unwrap());
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(g.check_url(&url("http://127.0.0.1:8910/x")).is_ok());
        assert!(g.check_url(&url("http://127.0.0.1:8911/x")).is_err());
        assert!(g.check_url(&url("http://127.0.0.1/x")).is_err());
        assert!(g.check_url(&url("http://[::1]:8910/x")).is_err());
        assert!(g.check("localhost", ip("127.0.0.1")).is_err());
        for bad in ["", "a b", "10.0.0.0/33", "*.", "http://x"] {
            assert!(HttpGuard::new(&[bad]).is_err(), "{bad}");
        }
    }
}
