//! `transbordo intents`: the handoffs cut by a crash that the reconcile has not settled
//! (docs/operations.md, "Interrupted handoffs").

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::output::{emit_json, line, JsonStyle};
use crate::service::ServiceConfig;

/// `transbordo intents` arguments.
#[derive(Debug, clap::Args)]
pub struct IntentsArgs {
    /// The service config whose `database` to read.
    #[arg(long)]
    pub config: PathBuf,
    /// List every pending intent (in flight or being reconciled), not only the unresolved.
    #[arg(long)]
    pub all: bool,
    /// Print a JSON array instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Forget this intent (after closing its provider conversation by hand).
    #[arg(long, value_name = "HANDOFF_ID")]
    pub forget: Option<String>,
}

fn ms_text(ms: i64) -> String {
    crate::sandbox::util::rfc3339((ms.max(0) / 1000) as u64)
}

/// Lists unresolved intents (exit 0, also when there are none); 1 on a config or
/// database error, or when `--forget` names no intent.
pub async fn run(args: IntentsArgs) -> ExitCode {
    let config = match ServiceConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let store = match config.database.open_with(config.database_connections).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let intents = match store.intents().await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(id) = &args.forget {
        if !intents.iter().any(|i| &i.handoff_id == id) {
            eprintln!("error: no pending handoff intent `{id}`");
            return ExitCode::from(1);
        }
        return match store.intent_drop(id).await {
            Ok(()) => {
                line(format_args!("forgot handoff intent {id}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let shown: Vec<_> = intents
        .into_iter()
        .filter(|i| args.all || i.unresolved_at.is_some())
        .collect();
    if args.json {
        let doc: Vec<_> = shown
            .iter()
            .map(|i| {
                json!({
                    "handoff_id": i.handoff_id,
                    "conversation_id": i.conversation_id,
                    "provider": i.provider,
                    "integration_id": i.integration_id,
                    "consumer": i.consumer_key,
                    "lp_consumer_id": i.lp_consumer_id,
                    "started_at_ms": i.created_at,
                    "unresolved_at_ms": i.unresolved_at,
                    "note": i.note,
                })
            })
            .collect();
        return emit_json(&doc, JsonStyle::Pretty);
    }
    if shown.is_empty() {
        line(format_args!(
            "no {} handoff intents",
            if args.all { "pending" } else { "unresolved" }
        ));
        return ExitCode::SUCCESS;
    }
    for i in &shown {
        line(format_args!(
            "{} provider={} integration={} consumer={} lp_consumer_id={} conversation={} started={} unresolved={} note={}",
            i.handoff_id,
            i.provider,
            i.integration_id,
            i.consumer_key.as_deref().unwrap_or("-"),
            i.lp_consumer_id.as_deref().unwrap_or("-"),
            i.conversation_id,
            ms_text(i.created_at),
            i.unresolved_at.map(ms_text).unwrap_or_else(|| "-".into()),
            i.note.as_deref().unwrap_or("-"),
        ));
    }
    ExitCode::SUCCESS
}
