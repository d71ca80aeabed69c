//! `transbordo schema`: the JSON Schema of flow documents (or of flow test files) for
//! editors. `schemas/flow.schema.json` and `schemas/flow-test.schema.json` are its output.

use std::process::ExitCode;

use crate::authoring::schema;
use crate::interp::Engine;

/// Which schema `transbordo schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// Flow documents (both shapes), with every built-in action.
    Flow,
    /// Flow test files (`*.test.json`).
    Test,
}

/// Arguments of `transbordo schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// `flow` (default) or `test`.
    #[arg(long = "for", value_enum, default_value = "flow")]
    kind: SchemaKind,
}

/// The schema's text, as committed under `schemas/`: pretty JSON and a final newline.
pub fn schema_text(kind: SchemaKind) -> String {
    let v = match kind {
        SchemaKind::Flow => Engine::new().json_schema(),
        SchemaKind::Test => schema::flow_test_schema(),
    };
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Prints the schema.
pub fn run(args: SchemaArgs) -> ExitCode {
    let text = schema_text(args.kind);
    super::output::emit(|w| w.write_all(text.as_bytes()))
}
