//! # transbordo
//!
//! The engine behind chatbot-to-human handoff ("transbordo"): flow authors write
//! **action JSON** whose strings hold `<? ... ?>` template expressions; transbordo loads
//! and validates it (with exact positions), evaluates the templates against the
//! contact/context store, runs the actions in order and, for `start_live_chat`, opens a
//! conversation on LivePerson, a ticket on Zendesk, or a conversation on an agent
//! platform through the ALTU SDK connector.
//!
//! Modules, one per concern:
//! - [`template`]: the `<? ... ?>` language (pest grammar, lowering to minijinja, typing rule);
//! - [`flow`]: loading a flow document with positions, validation, diagnostics;
//! - [`interp`]: the async interpreter loop, the store, the run outcome;
//! - [`actions`]: built-in actions and the trait hosts implement for their own;
//! - [`providers`]: integrations, provider request builders and HTTP clients.
#![deny(missing_docs)]

pub mod actions;
pub mod flow;
pub mod interp;
pub mod providers;
pub mod template;

#[cfg(feature = "cli")]
pub mod cli;

pub use flow::{Diagnostic, Flow, LoadError, Severity};
pub use interp::{Engine, RunOptions, RunOutcome, Store};
#[cfg(feature = "cli")]
pub mod sandbox;
