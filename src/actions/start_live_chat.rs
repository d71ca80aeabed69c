//! `start_live_chat`: hands the conversation to human agents on the integration the
//! flow names (LivePerson, Zendesk or the ALTU SDK connector).

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{is_templated, Action, ActionError, ActionSpec, CheckCx, ErrorKind, ParamProblem};
use crate::actions::{ActionCx, Services};
use crate::flow::Severity;
use crate::providers::{
    self, schedule, transcript, HandoffCx, Integration, IntegrationId, ParamShape, ProviderKind,
};

/// `start_live_chat`.
pub struct StartLiveChat;

/// The error result in the provider's shape (Zendesk nests it under `response`), or the
/// common shape when the integration is unknown.
fn error_result(kind: Option<ProviderKind>, e: &ActionError) -> Value {
    match kind {
        Some(k) => providers::provider(k).error_result(e),
        None => e.to_result(),
    }
}

#[async_trait]
impl Action for StartLiveChat {
    fn name(&self) -> &str {
        "start_live_chat"
    }

    fn required(&self) -> &[&str] {
        &["integration_id"]
    }

    fn spec(&self) -> ActionSpec {
        ActionSpec {
            description: "Hands the conversation to human agents on the integration `integration_id` names: LivePerson, Zendesk or the ALTU SDK connector. Which parameters apply depends on the integration's provider (`check --integrations` tells).".into(),
            params: providers::request::start_live_chat_param_specs(),
            additional: false,
            any_of: Vec::new(),
        }
    }

    fn check(&self, params: &Map<String, Value>, cx: &CheckCx<'_>) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        // The transcript's shape does not depend on the provider: checked even without
        // an integrations file, with the position of the bad entry.
        if let Some(t) = params.get("transcript") {
            for (pointer, message) in transcript::check_static(t) {
                out.push(ParamProblem::error(pointer, message).with_help(
                    "e.g. \"transcript\": [{\"from\": \"user\", \"text\": \"oi\", \"at\": \"2026-11-26T10:02:11-03:00\"}] or \"<? $history ?>\"",
                ));
            }
        }
        if let Some(m) = params.get("transcript_max_messages") {
            if !is_templated(m) {
                if let Err(e) = transcript::check_max_messages(m) {
                    out.push(ParamProblem::error("/transcript_max_messages", e.message));
                }
            }
        }
        check_fallback(params.get("fallback"), cx, &mut out);
        let Some(id_value) = params.get("integration_id") else {
            return out;
        };
        if is_templated(id_value) {
            return out;
        }
        let Some(id) = IntegrationId::from_json(id_value) else {
            out.push(ParamProblem::error(
                "/integration_id",
                "`integration_id` must be a number or a string",
            ));
            return out;
        };
        if !cx.has_integrations {
            return out;
        }
        let Some(integration) = cx.services.integrations.get(&id) else {
            let known: Vec<String> = cx
                .services
                .integrations
                .iter()
                .map(|i| i.id.to_string())
                .collect();
            out.push(
                ParamProblem::error("/integration_id", format!("unknown integration `{id}`"))
                    .with_help(format!("integrations in the file: {}", known.join(", "))),
            );
            return out;
        };
        let shapes: Vec<(&str, ParamShape)> = params
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_templated(v) {
                        ParamShape::Templated
                    } else {
                        ParamShape::Static(v.clone())
                    },
                )
            })
            .collect();
        for p in providers::check_params(integration.provider, &shapes) {
            let severity = match p.severity {
                providers::Severity::Error => Severity::Error,
                providers::Severity::Warning => Severity::Warning,
            };
            let pointer = if p.param.is_empty() {
                String::new()
            } else {
                format!("/{}", p.param.trim_start_matches('/'))
            };
            out.push(ParamProblem {
                pointer,
                message: p.message,
                help: None,
                severity,
            });
        }
        out
    }

    async fn run(
        &self,
        params: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        let id = params
            .get("integration_id")
            .and_then(IntegrationId::from_json)
            .ok_or_else(|| {
                ActionError::new(
                    ErrorKind::Config,
                    "`integration_id` is missing or not a number/string",
                )
            })?;
        let fallback = fallback_ids(params)?;
        let services = cx.services().clone();
        let chain: Vec<IntegrationId> = std::iter::once(id)
            .chain(fallback.iter().flatten().cloned())
            .collect();
        let mut tried = Vec::new();
        for (n, id) in chain.iter().enumerate() {
            let Some(integration) = services.integrations.get(id) else {
                // `config` would fail anywhere: the chain stops.
                return Err(ActionError::new(
                    ErrorKind::Config,
                    format!("unknown integration `{id}`"),
                ));
            };
            let result = match closed_result(integration, cx.now()) {
                Some(closed) => closed,
                None => attempt(integration, params, cx, &services).await,
            };
            if n + 1 < chain.len() {
                if let Some(reason) = moves_on(&result) {
                    tried.push(json!({"integration_id": id.as_str(), "reason": reason}));
                    continue;
                }
            }
            return Ok(match fallback {
                // Without `fallback` the result keeps the seed's exact shape.
                None => result,
                Some(_) => with_via(result, integration, tried),
            });
        }
        Err(ActionError::new(ErrorKind::Config, "no integration to try"))
    }
}

