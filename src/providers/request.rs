//! Provider requests as plain data: what a handoff will send, built without network.
//!
//! The same builders serve two purposes: [`plan_start`] lists every request of a handoff
//! (for `check`, dry runs and snapshots, with discovered domains and tokens as
//! placeholders), and the HTTP client ([`crate::providers::ProviderClient`]) calls them
//! with the real domains, ids and tokens. Secrets never enter a [`ProviderCall`]: secret
//! header values are [`HeaderValue::Secret`] and secret form values are [`REDACTED`]; the
//! client fills them in at send time.

use serde_json::{json, Map, Value};

use crate::actions::spec::{ParamSpec, ParamType};
use crate::actions::{ActionError, ErrorKind};
use crate::providers::config::{Integration, ProviderKind, ProviderSettings};
use crate::providers::{altu, liveperson, zendesk};

/// The placeholder written wherever a secret would be.
pub const REDACTED: &str = "[redacted]";

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

/// Lists every request the handoff makes on `integration`, from the already-rendered
/// `parameters` object, without network. Wrong parameter types are a `config` error.
pub fn plan_start(
    integration: &Integration,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    match &integration.settings {
        ProviderSettings::LivePerson(s) => liveperson::plan(s, params, cx),
        ProviderSettings::Zendesk(s) => zendesk::plan(s, params, cx),
        ProviderSettings::AltuSdk(s) => altu::plan(s, &integration.id, params, cx),
    }
}

/// What is known about a parameter's value before running.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamShape {
    /// Holds `<? ?>` templates: its type is only known at run time.
    Templated,
    /// A literal value.
    Static(Value),
}

/// How bad a [`ParamProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The flow must not load.
    Error,
    /// Loads; the parameter is ignored or altered at run time.
    Warning,
}

/// A load-time finding about one `start_live_chat` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// The parameter key.
    pub param: String,
    /// What is wrong, for the author.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

/// Keys every provider accepts.
pub const COMMON_PARAMS: &[&str] = &[
    "integration_id",
    "before_action_messages",
    "start_message",
    "transcript",
    "transcript_max_messages",
];

/// [`COMMON_PARAMS`] with types and descriptions.
pub fn common_param_specs() -> Vec<ParamSpec> {
    use crate::providers::transcript::{DEFAULT_MAX_MESSAGES, MAX_MESSAGES_CEILING};
    vec![
        ParamSpec::new(
            "integration_id",
            ParamType::Id,
            "The integration to hand over to, from the integrations file (`7` and `\"7\"` are the same).",
        )
        .required(),
        crate::actions::spec::before_action_messages(),
        ParamSpec::new(
            "start_message",
            ParamType::OneOf(vec![ParamType::String, ParamType::Number, ParamType::Boolean]),
            "The first message for the agent. LivePerson: the first consumer message; Zendesk: the first comment, a private note (default: the subject); ALTU SDK: `start_message` of OPEN_CONVERSATION.",
        ),
        ParamSpec::new(
            "transcript",
            ParamType::ArrayOf(Box::new(ParamType::Struct {
                fields: vec![
                    ParamSpec::new("from", ParamType::Enum(vec!["user", "bot"]), "Who wrote it.").required(),
                    ParamSpec::new("text", ParamType::String, "What was written.").required(),
                    ParamSpec::new("at", ParamType::String, "When, as an RFC 3339 date-time (`2026-11-26T10:02:11-03:00`)."),
                ],
                additional: true,
            })),
            format!(
                "The conversation with the bot so far, oldest first, for the agent (usually `\"<? $history ?>\"`). LivePerson: consumer messages after `start_message`, at most {} bytes each; Zendesk: private comments, at most {} bytes each; ALTU SDK: the `transcript` array of OPEN_CONVERSATION, at most {} bytes of text per entry. Split oldest first, never inside a character.",
                liveperson::TRANSCRIPT_MESSAGE_LIMIT,
                zendesk::TRANSCRIPT_COMMENT_LIMIT,
                altu::TRANSCRIPT_TEXT_LIMIT
            ),
        ),
        ParamSpec::new(
            "transcript_max_messages",
            ParamType::integer(1, MAX_MESSAGES_CEILING as i64),
            format!("Only the most recent messages of `transcript` are sent: this many (default {DEFAULT_MAX_MESSAGES})."),
        ),
    ]
}

