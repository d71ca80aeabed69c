//! One resilience policy for every provider call: timeouts, bounded retries with
//! exponential backoff and jitter, `Retry-After`, and the mapping of every failure to an
//! [`ActionError`] (never a panic, never a hang).
//!
//! Retried: `429`, `5xx` and connection failures, while the total time budget lasts.
//! A call marked [`Retry::Unsafe`] (a create without an idempotency key) is retried only
//! when the request certainly was not processed: a connection failure or a `429`.

use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde_json::Value;

use crate::providers::call::{CallBody, HeaderValue, ProviderCall, REDACTED};
use crate::providers::{ActionError, ErrorKind};

/// Timeouts and retry knobs (tests shrink them).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles on each retry.
    pub base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
    /// Bound on the whole call including retries and waits.
    pub total_budget: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Per-attempt deadline (also capped by what is left of the budget).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            total_budget: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(8),
        }
    }
}

/// Whether a call may be resent after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Idempotent (GET, PUT, upsert, token fetch, or a create with an idempotency key).
    Safe,
    /// A create without an idempotency key: retried only if certainly not processed.
    Unsafe,
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON when it parses, else `None`.
    pub json: Option<Value>,
    /// The body text.
    pub text: String,
    /// The body as received (files downloaded from a provider's storage are binary).
    pub bytes: Vec<u8>,
}

impl HttpResponse {
    /// The body for error objects: JSON if parseable, else the raw text.
    pub fn body_value(&self) -> Value {
        self.json
            .clone()
            .unwrap_or_else(|| Value::String(self.text.clone()))
    }
}

/// A reqwest client built on its first request. Building one reads and parses the
/// system's CA certificates (about 40 M instructions: most of a small `check`), which
/// `check`, `render` and a flow without HTTP never need.
#[derive(Clone)]
pub struct LazyClient(std::sync::Arc<LazyInner>);

type BuildClient = dyn Fn() -> reqwest::Result<reqwest::Client> + Send + Sync;

struct LazyInner {
    build: Box<BuildClient>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    /// A client that `build` makes on first use (once; a failure is kept and reported
    /// by every use).
    pub fn new(
        build: impl Fn() -> reqwest::Result<reqwest::Client> + Send + Sync + 'static,
    ) -> LazyClient {
        LazyClient(std::sync::Arc::new(LazyInner {
            build: Box::new(build),
            client: std::sync::OnceLock::new(),
        }))
    }

    /// The client, built now if it was not yet.
    pub fn get(&self) -> Result<&reqwest::Client, ActionError> {
        self.0
            .client
            .get_or_init(|| (self.0.build)().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| {
                ActionError::new(ErrorKind::Config, format!("cannot build HTTP client: {e}"))
            })
    }
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.0.client.get().is_some())
            .finish()
    }
}

/// The shared HTTP client and its policy.
#[derive(Debug, Clone)]
pub struct Transport {
    client: LazyClient,
    policy: RetryPolicy,
}

enum Attempt {
    Done(HttpResponse),
    Failed {
        err: ActionError,
        retryable: bool,
        retry_after: Option<Duration>,
    },
}

