//! The client address: the TCP peer, unless the peer is a trusted proxy.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which proxies may set `X-Forwarded-For`. By default none.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address. When the peer is trusted, `X-Forwarded-For` is
    /// walked right to left past trusted hops; the first untrusted entry is the
    /// client. The leftmost entry is never trusted: if every hop is trusted it
    /// is the client. An unparsable entry ends the walk with no address, so
    /// keys with IP rules fail closed.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut hops: Vec<&str> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(text) = v.to_str() else { return None };
            hops.extend(text.split(',').map(str::trim));
        }
        if hops.is_empty() {
            return Some(peer);
        }
        for (i, hop) in hops.iter().enumerate().rev() {
            let ip = parse_hop(hop)?.to_canonical();
            if i == 0 || !self.trusts(ip) {
                return Some(ip);
            }
        }
        None
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]:port` or `v4:port`.
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn walk() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), &headers(&["1.2.3.4"])),
            Some(ip("10.0.0.1")),
            "untrusted peer: XFF ignored"
        );
        let t = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &headers(&[])), Some(ip("127.0.0.1")));
        assert_eq!(t.client_ip(ip("127.0.0.1"), &headers(&["203.0.113.7"])), Some(ip("203.0.113.7")));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &headers(&["6.6.6.6, 203.0.113.7, 10.1.1.1"])),
            Some(ip("203.0.113.7")),
            "spoofed leftmost ignored"
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &headers(&["10.9.9.9", "10.1.1.1"])),
            Some(ip("10.9.9.9")),
            "leftmost never trusted"
        );
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), &headers(&["203.0.113.7"])), Some(ip("203.0.113.7")));
        assert_eq!(t.client_ip(ip("127.0.0.1"), &headers(&["junk, 10.1.1.1"])), None);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &headers(&["[2001:db8::1]:443"])), Some(ip("2001:db8::1")));
    }
}
