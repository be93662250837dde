//! The `agentlock` binary: parse arguments, run the command, exit.

mod cli;
mod commands;
mod out;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let code = commands::execute(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(agentlock::exit_codes::ERROR as u8))
}

/// clap's own message (help and version included); with `--json` on the
/// command line, a usage error is also one JSON document on stdout.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let mut out = out::Out::default();
    let is_usage = !matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if is_usage && std::env::args_os().any(|a| a == "--json") {
        let msg = e.kind().as_str().unwrap_or("invalid usage").to_string();
        let first = e
            .to_string()
            .lines()
            .next()
            .unwrap_or(&msg)
            .trim_start_matches("error: ")
            .to_string();
        out.line(agentlock::output::error_json(
            None,
            &agentlock::output::ErrorJson::new("usage", first),
        ));
    }
    let _ = e.print();
    let code = out.finish(e.exit_code());
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
