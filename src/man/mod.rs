//! The man pages: agentlock(1) and one page per command (agentlock-claim(1),
//! ...). NAME, SYNOPSIS, DESCRIPTION and the options come from the clap
//! command as shown ([`crate::parse::command`]: the global options only in
//! agentlock(1)); EXIT STATUS from [`exit`]; ENVIRONMENT, FILES and SEE
//! ALSO from [`sections`]; EXAMPLES from each command's help, where its
//! "Examples:" block is.

mod exit;
mod sections;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use std::path::{Path, PathBuf};

/// agentlock(1), as `agentlock man` prints it.
pub fn top_page() -> String {
    let cmd = shown();
    page(&cmd, None)
}

/// Writes every page to `dir` (created as `mkdir -p` does), calling
/// `written` after each file.
pub fn write_all(dir: &Path, mut written: impl FnMut(&Path)) -> agentlock::Result<()> {
    let io = |path: &Path, source| agentlock::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let cmd = shown();
    let subs = cmd.get_subcommands().map(|s| (s.get_name(), Some(s)));
    for (name, sub) in std::iter::once(("", None)).chain(subs) {
        let file: PathBuf = dir.join(format!("{}.1", page_name(name)));
        let text = page(&cmd, sub);
        replace(&file, text.as_bytes()).map_err(|e| io(&file, e))?;
        written(&file);
    }
    Ok(())
}

