//! Outbound safety: webhooks and git fetches may not reach loopback, private, link-local, metadata or
//! any other special-purpose address of the IANA IPv4 and IPv6 special-purpose registries (checked
//! after DNS resolution, on every attempt) unless the allow-list opens them. IPv6 forms that carry an
//! IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) are judged by the address they carry; every IPv6 address outside global unicast
//! (`2000::/3`) is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The setting an allow-list comes from unless told otherwise.
const WEBHOOK_SETTING: &str = "KILN_WEBHOOK_ALLOW";

/// Hosts and networks opened despite being internal (`KILN_WEBHOOK_ALLOW`, `KILN_GIT_ALLOW`).
#[derive(Debug, Clone)]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
    /// The setting named in refusals ("allow it by adding … to SETTING").
    setting: &'static str,
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList {
            hosts: Vec::new(),
            nets: Vec::new(),
            setting: WEBHOOK_SETTING,
        }
    }
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

    /// The same list, naming `setting` in its refusals.
    pub fn for_setting(mut self, setting: &'static str) -> AllowList {
        self.setting = setting;
        self
    }

    /// The same list, opening `host` too.
    pub fn with_host(mut self, host: &str) -> AllowList {
        self.hosts.push(host.to_ascii_lowercase());
        self
    }

    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Why an IPv4 address is internal, or None for a public one: every block of the IANA IPv4
/// Special-Purpose Address Registry.
fn internal_kind_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    let kind = match o {
        [127, ..] => "loopback",
        [169, 254, 169, 254] => "cloud metadata",
        [169, 254, ..] => "link-local",
        [10, ..] | [192, 168, ..] => "private",
        [172, b, ..] if b & 0xf0 == 16 => "private",
        // Shared address space (carrier-grade NAT, RFC 6598).
        [100, b, ..] if b & 0xc0 == 64 => "private",
        // Benchmarking (RFC 2544).
        [198, b, ..] if b & 0xfe == 18 => "private",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        // "This network", IETF protocol assignments (incl. DS-Lite, NAT64 discovery, TURN), the
        // deprecated 6to4 relay anycast, AMT, AS112 and direct-delegation AS112.
        [0, ..]
        | [192, 0, 0, _]
        | [192, 88, 99, _]
        | [192, 52, 193, _]
        | [192, 31, 196, _]
        | [192, 175, 48, _] => "reserved",
        [a, ..] if a & 0xf0 == 224 => "multicast",
        // Reserved for future use (240/4) and the limited broadcast address.
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    };
    Some(kind)
}

/// The IPv4 address an IPv6 address carries, and the name of that form: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(v6: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(("IPv4-mapped", low)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(("IPv4-translated", low)),
        // `::` and `::1` are themselves (unspecified, loopback), not IPv4-compatible forms.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(("IPv4-compatible", low)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(("NAT64", low)),
        [0x2002, hi, lo, ..] => Some((
            "6to4",
            Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8),
        )),
        _ => None,
    }
}

/// Why an IPv6 address (that carries no IPv4 address) is internal, or None for a public one: the
/// IANA IPv6 Special-Purpose Address Registry, and everything outside global unicast.
fn internal_kind_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let s = v6.segments();
    let kind = if v6.is_loopback() {
        "loopback"
    } else if v6.is_unspecified() {
        "reserved"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] == 0xfd00 && s[1] == 0x0ec2 {
        "cloud metadata"
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        // Link-local, and the deprecated site-local.
        "link-local"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private"
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3: discard-only 100::/64, local-use NAT64 64:ff9b:1::/48, and the rest
        // IANA keeps reserved.
        "reserved"
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000) {
        // 2001:db8::/32 and 3fff::/20.
        "documentation"
    } else if s[0] == 0x2001 && s[1] < 0x0200 {
        // IETF protocol assignments 2001::/23: Teredo, benchmarking, ORCHID, AMT, AS112, …
        "reserved"
    } else if s[0] == 0x2620 && s[1] == 0x004f && s[2] == 0x8000 {
        // Direct-delegation AS112 2620:4f:8000::/48.
        "reserved"
    } else {
        return None;
    };
    Some(kind)
}

/// Why an address is internal, or None for a public one. An IPv6 form carrying an IPv4 address has
/// the kind of the address it carries.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_kind_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((_, v4)) => internal_kind_v4(v4),
            None => internal_kind_v6(v6),
        },
    }
}

