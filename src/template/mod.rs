//! The `<? ... ?>` template language (spec §3).
//!
//! A JSON string may hold `<? expr ?>` segments. [`parse`] splits strings and parses
//! the JavaScript-flavoured expressions with the pest grammar in
//! `grammar/template.pest`; [`lower`] turns the tree into minijinja expression source
//! whose operators call JavaScript-semantics functions; [`eval`] holds the one shared
//! minijinja environment; `render` compiles whole JSON values once and renders them
//! many times, applying the typing rule.
//!
//! ```
//! use std::sync::Arc;
//! use transbordo::template::{Scope, Template};
//!
//! let t = Template::compile("Olá <? contact.name.toUpperCase() ?>!").unwrap();
//! let contact = Arc::new(serde_json::json!({"name": "ana"}));
//! let scope = Scope::new(vec![("contact", contact)], false);
//! let mut missing = Vec::new();
//! assert_eq!(t.render(&scope, &mut missing).unwrap(), serde_json::json!("Olá ANA!"));
//! ```

pub mod ast;
pub mod budget;
mod error;
pub mod eval;
mod fast;
pub mod lower;
pub mod parse;
mod render;

pub use budget::{Budget, Exceeded, RunLimits};
pub use error::{did_you_mean, TemplateError, TemplateErrorKind};
pub(crate) use render::{pointer, push_index, PathStep};
pub use render::{
    CompiledExpr, ExprCache, LocatedError, MissingRead, Part, Scope, TValue, Template,
};