/// Puts `bytes` at `file` by renaming a new file over it: whatever was
/// there (a symlink or a hard link planted by whoever can write the
/// directory, another user's page) is replaced, never written through.
fn replace(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = file.with_file_name(format!(
        ".{name}.tmp.{}.{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `agentlock`, or `agentlock-claim` for the subcommand `claim`.
fn page_name(sub: &str) -> String {
    if sub.is_empty() {
        "agentlock".into()
    } else {
        format!("agentlock-{sub}")
    }
}

/// The command the pages are made from, built (subcommands know their
/// `agentlock claim` names), without clap's `help` subcommand.
fn shown() -> clap::Command {
    let mut cmd = crate::parse::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// One page: agentlock(1) when `sub` is `None`.
fn page(top: &clap::Command, sub: Option<&clap::Command>) -> String {
    let cmd = sub.unwrap_or(top);
    let name = sub.map_or("", |s| s.get_name());
    let (preamble, examples) = split_after_help(cmd);
    let version = top.get_version().unwrap_or_default();
    let man = Man::new(with_usage(cmd)).source(format!("agentlock {version}"));
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut render = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = f(&mut buf);
        pieces.push(buf);
    };
    render(&|w| man.render_title(w));
    // Left-aligned, not hyphenated: paths, options and page names stay whole.
    let mut fill = Roff::new();
    fill.control("ad", ["l"]).control("nh", []);
    render(&|w| fill.to_writer(w));
    render(&|w| man.render_name_section(w));
    render(&|w| man.render_synopsis_section(w));
    render(&|w| man.render_description_section(w));
    let mut roff = Roff::new();
    paragraphs(&mut roff, sections::description(name));
    paragraphs(&mut roff, &preamble);
    render(&|w| roff.to_writer(w));
    render(&|w| man.render_options_section(w));
    if sub.is_some() {
        let mut note = Roff::new();
        note.control("PP", []);
        note.text([roman(sections::GLOBAL_OPTIONS)]);
        render(&|w| note.to_writer(w));
    } else {
        render(&|w| man.render_subcommands_section(w));
    }
    let mut roff = Roff::new();
    exit::exit_status(&mut roff, name);
    sections::environment(&mut roff, name);
    sections::files(&mut roff, name);
    examples_section(&mut roff, &examples);
    see_also(&mut roff, top, name);
    render(&|w| roff.to_writer(w));
    join(pieces)
}

/// `cmd`, with clap's usage as its synopsis when it has a last argument:
/// clap_mangen's own synopsis does not show the `--` before it.
fn with_usage(cmd: &clap::Command) -> clap::Command {
    let mut cmd = cmd.clone();
    if !cmd.get_positionals().any(clap::Arg::is_last_set) {
        return cmd;
    }
    let usage = cmd.render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim().to_string();
    cmd.override_usage(usage)
}

/// The pieces as one page: each rendered piece starts with roff's
/// apostrophe preamble, which is kept only at the top.
fn join(pieces: Vec<Vec<u8>>) -> String {
    let preamble = Roff::new().render();
    let mut page = String::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        let text = String::from_utf8_lossy(&piece);
        let text = match text.strip_prefix(&preamble) {
            Some(rest) if i > 0 => rest,
            _ => &text,
        };
        page.push_str(text);
    }
    page
}

/// The text of `cmd`'s after-help before its "Examples:" line (paragraphs
/// split at blank lines), and the examples: `(command, comment)`, up to
/// the first blank line after it.
fn split_after_help(cmd: &clap::Command) -> (String, Vec<(String, String)>) {
    let text = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let (preamble, examples) = match text.split_once("Examples:\n") {
        Some((before, after)) => (before.trim().to_string(), after),
        None => (String::new(), ""),
    };
    // One example a line, its comment after `  # `; a block (a tmux.conf
    // snippet) is `# comment` lines, then a first line at the examples'
    // indent and the lines indented deeper or closing with `}`.
    let mut out: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for l in examples.lines().take_while(|l| !l.trim().is_empty()) {
        let body = l.strip_prefix("  ").unwrap_or(l);
        if let Some(c) = body.strip_prefix("# ") {
            pending = if pending.is_empty() {
                c.into()
            } else {
                format!("{pending} {c}")
            };
        } else if (body.starts_with(' ') || body.starts_with('}')) && !out.is_empty() {
            let last = out.len() - 1;
            out[last].0 = format!("{}\n{body}", out[last].0);
        } else {
            let (command, comment) = match body.split_once("  # ") {
                Some((command, comment)) => (command.trim(), comment.trim().to_string()),
                None => (body.trim(), std::mem::take(&mut pending)),
            };
            out.push((command.into(), comment));
        }
    }
    (preamble, out)
}

/// `text` as roff paragraphs (split at blank lines).
fn paragraphs(roff: &mut Roff, text: &str) {
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        roff.control("PP", []);
        for line in para.lines() {
            roff.text([roman(line.trim())]);
        }
    }
}

/// EXAMPLES: each command indented and unfilled, its comment after it as
/// a sentence.
fn examples_section(roff: &mut Roff, examples: &[(String, String)]) {
    roff.control("SH", ["EXAMPLES"]);
    for (command, comment) in examples {
        roff.control("PP", []);
        roff.control("RS", ["4"]);
        roff.control("nf", []);
        for line in command.lines() {
            roff.text([bold(line)]);
        }
        roff.control("fi", []);
        roff.control("RE", []);
        if !comment.is_empty() {
            let mut chars = comment.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            roff.text([roman(format!(
                "{}{}.",
                first.unwrap_or_default(),
                chars.as_str()
            ))]);
        }
    }
}

/// SEE ALSO: agentlock(1) and the related commands' pages (on
/// agentlock(1): every command's).
fn see_also(roff: &mut Roff, top: &clap::Command, name: &str) {
    let mut pages: Vec<String> = Vec::new();
    if name.is_empty() {
        pages.extend(top.get_subcommands().map(|s| page_name(s.get_name())));
    } else {
        pages.push(page_name(""));
        pages.extend(sections::related(name).iter().map(|r| page_name(r)));
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(p.as_str()));
        line.push(roman("(1)"));
    }
    roff.text(line);
}

/// A `.TP` item: `tag`, then `text`.
fn item(roff: &mut Roff, tag: clap_mangen::roff::Inline, text: &str) {
    roff.control("TP", []);
    roff.text([tag]);
    roff.text([roman(text)]);
}

/// A `.TP` item tagged with a file name.
fn file_item(roff: &mut Roff, path: &str, text: &str) {
    item(roff, italic(path), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_only_pages_that_exist() {
        let cmd = shown();
        let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
        for name in &names {
            for r in sections::related(name) {
                assert!(names.contains(r), "{name}: {r}");
            }
        }
    }

    #[test]
    fn each_command_has_examples() {
        let cmd = shown();
        let (_, top) = split_after_help(&cmd);
        assert!(!top.is_empty());
        for sub in cmd.get_subcommands() {
            let (_, ex) = split_after_help(sub);
            assert!(!ex.is_empty(), "{}", sub.get_name());
            assert!(
                ex.iter().all(|(c, _)| c
                    .split_whitespace()
                    .find(|w| !w.contains('=')) // VAR=value agentlock ...
                    == Some("agentlock")
                    || c.starts_with("mkdir ")
                    || c.starts_with("set-hook ")
                    || c.starts_with("slot=")),
                "{ex:?}"
            );
        }
    }
}