/// What an internal address is, for a refusal: "a loopback address", or "a NAT64 address carrying
/// 127.0.0.1, a loopback address". None for a public one.
pub fn describe_internal(ip: IpAddr) -> Option<String> {
    let kind = internal_kind(ip)?;
    Some(match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((form, v4)) => {
                let article = if form.starts_with('I') { "an" } else { "a" };
                format!("{article} {form} address carrying {v4}, a {kind} address")
            }
            None => format!("a {kind} address"),
        },
        IpAddr::V4(_) => format!("a {kind} address"),
    })
}

/// Refuses `ip` unless it is public or allow-listed (by address, or by the host name it came from). The
/// refusal says what was refused and how to allow it.
pub fn check(allow: &AllowList, host: &str, ip: IpAddr) -> Result<(), String> {
    match describe_internal(ip) {
        Some(what) if !allow.allows_ip(ip) && !allow.allows_host(host) => {
            let setting = allow.setting;
            let literal = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|h| h == ip);
            Err(if literal {
                format!("refused: {host} is {what}; allow it by adding {ip} to {setting}")
            } else {
                format!(
                    "refused: {host} resolves to {ip}, {what}; allow it by adding {host} to \
                     {setting}"
                )
            })
        }
        _ => Ok(()),
    }
}

/// Checks every address `host` resolves to (blocking: the system resolver). An IP literal (bare
/// or in brackets) is checked as it is. A name that does not resolve passes: whatever connects
/// next fails on it anyway, with its own message.
pub fn check_host_blocking(allow: &AllowList, host: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check(allow, host, ip);
    }
    match (bare, 0).to_socket_addrs() {
        Ok(addrs) => addrs
            .into_iter()
            .try_for_each(|a| check(allow, host, a.ip())),
        Err(_) => Ok(()),
    }
}

/// [`check_host_blocking`] for async callers (tokio's resolver).
pub async fn check_host(allow: &AllowList, host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check(allow, host, ip);
    }
    match tokio::net::lookup_host((bare, 0)).await {
        Ok(addrs) => addrs
            .into_iter()
            .try_for_each(|a| check(allow, host, a.ip())),
        Err(_) => Ok(()),
    }
}

/// Checks an outbound proxy URL (`KILN_OUTBOUND_PROXY`): `http://` or `https://`, with a host.
/// The message never repeats the URL (it may hold credentials).
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("must be an http:// or https:// URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http:// or https:// URL, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    reqwest::Proxy::all(url).map_err(|e| format!("not a proxy URL ({e})"))?;
    Ok(())
}

/// The host of the outbound proxy, if one is configured.
pub fn proxy_host(proxy: Option<&secrecy::SecretString>) -> Option<String> {
    use secrecy::ExposeSecret;
    let url = reqwest::Url::parse(proxy?.expose_secret()).ok()?;
    url.host_str().map(str::to_string)
}

