//! Fault injection, as one middleware in front of every provider route, and Zendesk's
//! rate-limit headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::model::{Fault, FaultRule, Provider};
use super::state::AppState;
use super::util::{json, now_s, set_header, text};

/// Endpoint names per provider, as fault rules name them.
pub(crate) const ENDPOINTS: &[(Provider, &[&str])] = &[
    (
        Provider::Liveperson,
        &[
            "csds",
            "token",
            "consumer",
            "conversation",
            "send",
            "storage",
        ],
    ),
    (Provider::Zendesk, &["users", "tickets", "uploads"]),
    (Provider::Altu, &["events"]),
];

/// Checks a rule's endpoint name.
pub(crate) fn validate(rule: &FaultRule) -> Result<(), String> {
    if rule.endpoint == "*" {
        return Ok(());
    }
    let known = ENDPOINTS
        .iter()
        .find(|(p, _)| *p == rule.provider)
        .map(|(_, e)| *e)
        .unwrap_or(&[]);
    if known.contains(&rule.endpoint.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "unknown endpoint `{}` for {}; expected one of {} or `*`",
            rule.endpoint,
            rule.provider,
            known.join(", ")
        ))
    }
}

/// Which provider endpoint a path belongs to.
pub(crate) fn classify(path: &str) -> Option<(Provider, &'static str)> {
    if path.starts_with("/_sandbox") {
        return None;
    }
    if path.starts_with("/sentinel/") {
        return Some((Provider::Liveperson, "token"));
    }
    if path.starts_with("/api/v2/users") {
        return Some((Provider::Zendesk, "users"));
    }
    if path.starts_with("/api/v2/tickets") {
        return Some((Provider::Zendesk, "tickets"));
    }
    if path.starts_with("/api/v2/uploads") {
        return Some((Provider::Zendesk, "uploads"));
    }
    if path.starts_with(super::files::LP_PREFIX) {
        return Some((Provider::Liveperson, "storage"));
    }
    if path.starts_with("/altu/") {
        return Some((Provider::Altu, "events"));
    }
    if path.starts_with("/api/account/") {
        let ep = if path.contains("/service/") {
            "csds"
        } else if path.ends_with("/conversation/send") {
            "send"
        } else if path.ends_with("/messaging/consumer/conversation") {
            "conversation"
        } else if path.ends_with("/consumer") {
            "consumer"
        } else {
            return None;
        };
        return Some((Provider::Liveperson, ep));
    }
    None
}

fn take(state: &AppState, provider: Provider, endpoint: &str) -> Option<Fault> {
    let mut inner = state.lock();
    let pos = inner.faults.iter().position(|r| {
        r.provider == provider && r.times > 0 && (r.endpoint == "*" || r.endpoint == endpoint)
    })?;
    let rule = &mut inner.faults[pos];
    rule.times -= 1;
    let fault = rule.fault.clone();
    if rule.times == 0 {
        inner.faults.remove(pos);
    }
    Some(fault)
}

/// The provider's own error answer for an injected status.
pub(crate) fn error_response(
    provider: Provider,
    status: u16,
    retry_after: Option<u64>,
    body: Option<String>,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    let mut resp = match (body, provider, status) {
        (Some(b), _, _) => {
            if serde_json::from_str::<serde_json::Value>(&b).is_ok() {
                let mut r = text(code, b);
                set_header(&mut r, "content-type", "application/json");
                r
            } else {
                text(code, b)
            }
        }
        (None, Provider::Liveperson, 429) => {
            text(code, "Too many requests, please try again later".into())
        }
        (None, Provider::Liveperson, _) => json(
            code,
            json!({"kind":"resp","code":status,"body":{"title":reason,"details":"Injected sandbox fault"},"type":".ReqBody$ErrorResp"}),
        ),
        (None, Provider::Zendesk, 429) => text(
            code,
            "Rate limit for ticket updates exceeded, please wait before updating this ticket again"
                .into(),
        ),
        (None, Provider::Zendesk, 503) => json(
            code,
            json!({"error":"ServiceUnavailable","description":"Server Error: Service Unavailable"}),
        ),
        (None, Provider::Zendesk, _) => json(
            code,
            json!({"error":reason,"description":"Injected sandbox fault"}),
        ),
        (None, Provider::Altu, 429) => json(code, json!({"error":"rate_limited"})),
        (None, Provider::Altu, _) => {
            json(code, json!({"error":"server_error","description":reason}))
        }
    };
    if let Some(s) = retry_after {
        set_header(&mut resp, "retry-after", &s.to_string());
    }
    resp
}

async fn malform(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let cut = if bytes.len() > 1 {
        bytes.slice(..bytes.len() / 2)
    } else {
        axum::body::Bytes::from_static(b"{")
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

fn rate_headers(state: &AppState, resp: &mut Response) {
    let limit = state.cfg.zendesk.rate_limit;
    let minute = now_s() / 60;
    let remaining = {
        let mut inner = state.lock();
        let w = &mut inner.zd.rate_window;
        if w.0 != minute {
            *w = (minute, 0);
        }
        w.1 = w.1.saturating_add(1);
        limit.saturating_sub(w.1)
    };
    set_header(resp, "x-rate-limit", &limit.to_string());
    set_header(resp, "x-rate-limit-remaining", &remaining.to_string());
}

/// Applies a pending fault, then the provider's per-response headers.
pub(crate) async fn layer(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some((provider, endpoint)) = classify(req.uri().path()) else {
        return next.run(req).await;
    };
    let mut resp = match take(&state, provider, endpoint) {
        None => next.run(req).await,
        Some(f) => {
            if let Some(ms) = f.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if f.expire_tokens {
                let mut inner = state.lock();
                for t in inner.lp.tokens.values_mut() {
                    t.exp = 0;
                }
            }
            if let Some(status) = f.status {
                error_response(provider, status, f.retry_after, f.body)
            } else if f.malformed {
                malform(next.run(req).await).await
            } else {
                next.run(req).await
            }
        }
    };
    if provider == Provider::Zendesk {
        rate_headers(&state, &mut resp);
    }
    resp
}
