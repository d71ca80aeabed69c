//! [`Engine`]: the actions, the services, and the async run loop.

use std::sync::Arc;
use std::time::Instant;

use crate::template::{Budget, Exceeded, RunLimits, TemplateErrorKind};

use serde_json::{json, Map, Value};

use super::load::{self, Flow, LoadError, LoadOptions};
use super::{
    millis_since, text_message, ActionCx, Message, RunOutcome, Services, Store, TraceEntry, Warning,
};
use crate::actions::{Action, ActionError, ErrorKind, HttpGuard, Registry};
use crate::flow::Diagnostic;
use crate::providers::{Integrations, LazyClient, ProviderClient, RetryPolicy};
use crate::template::{LocatedError, MissingRead};

/// How one run behaves.
///
/// A run's budgets ([`RunLimits`]: bytes built, evaluation work, wall deadline,
/// `http_request` timeout) are [`RunOptions::limits`] when given, else the engine's
/// ([`Engine::with_limits`]; safe defaults of 16 MiB, ~250 ms of work, 30 s, 60 s).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A missing value is an error instead of a warning (`--strict`).
    pub strict: bool,
    /// Send nothing: record the requests actions would make (`transbordo render`).
    pub dry_run: bool,
    /// Keep a [`TraceEntry`] per action (rendered parameters, result, warnings, time) in
    /// [`RunOutcome::trace`]; off, the trace stays empty and a large flow's run holds
    /// only what it must.
    pub trace: bool,
    /// This run's budgets; `None`: the engine's ([`Engine::with_limits`]). Literals
    /// written as `RunOptions { strict, ..RunOptions::default() }` keep compiling as
    /// options are added.
    pub limits: Option<RunLimits>,
    /// The run's clock: business hours (`[[schedule]]`) are checked at this instant;
    /// `None`: the system clock. Dry runs fix it (`--now`) to show exactly what happens
    /// at a given time.
    pub now: Option<std::time::SystemTime>,
}

/// The interpreter: registered actions plus the services they use. Cheap to clone and
/// safe to share between tasks; one engine runs any number of flows concurrently.
#[derive(Clone)]
pub struct Engine {
    registry: Registry,
    services: Services,
    has_integrations: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// An engine with the built-in actions and no integrations.
    ///
    /// # Panics
    /// When the HTTP clients cannot be built (the TLS backend fails to initialise), as
    /// `reqwest::Client::new()` does; [`Engine::try_new`] returns that error instead.
    pub fn new() -> Engine {
        match Engine::try_new() {
            Ok(e) => e,
            Err(e) => panic!("cannot build the HTTP clients: {e}"),
        }
    }

    /// An engine with the built-in actions and no integrations, or why the HTTP clients
    /// could not be built.
    pub fn try_new() -> Result<Engine, ActionError> {
        let http = LazyClient::new(|| {
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()
        });
        Ok(Engine {
            registry: Registry::with_builtins(),
            services: Services {
                http,
                http_guard: None,
                integrations: Arc::new(Integrations::default()),
                providers: ProviderClient::new(RetryPolicy::default())?,
                journal: None,
                limits: RunLimits::default(),
            },
            has_integrations: false,
        })
    }

    /// Uses these live chat integrations (checked at load time, used at run time).
    pub fn with_integrations(mut self, integrations: Integrations) -> Engine {
        crate::redact::register_secrets(integrations.secret_values());
        self.services.integrations = Arc::new(integrations);
        self.has_integrations = true;
        self
    }

    /// Guards `http_request`: only public addresses, plus what `guard` allows (see
    /// [`crate::actions::http_guard`]).
    pub fn with_http_guard(mut self, guard: HttpGuard) -> Result<Engine, ActionError> {
        let guard = Arc::new(guard);
        let for_client = guard.clone();
        self.services.http = LazyClient::new(move || for_client.client());
        self.services.http_guard = Some(guard);
        Ok(self)
    }

    /// Every run's budgets (see [`RunLimits`]; the defaults are safe for untrusted
    /// flows). `check` refuses an `http_request` timeout literal over
    /// `limits.http_timeout_max`.
    pub fn with_limits(mut self, limits: RunLimits) -> Engine {
        self.services.limits = limits;
        self
    }

