//! Writing to standard output. A reader that stops early (`transbordo render big.json |
//! head`) closes the pipe: the command then ends quietly with success, instead of
//! panicking the way `println!` does. Output is buffered and JSON is streamed straight
//! from the data, never built as one string first.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use serde::Serialize;

/// How JSON documents are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// Indented, for people.
    Pretty,
    /// One line, for programs and large documents.
    Compact,
}

/// Runs `write` against buffered standard output and flushes it; the exit code to
/// return (success when the reader went away, 1 on any other write error).
pub fn emit(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// Prints one JSON document followed by a newline.
pub fn emit_json<T: Serialize + ?Sized>(doc: &T, style: JsonStyle) -> ExitCode {
    emit(|w| write_json(w, doc, style))
}

/// Writes one JSON document and a newline to `w`.
pub fn write_json<T: Serialize + ?Sized>(
    w: &mut dyn Write,
    doc: &T,
    style: JsonStyle,
) -> io::Result<()> {
    let result = match style {
        JsonStyle::Pretty => serde_json::to_writer_pretty(&mut *w, doc),
        JsonStyle::Compact => serde_json::to_writer(&mut *w, doc),
    };
    // serde_json wraps the writer's error: unwrap it so a closed pipe is recognised.
    result.map_err(|e| match e.io_error_kind() {
        Some(kind) => io::Error::new(kind, e),
        None => io::Error::other(e),
    })?;
    w.write_all(b"\n")
}

/// Prints one line (the `println!` of commands that print a little at a time). A
/// closed pipe ends the process quietly, as `SIGPIPE` does for C programs.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        let code = failed(e);
        if code == ExitCode::SUCCESS {
            std::process::exit(0);
        }
        std::process::exit(1);
    }
}

fn failed(e: io::Error) -> ExitCode {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: cannot write to standard output: {e}");
    ExitCode::from(1)
}

/// `println!` through [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
