//! One `Config`: an optional TOML file overridden by `KILN_*` environment variables, validated once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;

/// The TOML file as written by a user; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    registry: Option<String>,
    registry_url: Option<String>,
    registry_username: Option<String>,
    registry_password: Option<String>,
    registry_page_size: Option<u64>,
    admin_token: Option<String>,
    registry_events_token: Option<String>,
    public_url: Option<String>,
    build_workers: Option<usize>,
    build_timeout_secs: Option<u64>,
    build_timeout_minutes: Option<u64>,
    repo_build_limit: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    build_log_limit: Option<u64>,
    hook_body_limit: Option<usize>,
    hook_queue: Option<usize>,
    event_retention_days: Option<u64>,
    delivery_timeout_secs: Option<u64>,
    delivery_attempts: Option<u32>,
    delivery_backoff_ms: Option<u64>,
    delivery_retention_days: Option<u64>,
    webhook_allow: Option<String>,
    local_sources: Option<String>,
    // -- retention of builds and the local cache (issue 9) --
    build_retention_count: Option<u64>,
    build_retention_days: Option<u64>,
    image_cache_max_bytes: Option<u64>,
    // -- the web console (issue 10) --
    session_idle_minutes: Option<u64>,
    session_max_hours: Option<u64>,
    // -- the audit log (issue 11) --
    audit_retention_days: Option<u64>,
    trusted_proxies: Option<String>,
    // -- secrets at rest (issue 11) --
    secret_key: Option<String>,
    // -- outbound guards (issue 11) --
    git_allow: Option<String>,
    outbound_proxy: Option<String>,
    // -- registry access through kiln (issue 11) --
    registry_token_issuer: Option<String>,
    registry_token_service: Option<String>,
    registry_token_lifetime_secs: Option<u64>,
    registry_anonymous_pull: Option<bool>,
    // -- git host integrations (issue 12) --
    github_api_url: Option<String>,
    // -- rate limits and build limits (issue 11) --
    rate_limit_per_minute: Option<u64>,
    rate_limit_burst: Option<u64>,
    build_memory: Option<String>,
    build_cpu_shares: Option<u64>,
    build_network: Option<String>,
    builder: Option<String>,
    // -- faults (issue 11) --
    build_wait_when_down_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// host[:port] images are pushed to, as `{registry}/{namespace}/{repo}:{tag}`.
    pub registry: String,
    /// Base URL of that registry's HTTP API (default: http for localhost/127.x, https otherwise).
    pub registry_url: String,
    pub registry_username: Option<String>,
    pub registry_password: Option<SecretString>,
    /// Entries asked for per page of the registry's catalog and tag lists (`?n=`); every page is read.
    pub registry_page_size: usize,
    pub admin_token: Option<SecretString>,
    pub registry_events_token: Option<SecretString>,
    pub public_url: String,
    /// GitHub's REST API base (`KILN_GITHUB_API_URL`, default `https://api.github.com`; GitHub
    /// Enterprise Server: `https://HOST/api/v3`), for the namespaces' GitHub integrations.
    pub github_api_url: String,
    pub build_workers: usize,
    /// How long a build may run when its rule sets no `timeout_minutes`: `KILN_BUILD_TIMEOUT_MINUTES`
    /// (default 60), or `KILN_BUILD_TIMEOUT_SECS`, which wins when both are set (finer grained).
    pub build_timeout: Duration,
    /// Builds of one repository that may run at once (`KILN_REPO_BUILD_LIMIT`).
    pub repo_build_limit: usize,
    /// On SIGTERM / Ctrl-C, how long running builds may take to finish before they are stopped and
    /// queued again (`KILN_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Bytes of build log kept per build (`KILN_BUILD_LOG_LIMIT`, default 10 MiB): past it, one line
    /// says where the log was cut and later output is dropped; the build goes on.
    pub build_log_limit: u64,
    pub hook_body_limit: usize,
    /// Verified hook deliveries waiting for the ingest writer; beyond it hooks answer 503 + Retry-After.
    pub hook_queue: usize,
    /// Received hook events (the "why didn't it build?" view) are kept this long.
    pub event_retention: Duration,
    /// One attempt to deliver a notification may take this long.
    pub delivery_timeout: Duration,
    /// Attempts per notification before it is marked failed.
    pub delivery_attempts: u32,
    /// First retry delay; each next one is 3 times longer (with ±20 % jitter).
    pub delivery_backoff: Duration,
    pub delivery_retention: Duration,
    /// Internal hosts/networks webhooks may reach (`KILN_WEBHOOK_ALLOW`).
    pub webhook_allow: crate::notify::guard::AllowList,
    /// Directories under which local git sources are allowed (`KILN_LOCAL_SOURCES`); none by default.
    pub local_sources: crate::local_sources::LocalSources,
    // -- retention of builds and the local cache (issue 9) --
    /// Per repository, the newest this many builds are kept whatever their age.
    pub build_retention_count: u64,
    /// Builds younger than this are kept whatever their number (zero: age keeps nothing).
    pub build_retention: Duration,
    /// Local images kiln built plus mirrors of deleted sources are pruned, oldest first, down to
    /// this many bytes (zero: no cap).
    pub image_cache_max_bytes: u64,
    /// A console session ends after this long without a request.
    pub session_idle: Duration,
    /// A console session ends this long after sign-in, however busy.
    pub session_max: Duration,
    /// Audit records are kept this long (`KILN_AUDIT_RETENTION_DAYS`, default 90).
    pub audit_retention: Duration,
    /// Proxies whose `X-Forwarded-For` names the client (`KILN_TRUSTED_PROXIES`; none by default:
    /// the header is ignored).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    // -- secrets at rest (issue 11) --
    /// The key kiln's stored secrets are encrypted with (`KILN_SECRET_KEY`: base64 or 64 hex digits
    /// of 32 bytes); None: the key file in the data directory (`crate::secrets::key`).
    pub secret_key: Option<crate::secrets::SecretKey>,
    // -- outbound guards (issue 11) --
    /// Internal hosts/networks git fetches may reach (`KILN_GIT_ALLOW`): self-hosted git servers.
    pub git_allow: crate::notify::guard::AllowList,
    /// The HTTP proxy webhook deliveries go through (`KILN_OUTBOUND_PROXY`); none by default, and
    /// the environment's `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` are never used. A secret: its URL
    /// may hold credentials.
    pub outbound_proxy: Option<SecretString>,
    // -- registry access through kiln (issue 11) --
    /// `iss` of the registry tokens kiln signs (`KILN_REGISTRY_TOKEN_ISSUER`, default `kiln`): the
    /// registry's `auth.token.issuer`.
    pub registry_token_issuer: String,
    /// `aud` of those tokens and the only `service` kiln issues them for
    /// (`KILN_REGISTRY_TOKEN_SERVICE`, default `kiln`): the registry's `auth.token.service`.
    pub registry_token_service: String,
    /// How long a registry token is valid (`KILN_REGISTRY_TOKEN_LIFETIME_SECS`, default 300).
    pub registry_token_lifetime: Duration,
    /// Pulls without credentials are allowed (`KILN_REGISTRY_ANONYMOUS_PULL`, default false).
    pub registry_anonymous_pull: bool,
    /// Failures allowed per address on hooks, sign-in and the API (`KILN_RATE_LIMIT_PER_MINUTE`,
    /// `KILN_RATE_LIMIT_BURST`; 0 per minute: no limit).
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// Memory, CPU shares and network of every build (`KILN_BUILD_MEMORY`, `KILN_BUILD_CPU_SHARES`,
    /// `KILN_BUILD_NETWORK`).
    pub build_limits: crate::domain::build_limits::BuildLimits,
    /// The daemon's builder (`KILN_BUILDER`: `buildkit`, the default, or `classic`); builds with
    /// memory or CPU limits, and some contexts, use the classic one (`Builder::for_build`).
    pub builder: crate::domain::builder::Builder,
    /// How long a build waits for the Docker daemon or the registry to answer again before it fails
    /// (`KILN_BUILD_WAIT_WHEN_DOWN_SECS`, default 300; zero: it fails at once).
    pub build_wait_when_down: Duration,
}