    /// Replaces the provider clients (tests shrink their retry policy this way).
    pub fn with_provider_client(mut self, client: ProviderClient) -> Engine {
        self.services.providers = client;
        self
    }

    /// Records each handoff's intent in `journal` before its first provider call.
    pub fn with_handoff_journal(
        mut self,
        journal: Arc<dyn crate::interp::HandoffJournal>,
    ) -> Engine {
        self.services.journal = Some(journal);
        self
    }

    /// Registers a host action (replacing a built-in of the same name).
    pub fn register(mut self, action: impl Action + 'static) -> Engine {
        self.registry.insert(Arc::new(action));
        self
    }

    /// Known action names.
    pub fn action_names(&self) -> Vec<&str> {
        self.registry.names()
    }

    /// The JSON Schema (draft 2020-12) of flow documents this engine accepts: every
    /// registered action, host actions included, with its parameters
    /// ([`crate::actions::Action::spec`]). For editors; [`Engine::check`] is the authority.
    pub fn json_schema(&self) -> Value {
        crate::actions::schema::flow_schema(self.registry.actions())
    }

    /// The services actions use.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Loads and compiles a flow document. `file` names it in diagnostics.
    pub fn load(&self, src: &str, file: &str) -> Result<Flow, LoadError> {
        self.load_with_sample(src, file, None)
    }

    /// Like [`Engine::load`], with a sample context document whose variables count as set.
    pub fn load_with_sample(
        &self,
        src: &str,
        file: &str,
        sample: Option<&Value>,
    ) -> Result<Flow, LoadError> {
        self.load_text(src.to_string(), file, sample)
    }

    /// Like [`Engine::load_with_sample`], taking the text by value: the flow keeps it for
    /// its diagnostics, so a large document read from a file is not held twice.
    pub fn load_text(
        &self,
        src: String,
        file: &str,
        sample: Option<&Value>,
    ) -> Result<Flow, LoadError> {
        let opts = LoadOptions {
            registry: &self.registry,
            services: &self.services,
            has_integrations: self.has_integrations,
            sample,
        };
        load::load(Arc::new(src), file, &opts)
    }

    /// Every problem in a flow document, errors and warnings (what `transbordo check` shows).
    pub fn check(&self, src: &str, file: &str, sample: Option<&Value>) -> Vec<Diagnostic> {
        match self.load_with_sample(src, file, sample) {
            Ok(f) => f.warnings,
            Err(e) => e.diagnostics,
        }
    }

    /// Runs a flow against a store, within the engine's budgets ([`Engine::with_limits`]).
    pub async fn run(&self, flow: &Flow, store: Store, opts: &RunOptions) -> RunOutcome {
        let limits = opts.limits.unwrap_or(self.services.limits);
        self.run_with_limits(flow, store, opts, limits).await
    }

