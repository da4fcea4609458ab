//! The limits a build runs under (issue 11): memory, CPU shares and the network of its `RUN` steps.
//!
//! The server sets them for every build (`KILN_BUILD_MEMORY`, `KILN_BUILD_CPU_SHARES`,
//! `KILN_BUILD_NETWORK`); a rule may only make the network stricter (`network: "none"`), never
//! looser: host networking is a server-wide choice, not a rule's. Pure: parsing, the daemon's
//! network mode for a build, and the failure reason of a build that ran out of memory.

/// Docker refuses a memory limit below 6 MiB.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The largest memory limit kiln can pass: the Docker client library (bollard) sends the build's
/// `memory` as a 32-bit number, so 2 GiB (sent as 2 GiB less one byte) is the most.
pub const MAX_MEMORY: u64 = 2 << 30;
/// Docker's range of CPU shares (relative weights; 1024 is a container's default).
pub const CPU_SHARES: std::ops::RangeInclusive<u64> = 2..=262_144;

/// The network of a build's `RUN` steps, as the server sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerNetwork {
    /// The Docker daemon's default (its bridge network).
    #[default]
    Default,
    /// No network: only a loopback interface.
    None,
    /// The host's network stack (trusted builds only).
    Host,
}

impl ServerNetwork {
    /// `default`, `none` or `host`.
    pub fn parse(s: &str) -> Result<ServerNetwork, String> {
        match s.trim() {
            "default" | "" => Ok(ServerNetwork::Default),
            "none" => Ok(ServerNetwork::None),
            "host" => Ok(ServerNetwork::Host),
            other => Err(format!(
                "must be default, none or host (got {})",
                super::quote(other)
            )),
        }
    }
}

/// A rule's choice for its `RUN` steps' network.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleNetwork {
    /// The server's `KILN_BUILD_NETWORK`.
    #[default]
    Default,
    /// No network, whatever the server's setting.
    None,
}

impl RuleNetwork {
    pub const VALUES: [&'static str; 2] = ["default", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleNetwork::Default => "default",
            RuleNetwork::None => "none",
        }
    }

    /// `default` or `none`; `host` is named as the server's choice.
    pub fn parse(s: &str) -> Result<RuleNetwork, String> {
        match s {
            "default" => Ok(RuleNetwork::Default),
            "none" => Ok(RuleNetwork::None),
            "host" => Err(
                "must be \"default\" or \"none\": host networking is set for the whole server \
                 (KILN_BUILD_NETWORK=host), not per rule"
                    .into(),
            ),
            other => Err(format!(
                "must be \"default\" (the server's setting) or \"none\" (no network for RUN \
                 steps) (got {})",
                super::quote(other)
            )),
        }
    }

    /// Whether this is the default (left out when rendering a rule).
    pub fn is_default(&self) -> bool {
        *self == RuleNetwork::Default
    }
}

/// The server's limits for every build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildLimits {
    /// Bytes of memory (swap included: the build cannot swap past it); None: no limit.
    pub memory: Option<u64>,
    /// Relative CPU weight; None: the daemon's default (1024).
    pub cpu_shares: Option<u64>,
    pub network: ServerNetwork,
}

impl BuildLimits {
    /// The daemon's `networkmode` for a build of a rule that chose `rule`: None leaves the daemon's
    /// default.
    pub fn network_mode(&self, rule: RuleNetwork) -> Option<&'static str> {
        match (rule, self.network) {
            (RuleNetwork::None, _) | (RuleNetwork::Default, ServerNetwork::None) => Some("none"),
            (RuleNetwork::Default, ServerNetwork::Host) => Some("host"),
            (RuleNetwork::Default, ServerNetwork::Default) => None,
        }
    }

    /// One log line naming the limits in force (None when there are none).
    pub fn summary(&self, rule: RuleNetwork) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(format!("memory {}", mebibytes(m)));
        }
        if let Some(s) = self.cpu_shares {
            parts.push(format!("CPU shares {s}"));
        }
        if let Some(mode) = self.network_mode(rule) {
            parts.push(format!("network {mode}"));
        }
        (!parts.is_empty()).then(|| format!("Build limits: {}", parts.join("; ")))
    }

    /// The memory limit as the daemon's build options take it (32-bit: 2 GiB is sent one byte short).
    pub fn memory_option(&self) -> Option<i32> {
        self.memory.map(|m| i32::try_from(m).unwrap_or(i32::MAX))
    }

    /// The failure reason of a build whose `RUN` step the kernel's OOM killer stopped (the daemon's
    /// `message` kept after it); None without a memory limit.
    pub fn out_of_memory(&self, message: &str) -> Option<String> {
        let limit = self.memory?;
        Some(format!(
            "ran out of memory: the build is limited to {} (KILN_BUILD_MEMORY); {}",
            mebibytes(limit),
            message.trim()
        ))
    }
}

/// Whether the classic builder's error says a `RUN` step was killed (SIGKILL, exit code 137): what
/// an out-of-memory kill looks like in the build's own output (also a `kill -9`, so the daemon's
/// `oom` event decides when it can be had).
pub fn step_killed(message: &str) -> bool {
    message
        .trim_end()
        .ends_with("returned a non-zero code: 137")
}

