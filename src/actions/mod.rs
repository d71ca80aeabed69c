//! Built-in actions, the result/error model every action shares, and the
//! [`Action`] trait through which a host registers its own.
//!
//! An action is checked when the flow loads ([`Action::check`], on the parameters as
//! written) and run with its parameters rendered ([`Action::run`]).

mod builtin;
mod cx;
pub mod http_guard;
mod http_request;
pub mod schema;
mod start_live_chat;

use std::sync::Arc;

use async_trait::async_trait;
use indexmap::IndexMap;
use serde_json::{Map, Value};

pub use crate::flow::spec::{self, ActionSpec, ParamSpec, ParamType};
pub use crate::providers::{ActionError, ErrorKind};
pub use builtin::{SendMessage, SetVariables};
pub(crate) use cx::{display_value, text_message};
pub use cx::{ActionCx, HandoffJournal, HandoffStart, Message, RecordedRequest, Services};
pub use http_guard::HttpGuard;
pub use http_request::{redact_headers, HttpRequest};
pub use start_live_chat::StartLiveChat;

use crate::flow::Severity;

/// A problem an action finds in its parameters at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamProblem {
    /// JSON pointer relative to `parameters` (`/config/url`), or `""` for the whole object.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// Error or warning.
    pub severity: Severity,
}

impl ParamProblem {
    /// An error at `pointer`.
    pub fn error(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ParamProblem {
            pointer: pointer.into(),
            message: message.into(),
            help: None,
            severity: Severity::Error,
        }
    }

    /// A warning at `pointer`.
    pub fn warning(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ParamProblem {
            pointer: pointer.into(),
            message: message.into(),
            help: None,
            severity: Severity::Warning,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// What an action may consult while checking: the services (integrations) it runs with.
pub struct CheckCx<'a> {
    /// The engine's services; `services.integrations` is empty when no file was given.
    pub services: &'a Services,
    /// Whether an integrations file was supplied (unknown ids are only errors then).
    pub has_integrations: bool,
}

/// Does this JSON value contain a template (so its type is only known at run time)?
pub fn is_templated(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("<?"),
        Value::Array(a) => a.iter().any(is_templated),
        Value::Object(m) => m.values().any(is_templated),
        _ => false,
    }
}

/// An action a flow can name. Built-ins implement it too.
///
/// ```
/// use async_trait::async_trait;
/// use serde_json::{json, Map, Value};
/// use transbordo::actions::{Action, ActionError};
/// use transbordo::interp::ActionCx;
///
/// /// The builder's serverless functions, exposed to flows as `call_function`.
/// struct CallFunction;
///
/// #[async_trait]
/// impl Action for CallFunction {
///     fn name(&self) -> &str { "call_function" }
///     async fn run(&self, params: &Map<String, Value>, _cx: &mut ActionCx<'_>) -> Result<Value, ActionError> {
///         Ok(json!({"status": "ok", "echo": params.get("name")}))
///     }
/// }
/// let engine = transbordo::Engine::new().register(CallFunction);
/// assert!(engine.action_names().contains(&"call_function"));
/// ```
#[async_trait]
pub trait Action: Send + Sync {
    /// The name flows use in `"name"`.
    fn name(&self) -> &str;

    /// Parameters this action requires (checked at load time before anything runs).
    fn required(&self) -> &[&str] {
        &[]
    }

    /// Its parameters as data, for the JSON Schema of flows (`Engine::json_schema`) and
    /// editors. The default documents only [`Action::required`] and allows anything else.
    fn spec(&self) -> ActionSpec {
        ActionSpec::open("", self.required())
    }

    /// Further load-time checks on the parameters as written (templates unrendered;
    /// use [`is_templated`] to skip type checks on templated values).
    fn check(&self, params: &Map<String, Value>, cx: &CheckCx<'_>) -> Vec<ParamProblem> {
        let _ = (params, cx);
        Vec::new()
    }

    /// Runs with rendered parameters. The returned value is written to
    /// `context[result_variable]`; an `Err` becomes `{"status":"error","error":{…}}`.
    async fn run(
        &self,
        params: &Map<String, Value>,
        cx: &mut ActionCx<'_>,
    ) -> Result<Value, ActionError>;
}

/// The actions an engine knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    /// foldhash: every action of a loading flow looks its name up here.
    actions: IndexMap<String, Arc<dyn Action>, foldhash::fast::RandomState>,
}

impl Registry {
    /// The four built-ins: `start_live_chat`, `http_request`, `set_variables`, `send_message`.
    pub fn with_builtins() -> Registry {
        let mut r = Registry::default();
        r.insert(Arc::new(StartLiveChat));
        r.insert(Arc::new(HttpRequest));
        r.insert(Arc::new(SetVariables));
        r.insert(Arc::new(SendMessage));
        r
    }

    /// Adds (or replaces) an action.
    pub fn insert(&mut self, a: Arc<dyn Action>) {
        self.actions.insert(a.name().to_string(), a);
    }

    /// Looks an action up.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Action>> {
        self.actions.get(name)
    }

    /// Every action, in registration order.
    pub fn actions(&self) -> impl Iterator<Item = &Arc<dyn Action>> {
        self.actions.values()
    }

    /// Every known name, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.actions.keys().map(String::as_str).collect()
    }
}
