//! How a recorded session string names tmux panes: its kind by shape
//! (`%N` pane id, `$N` session id, or a name), the name tmux keeps for a
//! requested one, and whether a listed pane belongs to it.

use super::tmux::Pane;

/// What a recorded `session_id` is, by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `%N`: a pane id.
    Pane,
    /// `$N`: a session id.
    SessionId,
    /// Anything else: a session name.
    Name,
}

impl SessionKind {
    /// Classifies a recorded session string.
    pub fn of(id: &str) -> SessionKind {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(rest) = id.strip_prefix('%')
            && digits(rest)
        {
            return SessionKind::Pane;
        }
        if let Some(rest) = id.strip_prefix('$')
            && digits(rest)
        {
            return SessionKind::SessionId;
        }
        SessionKind::Name
    }
}

/// The name tmux keeps for a requested session name: `:` and `.` become `_`,
/// and the name is escaped like `vis(3)` in C style (`\\`, `\$`, `\t`, `\a`,
/// octal for other control characters), as tmux 3.x does. A lock may record
/// the name as requested (`--session a:b`) while tmux lists `a_b`; both must
/// match, or a live session would look gone.
pub fn tmux_session_name(requested: &str) -> String {
    let mut out = String::with_capacity(requested.len());
    for c in requested.chars() {
        match c {
            ':' | '.' => out.push('_'),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03o}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Does `pane` belong to the recorded session string, by kind? A name that
/// is a tmux target (`main:0.0`, recorded as given when it did not resolve at
/// claim time) also matches its session part (`main`): the safe side, since
/// a match only ever keeps a lock alive.
pub fn pane_matches(pane: &Pane, recorded: &str) -> bool {
    let named =
        |name: &str| pane.session_name == name || pane.session_name == tmux_session_name(name);
    match SessionKind::of(recorded) {
        SessionKind::Pane => pane.pane_id == recorded,
        SessionKind::SessionId => pane.session_id == recorded,
        SessionKind::Name => {
            named(recorded)
                || target_session(recorded).is_some_and(|s| {
                    let s = s.strip_prefix('=').unwrap_or(s);
                    match SessionKind::of(s) {
                        SessionKind::SessionId => pane.session_id == s,
                        _ => named(s),
                    }
                })
        }
    }
}

/// The session part of a tmux target `session:window.pane`, if `s` is one.
pub fn target_session(s: &str) -> Option<&str> {
    let (session, _) = s.split_once(':')?;
    (!session.is_empty()).then_some(session)
}
