//! tmux liveness: one `list-panes -a` per server per run, never one per lock.
//!
//! By default every server of the current user is asked, i.e. every socket in
//! `${TMUX_TMPDIR:-/tmp}/tmux-<uid>/`. Each server's answer is `ok`,
//! `no-server` (a socket left behind with nobody listening: provably no
//! sessions) or `error`; any `error` makes session liveness unknown.

use super::SessionStatus;
use serde::Serialize;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// The `-F` format: fixed-shape fields first, the free-form ones last (tmux
/// escapes tabs in session names; a path, last, may hold anything).
const FORMAT: &str =
    "#{session_id}\t#{pane_id}\t#{pane_pid}\t#{session_name}\t#{pane_current_path}";

/// How long one server may take to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers "is this session / pane alive?".
#[cfg_attr(test, mockall::automock)]
pub trait SessionProbe {
    /// Status of a recorded `session_id` (`%N` pane, `$N` session id, or name).
    fn session_status(&self, id: &str) -> SessionStatus;
}

/// One pane of one tmux server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pane {
    pub session_name: String,
    pub session_id: String,
    pub pane_id: String,
    pub pane_pid: Option<i32>,
    pub current_path: PathBuf,
}

/// Outcome of asking one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    Ok,
    NoServer,
    Error,
}

/// One server's answer, as reported in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerReport {
    pub socket: PathBuf,
    pub state: ServerState,
    pub detail: String,
}

/// Everything one run learned from tmux.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmuxSnapshot {
    pub servers: Vec<ServerReport>,
    pub panes: Vec<Pane>,
}

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

/// Does `pane` belong to the recorded session string, by kind?
pub fn pane_matches(pane: &Pane, recorded: &str) -> bool {
    match SessionKind::of(recorded) {
        SessionKind::Pane => pane.pane_id == recorded,
        SessionKind::SessionId => pane.session_id == recorded,
        SessionKind::Name => {
            pane.session_name == recorded || pane.session_name == tmux_session_name(recorded)
        }
    }
}

impl TmuxSnapshot {
    /// True when every server answered (`ok` or `no-server`).
    pub fn is_known(&self) -> bool {
        self.servers.iter().all(|s| s.state != ServerState::Error)
    }

    /// Panes matching a recorded session string, by kind.
    pub fn matching<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Pane> + 'a {
        self.panes.iter().filter(move |p| pane_matches(p, id))
    }
}

impl SessionProbe for TmuxSnapshot {
    fn session_status(&self, id: &str) -> SessionStatus {
        if self.matching(id).next().is_some() {
            return SessionStatus::Alive;
        }
        match self.servers.iter().find(|s| s.state == ServerState::Error) {
            Some(bad) => SessionStatus::Unknown(format!(
                "tmux server {} did not answer: {}",
                bad.socket.display(),
                bad.detail
            )),
            None => SessionStatus::Gone,
        }
    }
}

/// Which servers to ask, and how.
#[derive(Debug, Clone)]
pub struct TmuxQuery {
    /// `--tmux-socket` values; empty means every server of the user.
    pub sockets: Vec<String>,
    /// Per-server time limit.
    pub timeout: Duration,
}

