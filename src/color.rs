//! Whether output is coloured, decided in one place for everything the
//! binary prints: clap's help and errors and agentlock's own lines.
//!
//! `--color always|never` wins over the environment; `--color auto` (the
//! default) leaves it to anstream: no colour when `NO_COLOR` is set and not
//! empty, colour when `CLICOLOR_FORCE` is, else colour only on a terminal
//! that supports it. The choice is anstream's global one, so clap (which
//! prints through anstream) follows it too.

use crate::cli::ColorWhen;
use clap::ValueEnum;
use std::ffi::OsString;

/// `--color` as given on the command line, before clap has parsed it (its
/// help and usage errors come out of the parse): the last one wins, and
/// nothing after `--` counts (that is `run`'s command). A value clap would
/// refuse is skipped here; clap says why.
pub fn prescan(args: &[OsString]) -> Option<ColorWhen> {
    let mut found = None;
    let mut args = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = args.next() {
        let value = match arg {
            Some("--") => break,
            Some("--color") => match args.next() {
                Some(Some("--")) => break,
                v => v.flatten(),
            },
            Some(a) => a.strip_prefix("--color="),
            None => None,
        };
        if let Some(when) = value.and_then(|v| ColorWhen::from_str(v, false).ok()) {
            found = Some(when);
        }
    }
    found
}

/// Sets the choice for everything printed from now on; returns it as the
/// clap command should be told.
pub fn set(when: Option<ColorWhen>) -> clap::ColorChoice {
    let (ours, clap) = match when.unwrap_or(ColorWhen::Auto) {
        ColorWhen::Always => (anstream::ColorChoice::Always, clap::ColorChoice::Always),
        ColorWhen::Never => (anstream::ColorChoice::Never, clap::ColorChoice::Never),
        ColorWhen::Auto => (anstream::ColorChoice::Auto, clap::ColorChoice::Auto),
    };
    ours.write_global();
    clap
}

/// What stdout gets: [`anstream::ColorChoice::Never`] or a colour choice,
/// never `Auto`.
pub fn stdout() -> anstream::ColorChoice {
    anstream::AutoStream::choice(&std::io::stdout())
}

/// Whether agentlock's own lines on stdout are coloured.
pub fn on_stdout() -> bool {
    stdout() != anstream::ColorChoice::Never
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(args: &[&str]) -> Option<ColorWhen> {
        let args: Vec<OsString> = std::iter::once("agentlock")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        prescan(&args)
    }

    #[test]
    fn the_last_color_before_the_double_dash_wins() {
        assert_eq!(scan(&["claim", "w"]), None);
        assert_eq!(scan(&["--color", "never", "claim"]), Some(ColorWhen::Never));
        assert_eq!(scan(&["--color=always"]), Some(ColorWhen::Always));
        assert_eq!(
            scan(&["--color=always", "claim", "--color", "never"]),
            Some(ColorWhen::Never)
        );
        assert_eq!(
            scan(&["--color=never", "run", "w", "--", "ls", "--color=always"]),
            Some(ColorWhen::Never)
        );
        assert_eq!(scan(&["--color", "--", "--color=always"]), None);
        assert_eq!(
            scan(&["--color=always", "--color", "blue"]),
            Some(ColorWhen::Always)
        );
        assert_eq!(scan(&["--color"]), None);
    }
}
