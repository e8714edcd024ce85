//! Outbound POSTs to URLs that visitors chose (webhook subscriptions), made
//! safe against server-side request forgery:
//!
//! - only `http://` and `https://`, without credentials in the URL;
//! - the host is resolved once, and every address it resolves to must be
//!   public (not loopback, private, link-local — so not the cloud metadata
//!   address 169.254.169.254 —, CGNAT, multicast, unspecified, documentation,
//!   benchmarking or reserved; IPv4 inside IPv6 — mapped, compatible, NAT64,
//!   6to4, Teredo — is judged by the IPv4 it carries or refused), unless the
//!   operator's allowlist (`[status] webhook_allow`) names its network;
//! - the connection goes to the address that was checked (the client is
//!   pinned to it: no second lookup, so no DNS rebinding), never through a
//!   proxy, and redirects are not followed;
//! - connect and total deadlines, and at most [`MAX_RESPONSE`] bytes of the
//!   response are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;

/// Bytes of a response read at most (the rest is dropped).
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Limits of one outbound request.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Networks that may be reached although not public.
    pub allow: Vec<IpNet>,
    /// Deadline to resolve the host and open the connection.
    pub connect_timeout: Duration,
    /// Deadline for the whole exchange, response included.
    pub total_timeout: Duration,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The first [`MAX_RESPONSE`] bytes of the body.
    pub body: Vec<u8>,
}

/// A URL that passed the checks, with the address to connect to.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The URL.
    pub url: Url,
    /// The address checked (the connection goes there).
    pub addr: SocketAddr,
}

impl Outbound {
    /// Check the URL's form only (no lookup): a message naming the problem.
    pub fn parse(url: &str) -> Result<Url, String> {
        if url.len() > MAX_URL {
            return Err(format!("must be at most {MAX_URL} characters"));
        }
        let u = Url::parse(url.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "must be an http:// or https:// URL, not {}://",
                u.scheme()
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("must not carry a user name or password".into());
        }
        if u.host().is_none() {
            return Err("must name a host".into());
        }
        Ok(u)
    }

    /// Check the URL and resolve its host; every address must be allowed.
    pub async fn check(&self, url: &str) -> Result<Checked, String> {
        let url = Self::parse(url)?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "has no port".to_string())?;
        let addrs: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(d)) => {
                let found = tokio::time::timeout(
                    self.connect_timeout,
                    tokio::net::lookup_host((d.to_string(), port)),
                )
                .await
                .map_err(|_| format!("host `{d}` did not resolve in time"))?
                .map_err(|_| format!("host `{d}` does not resolve"))?;
                found.map(|a| a.ip()).collect()
            }
            None => return Err("must name a host".into()),
        };
        let first = addrs
            .first()
            .copied()
            .ok_or_else(|| "the host has no address".to_string())?;
        for ip in &addrs {
            if !self.permitted(*ip) {
                return Err(format!(
                    "resolves to {}, which is not a public address (loopback, private, link-local and other internal networks are refused)",
                    canonical(*ip)
                ));
            }
        }
        Ok(Checked {
            url,
            addr: SocketAddr::new(canonical(first), port),
        })
    }

    /// Whether `ip` may be reached: public, or inside an allowed network.
    pub fn permitted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow.iter().any(|n| n.contains(&ip)) || is_public(ip)
    }

    /// POST `body` with `headers` to a checked URL.
    pub async fn post(
        &self,
        to: &Checked,
        headers: &[(&str, String)],
        body: &str,
    ) -> Result<Reply, String> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(self.total_timeout)
            .user_agent(concat!("orinari-status/", env!("CARGO_PKG_VERSION")));
        if let Some(url::Host::Domain(d)) = to.url.host() {
            // Pin the name to the checked address: no second lookup.
            b = b.resolve(d, to.addr);
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot build the client: {e}"))?;
        let mut req = client
            .post(to.url.clone())
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let exchange = async {
            let mut resp = req.send().await.map_err(|e| describe(&e.without_url()))?;
            let status = resp.status().as_u16();
            let mut out = Vec::new();
            while out.len() < MAX_RESPONSE {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        let room = MAX_RESPONSE - out.len();
                        out.extend_from_slice(&c[..c.len().min(room)]);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(describe(&e.without_url())),
                }
            }
            Ok(Reply { status, body: out })
        };
        tokio::time::timeout(self.total_timeout, exchange)
            .await
            .map_err(|_| "no answer in time".to_string())?
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "the connection failed".into()
    } else {
        format!("the request failed: {e}")
    }
}

/// The IPv4 address inside an IPv4-mapped IPv6 one; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 included
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only global unicast (2000::/3) is public at all.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    match s[0] {
        // 2001::/23: IETF protocol assignments (Teredo 2001::/32,
        // benchmarking, ORCHID…) and 2001:db8::/32 documentation.
        0x2001 => s[1] >= 0x0200 && s[1] != 0x0db8,
        // 6to4: judged by the IPv4 address it carries.
        0x2002 => public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            (s[1] & 0xff) as u8,
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
        )),
        // 3fff::/20 documentation.
        0x3fff => s[1] >= 0x1000,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_internal_addresses() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "3fff::1",
        ] {
            assert!(!is_public(ip(s)), "{s} must not be public");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "::ffff:8.8.8.8",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(ip(s)), "{s} must be public");
        }
    }

    #[test]
    fn allowlist_admits_named_networks_only() {
        let o = Outbound {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..Outbound::default()
        };
        assert!(o.permitted(ip("127.0.0.1")));
        assert!(o.permitted(ip("::ffff:127.0.0.1")));
        assert!(!o.permitted(ip("10.0.0.1")));
        assert!(!o.permitted(ip("::1")));
    }

    #[test]
    fn url_form_is_checked() {
        assert!(Outbound::parse("ftp://example.org/").is_err());
        assert!(Outbound::parse("https://user:pw@example.org/").is_err());
        assert!(Outbound::parse("not a url").is_err());
        assert!(Outbound::parse("https://example.org/hook").is_ok());
        assert!(Outbound::parse(&format!("https://e.org/{}", "a".repeat(MAX_URL))).is_err());
    }
}
