//! Reading a shell's `-c` string: its top-level commands and how each
//! ends, the program and arguments of one (redirections, assignments and
//! wrappers such as `nice -n 10` or `timeout 5` set aside), and whether the
//! string only waits for a given agentlock invocation.

/// How a top-level command of a shell string ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `;`, a newline, `&&`, `||`, or the end: the next runs after it.
    Then,
    /// `|`: its output goes to the next, which ends with it.
    Pipe,
    /// `&`: it runs in the background while the shell goes on.
    Background,
}

/// The top-level commands of a shell string and how each ends; `None` when
/// it cannot be split with certainty (unbalanced quotes or `$(...)`).
/// `amp_redirect`: `&>file` redirects (bash, zsh) rather than ending a
/// command in the background (dash, POSIX sh).
pub(crate) fn commands(script: &str, amp_redirect: bool) -> Option<Vec<(String, Op)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut single, mut double, mut depth, mut backtick) = (false, false, 0usize, false);
    // bash's `$'...'` quoting (backslash escapes inside single quotes) is
    // not read here: such a string cannot be split with certainty.
    if script.contains("$'") {
        return None;
    }
    let chars: Vec<char> = script.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let literal = single || double || depth > 0 || backtick;
        match c {
            '\\' if !single => {
                cur.push(c);
                if let Some(n) = next {
                    cur.push(n);
                    i += 1;
                }
            }
            '\'' if !double && depth == 0 && !backtick => {
                single = !single;
                cur.push(c);
            }
            '"' if !single && depth == 0 && !backtick => {
                double = !double;
                cur.push(c);
            }
            '$' if !single && next == Some('(') => {
                depth += 1;
                cur.push_str("$(");
                i += 1;
            }
            '(' if depth > 0 => {
                depth += 1;
                cur.push(c);
            }
            ')' if depth > 0 => {
                depth -= 1;
                cur.push(c);
            }
            '`' if !single => {
                backtick = !backtick;
                cur.push(c);
            }
            // `2>&1`, `>&2`, `&>file`: part of a redirection, not an operator.
            '&' if !literal
                && (matches!(prev, Some('>' | '<')) || (amp_redirect && next == Some('>'))) =>
            {
                cur.push(c)
            }
            ';' | '\n' | '&' | '|' if !literal => {
                let op = match (c, next) {
                    ('&', Some('&')) | ('|', Some('|')) => {
                        i += 1;
                        Op::Then
                    }
                    ('&', _) => Op::Background,
                    ('|', _) => Op::Pipe,
                    _ => Op::Then,
                };
                if !cur.trim().is_empty() {
                    out.push((std::mem::take(&mut cur), op));
                } else {
                    cur.clear();
                }
            }
            c => cur.push(c),
        }
        i += 1;
    }
    if single || double || depth > 0 || backtick {
        return None;
    }
    if !cur.trim().is_empty() {
        out.push((cur, Op::Then));
    }
    Some(out)
}

/// Wrappers that run the rest of their words as a command: options that
/// take a value, and positional words before the command.
/// See [`program_words`].
const RUNNERS: &[(&str, &[&str], usize)] = &[
    ("exec", &["-a"], 0),
    ("command", &[], 0),
    ("nohup", &[], 0),
    ("time", &[], 0),
    ("setsid", &[], 0),
    (
        "env",
        &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"],
        0,
    ),
    ("nice", &["-n", "--adjustment"], 0),
    ("timeout", &["-s", "-k", "--signal", "--kill-after"], 1),
    (
        "flock",
        &["-w", "-E", "--timeout", "--conflict-exit-code"],
        1,
    ),
    (
        "stdbuf",
        &["-i", "-o", "-e", "--input", "--output", "--error"],
        0,
    ),
    (
        "sudo",
        &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"],
        0,
    ),
    ("doas", &["-u", "-C"], 0),
    ("runuser", &["-u", "-g", "-G"], 0),
];

