//! Where the binary's output goes, without ever panicking.
//!
//! stdout may be a closed pipe (`agentlock list | head -1`) or a full disk
//! (`>/dev/full`). A closed pipe ends the output quietly; any other write
//! error is remembered, later output is dropped, and the command ends with
//! one line on stderr saying what was already done, and exit 2. stderr
//! errors are ignored: there is nowhere left to say them.
//!
//! stdout goes through anstream, which strips colour when
//! [`crate::color`] says stdout gets none.

use crate::exit_codes::ExitCode;
use std::fmt::Display;
use std::io::Write;

/// stdout and stderr of one command.
#[derive(Debug, Default)]
pub struct Out {
    closed: bool,
    failed: Option<std::io::Error>,
    /// What the command has done that cannot be undone, said if output fails.
    pub done: Option<String>,
}

impl Out {
    /// Writes `s` and a newline to stdout.
    pub fn line(&mut self, s: impl Display) {
        self.raw(format_args!("{s}\n"));
    }

    /// Writes `s` to stdout as is.
    pub fn raw(&mut self, s: impl Display) {
        if self.closed || self.failed.is_some() {
            return;
        }
        let mut stdout =
            anstream::AutoStream::new(std::io::stdout().lock(), crate::color::stdout());
        let r = write!(stdout, "{s}").and_then(|()| stdout.flush());
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
            Err(e) => self.failed = Some(e),
        }
    }

    /// One line on stderr.
    pub fn err(&mut self, s: impl Display) {
        let _ = writeln!(std::io::stderr(), "{s}");
    }

    /// `agentlock: MSG` on stderr.
    pub fn error_line(&mut self, s: impl Display) {
        self.err(format_args!("agentlock: {s}"));
    }

    /// The exit code, given the command's own: 2 (with one line on stderr)
    /// when stdout could not be written for any reason but a closed pipe.
    pub fn finish(mut self, code: ExitCode) -> ExitCode {
        let Some(e) = self.failed.take() else {
            return code;
        };
        let done = match self.done.take() {
            Some(d) => format!("; already done: {d}"),
            None => String::new(),
        };
        self.error_line(format_args!("cannot write output: {e}{done}"));
        ExitCode::Error
    }
}