/// Every HTTP client kiln builds goes through here: it uses `proxy` when one is configured, and
/// otherwise connects directly, whatever `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY` say.
pub fn with_proxy(
    builder: reqwest::ClientBuilder,
    proxy: Option<&secrecy::SecretString>,
) -> reqwest::Result<reqwest::ClientBuilder> {
    use secrecy::ExposeSecret;
    Ok(match proxy {
        Some(url) => builder
            .no_proxy()
            .proxy(reqwest::Proxy::all(url.expose_secret())?),
        None => builder.no_proxy(),
    })
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
            ("172.15.255.255", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("100.127.255.255", Some("private")),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("198.18.0.1", Some("private")),
            ("198.19.255.255", Some("private")),
            ("198.20.0.1", None),
            ("169.254.169.254", Some("cloud metadata")),
            ("169.254.1.1", Some("link-local")),
            ("0.0.0.0", Some("reserved")),
            ("0.1.2.3", Some("reserved")),
            ("192.0.0.8", Some("reserved")),
            ("192.0.0.170", Some("reserved")),
            ("192.0.1.1", None),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.200", Some("documentation")),
            ("192.88.99.1", Some("reserved")),
            ("192.52.193.1", Some("reserved")),
            ("192.31.196.1", Some("reserved")),
            ("192.175.48.1", Some("reserved")),
            ("240.0.0.1", Some("reserved")),
            ("254.255.255.255", Some("reserved")),
            ("255.255.255.255", Some("reserved")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.255", Some("multicast")),
            ("223.255.255.255", None),
            ("8.8.8.8", None),
            ("140.82.112.3", None),
            ("::1", Some("loopback")),
            ("::", Some("reserved")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("ff02::1", Some("multicast")),
            ("ff0e::1", Some("multicast")),
            ("100::1", Some("reserved")),
            ("100::ffff:ffff:ffff:ffff", Some("reserved")),
            ("64:ff9b:1::1", Some("reserved")),
            ("64:ff9b:1:ffff::8.8.8.8", Some("reserved")),
            ("2001::1", Some("reserved")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("reserved")),
            ("2001:2::1", Some("reserved")),
            ("2001:10::1", Some("reserved")),
            ("2001:20::1", Some("reserved")),
            ("2001:1ff::1", Some("reserved")),
            ("2001:200::1", None),
            ("2001:db8::1", Some("documentation")),
            ("2001:db8:ffff::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("3fff:fff::1", Some("documentation")),
            ("3fff:1000::1", None),
            ("2620:4f:8000::1", Some("reserved")),
            ("2620:4f:8001::1", None),
            ("5f00::1", Some("reserved")),
            ("4000::1", Some("reserved")),
            ("1::1", Some("reserved")),
            ("e000::1", Some("reserved")),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::1", None),
            // IPv6 forms carrying an IPv4 address: judged by the address they carry.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:169.254.169.254", Some("cloud metadata")),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:127.0.0.1", Some("loopback")),
            ("::ffff:0:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("::10.0.0.1", Some("private")),
            ("::0.0.0.2", Some("reserved")),
            ("::8.8.8.8", None),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::10.1.1.1", Some("private")),
            ("64:ff9b::169.254.169.254", Some("cloud metadata")),
            ("64:ff9b::192.0.2.1", Some("documentation")),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:c0a8:101::1", Some("private")),
            ("2002:a9fe:a9fe::1", Some("cloud metadata")),
            ("2002:0808:0808::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(internal_kind(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn refusals_of_embedded_forms_name_the_address_they_carry() {
        assert_eq!(
            check(
                &AllowList::default(),
                "[64:ff9b::7f00:1]",
                "64:ff9b::7f00:1".parse().unwrap()
            )
            .unwrap_err(),
            "refused: [64:ff9b::7f00:1] is a NAT64 address carrying 127.0.0.1, a loopback \
             address; allow it by adding 64:ff9b::7f00:1 to KILN_WEBHOOK_ALLOW"
        );
        assert_eq!(
            describe_internal("2002:c0a8:101::1".parse().unwrap()).unwrap(),
            "a 6to4 address carrying 192.168.1.1, a private address"
        );
        assert_eq!(
            describe_internal("::ffff:10.0.0.1".parse().unwrap()).unwrap(),
            "an IPv4-mapped address carrying 10.0.0.1, a private address"
        );
        assert_eq!(describe_internal("8.8.8.8".parse().unwrap()), None);
    }

    #[test]
    fn refusals_name_the_setting_of_their_list() {
        let git = AllowList::parse("git.internal")
            .unwrap()
            .for_setting("KILN_GIT_ALLOW");
        assert_eq!(
            check(&git, "10.0.0.5", "10.0.0.5".parse().unwrap()).unwrap_err(),
            "refused: 10.0.0.5 is a private address; allow it by adding 10.0.0.5 to KILN_GIT_ALLOW"
        );
        assert!(check(&git, "git.internal", "10.0.0.5".parse().unwrap()).is_ok());
        assert!(check_host_blocking(&git, "127.0.0.1").is_err());
        assert!(check_host_blocking(&git, "[::1]").is_err());
        assert!(check_host_blocking(&git, "localhost").is_err());
        assert!(check_host_blocking(&git, "8.8.8.8").is_ok());
        // A name that does not resolve is left to the fetch, which fails on it.
        assert!(check_host_blocking(&git, "no-such-host.invalid").is_ok());
        let open = AllowList::parse("127.0.0.0/8,::1").unwrap();
        assert!(check_host_blocking(&open, "127.0.0.1").is_ok());
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