/// The words of one command with redirections (`>f`, `2>&1`, `< in`,
/// `&>> log`) and leading assignments and wrappers removed.
fn program_words(command: &str) -> Option<Vec<String>> {
    let words = shlex::split(command)?;
    let mut kept = Vec::new();
    let mut skip_target = false;
    for w in words {
        if std::mem::take(&mut skip_target) {
            continue;
        }
        let digits = w.trim_start_matches(|c: char| c.is_ascii_digit());
        let redirect = ["&>>", "&>", ">>", ">&", "<&", ">", "<"]
            .iter()
            .find(|r| digits.starts_with(**r));
        match redirect {
            Some(r) => skip_target = digits.len() == r.len(),
            None => kept.push(w),
        }
    }
    let mut words = kept.into_iter().peekable();
    loop {
        let Some(w) = words.peek().cloned() else {
            return Some(Vec::new());
        };
        let assignment = w.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if assignment {
            words.next();
            continue;
        }
        let Some((_, valued, positional)) = RUNNERS.iter().find(|(name, ..)| *name == w) else {
            break;
        };
        words.next();
        while let Some(o) = words.peek().cloned() {
            let name_value = w == "env" && o.contains('=') && !o.starts_with('-');
            if name_value {
                words.next();
            } else if o == "--" {
                words.next();
                break;
            } else if o.starts_with('-') {
                words.next();
                if valued.contains(&o.as_str()) {
                    words.next();
                }
            } else {
                break;
            }
        }
        for _ in 0..*positional {
            words.next();
        }
    }
    Some(words.collect())
}

/// Whether a command only reports and ends: what may follow agentlock in a
/// shell that only waits for it (`|| exit 1`, `; echo done`, `|| { echo
/// busy >&2; exit 1; }`, `rc=$?; [ $rc -eq 0 ]`). Nothing in it may run
/// another program through a substitution (`$(...)`, backquotes, `<(...)`,
/// `>(...)`): `echo $(claude)` runs the agent.
fn reports_and_ends(command: &str) -> bool {
    if runs_something(command) {
        return false;
    }
    program_words(command).is_some_and(|w| {
        let mut w = w
            .iter()
            .map(String::as_str)
            .skip_while(|p| ["{", "(", "!"].contains(p));
        w.next().is_none_or(|p| {
            [
                "exit", "true", ":", "echo", "printf", "return", "false", "[", "test", "}", ")",
                "touch", "logger",
            ]
            .contains(&p)
        })
    })
}

/// Whether a command line may run a program of its own by substitution.
fn runs_something(command: &str) -> bool {
    ["$(", "`", "<(", ">("].iter().any(|s| command.contains(s))
}

/// Commands that read a pipeline and end when it does: what may consume
/// agentlock's output in a shell that only waits for it.
fn filters(command: &str) -> bool {
    !runs_something(command)
        && program_words(command).is_some_and(|w| {
            w.first().is_some_and(|p| {
                [
                    "cat", "tee", "tail", "head", "grep", "sed", "cut", "tr", "wc", "sort",
                    "logger",
                ]
                .contains(&p.as_str())
            })
        })
}

/// Whether a shell string only waits for this very agentlock invocation
/// (arguments `mine`): some top-level command is it (its program is
/// agentlock, with `mine` for arguments; a word the shell expands, with `$`
/// or a backquote, matches any, and `"$@"` the rest), nothing runs in the
/// background or from a `trap`, and all that follows it is its pipeline's
/// filters (`| tail -n1`) and commands that only report and end (`|| exit
/// 1`, `; echo done`). `claim w && exec claude`, `claim w && release w`,
/// `claim w; echo $(claude)`: the shell goes on, and is the holder.
pub fn last_command_is_agentlock(script: &str, mine: &[String], amp_redirect: bool) -> bool {
    let Some(cmds) = commands(script, amp_redirect) else {
        return false;
    };
    let trap = cmds
        .iter()
        .any(|(c, _)| program_words(c).is_some_and(|w| w.first().is_some_and(|p| p == "trap")));
    if trap || cmds.iter().any(|(_, op)| *op == Op::Background) {
        return false;
    }
    let Some(at) = cmds.iter().rposition(|(c, _)| is_this(c, mine)) else {
        return false;
    };
    let mut piped = cmds[at].1 == Op::Pipe;
    cmds[at + 1..].iter().all(|(c, op)| {
        let ok = if piped {
            filters(c)
        } else {
            reports_and_ends(c)
        };
        piped = *op == Op::Pipe;
        ok
    })
}