/// `fallback` as written: an array of ids, each configured (with an integrations file),
/// none repeated; problems at the entry's pointer.
fn check_fallback(v: Option<&Value>, cx: &CheckCx<'_>, out: &mut Vec<ParamProblem>) {
    let Some(v) = v.filter(|v| !v.is_null() && !is_templated(v)) else {
        return;
    };
    let Value::Array(items) = v else {
        out.push(
            ParamProblem::error(
                "/fallback",
                "`fallback` must be an array of integration ids",
            )
            .with_help("e.g. \"fallback\": [1, 3]"),
        );
        return;
    };
    let mut seen = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if is_templated(item) {
            continue;
        }
        let pointer = format!("/fallback/{i}");
        let Some(id) = IntegrationId::from_json(item) else {
            out.push(ParamProblem::error(
                pointer,
                "a `fallback` entry must be an integration id (a number or a string)",
            ));
            continue;
        };
        if seen.contains(&id) {
            out.push(ParamProblem::warning(
                pointer,
                format!("integration `{id}` is already in `fallback`"),
            ));
            continue;
        }
        if cx.has_integrations && cx.services.integrations.get(&id).is_none() {
            let known: Vec<String> = cx
                .services
                .integrations
                .iter()
                .map(|i| i.id.to_string())
                .collect();
            out.push(
                ParamProblem::error(
                    pointer,
                    format!("fallback integration `{id}` is not configured"),
                )
                .with_help(format!("integrations in the file: {}", known.join(", "))),
            );
        }
        seen.push(id);
    }
}

