//! The `agentlock` binary: parse arguments, run the command, exit.

mod cli;
mod commands;
mod exit_codes;
mod out;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    commands::execute(cli).into()
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
        out.line(output::error_json(
            None,
            &output::ErrorJson::new("usage", first),
        ));
    }
    let _ = e.print();
    let code = match e.exit_code() {
        0 => exit_codes::ExitCode::Success,
        _ => exit_codes::ExitCode::Error,
    };
    out.finish(code).into()
}