impl Default for TmuxQuery {
    fn default() -> Self {
        TmuxQuery {
            sockets: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `${TMUX_TMPDIR:-/tmp}/tmux-<uid>`, as tmux computes it.
pub fn socket_dir() -> PathBuf {
    let base = std::env::var_os("TMUX_TMPDIR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    Path::new(&base).join(format!("tmux-{}", nix::unistd::getuid().as_raw()))
}

impl TmuxQuery {
    /// The socket paths this query covers, or an error report for a socket
    /// directory that exists but cannot be listed.
    fn sockets(&self) -> Result<Vec<PathBuf>, ServerReport> {
        let dir = socket_dir();
        if !self.sockets.is_empty() {
            return Ok(self
                .sockets
                .iter()
                .map(|s| {
                    if s.contains('/') {
                        PathBuf::from(s)
                    } else {
                        dir.join(s)
                    }
                })
                .collect());
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ServerReport {
                    socket: dir,
                    state: ServerState::Error,
                    detail: format!("cannot list socket directory: {e}"),
                });
            }
        };
        let mut out: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Asks every server once, in parallel, and gathers the answers.
    pub fn run(&self) -> TmuxSnapshot {
        let sockets = match self.sockets() {
            Ok(s) => s,
            Err(report) => {
                return TmuxSnapshot {
                    servers: vec![report],
                    panes: Vec::new(),
                };
            }
        };
        if sockets.is_empty() {
            return TmuxSnapshot::default();
        }
        let Ok(bin) = which::which("tmux") else {
            return TmuxSnapshot {
                servers: sockets
                    .into_iter()
                    .map(|socket| ServerReport {
                        socket,
                        state: ServerState::Error,
                        detail: "tmux binary not found on PATH".into(),
                    })
                    .collect(),
                panes: Vec::new(),
            };
        };
        let pending: Vec<_> = sockets
            .into_iter()
            .map(|socket| {
                let rx = spawn_query(&bin, &socket);
                (socket, rx)
            })
            .collect();
        let deadline = std::time::Instant::now() + self.timeout;
        let mut snap = TmuxSnapshot::default();
        for (socket, rx) in pending {
            let answer = match rx {
                Err(e) => Answer::Failed(format!("cannot run tmux: {e}")),
                Ok((pid, rx)) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(a) => a,
                        Err(_) => {
                            // The reader thread has not reaped the child yet, so
                            // the PID is still ours to kill.
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                            Answer::Failed(format!(
                                "no answer within {} ms",
                                self.timeout.as_millis()
                            ))
                        }
                    }
                }
            };
            let (state, detail) = match answer {
                Answer::Output {
                    success: true,
                    stdout,
                    ..
                } => {
                    let panes = parse_list_panes(&stdout);
                    let detail = format!("{} panes", panes.len());
                    snap.panes.extend(panes);
                    (ServerState::Ok, detail)
                }
                Answer::Output { stderr, .. } => classify_failure(&stderr),
                Answer::Failed(why) => (ServerState::Error, why),
            };
            snap.servers.push(ServerReport {
                socket,
                state,
                detail,
            });
        }
        snap
    }
}

enum Answer {
    Output {
        success: bool,
        stdout: String,
        stderr: String,
    },
    Failed(String),
}

type Pending = std::io::Result<(i32, mpsc::Receiver<Answer>)>;

fn spawn_query(bin: &Path, socket: &Path) -> Pending {
    let mut child = Command::new(bin)
        .arg("-S")
        .arg(socket)
        .args(["list-panes", "-a", "-F", FORMAT])
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let read_ok = child
            .stdout
            .take()
            .map(|mut o| o.read_to_end(&mut stdout))
            .transpose()
            .and_then(|_| {
                child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_end(&mut stderr))
                    .transpose()
            });
        let answer = match (read_ok, child.wait()) {
            (Ok(_), Ok(status)) => Answer::Output {
                success: status.success(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            },
            (Err(e), _) | (_, Err(e)) => Answer::Failed(format!("reading tmux output: {e}")),
        };
        let _ = tx.send(answer);
    });
    Ok((pid, rx))
}

/// A failed `list-panes`: "no server running" (or a refused / missing socket)
/// proves there are no sessions; anything else is an error.
pub fn classify_failure(stderr: &str) -> (ServerState, String) {
    let first = stderr.lines().next().unwrap_or("").to_string();
    let no_server = stderr.contains("no server running")
        || (stderr.contains("error connecting to")
            && (stderr.contains("Connection refused") || stderr.contains("No such file")));
    if no_server {
        (ServerState::NoServer, first)
    } else if first.is_empty() {
        (ServerState::Error, "tmux failed without a message".into())
    } else {
        (ServerState::Error, first)
    }
}

/// Parses `list-panes -a -F FORMAT` output; lines that do not have the
/// expected shape are skipped (never a panic).
pub fn parse_list_panes(out: &str) -> Vec<Pane> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.splitn(5, '\t');
            let session_id = f.next()?;
            let pane_id = f.next()?;
            let pane_pid = f.next()?;
            let session_name = f.next()?;
            let path = f.next()?;
            if SessionKind::of(session_id) != SessionKind::SessionId
                || SessionKind::of(pane_id) != SessionKind::Pane
            {
                return None;
            }
            Some(Pane {
                session_name: session_name.to_string(),
                session_id: session_id.to_string(),
                pane_id: pane_id.to_string(),
                pane_pid: pane_pid.parse().ok(),
                current_path: PathBuf::from(path),
            })
        })
        .collect()
}

/// A [`TmuxQuery`] that runs at most once, on first use: commands that never
/// need tmux never start it, and a run with many locks asks each server once.
#[derive(Debug)]
pub struct LazyTmux {
    query: TmuxQuery,
    snapshot: OnceLock<TmuxSnapshot>,
}

