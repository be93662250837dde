//! Diagnostics on stderr: the library's and the binary's `tracing` events,
//! filtered by `AGENTLOCK_LOG` (`EnvFilter` syntax: `debug`,
//! `agentlock=debug`, `warn,agentlock::verdict=debug`, ...). Without it the
//! keeper logs at `info` and every other command at `warn`, which prints
//! nothing in normal use.
//!
//! One event is one line: `TIME agentlock COMMAND[PID]: LEVEL message`.
//! When stderr is the journal's stream (`JOURNAL_STREAM` names it), the
//! time is left to the journal and the line starts with the syslog priority
//! (`<6>`) that journald reads. No control character reaches stderr raw:
//! the library escapes what it quotes from outside, and a line still
//! holding one is escaped whole here.

use crate::cli::Command;
use agentlock::trust::{escape, needs_escape};
use std::fmt;
use std::io::Write as _;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable that sets the filter.
pub const VAR: &str = "AGENTLOCK_LOG";

/// Installs the subscriber for `command`; once, before it runs.
pub fn init(command: &Command) {
    let keeper = matches!(command, Command::Keeper(_));
    let default = if keeper {
        "warn,agentlock=info"
    } else {
        "warn"
    };
    let filter = match std::env::var(VAR) {
        Ok(v) if !v.trim().is_empty() => EnvFilter::builder().parse(&v).unwrap_or_else(|e| {
            // Not eprintln!: a stderr that cannot be written panics it.
            let _ = writeln!(
                std::io::stderr(),
                "agentlock: {VAR}={}: {}; logging at the default level",
                escape(&v),
                escape(&e.to_string())
            );
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    let line = Line {
        name: format!("agentlock {}[{}]", name(command), std::process::id()),
        journal: stderr_is_journal(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // A line that cannot be written is dropped: the default reports it
        // with eprintln!, which panics on the same stderr (full, closed
        // pipe), ending the command (the keeper, and its lease) with 101.
        .log_internal_errors(false)
        .event_format(line)
        .try_init();
}

/// The subcommand's name, as typed.
fn name(command: &Command) -> &'static str {
    match command {
        Command::Claim(_) => "claim",
        Command::Release(_) => "release",
        Command::Check(_) => "check",
        Command::Status(_) => "status",
        Command::List(_) => "list",
        Command::Doctor(_) => "doctor",
        Command::Run(_) => "run",
        Command::Completions(_) => "completions",
        Command::Keeper(_) => "keeper",
        Command::Man(_) => "man",
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of the stream systemd connected, which a child that
/// inherited the variable but writes elsewhere (a keeper started by a
/// claim, logging to its file) does not match.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// How one event is written.
struct Line {
    /// `agentlock COMMAND[PID]`.
    name: String,
    /// The journal adds the time; the line gives its priority.
    journal: bool,
}

/// The syslog priority of a level, as journald reads it from a line's start.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        let mut text = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        let text = if needs_escape(&text) {
            escape(&text).into_owned()
        } else {
            text
        };
        if self.journal {
            write!(writer, "<{}>", priority(level))?;
        } else {
            let at = agentlock::record::local_now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
            write!(writer, "{at} ")?;
        }
        writeln!(writer, "{}: {level} {text}", self.name)
    }
}