impl Transport {
    /// A transport whose reqwest client, with the policy's timeouts, is built on the
    /// first call.
    pub fn new(policy: RetryPolicy) -> Result<Self, ActionError> {
        let (connect, request) = (policy.connect_timeout, policy.request_timeout);
        let client = LazyClient::new(move || {
            reqwest::Client::builder()
                .connect_timeout(connect)
                .timeout(request)
                .build()
        });
        Ok(Transport { client, policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Sends `call`, filling secret headers and form values from `secret` (called per
    /// attempt, so short-lived tokens can be minted fresh), with retries per the policy.
    /// `label` names the provider step in messages.
    pub async fn send(
        &self,
        label: &str,
        call: &ProviderCall,
        retry: Retry,
        secret: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<HttpResponse, ActionError> {
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let left = self.policy.total_budget.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(ActionError::new(
                    ErrorKind::Timeout,
                    format!("{label}: time budget exhausted"),
                ));
            }
            let per_attempt = left.min(self.policy.request_timeout);
            let began = Instant::now();
            let at_ms = super::observe::now_ms();
            let result = self.attempt(label, call, retry, secret, per_attempt).await;
            let (status, outcome) = match &result {
                Ok(Attempt::Done(r)) => (Some(r.status), "ok"),
                Ok(Attempt::Failed { err, .. }) | Err(err) => (err.http_status, err.kind.as_str()),
            };
            super::observe::record(super::observe::CallRecord {
                at_ms,
                step: label.to_string(),
                method: call.method.to_string(),
                url: without_url_signature(&call.url),
                status,
                attempt: attempt + 1,
                duration_ms: began.elapsed().as_secs_f64() * 1000.0,
                outcome: outcome.to_string(),
            });
            let result = result?;
            match result {
                Attempt::Done(r) => return Ok(r),
                Attempt::Failed {
                    err,
                    retryable,
                    retry_after,
                } => {
                    if !retryable || attempt >= self.policy.max_retries {
                        return Err(with_attempts(err, attempt));
                    }
                    let delay = match retry_after {
                        Some(d) => d,
                        None => self.backoff(attempt),
                    };
                    if start.elapsed() + delay >= self.policy.total_budget {
                        return Err(with_attempts(err, attempt));
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.policy.max_delay);
        // "Equal jitter": between half and all of the exponential delay.
        let f: f64 = rand::rng().random_range(0.5..=1.0);
        exp.mul_f64(f)
    }

    async fn attempt(
        &self,
        label: &str,
        call: &ProviderCall,
        retry: Retry,
        secret: &(dyn Fn(&str) -> Option<String> + Send + Sync),
        timeout: Duration,
    ) -> Result<Attempt, ActionError> {
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|_| {
            ActionError::new(
                ErrorKind::Config,
                format!("{label}: bad method {}", call.method),
            )
        })?;
        let mut rb = self
            .client
            .get()?
            .request(method, &call.url)
            .timeout(timeout);
        for (name, v) in &call.headers {
            let value = match v {
                HeaderValue::Plain(s) => s.clone(),
                HeaderValue::Secret => secret(name).ok_or_else(|| {
                    ActionError::new(
                        ErrorKind::Config,
                        format!("{label}: no credential for header {name}"),
                    )
                })?,
            };
            rb = rb.header(name.as_str(), value);
        }
        rb = match &call.body {
            CallBody::None => rb,
            CallBody::Json(v) => rb.body(v.to_string()),
            CallBody::Bytes(b) => rb.body(b.clone()),
            CallBody::Form(pairs) => {
                let mut enc = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let v = if v == REDACTED {
                        secret(k).ok_or_else(|| {
                            ActionError::new(
                                ErrorKind::Config,
                                format!("{label}: no credential for form field {k}"),
                            )
                        })?
                    } else {
                        v.clone()
                    };
                    enc.push(format!("{}={}", form_encode(k), form_encode(&v)));
                }
                rb.body(enc.join("&"))
            }
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Ok(transport_failure(label, &e)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let declared_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = match resp.bytes().await {
            Ok(t) => t.to_vec(),
            Err(e) => {
                let mut f = transport_failure(label, &e);
                if let Attempt::Failed { retryable, .. } = &mut f {
                    // The request was processed; only idempotent calls may be resent.
                    *retryable = retry == Retry::Safe && !e.is_timeout();
                }
                return Ok(f);
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str::<Value>(&text).ok();
        let r = HttpResponse {
            status,
            json,
            text,
            bytes,
        };
        if (200..300).contains(&status) {
            // A success declared as JSON that does not parse was cut in transit: the
            // request was processed, so only an idempotent call may be sent again (a
            // Zendesk create with its Idempotency-Key replays the original answer).
            if declared_json && r.json.is_none() && !r.text.is_empty() && retry == Retry::Safe {
                let err = ActionError::new(
                    ErrorKind::Unavailable,
                    format!("{label}: unexpected answer from the provider (malformed JSON)"),
                )
                .with_status(status)
                .with_body(r.body_value());
                return Ok(Attempt::Failed {
                    err,
                    retryable: true,
                    retry_after: None,
                });
            }
            return Ok(Attempt::Done(r));
        }
        let kind = match status {
            401 | 403 => ErrorKind::Auth,
            429 => ErrorKind::RateLimited,
            408 => ErrorKind::Timeout,
            s if s >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::Rejected,
        };
        let retryable = match status {
            429 => true,
            s if s >= 500 => retry == Retry::Safe,
            _ => false,
        };
        let err = ActionError::new(kind, format!("{label}: HTTP {status}"))
            .with_status(status)
            .with_body(r.body_value());
        Ok(Attempt::Failed {
            err,
            retryable,
            retry_after,
        })
    }
}

/// The URL with the value of a storage temp-URL signature (`temp_url_sig=…`) replaced:
/// it grants access to a file for a while, so it stays out of traces and timelines.
pub fn without_url_signature(url: &str) -> String {
    let Some(i) = url.find("temp_url_sig=") else {
        return url.to_string();
    };
    let start = i + "temp_url_sig=".len();
    let end = url[start..].find('&').map_or(url.len(), |j| start + j);
    format!("{}{}{}", &url[..start], REDACTED, &url[end..])
}

fn with_attempts(mut err: ActionError, retries: u32) -> ActionError {
    if retries > 0 {
        err.message = format!("{} (after {retries} retries)", err.message);
    }
    err
}

fn transport_failure(label: &str, e: &reqwest::Error) -> Attempt {
    // Only the error sources are shown, never the URL (a storage temp URL is signed).
    if e.is_connect() {
        Attempt::Failed {
            err: ActionError::new(
                ErrorKind::Unavailable,
                format!("{label}: cannot connect to the provider"),
            ),
            retryable: true,
            retry_after: None,
        }
    } else if e.is_timeout() {
        Attempt::Failed {
            err: ActionError::new(ErrorKind::Timeout, format!("{label}: no answer in time")),
            retryable: false,
            retry_after: None,
        }
    } else {
        Attempt::Failed {
            err: ActionError::new(
                ErrorKind::Unavailable,
                format!("{label}: transport error ({})", error_chain(e)),
            ),
            retryable: false,
            retry_after: None,
        }
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&c.to_string());
        cur = c.source();
    }
    if s.is_empty() {
        "request failed".into()
    } else {
        s
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(past), Some(Duration::ZERO));
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&future).unwrap_or_default();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let t = Transport::new(RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ..RetryPolicy::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for attempt in 0..6 {
            let d = t.backoff(attempt);
            let exp =
                Duration::from_millis(100 * 2u64.pow(attempt)).min(Duration::from_millis(300));
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }
}
