//! The error object every failing action writes into its result (spec §4, live-chat §2).

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Why an action failed; serialized as the `kind` field of the error object.
///
/// The set is closed by the live-chat contract: `config`, `auth`, `rate_limited`,
/// `rejected`, `unavailable`, `timeout`, `limit`; `template` and `http` are added for the
/// generic actions (a template that failed at run time, a non-2xx `http_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Misconfiguration: unknown integration, missing parameter, bad URL, missing secret.
    Config,
    /// The provider refused our credentials (after one refresh where that applies).
    Auth,
    /// The provider answered 429 and retries ran out.
    RateLimited,
    /// The provider understood and refused the request (4xx other than auth/429).
    Rejected,
    /// The provider could not be reached or answered 5xx until retries ran out,
    /// or answered something that is not its documented shape.
    Unavailable,
    /// No answer within the time budget.
    Timeout,
    /// A bound was hit: evaluation fuel, output size, a provider size limit.
    Limit,
    /// A template failed while rendering the action's parameters.
    Template,
    /// `http_request` to a destination the HTTP guard refuses (loopback, private,
    /// link-local, … after DNS resolution; see `[http_request] allow`).
    Forbidden,
}

impl ErrorKind {
    /// The wire name (`"rate_limited"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Limit => "limit",
            ErrorKind::Template => "template",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed action: what went wrong, for the flow to branch on.
///
/// Becomes `{"kind","message","http_status"?}` plus, where the provider answered,
/// its body under `body`. Never carries a secret: messages are written by us, and
/// provider bodies are what the provider chose to return.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ActionError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A human-readable sentence.
    pub message: String,
    /// The HTTP status the provider answered with, when it answered.
    pub http_status: Option<u16>,
    /// The provider's body (JSON, or the raw text as a JSON string).
    pub body: Option<Value>,
}

impl ActionError {
    /// An error of `kind` with `message` and no HTTP details.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActionError {
            kind,
            message: message.into(),
            http_status: None,
            body: None,
        }
    }

    /// Adds the provider's HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Adds the provider's answer body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The `error` object: `{"kind","message","http_status"?,"body"?}`.
    pub fn to_error_object(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(self.kind.as_str()));
        m.insert("message".into(), json!(self.message));
        if let Some(s) = self.http_status {
            m.insert("http_status".into(), json!(s));
        }
        if let Some(b) = &self.body {
            m.insert("body".into(), b.clone());
        }
        Value::Object(m)
    }

    /// The generic failed-action result: `{"status":"error","error":{…}}`.
    pub fn to_result(&self) -> Value {
        json!({ "status": "error", "error": self.to_error_object() })
    }
}
