//! `start_live_chat` parameters across providers, and handoff plans: what a handoff will
//! send, built without network.
//!
//! The same builders serve two purposes: [`plan_start`] lists every request of a handoff
//! (for `check`, dry runs and snapshots, with discovered domains and tokens as
//! placeholders), and the HTTP client ([`crate::providers::ProviderClient`]) calls them
//! with the real domains, ids and tokens. What each provider accepts comes from its own
//! module through [`crate::providers::provider()`]; this module holds what is common.

use serde_json::{Map, Value};

pub use crate::providers::call::{
    CallBody, HandoffCx, HeaderValue, ProviderCall, StartPlan, REDACTED,
};

use crate::flow::spec::{ParamSpec, ParamType};
use crate::providers::call::{config_err, is_absent, limited_json};
use crate::providers::config::{Integration, ProviderKind};
use crate::providers::provider;
use crate::providers::ActionError;

/// Lists every request the handoff makes on `integration`, from the already-rendered
/// `parameters` object, without network. Wrong parameter types are a `config` error.
pub fn plan_start(
    integration: &Integration,
    params: &Map<String, Value>,
    cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    let mut plan = provider(integration.provider).plan(integration, params, cx)?;
    let mut warnings = ignored_param_warnings(integration.provider, params);
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
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
    "fallback",
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
        crate::flow::spec::before_action_messages(),
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
                "The conversation with the bot so far, oldest first, for the agent (usually `\"<? $history ?>\"`). {}. Split oldest first, never inside a character.",
                crate::providers::all()
                    .into_iter()
                    .filter_map(|k| {
                        let p = k.provider();
                        Some(format!("{}: {}", p.display_name(), p.transcript_note()?))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        ParamSpec::new(
            "transcript_max_messages",
            ParamType::integer(1, MAX_MESSAGES_CEILING as i64),
            format!("Only the most recent messages of `transcript` are sent: this many (default {DEFAULT_MAX_MESSAGES})."),
        ),
        ParamSpec::new(
            "fallback",
            ParamType::ArrayOf(Box::new(ParamType::Id)),
            "Integrations to try next, in order, when `integration_id` is outside its business hours or fails with `unavailable`, `rate_limited` or `timeout`. The result then has `via`: `{\"integration_id\",\"provider\",\"tried\":[{\"integration_id\",\"reason\"}]}`.",
        ),
    ]
}

/// A provider's own parameters (besides [`COMMON_PARAMS`]) with types and descriptions.
pub fn provider_param_specs(kind: ProviderKind) -> Vec<ParamSpec> {
    provider(kind).param_specs()
}

/// Every parameter `start_live_chat` knows, for any provider: the common ones, then each
/// provider's, merged by name (descriptions prefixed with the provider).
pub fn start_live_chat_param_specs() -> Vec<ParamSpec> {
    let mut out = common_param_specs();
    let common = out.len();
    for kind in crate::providers::all() {
        for p in provider_param_specs(kind) {
            let label = provider(kind).display_name();
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

/// The parameters a provider understands (besides [`COMMON_PARAMS`]), from its table.
pub fn supported_params(kind: ProviderKind) -> Vec<String> {
    provider_param_specs(kind)
        .into_iter()
        .map(|p| p.name.into_owned())
        .collect()
}

/// Parameters the provider must be given, from its table.
pub fn required_params(kind: ProviderKind) -> Vec<String> {
    provider_param_specs(kind)
        .into_iter()
        .filter(|p| p.required)
        .map(|p| p.name.into_owned())
        .collect()
}

fn all_known_params() -> Vec<String> {
    let mut all: Vec<String> = COMMON_PARAMS.iter().map(|s| s.to_string()).collect();
    for k in crate::providers::all() {
        for p in supported_params(k) {
            if !all.contains(&p) {
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
    let has = |list: &[String], name: &str| list.iter().any(|k| k == name);
    for (name, shape) in params {
        let name = *name;
        if COMMON_PARAMS.contains(&name) || has(&supported, name) {
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
        } else if has(&known, name) {
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
            let own = COMMON_PARAMS
                .iter()
                .copied()
                .chain(supported.iter().map(String::as_str));
            if let Some(s) =
                suggest(name, own).or_else(|| suggest(name, known.iter().map(String::as_str)))
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
        let given = params.iter().find(|(n, _)| *n == req);
        match given {
            None => out.push(ParamProblem {
                param: req.clone(),
                message: format!("`{req}` is required by {}", kind.as_str()),
                severity: Severity::Error,
            }),
            Some((_, ParamShape::Static(v))) if is_absent(v) => out.push(ParamProblem {
                param: req.clone(),
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
    provider(kind)
        .unsupported_note(name)
        .unwrap_or_else(|| format!("`{name}` is not used by {} and is ignored", kind.as_str()))
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
        "transcript" | "transcript_max_messages" | "fallback" => Ok(()),
        _ => provider(kind).check_value(name, v),
    }
}

fn static_size_warning(kind: ProviderKind, name: &str, v: &Value) -> Option<String> {
    let limit = provider(kind).json_limit(name)?;
    let mut w = Vec::new();
    limited_json(name, v, limit, kind.as_str(), &mut w);
    w.pop()
}

/// Closest candidate within edit distance 2 (or 1 for very short names).
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let max = if name.len() <= 4 { 1 } else { 2 };
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
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
        .filter(|k| !COMMON_PARAMS.contains(&k.as_str()) && !supported.contains(k))
        .map(|k| unsupported_message(kind, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_tables_do_not_redefine_common_parameters() {
        let names: Vec<String> = common_param_specs()
            .into_iter()
            .map(|p| p.name.into_owned())
            .collect();
        assert_eq!(names, COMMON_PARAMS);
        for k in crate::providers::all() {
            for p in supported_params(k) {
                assert!(!COMMON_PARAMS.contains(&p.as_str()), "{k}: {p}");
            }
        }
        assert_eq!(
            required_params(crate::providers::zendesk::KIND),
            ["subject"]
        );
        assert!(required_params(crate::providers::liveperson::KIND).is_empty());
    }

    #[test]
    fn suggests_the_closest_name() {
        let names = ["skill_id", "campaign_id", "engagement_id"];
        assert_eq!(suggest("skil_id", names.into_iter()), Some("skill_id"));
        assert_eq!(
            suggest("campain_id", names.into_iter()),
            Some("campaign_id")
        );
        assert_eq!(suggest("zzz", names.into_iter()), None);
    }
}