/// Where configuration values come from: a variable lookup, so tests can pass a map instead of the process env.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Vars for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_REGISTRY: &str = "localhost:5000";
/// GitHub caps webhook payloads at 25 MB; so do we.
pub const DEFAULT_HOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;
/// A build's time limit when neither its rule nor the configuration sets one.
pub const DEFAULT_BUILD_TIMEOUT_MINUTES: u64 = 60;
/// Deliveries that may wait for the ingest writer at once.
pub const DEFAULT_HOOK_QUEUE: usize = 1024;
/// Builds kept per repository whatever their age (`KILN_BUILD_RETENTION_COUNT`).
pub const DEFAULT_BUILD_RETENTION_COUNT: u64 = 500;
/// Builds kept whatever their number, in days (`KILN_BUILD_RETENTION_DAYS`).
pub const DEFAULT_BUILD_RETENTION_DAYS: u64 = 90;
/// The local cache cap: 20 GiB (`KILN_IMAGE_CACHE_MAX_BYTES`).
pub const DEFAULT_IMAGE_CACHE_MAX_BYTES: u64 = 20 << 30;
/// How long a build waits for the Docker daemon or the registry (`KILN_BUILD_WAIT_WHEN_DOWN_SECS`).
pub const DEFAULT_BUILD_WAIT_WHEN_DOWN_SECS: u64 = 300;

