//! The commands: resolve the parsed arguments, call the library, print what
//! it found. Every decision is the library's; a handler only maps outcomes to
//! lines, JSON and an [`ExitCode`]. A command that fails before it has a
//! result returns a [`Failure`], printed in one place ([`execute`]).

mod fleet;
mod released;
mod run;
mod tree;
mod worker;

use crate::cli::{AskerArgs, Cli, Command};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, Printed, Style, WorkerEntry};
use agentlock::lock::{Asker, Claimant, Judgement, Probes};
use agentlock::probe::invoker::invoker;
use agentlock::probe::tmux::env_socket;
use agentlock::probe::{LiveProbes, TmuxQuery};
use std::path::PathBuf;

/// What every handler needs: output style and the probes (tmux asked once).
pub(crate) struct Ctx {
    quiet: bool,
    style: Style,
    probes: LiveProbes,
}

/// A command that failed before it had a result: one line on stderr and,
/// under `--json`, one document on stdout.
#[derive(Debug)]
pub struct Failure {
    error: Printed,
    code: ExitCode,
    /// With `--wait`: how long it waited before failing.
    waited: Option<std::time::Duration>,
}

impl From<agentlock::Error> for Failure {
    fn from(e: agentlock::Error) -> Failure {
        Failure {
            error: Printed::of(&e),
            code: ExitCode::Error,
            waited: None,
        }
    }
}

impl Failure {
    /// Bad usage the parser could not catch.
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            error: Printed::new("usage", message),
            code: ExitCode::Error,
            waited: None,
        }
    }

    /// After waiting `waited` (said in the JSON document).
    fn after(mut self, waited: Option<std::time::Duration>) -> Failure {
        self.waited = waited;
        self
    }

    /// `e`, ended by signal `signal` (exit 128 + N).
    fn signalled(e: agentlock::Error, signal: i32) -> Failure {
        Failure {
            code: ExitCode::Signal(signal),
            ..Failure::from(e)
        }
    }
}

/// How a failure is printed under `--json`.
enum JsonShape {
    /// Plain text only.
    None,
    /// `{"workers": [], "error": ...}`.
    Workers,
    /// `{"root": ..., "error": ...}` for `list` and `doctor`.
    Tree(PathBuf),
}

