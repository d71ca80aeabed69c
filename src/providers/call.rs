//! A provider request as plain data, and the helpers every provider's builders share.
//!
//! Secrets never enter a [`ProviderCall`]: secret header values are
//! [`HeaderValue::Secret`] and secret form values are [`REDACTED`]; the client fills them
//! in at send time. This module depends on no provider: the providers depend on it.

use serde_json::{json, Map, Value};

use crate::providers::{ActionError, ErrorKind};

/// The placeholder written wherever a secret would be (the [`crate::redact`] marker).
pub use crate::redact::REDACTED;

/// What a handoff knows about the conversation it hands over.
#[derive(Debug, Clone)]
pub struct HandoffCx {
    /// Unique per action run: Zendesk `Idempotency-Key` and `external_id`, the ALTU
    /// `conversation_id`, event ids. A retried run that reuses it never opens twice.
    pub handoff_id: String,
    /// The builder's own conversation id (LivePerson consumer id fallback).
    pub conversation_id: String,
    /// The contact record (`name`, `email`, `phone`, `cpf`, `id`, …).
    pub contact: Value,
}

/// A header value in a planned call: secrets are only marked, never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// A value safe to print.
    Plain(String),
    /// A credential or token the client fills in when sending.
    Secret,
}

/// A planned request body.
#[derive(Debug, Clone, PartialEq)]
pub enum CallBody {
    /// No body.
    None,
    /// A JSON body.
    Json(Value),
    /// An `application/x-www-form-urlencoded` body; secret values are [`REDACTED`].
    Form(Vec<(String, String)>),
    /// Raw bytes (a file upload); printed as its size.
    Bytes(Vec<u8>),
}

/// One HTTP request of a provider exchange, as far as it is known without network.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCall {
    /// Which step of the exchange (`"csds"`, `"app_jwt"`, `"ticket"`, …), for traces.
    pub step: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Full URL; unknown parts are `{placeholders}` such as `{asyncMessagingEnt}`.
    pub url: String,
    /// Request headers, in sending order.
    pub headers: Vec<(String, HeaderValue)>,
    /// Request body.
    pub body: CallBody,
}

impl ProviderCall {
    /// `{"method","url","headers":{name: value|"[redacted]"},"body": json|form object|null}`:
    /// the printable form for traces and snapshots.
    pub fn to_json(&self) -> Value {
        let mut headers = Map::new();
        for (k, v) in &self.headers {
            let v = match v {
                HeaderValue::Plain(s) => Value::String(s.clone()),
                HeaderValue::Secret => Value::String(REDACTED.into()),
            };
            headers.insert(k.clone(), v);
        }
        let body = match &self.body {
            CallBody::None => Value::Null,
            CallBody::Json(v) => v.clone(),
            CallBody::Bytes(b) => json!({ "bytes": b.len() }),
            CallBody::Form(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        };
        json!({ "method": self.method, "url": self.url, "headers": headers, "body": body })
    }

    /// A header's plain value, if present and not secret.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(k, v)| match v {
            HeaderValue::Plain(s) if k.eq_ignore_ascii_case(name) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Every request a `start_live_chat` makes, in order, plus what was dropped or changed.
#[derive(Debug, Clone, PartialEq)]
pub struct StartPlan {
    /// The requests, in sending order.
    pub calls: Vec<ProviderCall>,
    /// Warnings for the trace (ignored parameters, emptied `extra_info`, …).
    pub warnings: Vec<String>,
}

impl StartPlan {
    /// `{"calls":[…],"warnings":[…]}` for snapshots and dry runs.
    pub fn to_json(&self) -> Value {
        json!({
            "calls": self.calls.iter().map(|c| {
                let mut v = c.to_json();
                if let Some(o) = v.as_object_mut() {
                    o.shift_insert(0, "step".into(), json!(c.step));
                }
                v
            }).collect::<Vec<_>>(),
            "warnings": self.warnings,
        })
    }
}

/// A `config` error, the kind for every bad parameter.
pub(crate) fn config_err(msg: impl Into<String>) -> ActionError {
    ActionError::new(ErrorKind::Config, msg)
}

/// `null` and `""` mean "not set": the provider default applies.
pub(crate) fn is_absent(v: &Value) -> bool {
    matches!(v, Value::Null) || matches!(v, Value::String(s) if s.is_empty())
}

/// The value of an optional parameter, or `None` when unset, `null` or `""`.
pub(crate) fn opt<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|v| !is_absent(v))
}

/// An id the provider accepts as number or string: kept as given.
pub(crate) fn id_value(param: &str, v: &Value) -> Result<Value, ActionError> {
    match v {
        Value::Number(_) => Ok(v.clone()),
        Value::String(s) if !s.trim().is_empty() => Ok(v.clone()),
        _ => Err(config_err(format!(
            "`{param}` must be a number or a non-empty string, got {}",
            type_name(v)
        ))),
    }
}

/// The text of an id-like value (for URLs and string fields).
pub(crate) fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A text parameter: strings as is; numbers and booleans as their JSON text.
pub(crate) fn text_value(param: &str, v: &Value) -> Result<String, ActionError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err(config_err(format!(
            "`{param}` must be a string, got {}",
            type_name(v)
        ))),
    }
}

/// JSON type names for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Serializes `v` to compact JSON and applies a size limit counted in characters
/// (Unicode scalar values): over `limit`, the empty string is sent and a warning recorded.
pub(crate) fn limited_json(
    param: &str,
    v: &Value,
    limit: usize,
    provider: &str,
    warnings: &mut Vec<String>,
) -> String {
    let s = v.to_string();
    let n = s.chars().count();
    if n > limit {
        warnings.push(format!(
            "`{param}` is {n} characters of JSON, over the {limit}-character limit of {provider}: an empty value was sent instead"
        ));
        String::new()
    } else {
        s
    }
}

/// A contact field as text (`name`, `email`, `phone`, `id`), when set.
pub(crate) fn contact_text(contact: &Value, key: &str) -> Option<String> {
    match contact.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_counts_characters_not_bytes() {
        let mut w = Vec::new();
        // "é" is 2 bytes but one character: 256 characters in total with the quotes.
        let s = Value::String("é".repeat(254));
        assert_eq!(
            limited_json("extra_info", &s, 256, "liveperson", &mut w)
                .chars()
                .count(),
            256
        );
        assert!(w.is_empty());
    }
}
