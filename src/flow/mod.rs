//! Flow documents and what describes them, below everything that runs them: JSON with
//! byte positions ([`json`]), diagnostics with line:column and JSON pointer
//! ([`Diagnostic`], rendered by [`render_diagnostics`]), the parameter tables actions
//! and providers declare ([`spec`]), the contact/context [`Store`] and the context
//! document that fills it ([`parse_context`]). Loading a flow (which needs the actions)
//! is `interp::load`.

mod context;
mod diagnostic;
pub mod json;
mod render;
pub mod spec;
mod store;

pub use context::{parse_context, ContextError};
pub use diagnostic::{Diagnostic, DiagnosticReport, Severity};
pub use render::render_diagnostics;
pub use store::{store_keys, Store, StoreError};