fn json_shape(command: &Command) -> JsonShape {
    let tree = |a: &crate::cli::TreeArgs| {
        if a.json {
            JsonShape::Tree(tree::root_of(a))
        } else {
            JsonShape::None
        }
    };
    let workers = |json: bool| {
        if json {
            JsonShape::Workers
        } else {
            JsonShape::None
        }
    };
    match command {
        Command::Claim(a) => workers(a.json),
        Command::Release(a) => workers(a.json),
        Command::Check(a) => workers(a.json),
        Command::Status(a) => workers(a.json),
        Command::List(a) => tree(a),
        Command::Doctor(a) => tree(&a.tree),
        Command::Run(_) | Command::Completions(_) | Command::Man(_) | Command::Keeper(_) => {
            JsonShape::None
        }
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn execute(cli: Cli) -> ExitCode {
    output::use_utc(cli.utc);
    let ctx = Ctx {
        quiet: cli.quiet,
        style: Style {
            color: crate::color::on_stdout(),
        },
        probes: LiveProbes::new(TmuxQuery {
            sockets: cli.tmux_socket,
            ..TmuxQuery::default()
        }),
    };
    let mut out = Out::default();
    let shape = json_shape(&cli.command);
    let result = match fleet::store_of(&cli.store) {
        Err(f) => Err(f),
        // Completions and the man page never need the store (AGENTLOCK_STORE
        // may well be exported).
        Ok(Some(store)) if !matches!(cli.command, Command::Completions(_) | Command::Man(_)) => {
            fleet::execute(&ctx, &store, cli.command, &mut out)
        }
        Ok(_) => local(&ctx, cli.command, &mut out),
    };
    let code = match result {
        Ok(code) => code,
        Err(Failure {
            error: e,
            code,
            waited,
        }) => {
            out.error_line(&e.human);
            match shape {
                JsonShape::None => {}
                JsonShape::Workers => {
                    out.line(output::workers_json(Vec::new(), Some(&e.json), waited))
                }
                JsonShape::Tree(root) => out.line(output::error_json(Some(&root), &e.json)),
            }
            code
        }
    };
    out.finish(code)
}

/// Runs `command` on the lock files.
fn local(ctx: &Ctx, command: Command, out: &mut Out) -> Result<ExitCode, Failure> {
    match command {
        Command::Claim(a) => worker::claim(ctx, a, out),
        Command::Release(a) => worker::release(ctx, a, out),
        Command::Check(a) => worker::check(ctx, a, out),
        Command::Status(a) => worker::status(ctx, a, out),
        Command::Run(a) => run::run(ctx, a, out),
        Command::List(a) => tree::list(ctx, a, out),
        Command::Doctor(a) => tree::doctor(ctx, a, out),
        Command::Completions(a) => {
            let mut buf = Vec::new();
            clap_complete::generate(
                a.shell,
                &mut crate::parse::for_completions(),
                "agentlock",
                &mut buf,
            );
            out.raw(String::from_utf8_lossy(&buf));
            Ok(ExitCode::Success)
        }
        Command::Man(a) => man(ctx, a, out),
        Command::Keeper(_) => Err(Failure::usage(
            "keeper keeps a lease on a fleet store: give --store (or AGENTLOCK_STORE)",
        )),
    }
}

/// `man`: agentlock.1 on stdout, or with `--dir` every page written there
/// and one line per file.
fn man(ctx: &Ctx, a: crate::cli::ManArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    match a.dir {
        None => out.raw(crate::man::top_page()),
        Some(dir) => crate::man::write_all(&dir, |file| {
            if !ctx.quiet {
                out.line(output::path(file));
            }
        })?,
    }
    Ok(ExitCode::Success)
}

/// A PID from the command line: positive and within the range of pid_t.
fn parse_pid(pid: i64) -> Result<i32, Failure> {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Failure::usage(format!(
            "--pid {pid}: not a valid process id (must be 1..={})",
            i32::MAX
        ))),
    }
}

/// The session to record and its server: `--session` resolved through tmux
/// (with a warning when it does not exist now), else `$TMUX_PANE` on the
/// server of `$TMUX`.
fn session_of(
    ctx: &Ctx,
    given: Option<String>,
    warnings: &mut Vec<String>,
) -> (Option<String>, Option<PathBuf>) {
    match given {
        Some(s) => {
            let r = ctx.probes.tmux.resolve(&s);
            warnings.extend(r.warning);
            (Some(r.session), r.socket)
        }
        None => match std::env::var("TMUX_PANE").ok().filter(|s| !s.is_empty()) {
            Some(pane) => (Some(pane), env_socket()),
            None => (None, None),
        },
    }
}

/// Who claims (`--pid`, `--session`, else the invoking process in
/// `$TMUX_PANE`), the warnings said on the way, and the holder warning
/// (a default holder that may not outlive the claim).
fn claimant_of(
    ctx: &Ctx,
    a: crate::cli::Holder,
    out: &mut Out,
) -> Result<(Claimant, Vec<String>, Option<String>), Failure> {
    let (pid, holder_warning) = match a.pid.map(parse_pid).transpose()? {
        Some(pid) => (pid, None),
        None => {
            let inv = invoker()?;
            (inv.pid, inv.warning)
        }
    };
    let mut warnings = Vec::new();
    let (session, tmux_socket) = session_of(ctx, a.session, &mut warnings);
    warnings.extend(holder_warning.clone());
    warn_all(out, &warnings);
    let me = Claimant {
        pid,
        session,
        tmux_socket,
    };
    Ok((me, warnings, holder_warning))
}

