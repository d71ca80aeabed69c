//! The command-line interface: `check`, `render`, `run`, `sandbox`, `serve`, `migrate`,
//! `playground`.
//!
//! Exit codes: 0 success; 1 a flow, context or integrations file that cannot be loaded
//! (or, for `check`, any error found); 2 usage errors (clap). An action that fails at
//! run time is a result in the output, not an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

mod logging;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

pub mod intents;
pub mod output;
pub mod playground;
pub mod sandbox;
pub mod serve;

pub use crate::flow::{parse_context, render_diagnostics, ContextError};
use crate::flow::{Diagnostic, Severity};
use crate::interp::{Engine, RunOptions, Store};
use crate::providers::Integrations;
use output::{emit, emit_json, write_json, JsonStyle};

pub mod schema;
pub mod test;

/// transbordo: validate, dry-run and run chatbot handoff flows.
#[derive(Debug, Parser)]
#[command(name = "transbordo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log to stderr: -v info, -vv debug, -vvv trace (`TRANSBORDO_LOG` overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log line format (default: pretty on a terminal, JSON otherwise).
    #[arg(long, value_enum, global = true)]
    log_format: Option<logging::LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

/// What `render` and `run` take: the same inputs, dry or for real.
#[derive(Debug, clap::Args)]
struct Execute {
    /// The flow file.
    flow: PathBuf,
    /// Context document `{"contact","context","input","intent","entities"}`.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Integrations TOML (`render` needs it to show `start_live_chat` requests).
    #[arg(long)]
    integrations: Option<PathBuf>,
    /// A missing value is an error instead of a warning.
    #[arg(long)]
    strict: bool,
    /// Add the per-action trace (rendered parameters, result, warnings, duration).
    #[arg(long)]
    trace: bool,
    /// Guard `http_request` as the service does: refuse loopback, private and link-local
    /// addresses (after DNS resolution) except these hosts / networks (repeatable).
    #[arg(long, value_name = "HOST|CIDR")]
    http_allow: Vec<String>,
    /// Guard `http_request` with no exceptions (same as `--http-allow` with nothing allowed).
    #[arg(long)]
    http_guard: bool,
    /// Print the document on one line (smaller and faster for large flows).
    #[arg(long)]
    compact: bool,
    /// The run's budget of bytes built by templates and actions (default 16 MiB; a very
    /// large flow may need more). Exceeded: the action fails with kind `limit`.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// The run's budget of evaluation work (default 134217728 units, ~250 ms of CPU).
    #[arg(long, value_name = "UNITS")]
    max_work: Option<u64>,
    /// The run's wall deadline in milliseconds (default 30000).
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    /// The run's clock, RFC 3339 (`2026-12-23T12:30:00-03:00`): business hours are
    /// checked at this instant instead of the system clock's.
    #[arg(long, value_name = "RFC3339", value_parser = crate::providers::schedule::parse_instant)]
    now: Option<std::time::SystemTime>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate flows: every problem with file, line:column and JSON pointer.
    Check {
        /// Flow files (actions array or node).
        #[arg(required = true)]
        flows: Vec<PathBuf>,
        /// A sample context document; its variables count as set.
        #[arg(long)]
        context: Option<PathBuf>,
        /// Integrations TOML: unknown ids and unsupported parameters become problems.
        #[arg(long)]
        integrations: Option<PathBuf>,
        /// `human` (miette) or `json` (an array of problems).
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Dry run: render the flow and print every request it would send; sends nothing.
    Render(Execute),
    /// Run the flow for real: HTTP requests and handoffs are sent.
    Run(Execute),
    /// Local fakes of LivePerson, Zendesk and an agent platform; play the agent.
    Sandbox(Box<sandbox::SandboxArgs>),
    /// The live chat lifecycle service: runs flows, relays, webhooks, timeouts, re-entry.
    Serve(serve::ServeArgs),
    /// Apply the lifecycle service's database migrations (SQLite or PostgreSQL) and exit.
    Migrate(serve::MigrateArgs),
    /// List the handoffs cut by a crash that the reconcile could not settle (`--all`:
    /// every pending one); `--forget ID` once closed by hand.
    Intents(intents::IntentsArgs),
    /// Run flow tests (`*.test.json`, `*.test.toml`): dry runs checked against expectations.
    Test(test::TestArgs),
    /// Print the JSON Schema of flow documents (or `--for test`: of flow test files).
    Schema(schema::SchemaArgs),
    /// A page in the browser: edit a flow, see its requests, run it and play the agent.
    Playground(playground::PlaygroundArgs),
}

/// Parses the command line and runs it.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli).await
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let base = matches!(cli.command, Command::Serve(_)).then_some("info");
    logging::init(cli.log_format, cli.verbose, base);
    match cli.command {
        Command::Check {
            flows,
            context,
            integrations,
            format,
        } => check(&flows, context.as_deref(), integrations.as_deref(), format),
        Command::Render(args) => execute(args, true).await,
        Command::Run(args) => execute(args, false).await,
        Command::Sandbox(args) => sandbox::run_cli(*args).await,
        Command::Serve(args) => serve::run_cli(args).await,
        Command::Migrate(args) => serve::migrate_cli(args).await,
        Command::Intents(args) => intents::run(args).await,
        Command::Test(args) => test::run(args).await,
        Command::Schema(args) => schema::run(args),
        Command::Playground(args) => playground::run_cli(args).await,
    }
}

/// A file that could not be used, already rendered for the terminal.
struct Failure(String);

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure(format!("error: cannot read {}: {e}", path.display())))
}

/// Renders diagnostics the way a person reads them (miette, no colour when not a TTY).
pub fn render_human(diags: &[Diagnostic], source: &Arc<String>) -> String {
    let colour = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    render_diagnostics(diags, source, colour)
}

