//! Per-address rate limits on the surfaces anyone can reach: deliveries from outside (`/hooks/*`,
//! `/registry/events`), console sign-in (`POST /login`), and API calls and registry logins
//! (`/registry/token`) with a bad token.
//!
//! Only failures count: a hook whose signature matches no source, a registry notification with a
//! wrong events token, a sign-in with an unknown token, an API call or registry login whose token is
//! missing, unknown or expired. Each failure takes one cell of the address's budget (a GCRA bucket
//! from the `governor` crate: `KILN_RATE_LIMIT_BURST` cells, refilled at
//! `KILN_RATE_LIMIT_PER_MINUTE`); once the budget is spent, the address's failures are answered 429
//! with `Retry-After` (seconds until the next cell) instead of 401. A request that proves itself (a
//! verified delivery, a valid token) is never limited, from any address, throttled or not: the check
//! runs after verification and only on the failure path.
//!
//! Each surface has its own budget. Addresses are the client's (the TCP peer, or the client a
//! trusted proxy names: [`peer`]), keyed by IP (IPv6 by its /64, which one host usually holds
//! whole). Memory is bounded: every [`PRUNE_EVERY`] failures the addresses back at a full budget are
//! forgotten, and while [`MAX_TRACKED`] addresses are still spending theirs, every failure is
//! answered 429 at once without being recorded (verified requests still pass). Requests that come
//! without a peer address (a router driven in-process, without
//! `into_make_service_with_connect_info`) are not limited.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;

/// Addresses tracked per surface before the idle ones are pruned.
pub const MAX_TRACKED: usize = 100_000;
/// Failures between two prunings of idle addresses (whatever their number).
pub const PRUNE_EVERY: u64 = 4096;
/// The default budget: 30 failures a minute per address, 10 at once.
pub const DEFAULT_PER_MINUTE: u32 = 30;
pub const DEFAULT_BURST: u32 = 10;

/// `KILN_RATE_LIMIT_PER_MINUTE` and `KILN_RATE_LIMIT_BURST`; `per_minute == 0` turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_minute: DEFAULT_PER_MINUTE,
            burst: DEFAULT_BURST,
        }
    }
}

impl RateLimitConfig {
    /// Validates the pair: both 0 to 100000; a burst of 0 is only allowed when limiting is off.
    pub fn new(per_minute: u64, burst: u64) -> Result<Self, String> {
        let cap = |name: &str, n: u64| {
            u32::try_from(n)
                .ok()
                .filter(|n| *n <= 100_000)
                .ok_or_else(|| format!("{name}: must be 0 to 100000, got {n}"))
        };
        let per_minute = cap("KILN_RATE_LIMIT_PER_MINUTE", per_minute)?;
        let burst = cap("KILN_RATE_LIMIT_BURST", burst)?;
        if per_minute > 0 && burst == 0 {
            return Err("KILN_RATE_LIMIT_BURST: must be at least 1 while KILN_RATE_LIMIT_PER_MINUTE is set (0 turns limiting off)".into());
        }
        Ok(RateLimitConfig { per_minute, burst })
    }

    fn quota(&self) -> Option<Quota> {
        let per_minute = NonZeroU32::new(self.per_minute)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_minute(per_minute).allow_burst(burst))
    }
}

/// The surfaces limited, each with its own budget per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Hooks,
    Login,
    Api,
}

/// An address over its budget: ask it to come back after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
}

impl Throttled {
    /// The API's answer: 429, `Retry-After`, the JSON error shape.
    pub fn into_api_error(self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed requests from this address; retry in {} s",
                self.retry_after_secs
            ),
        )
        .retry_after(self.retry_after_secs)
    }
}

struct Limiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    failures: AtomicU64,
}

/// One keyed limiter per surface (none when limiting is off).
pub struct RateLimits {
    hooks: Option<Limiter>,
    login: Option<Limiter>,
    api: Option<Limiter>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> RateLimits {
        let make = || {
            config.quota().map(|q| Limiter {
                limiter: RateLimiter::keyed(q),
                failures: AtomicU64::new(0),
            })
        };
        RateLimits {
            hooks: make(),
            login: make(),
            api: make(),
            clock: DefaultClock::default(),
        }
    }

    fn limiter(&self, surface: Surface) -> Option<&Limiter> {
        match surface {
            Surface::Hooks => self.hooks.as_ref(),
            Surface::Login => self.login.as_ref(),
            Surface::Api => self.api.as_ref(),
        }
    }