impl Config {
    /// Reads the optional file, then the environment, and validates the result.
    pub fn load(file: Option<&Path>, vars: &dyn Vars) -> anyhow::Result<Config> {
        let file_cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file_cfg, vars)
    }

    fn resolve(f: FileConfig, vars: &dyn Vars) -> anyhow::Result<Config> {
        let pick = |var: &str, file: Option<String>| vars.get(var).or(file);

        let listen_text = pick("KILN_LISTEN", f.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("KILN_LISTEN: '{listen_text}' is not an address like 127.0.0.1:8080")
        })?;

        let data_dir = vars
            .get("KILN_DATA_DIR")
            .map(PathBuf::from)
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from("./kiln-data"));
        let database_url = pick("KILN_DATABASE_URL", f.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("kiln.db").display()));
        if !database_url.starts_with("sqlite:") {
            bail!("KILN_DATABASE_URL: only sqlite: URLs are supported, got '{database_url}'");
        }
        if database_url.contains(":memory:") || database_url.contains("mode=memory") {
            // Hooks are stored through a connection of their own, which would see another database.
            bail!("KILN_DATABASE_URL: an in-memory database is not supported; give a file");
        }

        let registry = pick("KILN_REGISTRY", f.registry).unwrap_or_else(|| DEFAULT_REGISTRY.into());
        if registry.is_empty() || registry.contains('/') || registry.contains(char::is_whitespace) {
            bail!("KILN_REGISTRY: '{registry}' must be host[:port], without scheme or path");
        }
        let registry_url = pick("KILN_REGISTRY_URL", f.registry_url)
            .unwrap_or_else(|| default_registry_url(&registry))
            .trim_end_matches('/')
            .to_string();
        if !(registry_url.starts_with("http://") || registry_url.starts_with("https://")) {
            bail!("KILN_REGISTRY_URL: '{registry_url}' must start with http:// or https://");
        }

        let registry_username = pick("KILN_REGISTRY_USERNAME", f.registry_username);
        let registry_password =
            pick("KILN_REGISTRY_PASSWORD", f.registry_password).map(SecretString::from);
        if registry_password.is_some() && registry_username.is_none() {
            bail!("KILN_REGISTRY_PASSWORD is set but KILN_REGISTRY_USERNAME is not");
        }
        let admin_token = pick("KILN_ADMIN_TOKEN", f.admin_token).map(SecretString::from);
        let registry_events_token =
            pick("KILN_REGISTRY_EVENTS_TOKEN", f.registry_events_token).map(SecretString::from);
        let public_url = pick("KILN_PUBLIC_URL", f.public_url)
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        let github_api_url = pick("KILN_GITHUB_API_URL", f.github_api_url)
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string();
        match reqwest::Url::parse(&github_api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => bail!("KILN_GITHUB_API_URL: '{github_api_url}' is not an http(s) URL"),
        }

        let build_workers = match vars.get("KILN_BUILD_WORKERS") {
            Some(v) => v
                .parse()
                .with_context(|| format!("KILN_BUILD_WORKERS: '{v}' is not a number"))?,
            None => f.build_workers.unwrap_or(2),
        };
        if !(1..=64).contains(&build_workers) {
            bail!("KILN_BUILD_WORKERS: must be between 1 and 64, got {build_workers}");
        }
        // KILN_BUILD_TIMEOUT_SECS (the older, finer-grained form) wins over KILN_BUILD_TIMEOUT_MINUTES.
        let build_timeout_secs = match (
            vars.get("KILN_BUILD_TIMEOUT_SECS"),
            vars.get("KILN_BUILD_TIMEOUT_MINUTES"),
        ) {
            (Some(v), _) => v
                .parse()
                .with_context(|| format!("KILN_BUILD_TIMEOUT_SECS: '{v}' is not a number"))?,
            (None, Some(v)) => {
                let minutes: u64 = v.parse().with_context(|| {
                    format!("KILN_BUILD_TIMEOUT_MINUTES: '{v}' is not a whole number of minutes")
                })?;
                if !(1..=u64::from(crate::domain::build_settings::MAX_TIMEOUT_MINUTES))
                    .contains(&minutes)
                {
                    bail!(
                        "KILN_BUILD_TIMEOUT_MINUTES: must be 1 to {}, got {minutes}",
                        crate::domain::build_settings::MAX_TIMEOUT_MINUTES
                    );
                }
                minutes * 60
            }
            (None, None) => match (f.build_timeout_secs, f.build_timeout_minutes) {
                (Some(secs), _) => secs,
                (None, Some(minutes)) => minutes.saturating_mul(60),
                (None, None) => DEFAULT_BUILD_TIMEOUT_MINUTES * 60,
            },
        };
        if build_timeout_secs == 0 {
            bail!("KILN_BUILD_TIMEOUT_SECS / KILN_BUILD_TIMEOUT_MINUTES: must be positive");
        }
        let number = |var: &str, file: Option<u64>, default: u64| -> anyhow::Result<u64> {
            match vars.get(var) {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{var}: '{v}' is not a whole number")),
                None => Ok(file.unwrap_or(default)),
            }
        };
        let build_log_limit = number("KILN_BUILD_LOG_LIMIT", f.build_log_limit, 10 * 1024 * 1024)?;
        if build_log_limit < 1024 {
            bail!("KILN_BUILD_LOG_LIMIT: must be at least 1024 bytes, got {build_log_limit}");
        }

        let event_retention_days = match vars.get("KILN_EVENT_RETENTION_DAYS") {
            Some(v) => v.parse().with_context(|| {
                format!("KILN_EVENT_RETENTION_DAYS: '{v}' is not a number of days")
            })?,
            None => f.event_retention_days.unwrap_or(30),
        };
        if event_retention_days == 0 {
            bail!("KILN_EVENT_RETENTION_DAYS: must be at least 1");
        }

        let delivery_timeout_secs =
            number("KILN_DELIVERY_TIMEOUT_SECS", f.delivery_timeout_secs, 10)?;
        let delivery_attempts = number(
            "KILN_DELIVERY_ATTEMPTS",
            f.delivery_attempts.map(u64::from),
            6,
        )?;
        let delivery_backoff_ms =
            number("KILN_DELIVERY_BACKOFF_MS", f.delivery_backoff_ms, 30_000)?;
        let delivery_retention_days = number(
            "KILN_DELIVERY_RETENTION_DAYS",
            f.delivery_retention_days,
            30,
        )?;
        if !(1..=600).contains(&delivery_timeout_secs) {
            bail!("KILN_DELIVERY_TIMEOUT_SECS: must be 1 to 600");
        }
        if !(1..=50).contains(&delivery_attempts) {
            bail!("KILN_DELIVERY_ATTEMPTS: must be 1 to 50");
        }
        if delivery_retention_days == 0 {
            bail!("KILN_DELIVERY_RETENTION_DAYS: must be at least 1");
        }
        let hook_queue = number(
            "KILN_HOOK_QUEUE",
            f.hook_queue.map(|n| n as u64),
            DEFAULT_HOOK_QUEUE as u64,
        )?;
        if !(1..=65_536).contains(&hook_queue) {
            bail!("KILN_HOOK_QUEUE: must be 1 to 65536, got {hook_queue}");
        }
        let repo_build_limit = number(
            "KILN_REPO_BUILD_LIMIT",
            f.repo_build_limit.map(|n| n as u64),
            1,
        )?;
        if !(1..=64).contains(&repo_build_limit) {
            bail!("KILN_REPO_BUILD_LIMIT: must be between 1 and 64, got {repo_build_limit}");
        }
        let shutdown_grace_secs = number("KILN_SHUTDOWN_GRACE_SECS", f.shutdown_grace_secs, 60)?;
        if shutdown_grace_secs > 86_400 {
            bail!(
                "KILN_SHUTDOWN_GRACE_SECS: must be at most 86400 (a day), got {shutdown_grace_secs}"
            );
        }
        let registry_page_size = number(
            "KILN_REGISTRY_PAGE_SIZE",
            f.registry_page_size,
            crate::registry::client::DEFAULT_PAGE_SIZE as u64,
        )?;
        if !(1..=10_000).contains(&registry_page_size) {
            bail!("KILN_REGISTRY_PAGE_SIZE: must be 1 to 10000, got {registry_page_size}");
        }
        // -- retention of builds and the local cache (issue 9) --
        let build_retention_count = number(
            "KILN_BUILD_RETENTION_COUNT",
            f.build_retention_count,
            DEFAULT_BUILD_RETENTION_COUNT,
        )?;
        let build_retention_days = number(
            "KILN_BUILD_RETENTION_DAYS",
            f.build_retention_days,
            DEFAULT_BUILD_RETENTION_DAYS,
        )?;
        if build_retention_days > 36_500 {
            bail!("KILN_BUILD_RETENTION_DAYS: must be at most 36500, got {build_retention_days}");
        }
        let image_cache_max_bytes = number(
            "KILN_IMAGE_CACHE_MAX_BYTES",
            f.image_cache_max_bytes,
            DEFAULT_IMAGE_CACHE_MAX_BYTES,
        )?;
        let session_idle_minutes =
            number("KILN_SESSION_IDLE_MINUTES", f.session_idle_minutes, 120)?;
        let session_max_hours = number("KILN_SESSION_MAX_HOURS", f.session_max_hours, 12)?;
        if session_idle_minutes == 0 || session_max_hours == 0 {
            bail!("KILN_SESSION_IDLE_MINUTES and KILN_SESSION_MAX_HOURS must be at least 1");
        }
        let audit_retention_days = number("KILN_AUDIT_RETENTION_DAYS", f.audit_retention_days, 90)?;
        if !(1..=36_500).contains(&audit_retention_days) {
            bail!("KILN_AUDIT_RETENTION_DAYS: must be 1 to 36500, got {audit_retention_days}");
        }
        let trusted_proxies = crate::http::client_addr::parse_trusted_proxies(
            &pick("KILN_TRUSTED_PROXIES", f.trusted_proxies).unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("KILN_TRUSTED_PROXIES: {e}"))?;
        // -- rate limits and build limits (issue 11) --
        let rate_limit = crate::rate_limit::RateLimitConfig::new(
            number(
                "KILN_RATE_LIMIT_PER_MINUTE",
                f.rate_limit_per_minute,
                u64::from(crate::rate_limit::DEFAULT_PER_MINUTE),
            )?,
            number(
                "KILN_RATE_LIMIT_BURST",
                f.rate_limit_burst,
                u64::from(crate::rate_limit::DEFAULT_BURST),
            )?,
        )
        .map_err(anyhow::Error::msg)?;
        let build_limits = {
            use crate::domain::build_limits::{self as limits, ServerNetwork};
            let memory = pick("KILN_BUILD_MEMORY", f.build_memory)
                .map(|m| limits::parse_memory(&m))
                .transpose()
                .map_err(|e| anyhow::anyhow!("KILN_BUILD_MEMORY: {e}"))?;
            let cpu_shares = vars
                .get("KILN_BUILD_CPU_SHARES")
                .or(f.build_cpu_shares.map(|n| n.to_string()))
                .map(|s| limits::parse_cpu_shares(&s))
                .transpose()
                .map_err(|e| anyhow::anyhow!("KILN_BUILD_CPU_SHARES: {e}"))?;
            let network = pick("KILN_BUILD_NETWORK", f.build_network)
                .map(|n| ServerNetwork::parse(&n))
                .transpose()
                .map_err(|e| anyhow::anyhow!("KILN_BUILD_NETWORK: {e}"))?
                .unwrap_or_default();
            limits::BuildLimits {
                memory,
                cpu_shares,
                network,
            }
        };
        let builder = pick("KILN_BUILDER", f.builder)
            .map(|b| crate::domain::builder::Builder::parse(&b))
            .transpose()
            .map_err(|e| anyhow::anyhow!("KILN_BUILDER: {e}"))?
            .unwrap_or_default();
        let allow_text = pick("KILN_WEBHOOK_ALLOW", f.webhook_allow).unwrap_or_default();
        let webhook_allow = crate::notify::guard::AllowList::parse(&allow_text)
            .map_err(|e| anyhow::anyhow!("KILN_WEBHOOK_ALLOW: {e}"))?;
        let local_sources_text = pick("KILN_LOCAL_SOURCES", f.local_sources).unwrap_or_default();
        let local_sources =
            crate::local_sources::LocalSources::parse(&local_sources_text, &data_dir)
                .map_err(|e| anyhow::anyhow!("KILN_LOCAL_SOURCES: {e}"))?;
        let git_allow_text = pick("KILN_GIT_ALLOW", f.git_allow).unwrap_or_default();
        let git_allow = crate::notify::guard::AllowList::parse(&git_allow_text)
            .map_err(|e| anyhow::anyhow!("KILN_GIT_ALLOW: {e}"))?
            .for_setting("KILN_GIT_ALLOW");
        let outbound_proxy = pick("KILN_OUTBOUND_PROXY", f.outbound_proxy)
            .filter(|p| !p.trim().is_empty())
            .map(|p| crate::notify::guard::check_proxy_url(&p).map(|()| SecretString::from(p)))
            .transpose()
            .map_err(|e| anyhow::anyhow!("KILN_OUTBOUND_PROXY: {e}"))?;

        let secret_key = pick("KILN_SECRET_KEY", f.secret_key)
            .map(|k| crate::secrets::key::parse_configured(&k))
            .transpose()?;

        // -- registry access through kiln (issue 11) --
        let token_name = |var: &str, file: Option<String>| -> anyhow::Result<String> {
            let value = pick(var, file).unwrap_or_else(|| "kiln".into());
            if value.is_empty()
                || value.trim() != value
                || value.chars().any(char::is_control)
                || value.len() > 255
            {
                bail!("{var}: '{value}' must be a short name without spaces around it");
            }
            Ok(value)
        };
        let registry_token_issuer =
            token_name("KILN_REGISTRY_TOKEN_ISSUER", f.registry_token_issuer)?;
        let registry_token_service =
            token_name("KILN_REGISTRY_TOKEN_SERVICE", f.registry_token_service)?;
        let registry_token_lifetime_secs = number(
            "KILN_REGISTRY_TOKEN_LIFETIME_SECS",
            f.registry_token_lifetime_secs,
            300,
        )?;
        if !(60..=86_400).contains(&registry_token_lifetime_secs) {
            bail!(
                "KILN_REGISTRY_TOKEN_LIFETIME_SECS: must be 60 to 86400, got {registry_token_lifetime_secs}"
            );
        }
        let registry_anonymous_pull = match vars.get("KILN_REGISTRY_ANONYMOUS_PULL") {
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => bail!("KILN_REGISTRY_ANONYMOUS_PULL: '{v}' is not true or false"),
            },
            None => f.registry_anonymous_pull.unwrap_or(false),
        };

        let build_wait_when_down_secs = number(
            "KILN_BUILD_WAIT_WHEN_DOWN_SECS",
            f.build_wait_when_down_secs,
            DEFAULT_BUILD_WAIT_WHEN_DOWN_SECS,
        )?;
        if build_wait_when_down_secs > 86_400 {
            bail!(
                "KILN_BUILD_WAIT_WHEN_DOWN_SECS: must be at most 86400 (a day), got {build_wait_when_down_secs}"
            );
        }

        Ok(Config {
            listen,
            data_dir,
            database_url,
            registry,
            registry_url,
            registry_username,
            registry_password,
            registry_page_size: registry_page_size as usize,
            admin_token,
            registry_events_token,
            public_url,
            github_api_url,
            build_workers,
            build_timeout: Duration::from_secs(build_timeout_secs),
            repo_build_limit: repo_build_limit as usize,
            shutdown_grace: Duration::from_secs(shutdown_grace_secs),
            build_log_limit,
            hook_body_limit: f.hook_body_limit.unwrap_or(DEFAULT_HOOK_BODY_LIMIT),
            hook_queue: hook_queue as usize,
            event_retention: Duration::from_secs(event_retention_days * 86_400),
            delivery_timeout: Duration::from_secs(delivery_timeout_secs),
            delivery_attempts: delivery_attempts as u32,
            delivery_backoff: Duration::from_millis(delivery_backoff_ms),
            delivery_retention: Duration::from_secs(delivery_retention_days * 86_400),
            webhook_allow,
            local_sources,
            build_retention_count,
            build_retention: Duration::from_secs(build_retention_days * 86_400),
            image_cache_max_bytes,
            session_idle: Duration::from_secs(session_idle_minutes * 60),
            session_max: Duration::from_secs(session_max_hours * 3600),
            audit_retention: Duration::from_secs(audit_retention_days * 86_400),
            trusted_proxies,
            secret_key,
            git_allow,
            outbound_proxy,
            registry_token_issuer,
            registry_token_service,
            registry_token_lifetime: Duration::from_secs(registry_token_lifetime_secs),
            registry_anonymous_pull,
            rate_limit,
            build_limits,
            builder,
            build_wait_when_down: Duration::from_secs(build_wait_when_down_secs),
        })
    }

    pub fn mirrors_dir(&self) -> PathBuf {
        self.data_dir.join("mirrors")
    }
}

