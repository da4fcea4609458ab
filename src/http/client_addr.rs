//! The address a request comes from: the TCP peer's, unless that peer is one of the trusted proxies
//! (`KILN_TRUSTED_PROXIES`), in which case `X-Forwarded-For` is read from the right, past the trusted
//! proxies, to the first address that is not one. With no trusted proxies (the default) the header
//! is ignored: anyone can write it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses `KILN_TRUSTED_PROXIES`: comma-separated IP addresses and CIDR networks.
pub fn parse_trusted_proxies(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{item}' is not an IP address or CIDR network"))
        })
        .collect()
}

/// The address `parts`' request comes from (see the module's doc): the TCP peer given by
/// `ConnectInfo` (None when the server was started without it, e.g. a router driven in-process),
/// or the client a trusted proxy names.
pub fn of_request(parts: &axum::http::request::Parts, app: &crate::app::App) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    client_ip(peer, &parts.headers, &app.config.trusted_proxies)
}

/// The client's address (see the module's doc); None when the peer is unknown.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Not an address: nothing further left can be trusted.
            return Some(nearest);
        };
        if !is_trusted(&ip) {
            return Some(ip);
        }
        nearest = ip;
    }
    Some(nearest)
}

/// One entry of `X-Forwarded-For`: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_behind_a_trusted_proxy() {
        let trusted = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1").unwrap();
        for (peer, xff, expected) in [
            // No trusted proxy in front: the peer, whatever the header says.
            ("198.51.100.7", &["203.0.113.9"][..], "198.51.100.7"),
            // One trusted proxy: the address it saw.
            ("127.0.0.1", &["203.0.113.9"][..], "203.0.113.9"),
            // A forged entry on the left is skipped: the rightmost untrusted one counts.
            (
                "10.1.1.1",
                &["6.6.6.6, 203.0.113.9, 10.2.2.2"][..],
                "203.0.113.9",
            ),
            // Several headers are one list.
            ("10.1.1.1", &["6.6.6.6", "203.0.113.9"][..], "203.0.113.9"),
            // Ports and IPv6.
            ("10.1.1.1", &["[2001:db8::1]:4711"][..], "2001:db8::1"),
            ("10.1.1.1", &["203.0.113.9:80"][..], "203.0.113.9"),
            // Garbage: the nearest trusted hop.
            ("10.1.1.1", &["nonsense, 10.2.2.2"][..], "10.2.2.2"),
            // No header, or only trusted hops: the leftmost trusted one known.
            ("127.0.0.1", &[][..], "127.0.0.1"),
            ("10.1.1.1", &["10.3.3.3, 10.2.2.2"][..], "10.3.3.3"),
        ] {
            assert_eq!(
                client_ip(Some(ip(peer)), &headers(xff), &trusted),
                Some(ip(expected)),
                "{peer} {xff:?}"
            );
        }
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), &headers(&["203.0.113.9"]), &[]),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(client_ip(None, &headers(&["203.0.113.9"]), &trusted), None);
    }

    #[test]
    fn trusted_proxies_parse() {
        assert_eq!(parse_trusted_proxies("").unwrap(), vec![]);
        assert_eq!(
            parse_trusted_proxies("127.0.0.1,::1, 10.0.0.0/8")
                .unwrap()
                .len(),
            3
        );
        for bad in ["proxy.example", "10.0.0.0/99", "1.2.3"] {
            let e = parse_trusted_proxies(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
