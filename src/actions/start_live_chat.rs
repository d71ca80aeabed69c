//! `start_live_chat`: hands the conversation to human agents on the integration the
//! flow names (LivePerson, Zendesk or the ALTU SDK connector).

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{is_templated, Action, ActionError, ActionSpec, CheckCx, ErrorKind, ParamProblem};
use crate::actions::ActionCx;
use crate::flow::Severity;
use crate::providers::{self, transcript, HandoffCx, IntegrationId, ParamShape, ProviderKind};

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
        let services = cx.services().clone();
        let Some(integration) = services.integrations.get(&id) else {
            return Err(ActionError::new(
                ErrorKind::Config,
                format!("unknown integration `{id}`"),
            ));
        };
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
                Err(e) => return Ok(error_result(Some(integration.provider), &e)),
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
            return Ok(providers::provider(integration.provider).simulated_result(&handoff_id));
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
                return Ok(error_result(Some(integration.provider), &e));
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
        Ok(outcome.result)
    }
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