    /// Counts a failure from `addr` on `surface`: Err when the address is over its budget (answer 429
    /// with the `Retry-After` given), Ok when the usual 401 stands. No address (unknown peer): Ok.
    pub fn note_failure(&self, surface: Surface, addr: Option<IpAddr>) -> Result<(), Throttled> {
        let (Some(l), Some(addr)) = (self.limiter(surface), addr) else {
            return Ok(());
        };
        let key = key_of(addr);
        let n = l.failures.fetch_add(1, Ordering::Relaxed);
        if n % PRUNE_EVERY == PRUNE_EVERY - 1 {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        if l.limiter.len() >= MAX_TRACKED {
            // Full of addresses all still spending their budgets (a flood from many addresses):
            // failures are refused without being recorded until the next pruning frees room.
            return Err(Throttled {
                retry_after_secs: 60,
            });
        }
        l.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Throttled {
                retry_after_secs: retry_after_secs(wait),
            }
        })
    }

    /// Addresses tracked on `surface` (for tests and metrics).
    pub fn tracked(&self, surface: Surface) -> usize {
        self.limiter(surface).map_or(0, |l| l.limiter.len())
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The peer's address as limited: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
pub fn key_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// The client's IP address: the TCP peer, or the client a trusted proxy names in `X-Forwarded-For`
/// (`KILN_TRUSTED_PROXIES`, the same address the audit log records), so clients behind a proxy do
/// not share one budget. None without connect info.
pub fn peer(parts: &axum::http::request::Parts, app: &crate::app::App) -> Option<IpAddr> {
    crate::http::client_addr::of_request(parts, app)
}

/// The client's IP address as an extractor (see [`peer`]); never rejects.
pub struct Peer(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<crate::app::App> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &crate::app::App,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts, app)))
    }
}

/// The API's failure path: a 401 from `addr` is counted, and becomes a 429 once the address is over
/// its budget. Any other error passes as it is.
pub fn refuse(
    limits: &RateLimits,
    surface: Surface,
    addr: Option<IpAddr>,
    e: ApiError,
) -> ApiError {
    if e.status != StatusCode::UNAUTHORIZED {
        return e;
    }
    match limits.note_failure(surface, addr) {
        Ok(()) => e,
        Err(throttled) => {
            tracing::info!(
                surface = ?surface,
                address = ?addr.map(key_of),
                retry_after = throttled.retry_after_secs,
                "rate limited after repeated failures"
            );
            throttled.into_api_error()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_beyond_the_burst_are_throttled_per_address_and_surface() {
        let limits = RateLimits::new(RateLimitConfig::new(1, 3).unwrap());
        for _ in 0..3 {
            assert_eq!(limits.note_failure(Surface::Hooks, ip("10.0.0.1")), Ok(()));
        }
        let t = limits
            .note_failure(Surface::Hooks, ip("10.0.0.1"))
            .unwrap_err();
        // One cell a minute: the next one comes within the minute.
        assert!((1..=60).contains(&t.retry_after_secs), "{t:?}");
        // Another address, another surface, and no address at all: their own budgets.
        assert_eq!(limits.note_failure(Surface::Hooks, ip("10.0.0.2")), Ok(()));
        assert_eq!(limits.note_failure(Surface::Api, ip("10.0.0.1")), Ok(()));
        for _ in 0..10 {
            assert_eq!(limits.note_failure(Surface::Hooks, None), Ok(()));
        }
    }

    #[test]
    fn zero_per_minute_turns_limiting_off() {
        let limits = RateLimits::new(RateLimitConfig::new(0, 0).unwrap());
        for _ in 0..100 {
            assert_eq!(limits.note_failure(Surface::Login, ip("10.0.0.1")), Ok(()));
        }
        assert_eq!(limits.tracked(Surface::Login), 0);
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(
            RateLimitConfig::new(10, 0)
                .unwrap_err()
                .contains("KILN_RATE_LIMIT_BURST")
        );
        assert!(
            RateLimitConfig::new(200_000, 1)
                .unwrap_err()
                .contains("KILN_RATE_LIMIT_PER_MINUTE")
        );
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            key_of("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            key_of("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let limits = RateLimits::new(RateLimitConfig::new(1, 1).unwrap());
        assert_eq!(limits.note_failure(Surface::Api, ip("2001:db8::1")), Ok(()));
        assert!(
            limits
                .note_failure(Surface::Api, ip("2001:db8::ffff"))
                .is_err()
        );
    }

    #[test]
    fn memory_is_bounded_under_many_addresses() {
        let limits = RateLimits::new(RateLimitConfig::new(1, 1).unwrap());
        let mut refused_new = 0;
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i));
            if limits.note_failure(Surface::Hooks, Some(addr)).is_err() {
                refused_new += 1;
            }
        }
        assert!(limits.tracked(Surface::Hooks) <= MAX_TRACKED);
        // Every address is still failing (one cell a minute): failures past the cap are refused.
        assert!(refused_new >= 500, "{refused_new}");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
