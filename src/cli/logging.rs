//! Log lines on stderr (`tracing-subscriber`): `--log-format json|pretty` (pretty on a
//! terminal, JSON otherwise) and a filter from `TRANSBORDO_LOG`
//! (`info,transbordo::service=debug`), else from `-v` (`-v` info, `-vv` debug, `-vvv`
//! trace). `transbordo serve` logs at `info` without `-v`; the other commands log
//! nothing without `-v` so their output stays what it was.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Installs the global subscriber. `base` is the level when `-v` is not given (`None`:
/// no logs).
pub fn init(format: Option<LogFormat>, verbose: u8, base: Option<&str>) {
    let level = match verbose {
        0 => base,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    };
    let filter = match std::env::var("TRANSBORDO_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::new(f),
        _ => match level {
            Some(l) => EnvFilter::new(l),
            None => return,
        },
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = format.unwrap_or(if terminal {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling `cli::run` twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
}
