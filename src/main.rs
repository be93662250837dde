//! The `agentlock` binary: parse arguments, run the command, exit.

mod cli;
mod color;
mod commands;
mod exit_codes;
mod logging;
mod man;
mod out;
mod output;
mod parse;

use std::process::ExitCode;

fn main() -> ExitCode {
    // First of all: a parent that dies while agentlock works would leave it
    // to init, and the default holder must be the process that invoked it.
    agentlock::probe::invoker::remember_parent();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `--color` before the parse: clap's help and usage errors follow it.
    let color = color::set(color::prescan(&args));
    let cli = match parse::parse(&args, color) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    color::set(Some(cli.color));
    logging::init(&cli.command);
    commands::execute(cli).into()
}

/// clap's own message (help and version included). Help and version go to
/// stdout through [`out::Out`] (coloured as [`color`] decides), so a full
/// disk is an error (exit 2), not a silent success; with `--json` on the
/// command line, a usage error is also one JSON document on stdout, with
/// clap's whole message.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let mut out = out::Out::default();
    let is_usage = !matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !is_usage && e.exit_code() == 0 {
        out.raw(e.render().ansi());
        return out.finish(exit_codes::ExitCode::Success).into();
    }
    if is_usage && std::env::args_os().any(|a| a == "--json") {
        out.line(output::error_json(
            None,
            &output::ErrorJson::new("usage", usage_message(&e)),
        ));
    }
    let _ = e.print();
    out.finish(exit_codes::ExitCode::Error).into()
}

/// clap's whole message on one line: without its `error: ` prefix, its
/// usage block and its "For more information" hint.
fn usage_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let msg = lines.join(" ");
    let msg = msg.trim_start_matches("error: ").to_string();
    if msg.is_empty() {
        e.kind().as_str().unwrap_or("invalid usage").to_string()
    } else {
        msg
    }
}
