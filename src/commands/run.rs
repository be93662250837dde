//! `run`: hold a worker while a command runs.

use super::{Ctx, Failure, session_of, warn_all};
use crate::cli::RunArgs;
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output;
use agentlock::run::RunOutcome;

pub(super) fn run(ctx: &Ctx, a: RunArgs, out: &mut Out) -> Result<ExitCode, Failure> {
    let mut warnings = Vec::new();
    let (session, socket) = session_of(ctx, a.session, &mut warnings);
    warn_all(out, &warnings);
    let outcome =
        agentlock::run::run(&a.worker, session, socket, &a.command, &ctx.probes.probes())?;
    Ok(match outcome {
        RunOutcome::Refused(ins) => {
            out.err(output::refusal(&ins, "claim"));
            ExitCode::RunRefused
        }
        RunOutcome::Interrupted { signal } => {
            out.error_line(output::interrupted(&a.worker, signal));
            ExitCode::Signal(signal)
        }
        RunOutcome::CannotRun { not_found, why } => {
            out.error_line(why);
            if not_found {
                ExitCode::NotFound
            } else {
                ExitCode::CannotExecute
            }
        }
        RunOutcome::Exited { code, released } => {
            match released {
                Ok(()) => {}
                Err(e @ agentlock::Error::NotReleased { .. }) => out.error_line(e),
                Err(e) => out.error_line(format_args!("{}: {e}", a.worker.display())),
            }
            ExitCode::Command(code)
        }
    })
}