/// Who asks `release` / `check`.
fn asker_of(ctx: &Ctx, a: AskerArgs, warnings: &mut Vec<String>) -> Result<Asker, Failure> {
    Ok(match (a.pid.map(parse_pid).transpose()?, a.session) {
        (Some(p), _) => Asker::new(Some(p), None, None),
        (None, Some(s)) => {
            // A session that lives on several servers names none of them:
            // acting for it could release another server's live lock.
            let r = ctx.probes.tmux.resolve(&s);
            if let Some(n) = r.ambiguous {
                return Err(Failure::usage(format!(
                    "--session {s}: it exists on {n} tmux servers, so it names none of them; pass --tmux-socket to pick one"
                )));
            }
            warnings.extend(r.warning);
            Asker::new(None, Some(r.session), r.socket)
        }
        (None, None) => {
            let (session, socket) = session_of(ctx, None, warnings);
            Asker::new(Some(invoker()?.pid), session, socket)
        }
    })
}

/// A claim's `--wait` and the signals that end it (Ctrl-C, SIGTERM or
/// SIGHUP while waiting for the guard or the worker: given up cleanly,
/// holding nothing, still one JSON document).
struct Waiting {
    interrupt: Option<agentlock::wait::Interrupt>,
    wait: Option<agentlock::wait::WaitOptions>,
    started: std::time::Instant,
}

impl Waiting {
    fn new(wait: Option<Option<std::time::Duration>>) -> Waiting {
        let interrupt = agentlock::wait::Interrupt::on(&agentlock::forward::FORWARDED).ok();
        Waiting {
            wait: wait.map(|timeout| agentlock::wait::WaitOptions {
                timeout,
                interrupt: interrupt.clone(),
            }),
            interrupt,
            started: std::time::Instant::now(),
        }
    }

    /// The flag a wait for the guard gives up on.
    fn cancel(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        self.interrupt.as_ref().map(|i| i.cancel.clone())
    }

    /// How long it has waited, with `--wait`.
    fn waited(&self) -> Option<std::time::Duration> {
        self.wait.as_ref().map(|_| self.started.elapsed())
    }

    /// `e` as the command's failure: ended by a signal (128 + N) when one
    /// interrupted the wait.
    fn failure(&self, e: agentlock::Error) -> Failure {
        let signal = self.interrupt.as_ref().and_then(|i| i.signal());
        match (&e, signal) {
            (agentlock::Error::Interrupted { .. }, Some(signal)) => Failure::signalled(e, signal),
            _ => Failure::from(e),
        }
        .after(self.waited())
    }
}

/// The JSON entry of a judged worker, with where `asker` stands with it.
fn entry(j: &Judgement, asker: &Asker, probes: &Probes) -> WorkerEntry {
    WorkerEntry::judged(j, j.standing(asker, probes), probes)
}

/// Who asks when nobody is named (`status`, `list`, `doctor`): the invoking
/// process in `$TMUX_PANE`; if the invoker cannot be told, an asker that
/// holds nothing.
pub(crate) fn default_asker(ctx: &Ctx) -> Asker {
    asker_of(
        ctx,
        AskerArgs {
            pid: None,
            session: None,
        },
        &mut Vec::new(),
    )
    .unwrap_or_else(|_| Asker::new(None, None, None))
}

/// The JSON entries of a tree's locks, standing for the default asker.
fn tree_entries(ctx: &Ctx, locks: &[Judgement]) -> Vec<WorkerEntry> {
    let asker = default_asker(ctx);
    // Many locks, few holders: each process asked about once.
    let procs = agentlock::probe::process::Remembered::new(agentlock::probe::LiveProcesses);
    let probes = Probes {
        procs: &procs,
        ..ctx.probes.probes()
    };
    locks.iter().map(|j| entry(j, &asker, &probes)).collect()
}

fn warn_all(out: &mut Out, warnings: &[String]) {
    for w in warnings {
        out.error_line(output::warning(w));
    }
}
