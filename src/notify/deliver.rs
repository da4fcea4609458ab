//! The delivery worker: claims due deliveries, POSTs each in its own task (one slow receiver never
//! holds up another), records every attempt, retries with exponential backoff and jitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::guard::{self, GuardedResolver};
use super::signing;
use crate::app::App;
use crate::db::{self, deliveries::AttemptRecord, deliveries::DeliveryRow};

/// Bodies (request and response) are kept up to this size in the access records.
pub const MAX_RECORDED_BODY: usize = 64 * 1024;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 32;

pub struct Notifier {
    wake: Notify,
    http: reqwest::Client,
}

impl Notifier {
    pub fn new(config: &crate::config::Config) -> anyhow::Result<Notifier> {
        // Through a configured proxy, the resolver sees the proxy's name (the operator's own
        // choice, so it passes) and the proxy resolves the webhook's: `refused_destination`
        // checks that one before the request.
        let proxy = config.outbound_proxy.as_ref();
        let allow = match guard::proxy_host(proxy) {
            Some(host) => config.webhook_allow.clone().with_host(&host),
            None => config.webhook_allow.clone(),
        };
        let builder = reqwest::Client::builder().dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(allow),
        }));
        let http = guard::with_proxy(builder, proxy)?
            .timeout(config.delivery_timeout)
            .connect_timeout(config.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            wake: Notify::new(),
            http,
        })
    }

    /// New deliveries were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Delay before attempt `n + 1` after `n` failed attempts: base × 3^(n-1), ±20 % jitter.
pub fn backoff(base: Duration, failed_attempts: u32) -> Duration {
    let factor = 3f64.powi(failed_attempts.saturating_sub(1).min(20) as i32);
    let jitter = rand::rng().random_range(0.8..1.2);
    base.mul_f64(factor * jitter)
}