/// Registries on this machine speak plain HTTP by default (dockerd treats them as insecure too).
fn default_registry_url(registry: &str) -> String {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    let local = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    format!("{}://{registry}", if local { "http" } else { "https" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./kiln-data"));
        assert_eq!(c.database_url, "sqlite://./kiln-data/kiln.db");
        assert_eq!(c.registry, "localhost:5000");
        assert_eq!(c.registry_url, "http://localhost:5000");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.build_workers, 2);
        assert_eq!(c.repo_build_limit, 1);
        assert_eq!(c.shutdown_grace, Duration::from_secs(60));
        assert_eq!(c.build_log_limit, 10_485_760);
        assert!(c.admin_token.is_none());
        assert!(
            c.local_sources.is_empty(),
            "no local source is allowed by default"
        );
    }

    /// Issue 9: build retention and the local cache cap, from their defaults, the file and the env.
    #[test]
    fn build_retention_and_cache_cap() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.build_retention_count, 500);
        assert_eq!(c.build_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(c.image_cache_max_bytes, 20 * 1024 * 1024 * 1024);
        let file: FileConfig = toml::from_str(
            "build_retention_count = 10\nbuild_retention_days = 7\nimage_cache_max_bytes = 1000\n",
        )
        .unwrap();
        let c = Config::resolve(file, &env(&[("KILN_BUILD_RETENTION_DAYS", "0")])).unwrap();
        assert_eq!(
            (
                c.build_retention_count,
                c.build_retention,
                c.image_cache_max_bytes
            ),
            (10, Duration::ZERO, 1000)
        );
        for (var, value) in [
            ("KILN_BUILD_RETENTION_COUNT", "-1"),
            ("KILN_BUILD_RETENTION_DAYS", "a week"),
            ("KILN_BUILD_RETENTION_DAYS", "40000"),
            ("KILN_IMAGE_CACHE_MAX_BYTES", "20G"),
        ] {
            let err = Config::resolve(FileConfig::default(), &env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn local_sources_from_env_or_file() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let list = format!("{}:{}:", a.path().display(), b.path().display());
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_LOCAL_SOURCES", &list)]),
        )
        .unwrap();
        assert_eq!(c.local_sources.dirs(), [a.path(), b.path()]);
        let file: FileConfig =
            toml::from_str(&format!("local_sources = \"{}\"\n", a.path().display())).unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!(c.local_sources.dirs(), [a.path()]);
        let missing = a.path().join("missing");
        let err = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_LOCAL_SOURCES", &missing.display().to_string())]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("KILN_LOCAL_SOURCES: "), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\nregistry = \"reg.example.com\"\nadmin_token = \"from-file\"\n",
        )
        .unwrap();
        let c = Config::resolve(
            file,
            &env(&[
                ("KILN_LISTEN", "127.0.0.1:9001"),
                ("KILN_DATA_DIR", "/srv/kiln"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(c.database_url, "sqlite:///srv/kiln/kiln.db");
        assert_eq!(c.registry_url, "https://reg.example.com");
        assert_eq!(c.admin_token.unwrap().expose_secret(), "from-file");
    }

    #[test]
    fn bad_values_are_named() {
        for (var, value, expect) in [
            ("KILN_LISTEN", "nope", "KILN_LISTEN"),
            ("KILN_REGISTRY", "http://x/y", "KILN_REGISTRY"),
            ("KILN_DATABASE_URL", "postgres://x", "KILN_DATABASE_URL"),
            ("KILN_BUILD_WORKERS", "0", "KILN_BUILD_WORKERS"),
            ("KILN_BUILD_WORKERS", "many", "KILN_BUILD_WORKERS"),
            ("KILN_BUILD_LOG_LIMIT", "10MiB", "KILN_BUILD_LOG_LIMIT"),
            ("KILN_BUILD_LOG_LIMIT", "100", "KILN_BUILD_LOG_LIMIT"),
            ("KILN_BUILD_LOG_LIMIT", "-1", "KILN_BUILD_LOG_LIMIT"),
            ("KILN_REGISTRY_URL", "ftp://x", "KILN_REGISTRY_URL"),
            (
                "KILN_EVENT_RETENTION_DAYS",
                "0",
                "KILN_EVENT_RETENTION_DAYS",
            ),
            (
                "KILN_EVENT_RETENTION_DAYS",
                "-3",
                "KILN_EVENT_RETENTION_DAYS",
            ),
            ("KILN_REGISTRY_PASSWORD", "pw", "KILN_REGISTRY_USERNAME"),
            ("KILN_REGISTRY_PAGE_SIZE", "0", "KILN_REGISTRY_PAGE_SIZE"),
            ("KILN_REGISTRY_PAGE_SIZE", "ten", "KILN_REGISTRY_PAGE_SIZE"),
            ("KILN_DATABASE_URL", "sqlite::memory:", "in-memory"),
            (
                "KILN_DATABASE_URL",
                "sqlite://x.db?mode=memory",
                "in-memory",
            ),
            ("KILN_HOOK_QUEUE", "0", "KILN_HOOK_QUEUE"),
            ("KILN_HOOK_QUEUE", "70000", "KILN_HOOK_QUEUE"),
            ("KILN_HOOK_QUEUE", "lots", "KILN_HOOK_QUEUE"),
            ("KILN_REPO_BUILD_LIMIT", "0", "KILN_REPO_BUILD_LIMIT"),
            ("KILN_REPO_BUILD_LIMIT", "65", "KILN_REPO_BUILD_LIMIT"),
            ("KILN_REPO_BUILD_LIMIT", "one", "KILN_REPO_BUILD_LIMIT"),
            ("KILN_SHUTDOWN_GRACE_SECS", "-1", "KILN_SHUTDOWN_GRACE_SECS"),
            (
                "KILN_SHUTDOWN_GRACE_SECS",
                "86401",
                "KILN_SHUTDOWN_GRACE_SECS",
            ),
        ] {
            let err = Config::resolve(FileConfig::default(), &env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().contains(expect), "{var}={value}: {err}");
        }
    }

    #[test]
    fn build_timeout_in_minutes_or_seconds() {
        let timeout = |pairs: &[(&str, &str)], file: &str| {
            let file: FileConfig = toml::from_str(file).unwrap();
            Config::resolve(file, &env(pairs)).map(|c| c.build_timeout.as_secs())
        };
        assert_eq!(timeout(&[], "").unwrap(), 3600);
        assert_eq!(
            timeout(&[("KILN_BUILD_TIMEOUT_MINUTES", "5")], "").unwrap(),
            300
        );
        assert_eq!(
            timeout(&[("KILN_BUILD_TIMEOUT_SECS", "90")], "").unwrap(),
            90
        );
        // both: the seconds win
        assert_eq!(
            timeout(
                &[
                    ("KILN_BUILD_TIMEOUT_SECS", "90"),
                    ("KILN_BUILD_TIMEOUT_MINUTES", "5")
                ],
                ""
            )
            .unwrap(),
            90
        );
        assert_eq!(timeout(&[], "build_timeout_minutes = 2").unwrap(), 120);
        assert_eq!(
            timeout(&[], "build_timeout_minutes = 2\nbuild_timeout_secs = 7").unwrap(),
            7
        );
        assert_eq!(
            timeout(
                &[("KILN_BUILD_TIMEOUT_MINUTES", "3")],
                "build_timeout_secs = 7"
            )
            .unwrap(),
            180
        );
        for bad in ["0", "1441", "-1", "1.5", "an hour"] {
            let err = timeout(&[("KILN_BUILD_TIMEOUT_MINUTES", bad)], "").unwrap_err();
            assert!(
                err.to_string().contains("KILN_BUILD_TIMEOUT_MINUTES"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn queue_limits_and_grace_from_env_or_file() {
        let file: FileConfig =
            toml::from_str("repo_build_limit = 3\nshutdown_grace_secs = 5\n").unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!(c.repo_build_limit, 3);
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        let file: FileConfig = toml::from_str("repo_build_limit = 3\n").unwrap();
        let c = Config::resolve(
            file,
            &env(&[
                ("KILN_REPO_BUILD_LIMIT", "2"),
                ("KILN_SHUTDOWN_GRACE_SECS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.repo_build_limit, 2);
        assert_eq!(c.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_ADMIN_TOKEN", "hunter2-secret")]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2-secret"));
    }

    #[test]
    fn audit_retention_defaults_to_90_days_and_is_checked() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(90 * 86_400));
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_AUDIT_RETENTION_DAYS", "7")]),
        )
        .unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(7 * 86_400));
        let file: FileConfig = toml::from_str("audit_retention_days = 30\n").unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!(c.audit_retention, Duration::from_secs(30 * 86_400));
        for bad in ["0", "-1", "forever", "36501"] {
            let err = Config::resolve(
                FileConfig::default(),
                &env(&[("KILN_AUDIT_RETENTION_DAYS", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("KILN_AUDIT_RETENTION_DAYS"), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert!(c.trusted_proxies.is_empty());
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")]),
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        let err = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_TRUSTED_PROXIES", "proxy.example")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("KILN_TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn the_secret_key_is_base64_or_hex_of_32_bytes() {
        let key = crate::secrets::SecretKey::generate();
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_SECRET_KEY", &key.encode())]),
        )
        .unwrap();
        assert_eq!(c.secret_key.as_ref(), Some(&key));
        assert!(!format!("{c:?}").contains(&key.encode()));
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_SECRET_KEY", &hex::encode(key.bytes()))]),
        )
        .unwrap();
        assert_eq!(c.secret_key, Some(key));
        assert!(
            Config::resolve(FileConfig::default(), &env(&[]))
                .unwrap()
                .secret_key
                .is_none()
        );
        for bad in [" ", "abc", "c2hvcnQ="] {
            let err = Config::resolve(FileConfig::default(), &env(&[("KILN_SECRET_KEY", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("KILN_SECRET_KEY: "), "{bad}: {err}");
        }
    }

    /// Issue 11: the git allow-list and the outbound proxy.
    #[test]
    fn git_allow_and_outbound_proxy() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert!(!c.git_allow.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(c.outbound_proxy.is_none());
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("KILN_GIT_ALLOW", "git.internal,10.0.0.0/8"),
                ("KILN_OUTBOUND_PROXY", "http://user:pw@proxy.internal:3128"),
            ]),
        )
        .unwrap();
        assert!(c.git_allow.allows_host("git.internal"));
        assert!(c.git_allow.allows_ip("10.1.2.3".parse().unwrap()));
        assert_eq!(
            c.outbound_proxy.unwrap().expose_secret(),
            "http://user:pw@proxy.internal:3128"
        );
        let file: FileConfig = toml::from_str("git_allow = \"192.168.0.0/16\"\n").unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert!(c.git_allow.allows_ip("192.168.3.4".parse().unwrap()));
        for (var, value) in [
            ("KILN_GIT_ALLOW", "http://x"),
            ("KILN_GIT_ALLOW", "10.0.0.0/40"),
            ("KILN_OUTBOUND_PROXY", "proxy:3128"),
            ("KILN_OUTBOUND_PROXY", "ftp://proxy/"),
            ("KILN_OUTBOUND_PROXY", "http://"),
        ] {
            let err = Config::resolve(FileConfig::default(), &env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    /// Issue 11: the registry token server's issuer, service, lifetime and anonymous pulls.
    #[test]
    fn registry_token_settings() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.registry_token_issuer, "kiln");
        assert_eq!(c.registry_token_service, "kiln");
        assert_eq!(c.registry_token_lifetime, Duration::from_secs(300));
        assert!(!c.registry_anonymous_pull);
        let file: FileConfig = toml::from_str(
            "registry_token_issuer = \"kiln.example\"\nregistry_anonymous_pull = true\n",
        )
        .unwrap();
        let c = Config::resolve(
            file,
            &env(&[
                ("KILN_REGISTRY_TOKEN_SERVICE", "registry.example"),
                ("KILN_REGISTRY_TOKEN_LIFETIME_SECS", "600"),
            ]),
        )
        .unwrap();
        assert_eq!(c.registry_token_issuer, "kiln.example");
        assert_eq!(c.registry_token_service, "registry.example");
        assert_eq!(c.registry_token_lifetime, Duration::from_secs(600));
        assert!(c.registry_anonymous_pull);
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[("KILN_REGISTRY_ANONYMOUS_PULL", "true")]),
        )
        .unwrap();
        assert!(c.registry_anonymous_pull);
        for (var, value) in [
            ("KILN_REGISTRY_ANONYMOUS_PULL", "maybe"),
            ("KILN_REGISTRY_TOKEN_LIFETIME_SECS", "10"),
            ("KILN_REGISTRY_TOKEN_LIFETIME_SECS", "5 minutes"),
            ("KILN_REGISTRY_TOKEN_ISSUER", " kiln"),
            ("KILN_REGISTRY_TOKEN_SERVICE", "a\tb"),
        ] {
            let err = Config::resolve(FileConfig::default(), &env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
    }
    #[test]
    fn rate_limits_and_build_limits() {
        use crate::domain::build_limits::{BuildLimits, ServerNetwork};
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.rate_limit, crate::rate_limit::RateLimitConfig::default());
        assert_eq!(c.build_limits, BuildLimits::default());
        assert_eq!(c.builder, crate::domain::builder::Builder::BuildKit);
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("KILN_RATE_LIMIT_PER_MINUTE", "0"),
                ("KILN_RATE_LIMIT_BURST", "0"),
                ("KILN_BUILD_MEMORY", "2g"),
                ("KILN_BUILD_CPU_SHARES", "512"),
                ("KILN_BUILD_NETWORK", "none"),
                ("KILN_BUILDER", "classic"),
            ]),
        )
        .unwrap();
        assert_eq!(c.builder, crate::domain::builder::Builder::Classic);
        assert_eq!(c.rate_limit.per_minute, 0);
        assert_eq!(
            c.build_limits,
            BuildLimits {
                memory: Some(2 << 30),
                cpu_shares: Some(512),
                network: ServerNetwork::None,
            }
        );
        let file: FileConfig = toml::from_str(
            "rate_limit_per_minute = 5\nrate_limit_burst = 2\nbuild_memory = \"512m\"\nbuild_cpu_shares = 256\nbuild_network = \"host\"\n",
        )
        .unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!((c.rate_limit.per_minute, c.rate_limit.burst), (5, 2));
        assert_eq!(c.build_limits.memory, Some(512 << 20));
        assert_eq!(c.build_limits.cpu_shares, Some(256));
        assert_eq!(c.build_limits.network, ServerNetwork::Host);
        for (var, value) in [
            ("KILN_BUILD_MEMORY", "lots"),
            ("KILN_BUILD_MEMORY", "1m"),
            ("KILN_BUILD_CPU_SHARES", "1"),
            ("KILN_BUILD_NETWORK", "bridge"),
            ("KILN_BUILDER", "v1"),
            ("KILN_RATE_LIMIT_PER_MINUTE", "x"),
            ("KILN_RATE_LIMIT_BURST", "1000000"),
        ] {
            let e = Config::resolve(FileConfig::default(), &env(&[(var, value)])).unwrap_err();
            assert!(e.to_string().contains(var), "{var}={value}: {e}");
        }
    }
    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kiln.toml");
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.rate_limit, crate::rate_limit::RateLimitConfig::default());
    }

    #[test]
    fn build_wait_when_down_defaults_to_five_minutes_and_is_bounded() {
        let wait = |pairs: &[(&str, &str)], file: &str| {
            Config::resolve(toml::from_str(file).unwrap(), &env(pairs))
                .map(|c| c.build_wait_when_down.as_secs())
        };
        assert_eq!(wait(&[], "").unwrap(), 300);
        assert_eq!(
            wait(&[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "0")], "").unwrap(),
            0
        );
        assert_eq!(wait(&[], "build_wait_when_down_secs = 45").unwrap(), 45);
        assert_eq!(
            wait(
                &[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "12")],
                "build_wait_when_down_secs = 45"
            )
            .unwrap(),
            12
        );
        let e = wait(&[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "soon")], "").unwrap_err();
        assert!(
            e.to_string().contains("KILN_BUILD_WAIT_WHEN_DOWN_SECS"),
            "{e}"
        );
        let e = wait(&[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "86401")], "").unwrap_err();
        assert!(e.to_string().contains("at most 86400"), "{e}");
    }
}