/// A provider's own parameters (besides [`COMMON_PARAMS`]) with types and descriptions.
pub fn provider_param_specs(kind: ProviderKind) -> Vec<ParamSpec> {
    match kind {
        ProviderKind::LivePerson => liveperson::param_specs(),
        ProviderKind::Zendesk => zendesk::param_specs(),
        ProviderKind::AltuSdk => altu::param_specs(),
    }
}

/// Every parameter `start_live_chat` knows, for any provider: the common ones, then each
/// provider's, merged by name (descriptions prefixed with the provider).
pub fn start_live_chat_param_specs() -> Vec<ParamSpec> {
    let mut out = common_param_specs();
    let common = out.len();
    for kind in ProviderKind::ALL {
        for p in provider_param_specs(kind) {
            let label = kind.display_name();
            let desc = format!("{label}: {}", p.description);
            match out[common..].iter_mut().find(|q| q.name == p.name) {
                Some(q) => {
                    q.description = format!("{}\n{desc}", q.description);
                    if q.ty != p.ty {
                        q.ty = ParamType::OneOf(vec![q.ty.clone(), p.ty]);
                    }
                }
                // Which provider applies is only known with the integrations file.
                None => out.push(ParamSpec {
                    description: desc,
                    required: false,
                    ..p
                }),
            }
        }
    }
    out
}

/// The parameters a provider understands (besides [`COMMON_PARAMS`]).
pub fn supported_params(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::LivePerson => liveperson::PARAMS,
        ProviderKind::Zendesk => zendesk::PARAMS,
        ProviderKind::AltuSdk => altu::PARAMS,
    }
}

/// Parameters the provider must be given.
pub fn required_params(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Zendesk => &["subject"],
        _ => &[],
    }
}

fn all_known_params() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = COMMON_PARAMS.to_vec();
    for k in ProviderKind::ALL {
        for p in supported_params(k) {
            if !all.contains(p) {
                all.push(p);
            }
        }
    }
    all
}

