//! `set_variables` and `send_message`: the actions that touch only the store and the
//! message queue.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{
    is_templated, Action, ActionError, ActionSpec, CheckCx, ErrorKind, ParamProblem, ParamSpec,
    ParamType,
};
use crate::actions::{text_message, ActionCx};

/// `set_variables`: `{ "context": {...}, "contact": {...} }`, like the node blocks.
pub struct SetVariables;

#[async_trait]
impl Action for SetVariables {
    fn name(&self) -> &str {
        "set_variables"
    }

    fn spec(&self) -> ActionSpec {
        ActionSpec {
            description: "Writes context and contact variables, like the node's blocks.".into(),
            params: vec![
                ParamSpec::new(
                    "context",
                    ParamType::Object,
                    "Context variables to write, in order.",
                ),
                ParamSpec::new(
                    "contact",
                    ParamType::Object,
                    "Contact fields to write, in order.",
                ),
            ],
            additional: false,
            any_of: vec![vec!["context"], vec!["contact"]],
        }
    }

    fn check(&self, params: &Map<String, Value>, _cx: &CheckCx<'_>) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        if !params.contains_key("context") && !params.contains_key("contact") {
            out.push(
                ParamProblem::error("", "set_variables needs `context` or `contact`")
                    .with_help("e.g. {\"context\": {\"tries\": \"<? ($tries ?? 0) + 1 ?>\"}}"),
            );
        }
        for key in ["context", "contact"] {
            if let Some(v) = params.get(key) {
                if !v.is_object() && !is_templated(v) {
                    out.push(ParamProblem::error(
                        format!("/{key}"),
                        format!("`{key}` must be an object"),
                    ));
                }
            }
        }
        for k in params.keys() {
            if !matches!(k.as_str(), "context" | "contact" | "before_action_messages") {
                out.push(ParamProblem::warning(
                    format!("/{k}"),
                    format!("unknown parameter `{k}` (ignored)"),
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
        for key in ["context", "contact"] {
            match params.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        if key == "context" {
                            cx.store.set_context(k, v.clone());
                        } else {
                            cx.store.set_contact(k, v.clone());
                        }
                    }
                }
                Some(_) => {
                    return Err(ActionError::new(
                        ErrorKind::Config,
                        format!("`{key}` rendered to something that is not an object"),
                    ))
                }
            }
        }
        Ok(json!({"status": "ok"}))
    }
}

/// `send_message`: `{ "text": "..." }` or a full output item (`{"type": ...}`).
pub struct SendMessage;

#[async_trait]
impl Action for SendMessage {
    fn name(&self) -> &str {
        "send_message"
    }

    fn spec(&self) -> ActionSpec {
        ActionSpec {
            description: "Sends a message to the user: `text`, or a whole output item with `type` (and its own keys).".into(),
            params: vec![
                ParamSpec::new("text", ParamType::Any, "The text of a text message."),
                ParamSpec::new("type", ParamType::String, "The type of a whole output item (its other keys travel with it)."),
            ],
            additional: true,
            any_of: vec![vec!["text"], vec!["type"]],
        }
    }

    fn check(&self, params: &Map<String, Value>, _cx: &CheckCx<'_>) -> Vec<ParamProblem> {
        if params.contains_key("text") || params.contains_key("type") {
            return Vec::new();
        }
        vec![ParamProblem::error(
            "",
            "send_message needs `text` or a full output item with `type`",
        )
        .with_help("e.g. {\"text\": \"Olá <? contact.name ?>\"}")]
    }

    async fn run(
        &self,
        params: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError> {
        let message = if params.contains_key("type") {
            let mut m = params.clone();
            m.shift_remove("before_action_messages");
            Value::Object(m)
        } else {
            match params.get("text") {
                Some(Value::String(t)) => text_message(t.clone()),
                Some(Value::Null) | None => {
                    return Err(ActionError::new(
                        ErrorKind::Config,
                        "`text` rendered to null: nothing to send",
                    ))
                }
                Some(other) => text_message(crate::actions::display_value(other)),
            }
        };
        cx.send(message);
        Ok(json!({"status": "ok"}))
    }
}
