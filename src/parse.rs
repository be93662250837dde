//! The command line as clap shows and parses it.
//!
//! The global options (`--tmux-socket`, `--quiet`, `--color`) and the fleet
//! store's are shown once, in `agentlock --help` and agentlock(1): after a
//! subcommand they are still accepted, but hidden from its help, which ends
//! with a line pointing to `agentlock --help`. A `run` given its command
//! without `--` gets a tip that puts it there.

use crate::cli::Cli;
use agentlock::trust::shell_quote;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Command, CommandFactory, FromArgMatches};
use std::ffi::OsString;

/// The line every subcommand's help ends with.
pub const GLOBAL_NOTE: &str = "Global options: see `agentlock --help`.";

/// The command as shown in help and man pages: each subcommand carries
/// hidden copies of the global options (clap then propagates nothing over
/// them: an argument a subcommand already has is left alone).
pub fn command() -> Command {
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    cmd.mut_subcommands(|sub| {
        let note = match sub.get_after_help() {
            Some(help) => format!("{help}\n\n{GLOBAL_NOTE}"),
            None => GLOBAL_NOTE.to_string(),
        };
        globals
            .iter()
            .fold(sub, |sub, a| sub.arg(a.clone().hide(true)))
            .after_help(note)
    })
}

/// The command completion scripts are made from: the global options
/// complete after a subcommand too, where they are accepted.
pub fn for_completions() -> Command {
    Cli::command()
}

/// Parses `args` (the program name first) with [`command`], printing in
/// colour as `color` says.
pub fn parse(args: &[OsString], color: clap::ColorChoice) -> Result<Cli, clap::Error> {
    let mut cmd = command().color(color);
    let parsed = cmd
        .try_get_matches_from_mut(args)
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd)));
    let spaced = spaced_wait(args);
    match (parsed, spaced) {
        // `claim --wait 5s W`: 5s became a worker; with --first-free a
        // worker that is never free, waited for without a limit.
        (Ok(_), Some(d)) => Err(clap::Error::raw(
            ErrorKind::InvalidValue,
            format!(
                "'--wait {d}': {d} was taken as a worker, not as the time to wait; give it with =: --wait={d}"
            ),
        )
        .format(&mut cmd)),
        (Ok(cli), None) => Ok(cli),
        (Err(mut e), spaced) => {
            if let Some(d) = spaced {
                add_tip(&mut e, format!("give --wait its duration with =: --wait={d}"));
            } else if let Some(tip) = run_tip(&cmd, args, &e) {
                add_tip(&mut e, tip);
            }
            Err(e)
        }
    }
}

/// `--wait 5s` before any `--`: the duration given with a space, where
/// `--wait` takes its value only with `=` (a bare `--wait` waits without a
/// limit). Not when a directory of that name exists (a worker named `5s`).
fn spaced_wait(args: &[OsString]) -> Option<String> {
    let before: Vec<&OsString> = args.iter().take_while(|a| *a != "--").collect();
    before.windows(2).find_map(|w| {
        let next = w[1].to_str()?;
        (w[0] == "--wait"
            && agentlock::duration::parse(next).is_ok()
            && !std::path::Path::new(next).is_dir())
        .then(|| next.to_string())
    })
}

/// For `agentlock run WORKER COMMAND...` without `--`: the same line with
/// `--` before the command, shell-quoted, when that line parses as a `run`.
/// The first word clap refused is where the command starts; when it occurs
/// more than once, the first place that parses is it.
fn run_tip(cmd: &Command, args: &[OsString], e: &clap::Error) -> Option<String> {
    if e.kind() != ErrorKind::UnknownArgument || args.iter().any(|a| a == "--") {
        return None;
    }
    let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if bad.starts_with('-') {
        // A mistyped option, not a command.
        return None;
    }
    (1..args.len())
        .filter(|&i| args[i].to_string_lossy() == bad.as_str())
        .find_map(|i| {
            let mut fixed = args.to_vec();
            fixed.insert(i, "--".into());
            let m = cmd.clone().try_get_matches_from(&fixed).ok()?;
            (m.subcommand_name() == Some("run")).then(|| {
                let words: Vec<String> = fixed[1..].iter().map(word).collect();
                format!("put the command after --: agentlock {}", words.join(" "))
            })
        })
}

/// `arg` as a shell word: as is when no shell reads anything into it
/// (`--wait=5s`: it is never the first word here), else quoted.
fn word(arg: &OsString) -> String {
    let arg = arg.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.into_owned()
    } else {
        shell_quote(&arg).into_owned()
    }
}

/// Adds `tip` to clap's tips (`  tip: ...` before the usage).
fn add_tip(e: &mut clap::Error, tip: String) {
    let mut tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("agentlock")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn tip(words: &[&str]) -> Option<String> {
        let args = args(words);
        let mut cmd = command();
        let e = cmd.try_get_matches_from_mut(&args).unwrap_err();
        run_tip(&cmd, &args, &e)
    }

    #[test]
    fn a_run_without_its_double_dash_is_shown_with_it() {
        let t = |s: &str| Some(format!("put the command after --: agentlock {s}"));
        assert_eq!(tip(&["run", "w", "true"]), t("run w -- true"));
        assert_eq!(
            tip(&["run", "--wait=5s", "w", "codex", "--full-auto"]),
            t("run --wait=5s w -- codex --full-auto")
        );
        // The worker's own name is not where the command starts.
        assert_eq!(tip(&["run", "true", "true"]), t("run true -- true"));
        assert_eq!(tip(&["run", "my w", "it's"]), t("run 'my w' -- \"it's\""));
        assert_eq!(tip(&["run", "w", "", "~"]), t("run w -- '' '~'"));
        // A spaced --wait duration: refused with the = form, never a worker.
        let spaced = |words: &[&str]| {
            let args: Vec<OsString> = std::iter::once("agentlock")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect();
            parse(&args, clap::ColorChoice::Never)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = spaced(&["claim", "--first-free", "a", "b", "--wait", "5s"]).unwrap_err();
        assert!(
            e.contains("--wait=5s") && e.contains("taken as a worker"),
            "{e}"
        );
        let e = spaced(&["run", "w", "--wait", "5s", "--", "true"]).unwrap_err();
        assert!(e.contains("--wait=5s"), "{e}");
        assert!(spaced(&["claim", "w", "--wait=5s"]).is_ok());
        assert!(spaced(&["run", "w", "--", "sleep", "--wait", "5s"]).is_ok());
        // Not a run, or not a missing `--`: no tip.
        assert_eq!(tip(&["status", "--bogus"]), None);
        assert_eq!(tip(&["run", "w", "--bogus"]), None);
        assert_eq!(tip(&["release", "w", "x"]), None);
    }

    #[test]
    fn subcommands_hide_the_global_options_but_accept_them() {
        let mut cmd = command();
        cmd.build();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            for a in sub.get_arguments().filter(|a| a.is_global_set()) {
                assert!(a.is_hide_set(), "{} --{:?}", sub.get_name(), a.get_long());
            }
        }
        let cli = parse(
            &args(&[
                "claim",
                "w",
                "--quiet",
                "--color",
                "never",
                "--tmux-socket",
                "s",
            ]),
            clap::ColorChoice::Never,
        )
        .unwrap();
        assert!(cli.quiet);
        assert_eq!(cli.tmux_socket, ["s"]);
        assert_eq!(cli.color, crate::cli::ColorWhen::Never);
    }
}