/// `parameters.fallback`: `None` when absent or null, else the ids in order.
fn fallback_ids(params: &Map<String, Value>) -> Result<Option<Vec<IntegrationId>>, ActionError> {
    let bad = || {
        ActionError::new(
            ErrorKind::Config,
            "`fallback` must be an array of integration ids",
        )
    };
    match params.get("fallback") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| IntegrationId::from_json(v).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// The result of an integration outside its business hours at `now`: kind
/// `unavailable`, reason `outside_business_hours` and when it opens again. Nothing is
/// sent. `None` when open (or when it has no schedule).
fn closed_result(integration: &Integration, now: std::time::SystemTime) -> Option<Value> {
    let schedule = integration.schedule.as_ref()?;
    let at = schedule::timestamp(now);
    if schedule.is_open(at) {
        return None;
    }
    let next = schedule.next_open(at).map(|z| schedule::rfc3339(&z));
    let message = match &next {
        Some(t) => format!(
            "integration `{}` is outside its business hours (schedule `{}`); it opens at {t}",
            integration.id, schedule.name
        ),
        None => format!(
            "integration `{}` is outside its business hours (schedule `{}`) and has no opening ahead",
            integration.id, schedule.name
        ),
    };
    let e = ActionError::new(ErrorKind::Unavailable, message);
    let mut result = error_result(Some(integration.provider), &e);
    if let Some(obj) = error_object_mut(&mut result) {
        let rest = std::mem::take(obj);
        obj.insert("kind".into(), json!(ErrorKind::Unavailable.as_str()));
        obj.insert("reason".into(), json!(OUTSIDE_HOURS));
        obj.insert("next_open_at".into(), json!(next));
        obj.extend(rest.into_iter().filter(|(k, _)| k != "kind"));
    }
    Some(result)
}

/// The `reason` of a result outside business hours (and of its `via.tried` entry).
const OUTSIDE_HOURS: &str = "outside_business_hours";

/// The error object of a result in either shape (Zendesk nests it under `response`).
fn error_object(result: &Value) -> Option<&Map<String, Value>> {
    let r = result
        .get("response")
        .filter(|r| r.is_object())
        .unwrap_or(result);
    if r.get("status").and_then(Value::as_str) != Some("error") {
        return None;
    }
    r.get("error")?.as_object()
}

fn error_object_mut(result: &mut Value) -> Option<&mut Map<String, Value>> {
    let nested = result.get("response").is_some_and(Value::is_object);
    let r = if nested {
        result.get_mut("response")?
    } else {
        result
    };
    r.get_mut("error")?.as_object_mut()
}

/// Why the chain moves past this result, or `None` when it stops here: success, or an
/// error that would fail anywhere (`rejected`, `auth`, `config`, …).
fn moves_on(result: &Value) -> Option<String> {
    let e = error_object(result)?;
    if e.get("reason").and_then(Value::as_str) == Some(OUTSIDE_HOURS) {
        return Some(OUTSIDE_HOURS.into());
    }
    let kind = e.get("kind").and_then(Value::as_str)?;
    [
        ErrorKind::Unavailable,
        ErrorKind::RateLimited,
        ErrorKind::Timeout,
    ]
    .iter()
    .any(|k| k.as_str() == kind)
    .then(|| kind.to_string())
}

/// The result plus `via`: which integration answered, and the ones passed over.
fn with_via(mut result: Value, integration: &Integration, tried: Vec<Value>) -> Value {
    if let Some(obj) = result.as_object_mut() {
        obj.insert(
            "via".into(),
            json!({
                "integration_id": integration.id.as_str(),
                "provider": integration.provider.as_str(),
                "tried": tried,
            }),
        );
    }
    result
}

/// One integration of the chain: planned (dry run) or started for real.
async fn attempt(
    integration: &Integration,
    params: &Map<String, Value>,
    cx: &mut ActionCx<'_>,
    services: &Services,
) -> Value {
    let id = &integration.id;
    let handoff_id = if cx.dry_run() {
        format!("dry-run-{}", cx.index())
    } else {
        uuid::Uuid::new_v4().to_string()
    };
    let hcx = HandoffCx {
        handoff_id: handoff_id.clone(),
        conversation_id: cx.conversation_id().to_string(),
        contact: cx.store.contact().clone(),
    };
    if cx.dry_run() {
        let plan = match providers::plan_start(integration, params, &hcx) {
            Ok(p) => p,
            Err(e) => return error_result(Some(integration.provider), &e),
        };
        for call in &plan.calls {
            cx.record_request(
                Some(id.to_string()),
                Some(integration.provider.as_str()),
                call.to_json(),
            );
        }
        for w in plan.warnings {
            cx.warn(w);
        }
        // The provider's success shape, so later templates
        // (`$ticket.response.body.ticket.id`) render as they would in production.
        return providers::provider(integration.provider).simulated_result(&handoff_id);
    }
    if let Some(journal) = &services.journal {
        let start = crate::actions::HandoffStart {
            handoff_id: handoff_id.clone(),
            conversation_id: hcx.conversation_id.clone(),
            integration_id: id.to_string(),
            provider: integration.provider.as_str(),
            consumer_key: (integration.provider == crate::providers::liveperson::KIND)
                .then(|| providers::liveperson::ext_consumer_id(&hcx)),
        };
        if let Err(e) = journal.begin(&start).await {
            // No provider call without a record of it: a crash could not be reconciled.
            let e = ActionError::new(
                ErrorKind::Unavailable,
                format!("cannot record the handoff before starting it: {e}"),
            );
            return error_result(Some(integration.provider), &e);
        }
    }
    let outcome = services
        .providers
        .start_live_chat(integration, params, &hcx)
        .await;
    if outcome.handoff.is_none() {
        if let Some(journal) = &services.journal {
            journal.abandon(&handoff_id).await;
        }
    }
    for w in outcome.warnings {
        cx.warn(w);
    }
    if let Some(h) = outcome.handoff {
        cx.set_handoff(h);
    }
    outcome.result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zendesk_errors_nest_under_response() {
        let e = ActionError::new(ErrorKind::Auth, "bad token").with_status(401);
        let v = error_result(Some(crate::providers::zendesk::KIND), &e);
        assert_eq!(v["response"]["status"], "error");
        assert_eq!(v["response"]["error"]["kind"], "auth");
        assert_eq!(
            error_result(Some(crate::providers::liveperson::KIND), &e)["status"],
            "error"
        );
    }
}
