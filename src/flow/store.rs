//! The store an expression sees (spec §2): `contact`, `context`, `input` and the
//! turn's NLU results, as JSON with key order preserved.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::template::ast::Root;
use crate::template::Scope;

/// Why a context document (the CTX file) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// JSON pointer of the offending value.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// The data a run reads and writes. Roots are shared with template scopes (`Arc`), and
/// copied on write only while a scope still holds them.
#[derive(Debug, Clone)]
pub struct Store {
    roots: [Arc<Value>; 8],
    conversation_id: Option<String>,
}

const CONTACT: usize = 0;
const CONTEXT: usize = 1;
/// The roots, in `Root::ALL` order: the template language and the store share one list.
const NAMES: [&str; 8] = {
    let mut out = [""; 8];
    let mut i = 0;
    while i < 8 {
        out[i] = Root::ALL[i].name();
        i += 1;
    }
    out
};

/// Besides the roots, a context document may name the builder's conversation.
const CONVERSATION_ID: &str = "conversation_id";

/// The keys a context document may have; anything else is refused so typos surface.
pub fn store_keys() -> impl Iterator<Item = &'static str> {
    NAMES.into_iter().chain(std::iter::once(CONVERSATION_ID))
}

impl Default for Store {
    fn default() -> Self {
        Store {
            roots: [
                Arc::new(Value::Object(Map::new())),
                Arc::new(Value::Object(Map::new())),
                Arc::new(Value::Object(Map::new())),
                Arc::new(Value::Null),
                Arc::new(Value::Array(Vec::new())),
                Arc::new(Value::Null),
                Arc::new(Value::Null),
                Arc::new(Value::Array(Vec::new())),
            ],
            conversation_id: None,
        }
    }
}

impl Store {
    /// Builds a store from a context document
    /// `{"contact":{},"context":{},"input":{},"intent":…,"entities":[…]}` (every key optional).
    pub fn from_json(doc: &Value) -> Result<Store, StoreError> {
        let obj = doc.as_object().ok_or_else(|| StoreError {
            pointer: String::new(),
            message:
                "a context document must be a JSON object like {\"contact\":{},\"context\":{}}"
                    .into(),
        })?;
        let mut s = Store::default();
        for (k, v) in obj {
            let Some(i) = NAMES.iter().position(|n| n == k) else {
                if k == CONVERSATION_ID {
                    s.conversation_id = match v {
                        Value::String(c) => Some(c.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => {
                            return Err(StoreError {
                                pointer: "/conversation_id".into(),
                                message: "`conversation_id` must be a string".into(),
                            })
                        }
                    };
                    continue;
                }
                let hint = crate::template::did_you_mean(k, store_keys())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(StoreError {
                    pointer: format!("/{k}"),
                    message: format!(
                        "unknown key `{k}`{hint}; a context document has {}",
                        store_keys().collect::<Vec<_>>().join(", ")
                    ),
                });
            };
            let ok = match k.as_str() {
                "contact" | "context" => v.is_object(),
                "input" => v.is_object() || v.is_null(),
                "intents" | "entities" => v.is_array(),
                _ => true,
            };
            if !ok {
                let want = if matches!(k.as_str(), "intents" | "entities") {
                    "an array"
                } else {
                    "an object"
                };
                return Err(StoreError {
                    pointer: format!("/{k}"),
                    message: format!("`{k}` must be {want}"),
                });
            }
            s.roots[i] = Arc::new(v.clone());
        }
        Ok(s)
    }

    /// A template scope over the store as it is now.
    pub fn scope(&self, strict: bool) -> Scope {
        Scope::new(
            NAMES
                .iter()
                .zip(self.roots.iter())
                .map(|(n, r)| (*n, r.clone()))
                .collect(),
            strict,
        )
    }

    fn object_mut(&mut self, i: usize) -> &mut Map<String, Value> {
        let v = Arc::make_mut(&mut self.roots[i]);
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        match v {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    /// Writes `context[key]`.
    pub fn set_context(&mut self, key: &str, value: Value) {
        self.object_mut(CONTEXT).insert(key.to_string(), value);
    }

    /// Writes `contact[key]`.
    pub fn set_contact(&mut self, key: &str, value: Value) {
        self.object_mut(CONTACT).insert(key.to_string(), value);
    }

    /// Replaces `input` (the lifecycle sets `{"live_chat":{"status":…}}` here).
    pub fn set_input(&mut self, value: Value) {
        self.roots[2] = Arc::new(value);
    }

    /// The contact record.
    pub fn contact(&self) -> &Value {
        &self.roots[CONTACT]
    }

    /// The session variables.
    pub fn context(&self) -> &Value {
        &self.roots[CONTEXT]
    }

    /// The builder's conversation id, when the context document named one.
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation_id.as_deref()
    }

    /// Sets the builder's conversation id.
    pub fn set_conversation_id(&mut self, id: impl Into<String>) {
        self.conversation_id = Some(id.into());
    }

    /// The whole store as a context document.
    pub fn to_json(&self) -> Value {
        let mut m: Map<String, Value> = NAMES
            .iter()
            .zip(self.roots.iter())
            .map(|(n, r)| (n.to_string(), (**r).clone()))
            .collect();
        if let Some(c) = &self.conversation_id {
            m.insert(CONVERSATION_ID.into(), Value::String(c.clone()));
        }
        Value::Object(m)
    }
}
