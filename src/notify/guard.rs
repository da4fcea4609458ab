//! Outbound safety: webhooks may not reach loopback, private, link-local or metadata addresses (checked
//! after DNS resolution, on every attempt) unless the allow-list opens them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Hosts and networks opened to webhooks despite being internal (`KILN_WEBHOOK_ALLOW`).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Comma-separated host names, IP addresses and CIDR networks: `localhost,127.0.0.1,10.0.0.0/8`.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "'{item}' is not a host name, IP address or CIDR network"
                ));
            }
        }
        Ok(list)
    }

    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Why an address is internal, or None for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if o == [169, 254, 169, 254] {
                Some("cloud metadata")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_private()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
            {
                Some("private")
            } else if v4.is_unspecified()
                || o[0] == 0
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] >= 240
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_kind(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("reserved")
            } else if s[0] == 0xfd00 && s[1] == 0x0ec2 {
                Some("cloud metadata")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private")
            } else {
                None
            }
        }
    }
}

/// Refuses `ip` unless it is public or allow-listed (by address, or by the host name it came from). The
/// refusal says what was refused and how to allow it.
pub fn check(allow: &AllowList, host: &str, ip: IpAddr) -> Result<(), String> {
    match internal_kind(ip) {
        Some(kind) if !allow.allows_ip(ip) && !allow.allows_host(host) => {
            let literal = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|h| h == ip);
            Err(if literal {
                format!(
                    "refused: {host} is a {kind} address; allow it by adding {ip} to \
                     KILN_WEBHOOK_ALLOW"
                )
            } else {
                format!(
                    "refused: {host} resolves to {ip}, a {kind} address; allow it by adding {host} \
                     to KILN_WEBHOOK_ALLOW"
                )
            })
        }
        _ => Ok(()),
    }
}

/// A destination the guard refused (the message of [`check`]). It stays refused until the operator
/// changes `KILN_WEBHOOK_ALLOW`, so a delivery refused this way fails at once instead of being retried.
/// The resolver returns it inside reqwest's error, where [`refusal_in`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The guard's refusal somewhere in an error's chain of causes, if that is why it failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<Refused>())
}

/// reqwest's DNS step with the check applied to every resolved address, so the connection goes only to
/// an address that passed (no second lookup to rebind).
pub struct GuardedResolver {
    pub allow: Arc<AllowList>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            for a in &addrs {
                check(&allow, &host, a.ip()).map_err(Refused)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.9.9.9", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("198.18.0.1", Some("private")),
            ("169.254.169.254", Some("cloud metadata")),
            ("169.254.1.1", Some("link-local")),
            ("0.0.0.0", Some("reserved")),
            ("255.255.255.255", Some("reserved")),
            ("224.0.0.1", Some("reserved")),
            ("8.8.8.8", None),
            ("140.82.112.3", None),
            ("::1", Some("loopback")),
            ("::", Some("reserved")),
            ("fe80::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(internal_kind(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_opens_hosts_and_networks() {
        let allow = AllowList::parse(" localhost , 127.0.0.1,10.0.0.0/8,::1 ").unwrap();
        assert!(check(&allow, "localhost", "127.0.0.2".parse().unwrap()).is_ok());
        assert!(check(&allow, "x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(check(&allow, "x", "10.200.0.1".parse().unwrap()).is_ok());
        assert!(check(&allow, "x", "::1".parse().unwrap()).is_ok());
        assert_eq!(
            check(&allow, "x", "192.168.0.1".parse().unwrap()).unwrap_err(),
            "refused: x resolves to 192.168.0.1, a private address; allow it by adding x to \
             KILN_WEBHOOK_ALLOW"
        );
        assert_eq!(
            check(&allow, "10.0.0.5", "10.0.0.5".parse().unwrap()),
            Ok(()),
            "allowed by its network"
        );
        assert_eq!(
            check(
                &AllowList::default(),
                "10.0.0.5",
                "10.0.0.5".parse().unwrap()
            )
            .unwrap_err(),
            "refused: 10.0.0.5 is a private address; allow it by adding 10.0.0.5 to KILN_WEBHOOK_ALLOW"
        );
        assert_eq!(
            check(&AllowList::default(), "[::1]", "::1".parse().unwrap()).unwrap_err(),
            "refused: [::1] is a loopback address; allow it by adding ::1 to KILN_WEBHOOK_ALLOW"
        );
        assert!(
            check(
                &AllowList::default(),
                "example.com",
                "93.184.215.14".parse().unwrap()
            )
            .is_ok()
        );
        assert!(
            check(
                &AllowList::default(),
                "evil",
                "169.254.169.254".parse().unwrap()
            )
            .is_err()
        );
        for bad in ["10.0.0.0/40", "a b", "http://x", "x/y"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowList::parse("").unwrap().nets.is_empty());
    }
}