/// Static validation of a `start_live_chat` parameter list for one provider, before
/// anything runs: unknown keys (error, with a suggestion), keys this provider ignores
/// (warning), missing required keys (error), literal values of the wrong type (error) and
/// literal values over a size limit (warning).
pub fn check_params(kind: ProviderKind, params: &[(&str, ParamShape)]) -> Vec<ParamProblem> {
    let mut out = Vec::new();
    let known = all_known_params();
    let supported = supported_params(kind);
    for (name, shape) in params {
        let name = *name;
        if COMMON_PARAMS.contains(&name) || supported.contains(&name) {
            if let ParamShape::Static(v) = shape {
                if let Err(e) = check_static(kind, name, v) {
                    out.push(ParamProblem {
                        param: name.to_string(),
                        message: e.message,
                        severity: Severity::Error,
                    });
                } else if let Some(w) = static_size_warning(kind, name, v) {
                    out.push(ParamProblem {
                        param: name.to_string(),
                        message: w,
                        severity: Severity::Warning,
                    });
                }
            }
        } else if known.contains(&name) {
            out.push(ParamProblem {
                param: name.to_string(),
                message: unsupported_message(kind, name),
                severity: Severity::Warning,
            });
        } else {
            let mut message = format!(
                "unknown parameter `{name}` for `start_live_chat` on {}",
                kind.as_str()
            );
            if let Some(s) = suggest(name, COMMON_PARAMS.iter().chain(supported.iter()).copied())
                .or_else(|| suggest(name, known.iter().copied()))
            {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            out.push(ParamProblem {
                param: name.to_string(),
                message,
                severity: Severity::Error,
            });
        }
    }
    for req in required_params(kind) {
        let given = params.iter().find(|(n, _)| n == req);
        match given {
            None => out.push(ParamProblem {
                param: (*req).to_string(),
                message: format!("`{req}` is required by {}", kind.as_str()),
                severity: Severity::Error,
            }),
            Some((_, ParamShape::Static(v))) if is_absent(v) => out.push(ParamProblem {
                param: (*req).to_string(),
                message: format!(
                    "`{req}` is required by {} and must not be empty",
                    kind.as_str()
                ),
                severity: Severity::Error,
            }),
            _ => {}
        }
    }
    out
}

/// The warning for a parameter this provider does not use (also used at run time).
pub(crate) fn unsupported_message(kind: ProviderKind, name: &str) -> String {
    match (kind, name) {
        (ProviderKind::Zendesk, "extra_info") => {
            "`extra_info` is not supported by Zendesk and is ignored".to_string()
        }
        (_, "contact_info") => format!(
            "`contact_info` is only sent to altu_sdk; ignored on {}",
            kind.as_str()
        ),
        _ => format!("`{name}` is not used by {} and is ignored", kind.as_str()),
    }
}

fn check_static(kind: ProviderKind, name: &str, v: &Value) -> Result<(), ActionError> {
    if is_absent(v) {
        return Ok(());
    }
    match name {
        "integration_id" => match v {
            Value::String(_) | Value::Number(_) => Ok(()),
            _ => Err(config_err("`integration_id` must be a number or a string")),
        },
        "before_action_messages" => match v {
            Value::Array(a) if a.iter().all(|x| x.is_string()) => Ok(()),
            _ => Err(config_err(
                "`before_action_messages` must be an array of strings",
            )),
        },
        // Checked by `start_live_chat` itself, with or without an integrations file (the
        // transcript with the position of the bad entry inside it).
        "transcript" | "transcript_max_messages" => Ok(()),
        _ => match kind {
            ProviderKind::LivePerson => liveperson::check_value(name, v),
            ProviderKind::Zendesk => zendesk::check_value(name, v),
            ProviderKind::AltuSdk => altu::check_value(name, v),
        },
    }
}

fn static_size_warning(kind: ProviderKind, name: &str, v: &Value) -> Option<String> {
    let limit = match (kind, name) {
        (ProviderKind::LivePerson, "extra_info") => liveperson::EXTRA_INFO_LIMIT,
        (ProviderKind::AltuSdk, "extra_info" | "contact_info") => altu::JSON_LIMIT,
        _ => return None,
    };
    let mut w = Vec::new();
    limited_json(name, v, limit, kind.as_str(), &mut w);
    w.pop()
}

/// Closest candidate within edit distance 2 (or 1 for very short names).
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let max = if name.len() <= 4 { 1 } else { 2 };
    candidates
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- helpers shared by the provider builders ---------------------------------------------

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

/// Warnings for keys this provider does not use (unknown keys were caught at load time;
/// at run time they are only reported).
pub(crate) fn ignored_param_warnings(
    kind: ProviderKind,
    params: &Map<String, Value>,
) -> Vec<String> {
    let supported = supported_params(kind);
    params
        .keys()
        .filter(|k| !COMMON_PARAMS.contains(&k.as_str()) && !supported.contains(&k.as_str()))
        .map(|k| unsupported_message(kind, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_name_exactly_the_checked_parameters() {
        let names = |v: Vec<ParamSpec>| {
            v.into_iter()
                .map(|p| p.name.into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(common_param_specs()), COMMON_PARAMS);
        for k in ProviderKind::ALL {
            let specs = provider_param_specs(k);
            assert_eq!(names(specs.clone()), supported_params(k), "{k}");
            let req: Vec<&str> = specs
                .iter()
                .filter(|p| p.required)
                .map(|p| p.name.as_ref())
                .collect();
            assert_eq!(req, required_params(k), "{k}");
        }
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("skil_id", "skill_id"), 1);
        assert_eq!(levenshtein("abc", "abc"), 0);
        assert_eq!(levenshtein("", "ab"), 2);
    }

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