    /// Runs a flow against a store within `limits`.
    ///
    /// A spent budget fails the action it happens in with kind `limit` (message naming
    /// the budget and the parameter pointer), and every later evaluation of the run
    /// fails the same way at once; in the `context`, `contact` and `output` blocks it
    /// is a warning, as other failures there are.
    pub async fn run_with_limits(
        &self,
        flow: &Flow,
        store: Store,
        opts: &RunOptions,
        limits: RunLimits,
    ) -> RunOutcome {
        let budget = Budget::new(limits);
        let mut pacer = Pacer::new();
        let mut r = Run {
            store,
            messages: Vec::new(),
            requests: Vec::new(),
            warnings: Vec::new(),
            trace: Vec::new(),
            handoff: None,
        };
        let node = &flow.node;
        for (block, vars) in [("context", &node.context), ("contact", &node.contact)] {
            for (key, tv, ptr) in vars {
                pacer.pace().await;
                let scope = r.store.scope(opts.strict).with_budget(budget.clone());
                let mut missing = Vec::new();
                let rendered = tv.render(&scope, &mut missing);
                drop(scope);
                r.note_missing(None, ptr, missing);
                match rendered {
                    Ok(v) if block == "context" => r.store.set_context(key, v),
                    Ok(v) => r.store.set_contact(key, v),
                    Err(e) => r.warn(
                        None,
                        &format!("{ptr}{}", e.pointer),
                        format!("not set: {}", e.error.message),
                    ),
                }
            }
        }
        let conversation_id = r.store.conversation_id().unwrap_or("local").to_string();
        for a in &node.actions {
            pacer.pace().await;
            let started = Instant::now();
            let mut action_warnings = Vec::new();
            let scope = r.store.scope(opts.strict).with_budget(budget.clone());
            let mut missing = Vec::new();
            let rendered = a.params.render(&scope, &mut missing);
            drop(scope);
            for (p, m) in &missing {
                let msg = missing_message(m);
                action_warnings.push(msg.clone());
                r.warn(Some(a.index), &format!("{}/parameters{p}", a.pointer), msg);
            }
            let (params_json, result) = match rendered {
                Err(e) => (Value::Null, template_failure(&a.pointer, e, &budget)),
                Ok(Value::Object(params)) => {
                    r.send_before_messages(a.index, &params);
                    let mut extra = Vec::new();
                    let res = {
                        let mut cx = ActionCx {
                            index: a.index,
                            name: &a.name,
                            dry_run: opts.dry_run,
                            store: &mut r.store,
                            services: &self.services,
                            messages: &mut r.messages,
                            warnings: &mut extra,
                            requests: &mut r.requests,
                            handoff: &mut r.handoff,
                            conversation_id: &conversation_id,
                            limits,
                            now: opts.now,
                        };
                        // The run's deadline bounds every action, provider calls included.
                        match tokio::time::timeout_at(
                            budget.deadline().into(),
                            a.action.run(&params, &mut cx),
                        )
                        .await
                        {
                            Ok(res) => res,
                            Err(_) => {
                                budget.spend(Exceeded::Deadline);
                                Err(budget_failure(&budget, Exceeded::Deadline, &a.pointer))
                            }
                        }
                    };
                    for w in extra {
                        r.warn(Some(a.index), &a.pointer, w.clone());
                        action_warnings.push(w);
                    }
                    let mut result = res.unwrap_or_else(|e| e.to_result());
                    // An action's result is a value the run keeps: charged like one.
                    let size = crate::template::eval::json_mem_size(&result, budget.bytes_left());
                    if budget.exceeded().is_none() && !budget.charge_bytes(size) {
                        result = budget_failure(&budget, Exceeded::Bytes, &a.pointer).to_result();
                    }
                    let shown = if opts.trace {
                        crate::redact::json(&Value::Object(params))
                    } else {
                        Value::Null
                    };
                    (shown, result)
                }
                Ok(_) => (
                    Value::Null,
                    ActionError::new(ErrorKind::Config, "parameters must be an object").to_result(),
                ),
            };
            if let Some(e) = failure_of(&result) {
                let msg = format!("{} failed: {e}", a.name);
                action_warnings.push(msg.clone());
                r.warn(Some(a.index), &a.pointer, msg);
            }
            if let Some(var) = &a.result_variable {
                r.store.set_context(var, result.clone());
            }
            if opts.trace {
                r.trace.push(TraceEntry {
                    index: a.index,
                    name: a.name.clone(),
                    parameters: params_json,
                    // Every reader of a trace (documents, playground, timeline) sees it
                    // redacted; the context keeps the real result for later templates.
                    result: crate::redact::json(&result),
                    warnings: action_warnings,
                    duration_ms: millis_since(started),
                });
            }
        }
        for (tv, ptr) in &node.output {
            pacer.pace().await;
            let scope = r.store.scope(opts.strict).with_budget(budget.clone());
            let mut missing = Vec::new();
            let rendered = tv.render(&scope, &mut missing);
            drop(scope);
            r.note_missing(None, ptr, missing);
            match rendered {
                Ok(v) => r.messages.push(Message {
                    action_index: None,
                    source: "output".into(),
                    message: v,
                }),
                Err(e) => r.warn(
                    None,
                    &format!("{ptr}{}", e.pointer),
                    format!("output item not sent: {}", e.error.message),
                ),
            }
        }
        RunOutcome {
            messages: r.messages,
            requests: r.requests,
            context: r.store.context().clone(),
            contact: r.store.contact().clone(),
            warnings: r.warnings,
            trace: r.trace,
            handoff: r.handoff,
            store: r.store,
        }
    }
}

