//! # transbordo
//!
//! The engine behind chatbot-to-human handoff ("transbordo"): flow authors write
//! **action JSON** whose strings hold `<? ... ?>` template expressions; transbordo loads
//! and validates it (with exact positions), evaluates the templates against the
//! contact/context store, runs the actions in order and, for `start_live_chat`, opens a
//! conversation on LivePerson, a ticket on Zendesk, or a conversation on an agent
//! platform through the ALTU SDK connector.
//!
//! Modules, one per concern, in floor order: each uses only the floors listed before it
//! (`python3 scripts/check-floors.py --floors
//! redact,template,flow,providers,actions,interp,authoring,service,sandbox,playground,cli`
//! checks it, in CI):
//! - [`redact`]: the one redaction policy every output applies (uses nothing else);
//! - [`template`]: the `<? ... ?>` language (pest grammar, lowering to minijinja, typing rule);
//! - [`flow`]: flow documents with positions, diagnostics, parameter tables, the store;
//! - [`providers`]: integrations, request builders, HTTP clients, webhook checks and events;
//! - [`actions`]: the trait hosts implement, what a running action sees, the built-ins;
//! - [`interp`]: loading and validating a flow, the async run loop, the run outcome;
//! - [`authoring`]: flow tests and their JSON Schema, for flow authors;
//! - `service`, `sandbox`, `playground`, `cli`, each behind the Cargo feature of the same
//!   name (all on by default): the lifecycle service, the provider fakes, the page in the
//!   browser, the command. `service` and `sandbox` do not use each other.
//!
//! ## Embedding
//!
//! Build one [`Engine`] (built-in actions, your own actions, integrations), load each
//! flow once (templates are compiled at load), and run it per turn with the store of
//! that conversation:
//!
//! ```
//! use async_trait::async_trait;
//! use serde_json::{json, Map, Value};
//! use transbordo::actions::{Action, ActionError};
//! use transbordo::interp::ActionCx;
//! use transbordo::{Engine, RunOptions, Store};
//!
//! /// A host action: the builder's serverless functions.
//! struct CallFunction;
//!
//! #[async_trait]
//! impl Action for CallFunction {
//!     fn name(&self) -> &str { "call_function" }
//!     fn required(&self) -> &[&str] { &["function"] }
//!     async fn run(&self, params: &Map<String, Value>, _cx: &mut ActionCx<'_>) -> Result<Value, ActionError> {
//!         Ok(json!({"status": "ok", "value": format!("ran {}", params["function"])}))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let engine = Engine::new().register(CallFunction);
//! let flow = engine.load(r#"{
//!     "context": {"tries": "<? ($tries ?? 0) + 1 ?>"},
//!     "actions": [
//!         {"name": "call_function", "parameters": {"function": "<? contact.name | lower ?>"},
//!          "result_variable": "fn"},
//!         {"name": "send_message", "parameters": {"text": "<? $fn.value ?> (try <? $tries ?>)"}}
//!     ]
//! }"#, "node.json").expect("the flow is valid");
//!
//! let store = Store::from_json(&json!({"contact": {"name": "ANA"}})).unwrap();
//! let outcome = engine.run(&flow, store, &RunOptions::default()).await;
//! assert_eq!(outcome.messages[0].message, json!({"type": "text", "text": "ran \"ana\" (try 1)"}));
//! assert_eq!(outcome.context["tries"], json!(1));
//! assert!(outcome.handoff.is_none());
//! // `outcome.store` is the store for the next turn.
//! # });
//! ```
//!
//! A flow that cannot be loaded returns every problem with its position:
//!
//! ```
//! let err = transbordo::Engine::new()
//!     .load(r#"[{"name": "send_mesage", "parameters": {}}]"#, "flow.json")
//!     .unwrap_err();
//! let d = &err.diagnostics[0];
//! assert_eq!((d.line, d.column, d.pointer.as_str()), (1, 11, "/0/name"));
//! assert_eq!(d.message, "unknown action `send_mesage`");
//! ```
#![deny(missing_docs)]

pub mod actions;
pub mod authoring;
pub mod flow;
pub mod interp;
pub mod providers;
pub mod redact;
pub mod template;

#[cfg(feature = "cli")]
pub mod cli;

pub use flow::{Diagnostic, Severity};
pub use interp::{Engine, Flow, LoadError, RunLimits, RunOptions, RunOutcome, Store};
#[cfg(feature = "playground")]
pub mod playground;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "service")]
pub mod service;