/// Whether the commands of a shell string after this agentlock invocation
/// start with `exec`: the shell becomes the next program (the agent), and
/// is the holder for certain.
pub(crate) fn execs_after(script: &str, mine: &[String], amp_redirect: bool) -> bool {
    commands(script, amp_redirect).is_some_and(|cmds| {
        cmds.iter()
            .rposition(|(c, _)| is_this(c, mine))
            .is_some_and(|at| {
                cmds.get(at + 1)
                    .is_some_and(|(c, _)| c.split_whitespace().next() == Some("exec"))
            })
    })
}

/// Whether a shell command is this very agentlock invocation.
pub(crate) fn is_this(command: &str, mine: &[String]) -> bool {
    program_words(command).is_some_and(|words| {
        let mut words = words.into_iter();
        let program = words.next().is_some_and(|p| {
            std::path::Path::new(&p)
                .file_name()
                .is_some_and(|n| n == "agentlock")
        });
        let rest: Vec<String> = words.collect();
        program && args_match(&rest, mine)
    })
}

/// Whether the words of a shell command are these arguments.
fn args_match(words: &[String], mine: &[String]) -> bool {
    let mut mine = mine.iter();
    for w in words {
        if w == "$@" || w == "$*" {
            return true;
        }
        match mine.next() {
            Some(m) if m == w || w.contains('$') || w.contains('`') => {}
            _ => return false,
        }
    }
    mine.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_agentlock_as_the_last_command_of_a_shell_string() {
        let mine = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        for (yes, args) in [
            ("agentlock claim pool/a", "claim pool/a"),
            (
                "/usr/local/bin/agentlock claim --first-free pool/a pool/b",
                "claim --first-free pool/a pool/b",
            ),
            ("cd /town && agentlock claim w", "claim w"),
            ("X=1 exec agentlock claim 'my worker'", "claim my worker"),
            ("timeout 5 agentlock claim w", "claim w"),
            ("echo start; agentlock claim w\n", "claim w"),
            ("agentlock claim \"$W\"", "claim /town/w"),
            ("agentlock claim w >/dev/null 2>&1", "claim w"),
            ("agentlock claim w < /dev/null > log", "claim w"),
            ("agentlock claim w || exit 1", "claim w"),
            ("bash -c x; agentlock claim w; echo done", "claim w"),
            ("agentlock claim \"$@\"", "claim w"),
            ("nice -n 10 agentlock claim w", "claim w"),
            ("timeout -s KILL 5 agentlock claim w", "claim w"),
            ("flock /tmp/f agentlock claim w", "claim w"),
            ("env -u X Y=1 agentlock claim w", "claim w"),
            ("agentlock claim w &>/dev/null", "claim w"),
            ("agentlock claim w | tee log", "claim w"),
            ("agentlock claim w || { echo busy >&2; exit 1; }", "claim w"),
            (
                "agentlock claim w; rc=$?; [ $rc -eq 0 ] || exit 1",
                "claim w",
            ),
            ("agentlock claim w && touch /tmp/f", "claim w"),
            ("agentlock claim w | tail -n1 | cat", "claim w"),
        ] {
            let mut args = mine(args);
            if yes.contains("my worker") {
                args = vec!["claim".into(), "my worker".into()];
            }
            assert!(last_command_is_agentlock(yes, &args, true), "{yes}");
        }
        for no in [
            "agentlock claim w && exec claude",
            "agentlock claim w; sleep 600",
            "echo 'agentlock claim w'",
            "agentlock claim w && agentlock release w",
            "agentlock claim w & sleep 5",
            "x=\"$(echo 'a')\"; agentlock claim w; exec agent",
            "agentlock claim w; exec agent",
            "agentlock claim 'w",
            "run-agent",
            "",
            "agentlock claim w || exit 1; echo $(sleep 60)",
            "agentlock claim w; exit $(agent)",
            "agentlock claim w; : ${X:=$(agent)}",
            "agentlock claim w; printf '%s' \"`agent`\"",
            "agentlock claim w; echo done > $(agent)",
            "agentlock claim w; echo >(agent)",
            "agentlock claim w | agent",
            "trap 'agent' EXIT; agentlock claim w",
            "agent & agentlock claim w",
            "agentlock claim w; echo $'\\''; agent; #'",
        ] {
            assert!(
                !last_command_is_agentlock(no, &mine("claim w"), true),
                "{no}"
            );
        }
        // In dash, `&>` puts the command in the background.
        assert!(!last_command_is_agentlock(
            "agentlock claim w &>/dev/null",
            &mine("claim w"),
            false
        ));
    }
}
