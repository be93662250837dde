//! `run`: hold a worker while a command runs (on the lock file here; on the
//! fleet store through `fleet.rs`, which shares [`report`]).

use super::{Ctx, Failure, session_of, warn_all};
use crate::cli::{self, RunArgs};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output;
use agentlock::lock::Claimant;
use agentlock::run::{Checked, FileHold, Hold, OnLost, RunOutcome};

pub(super) fn run(ctx: &Ctx, a: RunArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let probes = ctx.probes.probes();
    let mut hold = FileHold::new(&a.worker, &probes)?;
    if let Some(timeout) = a.wait {
        hold = hold.waiting(timeout);
    }
    run_on(ctx, &mut hold, a, out)
}

/// Runs `a`'s command holding `hold`'s worker, and reports how it ended.
pub(super) fn run_on(
    ctx: &Ctx,
    hold: &mut dyn Hold,
    a: RunArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    // The lock names the command itself, the agent: its liveness is the
    // command's. The pane `run` happens to run in is recorded only when
    // asked for (`--session`): a recorded pane would keep the lock
    // `held-by-session` after the command exited, refusing the pane's next
    // `run`.
    let mut warnings = Vec::new();
    let (session, tmux_socket) = match a.session {
        Some(s) => session_of(ctx, Some(s), &mut warnings),
        None => (None, None),
    };
    warn_all(out, &warnings);
    let me = Claimant {
        pid: 0,
        session,
        tmux_socket,
    };
    let on_lost = match a.on_lost {
        cli::OnLost::Term => OnLost::Term,
        cli::OnLost::Warn => OnLost::Warn,
    };
    let outcome = agentlock::run::run_with(hold, me, &a.command, on_lost, |c| match c {
        Checked::Lost(why) => {
            out.error_line(output::lost(&a.worker, why, on_lost == OnLost::Term));
        }
        Checked::Restored(what) => {
            out.error_line(format_args!(
                "{}: {}",
                output::path(&a.worker),
                output::esc(what)
            ));
        }
        Checked::Held => {}
    })?;
    Ok(match outcome {
        RunOutcome::Refused(ins) => {
            out.err(output::refusal(&ins, "claim"));
            if let Some(timeout) = a.wait {
                out.err(format_args!(
                    "  waited {}; still taken, the command was not started",
                    timeout.map_or("until interrupted".into(), |t| format!(
                        "{:.1} s",
                        t.as_secs_f64()
                    ))
                ));
            }
            ExitCode::RunRefused.on_conflict(a.conflict_exit_code)
        }
        RunOutcome::Interrupted { signal } => {
            out.error_line(output::interrupted(&a.worker, signal));
            ExitCode::Signal(signal)
        }
        RunOutcome::CannotRun { not_found, why } => {
            out.error_line(output::esc(why));
            if not_found {
                ExitCode::NotFound
            } else {
                ExitCode::CannotExecute
            }
        }
        RunOutcome::Exited {
            code,
            released,
            lost,
        } => {
            match released {
                Ok(()) => {}
                Err(e @ agentlock::Error::NotReleased { .. }) => {
                    out.error_line(output::error_text(&e))
                }
                Err(e) => out.error_line(format_args!(
                    "{}: {}",
                    output::path(&a.worker),
                    output::error_text(&e)
                )),
            }
            match lost {
                Some(_) => {
                    out.error_line(output::lost_exit(&a.worker, code));
                    ExitCode::Lost
                }
                None => ExitCode::Command(code),
            }
        }
    })
}
