//! Trust: a lock file is input from whoever could write it.
//!
//! Worker directories are written by agents, often as other users, and root
//! runs `doctor --fix` over them. So a lock speaks only for its writer, the
//! owner of `agent.lock`: a record naming another user (its `uid`, or a live
//! holder process of another user) proves nothing and is `unverified` —
//! never "held by you", never signalled, never removed automatically. A lock
//! file owned by root may speak for anyone. Fleet values have no file owner;
//! they speak for the user they record.
//!
//! The other trust rules live where they act: tmux clients only against
//! vetted servers and as their owner ([`crate::probe::tmux`]), signals only
//! to the caller's own processes ([`crate::lock`]), and outside strings
//! escaped before they reach a terminal ([`escape`], [`shell_quote`]).

use crate::probe::ProcessProbe;
use crate::record::LockRecord;
use std::borrow::Cow;
use std::fmt::Write;

/// The user a lock speaks for, or why it speaks for nobody. `file_uid` is the
/// owner of the lock file (`None` for a fleet value); `alive` says whether
/// the recorded process is alive and is the one that claimed, so that its
/// owner counts.
pub fn speaker(
    rec: &LockRecord,
    file_uid: Option<u32>,
    alive: bool,
    procs: &dyn ProcessProbe,
) -> Result<Option<u32>, String> {
    let Some(owner) = file_uid.filter(|&u| u != 0) else {
        return Ok(rec.uid.or(file_uid));
    };
    if let Some(uid) = rec.uid
        && uid != owner
    {
        return Err(format!(
            "the lock file belongs to uid {owner} but names uid {uid}: a lock speaks only for its file's owner"
        ));
    }
    if alive {
        match procs.owner_uid(rec.pid) {
            Some(uid) if uid == owner => {}
            Some(uid) => {
                return Err(format!(
                    "pid {} belongs to uid {uid} but the lock file to uid {owner}: a lock speaks only for its file's owner",
                    rec.pid
                ));
            }
            None => {
                return Err(format!(
                    "the owner of pid {} cannot be read, so it cannot be matched with the lock file's (uid {owner})",
                    rec.pid
                ));
            }
        }
    }
    Ok(Some(owner))
}

/// Whether a character must not reach a terminal raw: C0 and C1 controls,
/// DEL, and the invisible characters that reorder or hide text (bidi
/// controls, zero-width marks), which can make a line read as another.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Whether `s` holds a character that must not reach a terminal raw (a
/// backslash may: it only needs escaping to keep [`escape`] one-to-one).
pub fn needs_escape(s: &str) -> bool {
    s.chars().any(unsafe_char)
}

/// A string from outside (a lock field, a path, a tmux answer) made safe for
/// a terminal: control and invisible characters are written as escapes
/// (`\n`, `\x1b`, `\u{202e}`) and a backslash as `\\`, so that no two
/// different strings look alike. Borrowed when nothing needs escaping.
///
/// ```
/// use agentlock::trust::escape;
/// assert_eq!(escape("gt-crew"), "gt-crew");
/// assert_eq!(escape("a\x1b[2Jb\nholder: pid 1"), "a\\x1b[2Jb\\nholder: pid 1");
/// ```
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c, "\\u{", "}");
    }
    Cow::Owned(out)
}

/// Pushes `c`, escaped when it is a backslash or must not reach a terminal:
/// `\n`, `\x1b`, or `open` hex `close` for the rest (`\u{202e}` for
/// humans, `\u202e` in the shell's `$'...'`).
fn push_escaped(out: &mut String, c: char, open: &str, close: &str) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 && unsafe_char(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if unsafe_char(c) => {
            let _ = write!(out, "{open}{:04x}{close}", c as u32);
        }
        c => out.push(c),
    }
}

/// A word for a command line a user may paste: quoted for POSIX shells by
/// `shlex`, and, when it holds characters that must not reach a terminal,
/// written in the `$'...'` form of bash, zsh and ksh (as GNU `ls` does), so
/// that no raw control character is printed.
///
/// ```
/// use agentlock::trust::shell_quote;
/// assert_eq!(shell_quote("/town/w1"), "/town/w1");
/// assert_eq!(shell_quote("/town/my worker"), "'/town/my worker'");
/// assert_eq!(shell_quote("/t/a\nb"), "$'/t/a\\nb'");
/// ```
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char)
        && let Ok(q) = shlex::try_quote(s)
    {
        return q;
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            c => push_escaped(&mut out, c, "\\u", ""),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::process::MockProcessProbe;

    fn owned_by(uid: u32) -> MockProcessProbe {
        let mut p = MockProcessProbe::new();
        p.expect_owner_uid().return_const(Some(uid));
        p
    }

    #[test]
    fn a_lock_speaks_only_for_its_files_owner() {
        let rec = |uid| LockRecord {
            pid: 7,
            uid,
            ..LockRecord::default()
        };
        let p = owned_by(1000);
        assert_eq!(
            speaker(&rec(Some(1000)), Some(1000), true, &p),
            Ok(Some(1000))
        );
        assert_eq!(speaker(&rec(None), Some(1000), true, &p), Ok(Some(1000)));
        // Forged uid, or a live process of another user.
        assert!(speaker(&rec(Some(0)), Some(1000), false, &p).is_err());
        let root_proc = owned_by(0);
        let why = speaker(&rec(None), Some(1000), true, &root_proc).unwrap_err();
        assert!(why.contains("pid 7 belongs to uid 0"), "{why}");
        // A dead (or reused) process's owner does not count.
        assert_eq!(
            speaker(&rec(None), Some(1000), false, &root_proc),
            Ok(Some(1000))
        );
        // Root's files speak for anyone; fleet values for their record.
        let any = MockProcessProbe::new();
        assert_eq!(
            speaker(&rec(Some(1000)), Some(0), true, &any),
            Ok(Some(1000))
        );
        assert_eq!(speaker(&rec(None), Some(0), true, &any), Ok(Some(0)));
        assert_eq!(speaker(&rec(Some(5)), None, true, &any), Ok(Some(5)));
    }

    #[test]
    fn escapes_everything_a_terminal_would_obey() {
        assert_eq!(escape("plain ünï 名前"), "plain ünï 名前");
        assert_eq!(
            escape("\x07\x08\r\t\x7f\u{9b}"),
            "\\x07\\x08\\r\\t\\x7f\\x9b"
        );
        assert_eq!(escape("a\u{202e}b\u{200b}"), "a\\u{202e}b\\u{200b}");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert!(needs_escape("a\x1b]0;x") && !needs_escape("back\\slash ünï"));
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let e = escape(&c.to_string()).into_owned();
            assert!(
                !e.chars().any(unsafe_char),
                "{c:?} escaped to {e:?} still holds an unsafe char"
            );
        }
    }

    #[test]
    fn quotes_words_to_paste() {
        assert_eq!(shell_quote("a b;rm -rf ~"), "'a b;rm -rf ~'");
        assert_eq!(shell_quote("it's"), "\"it's\"");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("\x1b]0;x\x07"), "$'\\x1b]0;x\\x07'");
        assert_eq!(shell_quote("a'\u{202e}"), "$'a\\'\\u202e'");
        assert_eq!(shell_quote(""), "''");
    }
}
