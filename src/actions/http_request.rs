//! `http_request`: an axios-style request (`parameters.config`) sent with reqwest.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::http_guard::{forbidden_in, Forbidden};
use super::{
    is_templated, Action, ActionError, ActionSpec, CheckCx, ErrorKind, ParamProblem, ParamSpec,
    ParamType,
};
use crate::actions::ActionCx;

/// Used when `config.timeout` is absent: axios waits forever, a flow must not.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The most a response body may hold before the action fails with `limit`.
pub const MAX_RESPONSE_BYTES: usize = 5 << 20;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The same in lower case (axios configs usually say `"post"`), for the JSON Schema.
const METHODS_LOWER: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// `http_request`.
pub struct HttpRequest;

/// Replaces secret header values in a headers object ([`crate::redact::headers`]).
pub fn redact_headers(headers: &Value) -> Value {
    crate::redact::headers(headers)
}

/// The request a config describes, validated.
struct Prepared {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    timeout: Duration,
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn prepare(params: &Map<String, Value>) -> Result<Prepared, ActionError> {
    let config = params
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| ActionError::new(ErrorKind::Config, "`config` must be an object"))?;
    let url_text = config
        .get("url")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ActionError::new(ErrorKind::Config, "`config.url` is missing or empty"))?;
    let mut url = reqwest::Url::parse(url_text).map_err(|e| {
        ActionError::new(
            ErrorKind::Config,
            format!(
                "`config.url` is not a valid URL ({e}): {}",
                crate::redact::url(url_text)
            ),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ActionError::new(
            ErrorKind::Config,
            format!("`config.url` must be http or https, not {}", url.scheme()),
        ));
    }
    if let Some(q) = config.get("params") {
        match q {
            Value::Object(m) => {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in m {
                    if !v.is_null() {
                        pairs.append_pair(k, &scalar_text(v));
                    }
                }
            }
            Value::Null => {}
            _ => {
                return Err(ActionError::new(
                    ErrorKind::Config,
                    "`config.params` must be an object",
                ))
            }
        }
    }
    let method_text = config
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !METHODS.contains(&method_text.as_str()) {
        return Err(ActionError::new(
            ErrorKind::Config,
            format!("`config.method` `{method_text}` is not an HTTP method"),
        ));
    }
    let method = reqwest::Method::from_bytes(method_text.as_bytes())
        .map_err(|_| ActionError::new(ErrorKind::Config, "invalid HTTP method"))?;
    let mut headers = Vec::new();
    match config.get("headers") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !v.is_null() {
                    headers.push((k.clone(), scalar_text(v)));
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(ActionError::new(
                ErrorKind::Config,
                "`config.headers` must be an object",
            ))
        }
    }
    let timeout = match config.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(v) => v.as_u64().filter(|t| *t > 0).ok_or_else(|| {
            ActionError::new(
                ErrorKind::Config,
                "`config.timeout` must be a positive number of milliseconds",
            )
        })?,
    };
    let body = config.get("data").filter(|d| !d.is_null()).cloned();
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        timeout: Duration::from_millis(timeout),
    })
}

/// A timeout over the run's maximum (`[limits] http_timeout_max_s`).
fn timeout_too_long(ms: u64, max: Duration) -> String {
    format!(
        "`timeout` of {ms} ms exceeds the maximum of {} ms ({})",
        max.as_millis(),
        crate::template::budget::human_duration(max)
    )
}

fn request_json(p: &Prepared) -> Value {
    let headers: Map<String, Value> = p
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "method": p.method.as_str(),
        "url": p.url.as_str(),
        // Redacted once, by `ActionCx::record_request`, its only reader.
        "headers": Value::Object(headers),
        "body": p.body.clone().unwrap_or(Value::Null),
    })
}

#[async_trait]
impl Action for HttpRequest {
    fn name(&self) -> &str {
        "http_request"
    }

    fn required(&self) -> &[&str] {
        &["config"]
    }

    fn spec(&self) -> ActionSpec {
        let methods: Vec<&'static str> = METHODS
            .iter()
            .copied()
            .chain(METHODS_LOWER.iter().copied())
            .collect();
        ActionSpec {
            description: "An HTTP request described like an axios request config; the result is `{status, statusCode, headers, body}`.".into(),
            params: vec![
                ParamSpec::new(
                    "config",
                    ParamType::fields(vec![
                        ParamSpec::new("url", ParamType::String, "The URL.").required(),
                        ParamSpec::new("method", ParamType::Enum(methods), "The HTTP method (any case); default GET."),
                        ParamSpec::new("headers", ParamType::Object, "Request headers."),
                        ParamSpec::new("params", ParamType::Object, "Query parameters."),
                        ParamSpec::new("data", ParamType::Any, "The body: an object or array is sent as JSON, a string as text."),
                        ParamSpec::new(
                            "timeout",
                            ParamType::Integer { min: Some(1), max: None },
                            format!("Milliseconds to wait for the answer; default {DEFAULT_TIMEOUT_MS}."),
                        ),
                    ]),
                    "The request, as an axios request config.",
                )
                .required(),
                ParamSpec::new(
                    "flavor",
                    ParamType::Enum(vec!["axios"]),
                    "Accepted for compatibility: the only flavour is axios.",
                ),
            ],
            additional: false,
            any_of: Vec::new(),
        }
    }