/// `N MiB` (rounded down; under 1 MiB in bytes).
fn mebibytes(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{bytes} bytes")
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// A memory size: bytes, or a number with `k`, `m`, `g` (powers of 1024, like Docker's `--memory`;
/// `b`, `kb`, `mib`… and upper case are taken too). [`MIN_MEMORY`] to [`MAX_MEMORY`].
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{} is not a size: write bytes or a number with k, m or g, like 2g or 512m",
                super::quote(s)
            ));
        }
    };
    let n: u64 = number.parse().map_err(|_| {
        format!(
            "{} is not a size: write bytes or a number with k, m or g, like 2g or 512m",
            super::quote(s)
        )
    })?;
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| format!("{} is too large", super::quote(s)))?;
    if bytes > MAX_MEMORY {
        return Err(format!(
            "must be at most 2g (the Docker client kiln uses passes a build's memory limit as a \
             32-bit number), got {}",
            super::quote(s)
        ));
    }
    if bytes < MIN_MEMORY {
        return Err(format!(
            "must be at least 6m (Docker's smallest memory limit), got {}",
            super::quote(s)
        ));
    }
    Ok(bytes)
}

/// CPU shares: 2 to 262144.
pub fn parse_cpu_shares(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| CPU_SHARES.contains(n))
        .ok_or_else(|| {
            format!(
                "must be a whole number from 2 to 262144 (1024 is a container's default weight), got {}",
                super::quote(s)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_table() {
        for (text, want) in [
            ("2g", Some(2u64 << 30)),
            ("512m", Some(512 << 20)),
            ("512MiB", Some(512 << 20)),
            ("6m", Some(6 << 20)),
            ("32M", Some(32 << 20)),
            ("8192k", Some(8 << 20)),
            ("67108864", Some(64 << 20)),
            (" 1G ", Some(1 << 30)),
            ("5m", None),
            ("0", None),
            ("", None),
            ("g", None),
            ("-1g", None),
            ("1.5g", None),
            ("2 x", None),
            ("99999999999999999999g", None),
            ("9999999999t", None),
            ("2049m", None),
            ("3g", None),
        ] {
            assert_eq!(parse_memory(text).ok(), want, "{text:?}");
        }
        assert!(parse_memory("5m").unwrap_err().contains("at least 6m"));
        assert!(parse_memory("4g").unwrap_err().contains("at most 2g"));
    }

    #[test]
    fn cpu_shares_table() {
        assert_eq!(parse_cpu_shares("512"), Ok(512));
        assert_eq!(parse_cpu_shares("2"), Ok(2));
        assert_eq!(parse_cpu_shares("262144"), Ok(262_144));
        for bad in ["1", "0", "262145", "-5", "x", ""] {
            assert!(parse_cpu_shares(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_parse_and_combine() {
        assert_eq!(ServerNetwork::parse("none"), Ok(ServerNetwork::None));
        assert_eq!(ServerNetwork::parse("default"), Ok(ServerNetwork::Default));
        assert_eq!(ServerNetwork::parse("host"), Ok(ServerNetwork::Host));
        assert!(ServerNetwork::parse("bridge").is_err());
        assert_eq!(RuleNetwork::parse("none"), Ok(RuleNetwork::None));
        assert!(
            RuleNetwork::parse("host")
                .unwrap_err()
                .contains("whole server")
        );
        assert!(RuleNetwork::parse("None").is_err());
        for (server, rule, want) in [
            (ServerNetwork::Default, RuleNetwork::Default, None),
            (ServerNetwork::Default, RuleNetwork::None, Some("none")),
            (ServerNetwork::None, RuleNetwork::Default, Some("none")),
            (ServerNetwork::None, RuleNetwork::None, Some("none")),
            (ServerNetwork::Host, RuleNetwork::Default, Some("host")),
            // A rule can make the network stricter, never looser.
            (ServerNetwork::Host, RuleNetwork::None, Some("none")),
        ] {
            let limits = BuildLimits {
                network: server,
                ..BuildLimits::default()
            };
            assert_eq!(limits.network_mode(rule), want, "{server:?} {rule:?}");
        }
        assert_eq!(
            serde_json::to_string(&RuleNetwork::None).unwrap(),
            "\"none\""
        );
    }

    #[test]
    fn out_of_memory_needs_a_limit_and_a_kill() {
        let msg =
            "The command '/bin/sh -c head -c 100m /dev/zero | tail' returned a non-zero code: 137";
        let limited = BuildLimits {
            memory: Some(32 << 20),
            ..BuildLimits::default()
        };
        assert!(step_killed(msg));
        assert!(!step_killed(
            "The command '/bin/sh -c false' returned a non-zero code: 1"
        ));
        assert!(!step_killed("returned a non-zero code: 1370"));
        let reason = limited.out_of_memory(msg).unwrap();
        assert!(
            reason.starts_with("ran out of memory: the build is limited to 32 MiB"),
            "{reason}"
        );
        assert!(
            reason.ends_with("returned a non-zero code: 137"),
            "{reason}"
        );
        assert_eq!(BuildLimits::default().out_of_memory(msg), None);
        let two = BuildLimits {
            memory: Some(parse_memory("2g").unwrap()),
            ..BuildLimits::default()
        };
        assert_eq!(two.memory_option(), Some(i32::MAX));
        assert_eq!(limited.memory_option(), Some(32 << 20));
    }

    #[test]
    fn summary_names_what_is_limited() {
        assert_eq!(BuildLimits::default().summary(RuleNetwork::Default), None);
        let limits = BuildLimits {
            memory: Some(2 << 30),
            cpu_shares: Some(512),
            network: ServerNetwork::Default,
        };
        assert_eq!(
            limits.summary(RuleNetwork::None).unwrap(),
            "Build limits: memory 2048 MiB; CPU shares 512; network none"
        );
    }
}