impl LazyTmux {
    pub fn new(query: TmuxQuery) -> LazyTmux {
        LazyTmux {
            query,
            snapshot: OnceLock::new(),
        }
    }

    /// The snapshot, querying tmux now if this is the first use.
    pub fn snapshot(&self) -> &TmuxSnapshot {
        self.snapshot.get_or_init(|| self.query.run())
    }
}

impl SessionProbe for LazyTmux {
    fn session_status(&self, id: &str) -> SessionStatus {
        self.snapshot().session_status(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(servers: &[ServerState], panes: &str) -> TmuxSnapshot {
        TmuxSnapshot {
            servers: servers
                .iter()
                .enumerate()
                .map(|(i, s)| ServerReport {
                    socket: format!("/tmp/s{i}").into(),
                    state: *s,
                    detail: "boom".into(),
                })
                .collect(),
            panes: parse_list_panes(panes),
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(SessionKind::of("%12"), SessionKind::Pane);
        assert_eq!(SessionKind::of("$0"), SessionKind::SessionId);
        assert_eq!(SessionKind::of("gt-crew-max"), SessionKind::Name);
        assert_eq!(SessionKind::of("%"), SessionKind::Name);
        assert_eq!(SessionKind::of("$x1"), SessionKind::Name);
    }

    #[test]
    fn parses_odd_names_and_paths() {
        let out =
            "$1\t%3\t4242\tmy session: ünï\t/w/a b\tc\n$2\t%4\t\tx\t/w/2\nbroken line\n\t\t\t\t\n";
        let panes = parse_list_panes(out);
        assert_eq!(panes.len(), 2);
        assert_eq!(panes[0].session_name, "my session: ünï");
        assert_eq!(panes[0].current_path, PathBuf::from("/w/a b\tc"));
        assert_eq!(panes[0].pane_pid, Some(4242));
        assert_eq!(panes[1].pane_pid, None);
    }

    #[test]
    fn matches_by_kind() {
        let s = snap(&[ServerState::Ok], "$1\t%3\t1\t%7\t/w\n");
        assert_eq!(s.session_status("%3"), SessionStatus::Alive);
        assert_eq!(s.session_status("$1"), SessionStatus::Alive);
        // A session *named* "%7" is not pane %7.
        assert_eq!(s.session_status("%7"), SessionStatus::Gone);
        assert_eq!(s.session_status("$3"), SessionStatus::Gone);
    }

    #[test]
    fn requested_names_match_what_tmux_kept() {
        assert_eq!(tmux_session_name("a:b.c"), "a_b_c");
        assert_eq!(tmux_session_name("tab\there"), "tab\\there");
        assert_eq!(tmux_session_name("bell\u{7}x"), "bell\\ax");
        assert_eq!(tmux_session_name("del\u{7f}x"), "del\\177x");
        assert_eq!(tmux_session_name("d$d b\\s"), "d\\$d b\\\\s");
        assert_eq!(tmux_session_name("ünï code"), "ünï code");
        let s = snap(
            &[ServerState::Ok],
            "$1\t%3\t1\ta_b\t/w\n$2\t%4\t1\ttab\\there\t/w\n",
        );
        assert_eq!(s.session_status("a:b"), SessionStatus::Alive);
        assert_eq!(s.session_status("a_b"), SessionStatus::Alive);
        assert_eq!(s.session_status("tab\there"), SessionStatus::Alive);
        assert_eq!(s.session_status("a-b"), SessionStatus::Gone);
    }

    #[test]
    fn an_error_makes_absence_unknown_but_presence_still_counts() {
        let s = snap(
            &[ServerState::Ok, ServerState::Error],
            "$1\t%3\t1\tmain\t/w\n",
        );
        assert_eq!(s.session_status("main"), SessionStatus::Alive);
        assert!(matches!(
            s.session_status("other"),
            SessionStatus::Unknown(_)
        ));
        assert!(!s.is_known());
        let s = snap(&[ServerState::NoServer], "");
        assert_eq!(s.session_status("main"), SessionStatus::Gone);
        assert!(s.is_known());
    }

    #[test]
    fn failure_classification() {
        assert_eq!(
            classify_failure("no server running on /tmp/tmux-0/x").0,
            ServerState::NoServer
        );
        assert_eq!(
            classify_failure("error connecting to /tmp/x (Connection refused)").0,
            ServerState::NoServer
        );
        assert_eq!(
            classify_failure("error connecting to /tmp/x (Permission denied)").0,
            ServerState::Error
        );
        assert_eq!(classify_failure("").0, ServerState::Error);
    }
}