fn load_context(path: Option<&Path>) -> Result<(Store, Option<Value>), Failure> {
    let Some(path) = path else {
        return Ok((Store::default(), None));
    };
    let text = read(path)?;
    let name = path.display().to_string();
    let (store, value) = parse_context(&text)
        .map_err(|e| Failure(format!("error: {name}:{}:{}: {e}", e.line, e.column)))?;
    Ok((store, Some(value)))
}

fn load_integrations(path: Option<&Path>) -> Result<Option<Integrations>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let text = read(path)?;
    Integrations::from_toml_str(&text, &path.display().to_string())
        .map(Some)
        .map_err(|e| {
            use miette::{GraphicalReportHandler, GraphicalTheme};
            let mut out = String::new();
            let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
                .with_width(100);
            if handler.render_report(&mut out, &e).is_err() {
                out = e.to_string();
            }
            Failure(out)
        })
}

fn engine_for(integrations: Option<Integrations>) -> Engine {
    match integrations {
        Some(i) => Engine::new().with_integrations(i),
        None => Engine::new(),
    }
}

fn check(
    flows: &[PathBuf],
    context: Option<&Path>,
    integrations: Option<&Path>,
    format: Format,
) -> ExitCode {
    let prepared = load_context(context)
        .and_then(|(_, sample)| Ok((sample, load_integrations(integrations)?)));
    let (sample, integrations) = match prepared {
        Ok(x) => x,
        Err(Failure(msg)) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let engine = engine_for(integrations);
    let mut all: Vec<Diagnostic> = Vec::new();
    let mut human = String::new();
    for (i, f) in flows.iter().enumerate() {
        let name = f.display().to_string();
        let text = match read(f) {
            Ok(t) => t,
            Err(Failure(msg)) => {
                all.push(Diagnostic {
                    severity: Severity::Error,
                    code: "io::read",
                    message: msg.trim_start_matches("error: ").to_string(),
                    help: None,
                    file: name,
                    line: 0,
                    column: 0,
                    pointer: String::new(),
                    string_column: None,
                    span: (0, 0),
                });
                continue;
            }
        };
        let (diags, source) = match engine.load_text(text, &name, sample.as_ref()) {
            Ok(mut flow) => {
                let warnings = std::mem::take(&mut flow.warnings);
                let source = flow.source.clone();
                release(flow, i + 1 == flows.len());
                (warnings, source)
            }
            Err(e) => (e.diagnostics, e.source_text),
        };
        human.push_str(&render_human(&diags, &source));
        all.extend(diags);
    }
    let errors = all.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = all.len() - errors;
    let printed = match format {
        Format::Json => emit_json(&all, JsonStyle::Pretty),
        Format::Human => emit(|w| {
            for d in all.iter().filter(|d| d.code == "io::read") {
                writeln!(w, "error: {}", d.message)?;
            }
            w.write_all(human.as_bytes())?;
            writeln!(
                w,
                "{} file(s) checked: {errors} error(s), {warnings} warning(s)",
                flows.len()
            )
        }),
    };
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn execute(args: Execute, dry_run: bool) -> ExitCode {
    let Execute {
        flow,
        context,
        integrations,
        strict,
        trace,
        http_allow,
        http_guard,
        compact,
        max_bytes,
        max_work,
        deadline_ms,
        now,
    } = args;
    let (flow, context, integrations) =
        (flow.as_path(), context.as_deref(), integrations.as_deref());
    let defaults = crate::RunLimits::default();
    let opts = RunOptions {
        strict,
        dry_run,
        trace,
        now,
        limits: (max_bytes.is_some() || max_work.is_some() || deadline_ms.is_some()).then(|| {
            crate::RunLimits {
                bytes: max_bytes.unwrap_or(defaults.bytes),
                work: max_work.unwrap_or(defaults.work),
                deadline: deadline_ms.map_or(defaults.deadline, std::time::Duration::from_millis),
                ..defaults
            }
        }),
    };
    let prepared = (|| -> Result<_, Failure> {
        let text = read(flow)?;
        let (store, _) = load_context(context)?;
        let integrations = load_integrations(integrations)?;
        Ok((text, store, integrations))
    })();
    let (text, store, integrations) = match prepared {
        Ok(x) => x,
        Err(Failure(msg)) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let mut engine = engine_for(integrations);
    if http_guard || !http_allow.is_empty() {
        let guarded = crate::actions::HttpGuard::new(&http_allow)
            .map_err(|e| format!("error: --http-allow: {e}"))
            .and_then(|g| engine.with_http_guard(g).map_err(|e| format!("error: {e}")));
        engine = match guarded {
            Ok(e) => e,
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(1);
            }
        };
    }
    let name = flow.display().to_string();
    let loaded = match engine.load_text(text, &name, None) {
        Ok(f) => f,
        Err(e) => {
            eprint!("{}", render_human(&e.diagnostics, &e.source_text));
            return ExitCode::from(1);
        }
    };
    let outcome = engine.run(&loaded, store, &opts).await;
    let style = if compact {
        JsonStyle::Compact
    } else {
        JsonStyle::Pretty
    };
    let code = emit(|w| write_json(w, &outcome.document(opts.dry_run, trace), style));
    release((loaded, outcome), true);
    code
}

/// Lets go of a large value without freeing it allocation by allocation on the main
/// thread: a loaded 5 MB flow is a few hundred thousand allocations. The `last` value a
/// command holds is left to the exit, which returns the whole heap at once; an earlier
/// one (`check` of several files) is freed on a side thread so memory does not add up.
fn release<T: Send + 'static>(value: T, last: bool) {
    if last {
        std::mem::forget(value);
    } else {
        let _ = std::thread::Builder::new().spawn(move || drop(value));
    }
}