/// `kind: message` of a failed result, in either result shape (Zendesk nests it
/// under `response`).
fn failure_of(result: &Value) -> Option<String> {
    let r = result
        .get("response")
        .filter(|r| r.is_object())
        .unwrap_or(result);
    if r.get("status").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let e = r.get("error")?;
    Some(format!(
        "{}: {}",
        e.get("kind").and_then(Value::as_str).unwrap_or("error"),
        e.get("message").and_then(Value::as_str).unwrap_or("")
    ))
}

fn missing_message(m: &MissingRead) -> String {
    if m.path == m.expression.trim() {
        format!("`{}` is undefined", m.path)
    } else {
        format!("`{}` is undefined (in `{}`)", m.path, m.expression.trim())
    }
}

/// A spent budget as an action's error: kind `limit`, naming the budget and where.
fn budget_failure(budget: &Budget, e: Exceeded, pointer: &str) -> ActionError {
    ActionError::new(
        ErrorKind::Limit,
        format!("{} at {pointer}", budget.message(e)),
    )
}

/// A parameter template that failed at run time: the action does not run. A spent run
/// budget is kind `limit`, its message naming the budget and the parameter pointer.
fn template_failure(action_pointer: &str, e: LocatedError, budget: &Budget) -> Value {
    let pointer = format!("{action_pointer}/parameters{}", e.pointer);
    if let (TemplateErrorKind::Limit, Some(spent)) = (e.error.kind, budget.exceeded()) {
        let mut obj = budget_failure(budget, spent, &pointer).to_error_object();
        if let Some(m) = obj.as_object_mut() {
            m.insert("pointer".into(), json!(pointer));
        }
        return json!({"status": "error", "error": obj});
    }
    // A per-expression bound (fuel, string size, nesting) is a limit too, as the error
    // kinds of the spec say.
    let kind = if e.error.kind == TemplateErrorKind::Limit {
        ErrorKind::Limit
    } else {
        ErrorKind::Template
    };
    let mut obj = ActionError::new(kind, e.error.message.clone()).to_error_object();
    if let Some(m) = obj.as_object_mut() {
        m.insert("pointer".into(), json!(pointer));
    }
    json!({"status": "error", "error": obj})
}

/// Evaluation is synchronous: a run that evaluates for long yields to the scheduler
/// between steps, so the other tasks of its worker thread (a service's `/healthz`, other
/// conversations) are not held up behind it.
struct Pacer {
    since: Instant,
}

impl Pacer {
    /// Longest stretch of evaluation between yields.
    const SLICE: std::time::Duration = std::time::Duration::from_millis(10);

    fn new() -> Pacer {
        Pacer {
            since: Instant::now(),
        }
    }

    async fn pace(&mut self) {
        if self.since.elapsed() >= Self::SLICE {
            tokio::task::yield_now().await;
            self.since = Instant::now();
        }
    }
}

struct Run {
    store: Store,
    messages: Vec<Message>,
    requests: Vec<super::RecordedRequest>,
    warnings: Vec<Warning>,
    trace: Vec<TraceEntry>,
    handoff: Option<crate::providers::Handoff>,
}

impl Run {
    fn warn(&mut self, action_index: Option<usize>, pointer: &str, message: String) {
        self.warnings.push(Warning {
            action_index,
            pointer: pointer.to_string(),
            message,
        });
    }

    fn note_missing(
        &mut self,
        action_index: Option<usize>,
        base: &str,
        missing: Vec<(String, MissingRead)>,
    ) {
        for (p, m) in missing {
            self.warn(action_index, &format!("{base}{p}"), missing_message(&m));
        }
    }

    fn send_before_messages(&mut self, index: usize, params: &Map<String, Value>) {
        let Some(Value::Array(items)) = params.get("before_action_messages") else {
            return;
        };
        for it in items {
            let message = match it {
                Value::String(s) => text_message(s.clone()),
                Value::Object(_) => it.clone(),
                Value::Null => continue,
                other => text_message(super::display_value(other)),
            };
            self.messages.push(Message {
                action_index: Some(index),
                source: "before_action_messages".into(),
                message,
            });
        }
    }
}