    fn check(&self, params: &Map<String, Value>, _cx: &CheckCx<'_>) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        let Some(config) = params.get("config") else {
            return out;
        };
        let Some(c) = config.as_object() else {
            if !is_templated(config) {
                out.push(ParamProblem::error(
                    "/config",
                    "`config` must be an object (an axios request config)",
                ));
            }
            return out;
        };
        match c.get("url") {
            None => out.push(ParamProblem::error("/config", "`config.url` is required")),
            Some(u) if !is_templated(u) => {
                if let Some(s) = u.as_str() {
                    if let Err(e) = reqwest::Url::parse(s) {
                        out.push(ParamProblem::error(
                            "/config/url",
                            format!("not a valid URL: {e}"),
                        ));
                    }
                } else {
                    out.push(ParamProblem::error("/config/url", "`url` must be a string"));
                }
            }
            _ => {}
        }
        if let Some(m) = c.get("method").filter(|m| !is_templated(m)) {
            let ok = m
                .as_str()
                .is_some_and(|s| METHODS.contains(&s.to_ascii_uppercase().as_str()));
            if !ok {
                out.push(ParamProblem::error(
                    "/config/method",
                    format!("`method` must be one of {}", METHODS.join(", ")),
                ));
            }
        }
        if let Some(t) = c.get("timeout").filter(|t| !is_templated(t)) {
            let max = _cx.services.limits.http_timeout_max;
            match t.as_u64() {
                None | Some(0) => out.push(ParamProblem::error(
                    "/config/timeout",
                    "`timeout` must be a positive number of milliseconds",
                )),
                Some(ms) if u128::from(ms) > max.as_millis() => out.push(ParamProblem::error(
                    "/config/timeout",
                    timeout_too_long(ms, max),
                )),
                Some(_) => {}
            }
        }
        for k in c.keys() {
            if !matches!(
                k.as_str(),
                "url" | "method" | "headers" | "params" | "data" | "timeout"
            ) {
                out.push(ParamProblem::warning(
                    format!("/config/{k}"),
                    format!("unsupported axios option `{k}` (ignored)"),
                ));
            }
        }
        out
    }

    async fn run(
        &self,
        params: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        let p = prepare(params)?;
        let max = cx.limits().http_timeout_max;
        if p.timeout > max {
            return Err(ActionError::new(
                ErrorKind::Limit,
                timeout_too_long(p.timeout.as_millis() as u64, max),
            ));
        }
        if cx.dry_run() {
            cx.record_request(None, None, request_json(&p));
            cx.warn("dry run: http_request was not sent; its result is simulated");
            return Ok(json!({"status": "ok", "statusCode": 200, "headers": {}, "body": null}));
        }
        let started = std::time::Instant::now();
        let result = self.send(&p, cx).await;
        // One line per request: method, host, status, duration; never the path, query,
        // headers or body (they may carry secrets).
        let (status, outcome) = match &result {
            Ok(v) => (
                v["statusCode"].as_u64(),
                v.pointer("/error/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("ok"),
            ),
            Err(e) => (None, e.kind.as_str()),
        };
        tracing::info!(
            conversation_id = cx.conversation_id(),
            provider = "http",
            method = p.method.as_str(),
            host = p.url.host_str().unwrap_or_default(),
            status,
            outcome,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "http_request"
        );
        result
    }
}

impl HttpRequest {
    async fn send(&self, p: &Prepared, cx: &mut ActionCx<'_>) -> Result<Value, ActionError> {
        if let Some(guard) = &cx.services().http_guard {
            guard.check_url(&p.url).map_err(forbidden)?;
        }
        let mut req = cx
            .services()
            .http
            .get()?
            .request(p.method.clone(), p.url.clone())
            .timeout(p.timeout);
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &p.body {
            req = match b {
                Value::String(s) => req.body(s.clone()),
                other => req.json(other),
            };
        }
        let resp = req.send().await.map_err(|e| {
            if let Some(f) = forbidden_in(&e) {
                forbidden(f)
            } else if e.is_timeout() {
                ActionError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no answer from {} within {} ms",
                        p.url.host_str().unwrap_or(""),
                        p.timeout.as_millis()
                    ),
                )
            } else if e.is_builder() {
                // reqwest's message quotes the URL, query and all.
                ActionError::new(
                    ErrorKind::Config,
                    format!("invalid request: {}", e.without_url()),
                )
            } else {
                ActionError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "could not reach {}: {}",
                        p.url.host_str().unwrap_or(""),
                        root_cause(&e)
                    ),
                )
            }
        })?;
        let status = resp.status();
        let headers: Map<String, Value> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    json!(String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = read_limited(resp).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if is_json || looks_like_json(&text) {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        let mut result = json!({
            "status": if status.is_success() { "ok" } else { "error" },
            "statusCode": status.as_u16(),
            "headers": redact_headers(&Value::Object(headers)),
            "body": body,
        });
        if !status.is_success() {
            let kind = match status.as_u16() {
                401 | 403 => ErrorKind::Auth,
                429 => ErrorKind::RateLimited,
                s if s >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::Rejected,
            };
            let err = ActionError::new(
                kind,
                format!("{} answered {}", p.url.host_str().unwrap_or(""), status),
            )
            .with_status(status.as_u16());
            result["error"] = err.to_error_object();
        }
        Ok(result)
    }
}

fn forbidden(f: Forbidden) -> ActionError {
    ActionError::new(ErrorKind::Forbidden, f.to_string())
}

fn looks_like_json(t: &str) -> bool {
    let t = t.trim_start();
    t.starts_with('{') || t.starts_with('[')
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, ActionError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                out.extend_from_slice(&c);
                if out.len() > MAX_RESPONSE_BYTES {
                    return Err(ActionError::new(
                        ErrorKind::Limit,
                        format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
                    ));
                }
            }
            Ok(None) => return Ok(out),
            Err(e) if e.is_timeout() => {
                return Err(ActionError::new(
                    ErrorKind::Timeout,
                    "the response body did not arrive in time",
                ))
            }
            Err(e) => {
                return Err(ActionError::new(
                    ErrorKind::Unavailable,
                    format!("reading the response failed: {}", root_cause(&e)),
                ))
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}