pub fn start(app: &App, stop: CancellationToken) {
    let app = app.clone();
    tokio::spawn(async move {
        match db::deliveries::release_claims(&app.db).await {
            Ok(n) if n > 0 => tracing::info!(
                count = n,
                "deliveries interrupted by the last stop are due again"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot release delivery claims"),
        }
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        loop {
            let notified = app.notifier.wake.notified();
            let lease = app.config.delivery_timeout * 2 + Duration::from_secs(30);
            let lease_until = db::format_time(
                chrono::Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default(),
            );
            let available = permits.available_permits().max(1) as i64;
            let due = match db::deliveries::claim_due(&app.db, available, &lease_until).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim deliveries");
                    Vec::new()
                }
            };
            let claimed = due.len();
            for delivery in due {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore closed"),
                    _ = stop.cancelled() => return,
                };
                let app = app.clone();
                tokio::spawn(async move {
                    attempt(&app, delivery).await;
                    drop(permit);
                    app.notifier.wake();
                });
            }
            if claimed > 0 {
                continue;
            }
            let wait = until_next_due(&app).await;
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

async fn until_next_due(app: &App) -> Duration {
    let cap = Duration::from_secs(1);
    match db::deliveries::next_due(&app.db).await {
        Ok(Some(t)) => chrono::DateTime::parse_from_rfc3339(&t)
            .ok()
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .map_or(Duration::ZERO, |d| d.min(cap)),
        _ => cap,
    }
}

fn cut(bytes: &[u8]) -> (String, bool) {
    let truncated = bytes.len() > MAX_RECORDED_BODY;
    let kept = &bytes[..bytes.len().min(MAX_RECORDED_BODY)];
    (String::from_utf8_lossy(kept).into_owned(), truncated)
}

/// Every cause of a reqwest error, on one line.
pub(crate) fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs_f64());
    }
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// One attempt at one delivery, recorded whatever happens. A failure is retried with backoff, unless
/// the address guard refused the destination.
async fn attempt(app: &App, d: DeliveryRow) {
    let attempt_no = d.attempts + 1;
    let Ok(Some(hook)) = db::webhooks::get(&app.db, &d.webhook_id).await else {
        return;
    };
    let started_at = db::now();
    let timestamp = chrono::Utc::now().timestamp();
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), d.content_type.clone()),
        (
            "user-agent".into(),
            concat!("kiln/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("webhook-id".into(), d.message_id.clone()),
        ("webhook-timestamp".into(), timestamp.to_string()),
    ];
    let mut error = None;
    // Decrypted only here, to sign, and dropped with this attempt.
    match db::webhooks::signing_secret(&app.db, &app.secrets, &hook.id).await {
        Ok(Some(secret)) => match signing::secret_key(&secret) {
            Ok(key) => headers.push((
                "webhook-signature".into(),
                signing::signature(&key, &d.message_id, timestamp, d.body.as_bytes()),
            )),
            Err(e) => error = Some(format!("the webhook's secret is unusable: {}", e.message)),
        },
        Ok(None) => return,
        Err(e) => error = Some(format!("the webhook's secret is unusable: {e}")),
    }
    // Refused by the address guard: that holds until the operator changes the allow-list, so the
    // delivery fails now rather than being retried for an hour.
    let mut refused = false;
    if error.is_none() {
        error = refused_destination(app, &hook.url).await;
        refused = error.is_some();
    }
    let start = Instant::now();
    let (mut status, mut resp_headers, mut resp_body, mut resp_cut) = (None, None, None, false);
    if error.is_none() {
        let mut req = app.notifier.http.post(&hook.url).body(d.body.clone());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(mut resp) => {
                status = Some(i64::from(resp.status().as_u16()));
                let h: serde_json::Map<String, serde_json::Value> = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                        )
                    })
                    .collect();
                resp_headers = Some(serde_json::Value::Object(h).to_string());
                let mut body = Vec::new();
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            body.extend_from_slice(&c);
                            if body.len() > MAX_RECORDED_BODY {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!(
                                "reading the answer: {}",
                                describe(&e, app.config.delivery_timeout)
                            ));
                            break;
                        }
                    }
                }
                let (text, truncated) = cut(&body);
                resp_body = Some(text);
                resp_cut = truncated;
            }
            Err(e) => match guard::refusal_in(&e) {
                Some(refusal) => {
                    refused = true;
                    error = Some(refusal.to_string());
                }
                None => error = Some(describe(&e, app.config.delivery_timeout)),
            },
        }
    }
    let duration_ms = start.elapsed().as_millis() as i64;
    let succeeded = error.is_none() && status.is_some_and(|s| (200..300).contains(&s));
    if !succeeded && error.is_none() {
        error = status.map(|s| format!("the receiver answered HTTP {s}"));
    }
    let retry = !succeeded && !refused && attempt_no < i64::from(app.config.delivery_attempts);
    let next = retry.then(|| {
        let delay = backoff(app.config.delivery_backoff, attempt_no as u32);
        db::format_time(chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
    });
    let request_headers = serde_json::Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
    .to_string();
    let (request_body, request_cut) = cut(d.body.as_bytes());
    // A receiver's answer or an error could echo a secret kiln knows: stored masked.
    let error = error.map(|e| crate::secrets::mask::mask(&e).into_owned());
    let resp_body = resp_body.map(|b| crate::secrets::mask::mask(&b).into_owned());
    let record = AttemptRecord {
        attempt: attempt_no,
        started_at: &started_at,
        request_url: &hook.url,
        request_headers: &request_headers,
        request_body: &request_body,
        request_body_truncated: request_cut,
        response_status: status,
        response_headers: resp_headers.as_deref(),
        response_body: resp_body.as_deref(),
        response_body_truncated: resp_cut,
        error: error.as_deref(),
        duration_ms,
    };
    tracing::info!(delivery_id = %d.id, webhook_id = %hook.id, attempt = attempt_no, succeeded, status, error = error.as_deref(), "delivery attempt");
    if let Err(e) =
        db::deliveries::record_attempt(&app.db, &d.id, &record, succeeded, next.as_deref()).await
    {
        tracing::error!(delivery_id = %d.id, error = %e, "cannot record a delivery attempt");
    }
}

/// URLs naming an IP address directly skip DNS, so the guard checks them here; through an outbound
/// proxy the resolver never sees the webhook's host, so its name is resolved and checked here too.
async fn refused_destination(app: &App, url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let allow = &app.config.webhook_allow;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return guard::check(allow, host, ip).err();
    }
    if app.config.outbound_proxy.is_some() {
        return guard::check_host(allow, host).await.err();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_threefold_with_jitter() {
        let base = Duration::from_secs(30);
        for (n, nominal) in [(1u32, 30.0), (2, 90.0), (3, 270.0), (4, 810.0), (5, 2430.0)] {
            for _ in 0..50 {
                let d = backoff(base, n).as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                    "attempt {n}: {d}"
                );
            }
        }
        // Five waits between six attempts: about an hour in all.
        let total: f64 = (1..=5).map(|n| 30.0 * 3f64.powi(n - 1)).sum();
        assert!((3000.0..4000.0).contains(&total), "{total}");
        assert!(backoff(base, 60) < Duration::from_secs(u64::MAX / 2));
    }

    #[test]
    fn bodies_are_cut_at_64_kib() {
        let (s, cut_) = cut(&vec![b'a'; MAX_RECORDED_BODY + 1]);
        assert!(cut_);
        assert_eq!(s.len(), MAX_RECORDED_BODY);
        let (s, cut_) = cut(b"short");
        assert!(!cut_);
        assert_eq!(s, "short");
    }
}
