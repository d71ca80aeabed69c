//! Loading flow documents with positions, validation and diagnostics.
//!
//! A flow is JSON in one of two shapes (spec §1): an actions array, or a node
//! `{"context","contact","actions","output"}`. [`load`] parses it with byte positions
//! ([`json`]), compiles every template once, and checks everything that can be known
//! before anything runs; every problem is a [`Diagnostic`] with line:column, JSON pointer
//! and, for templates, the column inside the string.

mod context;
mod diagnostic;
pub mod json;
mod load;
mod render;
pub mod spec;
mod store;

pub use context::{parse_context, ContextError};
pub use diagnostic::{Diagnostic, DiagnosticReport, Severity};
pub use load::{load, Flow, LoadError, LoadOptions};
pub use render::render_diagnostics;
pub use store::{store_keys, Store, StoreError};
