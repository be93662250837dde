//! What tmux says: servers, panes, and whether a recorded session is alive.
//!
//! Pane ids (`%N`) and session ids (`$N`) are per server, so every pane
//! remembers the server socket it was listed on, and a lock that records its
//! server (`tmux_socket`) is looked up on that server only. Each server's
//! answer is `ok`, `no-server` (provably no sessions) or `error`; an `error`
//! on a server that could hold the session makes its liveness unknown.
//! Running tmux lives in [`super::tmux_query`].

use super::SessionStatus;
pub use super::tmux_names::{SessionKind, pane_matches, target_session, tmux_session_name};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use super::tmux_query::{DEFAULT_TIMEOUT, Tmux, TmuxQuery, env_socket, socket_dir};

/// Answers "is this session / pane alive?".
#[cfg_attr(test, mockall::automock)]
pub trait SessionProbe {
    /// Status of a recorded `session_id` (`%N` pane, `$N` session id, or
    /// name), on the recorded server `socket` only when one is given, else on
    /// every server asked. `speaker` is the user the lock speaks for: a
    /// server of another user can keep the session alive but never prove it
    /// gone.
    // The named lifetime is for mockall, which cannot mock `Option<&Path>` without one.
    #[allow(clippy::needless_lifetimes)]
    fn session_status<'a>(
        &self,
        id: &str,
        socket: Option<&'a Path>,
        speaker: Option<u32>,
    ) -> SessionStatus;

    /// Forgets what tmux said so far: the next question asks again. Called
    /// before acting on a `stale` verdict, so that the session is looked up
    /// *after* the PID was seen dead (a spawner may create its session and
    /// exit between an earlier tmux answer and the PID check).
    fn refresh(&self) {}

    /// The processes whose exit may end a recorded session: its panes' and
    /// their servers'. A waiter watches them to ask tmux again when one
    /// exits; none when they cannot be told.
    #[allow(clippy::needless_lifetimes)]
    fn watch_pids<'a>(&self, _id: &str, _socket: Option<&'a Path>) -> Vec<i32> {
        Vec::new()
    }

    /// The terminals of a recorded session's panes: each is hung up when
    /// tmux closes its pane (the session killed, its process ignoring
    /// SIGHUP and living on). None when they cannot be told.
    #[allow(clippy::needless_lifetimes)]
    fn watch_ttys<'a>(&self, _id: &str, _socket: Option<&'a Path>) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether a server other than `socket` has the session or pane `id`
    /// now: a `%N` pane id or `$N` session id recorded without a server (the
    /// Go tool's locks) may then be that server's, not `socket`'s.
    fn alive_on_another_server(&self, _id: &str, _socket: &Path) -> bool {
        false
    }
}

/// One pane of one tmux server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pane {
    /// The server socket it was listed on.
    #[serde(serialize_with = "crate::paths::ser_path")]
    pub socket: PathBuf,
    /// The server's PID.
    pub server_pid: Option<i32>,
    /// The session's name.
    pub session_name: String,
    /// The session's `$N` id.
    pub session_id: String,
    /// The pane's `%N` id.
    pub pane_id: String,
    /// The process the pane runs.
    pub pane_pid: Option<i32>,
    /// The pane's terminal (`/dev/pts/N`): hung up when tmux closes the pane.
    #[serde(skip)]
    pub tty: Option<PathBuf>,
    #[serde(serialize_with = "crate::paths::ser_path")]
    /// The pane's working directory.
    pub current_path: PathBuf,
}

/// Outcome of asking one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    /// The server answered.
    Ok,
    /// No server listens on the socket: it holds no sessions.
    NoServer,
    /// The server could not be asked: what it holds is unknown.
    Error,
}

/// One server's answer, as reported in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerReport {
    #[serde(serialize_with = "crate::paths::ser_path")]
    /// The server's socket.
    pub socket: PathBuf,
    /// How asking it went.
    pub state: ServerState,
    /// The details, in words.
    pub detail: String,
    /// The user the listening process runs as (`SO_PEERCRED`), when known:
    /// only that user's locks can be proven gone by its answer.
    #[serde(skip)]
    pub owner: Option<u32>,
}

impl ServerReport {
    /// Says how asking this server went, as a debug event (its socket and
    /// its answer escaped: both come from outside).
    pub(crate) fn explain(&self) {
        let state = match self.state {
            ServerState::Ok => "ok",
            ServerState::NoServer => "no-server",
            ServerState::Error => "error",
        };
        tracing::debug!(
            "tmux server {} asked: {state} ({}; listener uid {})",
            crate::trust::escape(&self.socket.to_string_lossy()),
            crate::trust::escape(&self.detail),
            self.owner
                .map_or_else(|| "unknown".into(), |u| u.to_string())
        );
    }
}

/// Everything one run learned from tmux.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmuxSnapshot {
    /// Every server asked, and how it went.
    pub servers: Vec<ServerReport>,
    /// Every pane of the servers that answered.
    pub panes: Vec<Pane>,
}

/// The `-F` format of `list-panes -a`: fixed-shape fields first, the
/// free-form ones last (tmux escapes tabs in session names; a path, last, may
/// hold anything).
pub const FORMAT: &str = "#{pid}\t#{session_id}\t#{pane_id}\t#{pane_pid}\t#{pane_tty}\t#{session_name}\t#{pane_current_path}";

/// Parses `list-panes -a -F FORMAT` output of the server on `socket`; lines
/// that do not have the expected shape are skipped (never a panic).
pub fn parse_list_panes(socket: &Path, out: &str) -> Vec<Pane> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.splitn(7, '\t');
            let server_pid = f.next()?;
            let session_id = f.next()?;
            let pane_id = f.next()?;
            let pane_pid = f.next()?;
            let tty = f.next()?;
            let session_name = f.next()?;
            let path = f.next()?;
            if SessionKind::of(session_id) != SessionKind::SessionId
                || SessionKind::of(pane_id) != SessionKind::Pane
            {
                return None;
            }
            Some(Pane {
                socket: socket.to_path_buf(),
                server_pid: server_pid.parse().ok(),
                session_name: session_name.to_string(),
                session_id: session_id.to_string(),
                pane_id: pane_id.to_string(),
                pane_pid: pane_pid.parse().ok(),
                tty: Some(PathBuf::from(tty)).filter(|t| !t.as_os_str().is_empty()),
                current_path: PathBuf::from(path),
            })
        })
        .collect()
}

impl TmuxSnapshot {
    /// True when every server answered (`ok` or `no-server`).
    pub fn is_known(&self) -> bool {
        self.servers.iter().all(|s| s.state != ServerState::Error)
    }

    /// The answer of the server on `socket`, if it was asked.
    pub fn server(&self, socket: &Path) -> Option<&ServerReport> {
        self.servers.iter().find(|s| s.socket == socket)
    }

    /// Panes matching a recorded session string, by kind, on `socket` only
    /// when one is given.
    pub fn matching<'a>(
        &'a self,
        id: &'a str,
        socket: Option<&'a Path>,
    ) -> impl Iterator<Item = &'a Pane> + 'a {
        self.panes
            .iter()
            .filter(move |p| socket.is_none_or(|s| p.socket == s) && pane_matches(p, id))
    }
}

/// Whether this caller sees every process of user `uid`: its own, or all as
/// root.
fn can_see_all_of(uid: u32) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    me == 0 || me == uid
}

fn unknown(bad: &ServerReport) -> SessionStatus {
    SessionStatus::Unknown(format!(
        "tmux server {} did not answer: {}",
        bad.socket.display(),
        bad.detail
    ))
}

impl SessionProbe for TmuxSnapshot {
    fn alive_on_another_server(&self, id: &str, socket: &Path) -> bool {
        self.matching(id, None).any(|p| p.socket != socket)
    }

    fn session_status(
        &self,
        id: &str,
        socket: Option<&Path>,
        speaker: Option<u32>,
    ) -> SessionStatus {
        if self.matching(id, socket).next().is_some() {
            return SessionStatus::Alive;
        }
        match socket {
            Some(s) => match self.server(s) {
                None => {
                    SessionStatus::Unknown(format!("tmux server {} was not asked", s.display()))
                }
                Some(r) if r.state == ServerState::Error => unknown(r),
                Some(ServerReport {
                    state: ServerState::Ok,
                    owner,
                    ..
                }) if owner.is_none() || speaker.is_none() || owner != &speaker => {
                    SessionStatus::Unknown(format!(
                        "tmux server {} runs as {}, but the lock speaks for {}: its answer cannot prove that user's session gone",
                        s.display(),
                        owner.map_or("an unknown user".to_string(), |u| format!("uid {u}")),
                        speaker.map_or("an unknown user".to_string(), |u| format!("uid {u}")),
                    ))
                }
                // Nobody listens: as far as this caller can see. Another
                // user's server may listen in a network namespace only root
                // (or that user) can look into.
                Some(_) if !speaker.is_none_or(can_see_all_of) => SessionStatus::Unknown(format!(
                    "nobody listens on tmux socket {} as far as this user can see; the lock's user (uid {}) may run its server where only root can look",
                    s.display(),
                    speaker.unwrap_or_default()
                )),
                Some(_) => SessionStatus::Gone,
            },
            None => match self.servers.iter().find(|s| s.state == ServerState::Error) {
                Some(bad) => unknown(bad),
                None => SessionStatus::Gone,
            },
        }
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
                    owner: Some(1000),
                })
                .collect(),
            panes: parse_list_panes(Path::new("/tmp/s0"), panes),
        }
    }

    fn st(s: &TmuxSnapshot, id: &str) -> SessionStatus {
        s.session_status(id, None, Some(1000))
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
        let out = "9\t$1\t%3\t4242\t/dev/pts/9\tmy session: ünï\t/w/a b\tc\n9\t$2\t%4\t\t/dev/pts/9\tx\t/w/2\nbroken line\n\t\t\t\t\t\n";
        let panes = parse_list_panes(Path::new("/s"), out);
        assert_eq!(panes.len(), 2);
        assert_eq!(panes[0].session_name, "my session: ünï");
        assert_eq!(panes[0].current_path, PathBuf::from("/w/a b\tc"));
        assert_eq!(panes[0].pane_pid, Some(4242));
        assert_eq!(panes[1].pane_pid, None);
        assert_eq!(panes[0].server_pid, Some(9));
        assert_eq!(panes[0].socket, PathBuf::from("/s"));
    }

    #[test]
    fn matches_by_kind() {
        let s = snap(&[ServerState::Ok], "9\t$1\t%3\t1\t/dev/pts/9\t%7\t/w\n");
        assert_eq!(st(&s, "%3"), SessionStatus::Alive);
        assert_eq!(st(&s, "$1"), SessionStatus::Alive);
        // A session *named* "%7" is not pane %7.
        assert_eq!(st(&s, "%7"), SessionStatus::Gone);
        assert_eq!(st(&s, "$3"), SessionStatus::Gone);
    }

    #[test]
    fn an_unresolved_target_matches_its_session() {
        let s = snap(&[ServerState::Ok], "9\t$1\t%3\t1\t/dev/pts/9\tmain\t/w\n");
        assert_eq!(st(&s, "main:0.0"), SessionStatus::Alive);
        assert_eq!(st(&s, "=main:1"), SessionStatus::Alive);
        assert_eq!(st(&s, "$1:0"), SessionStatus::Alive);
        assert_eq!(st(&s, "other:0.0"), SessionStatus::Gone);
        assert_eq!(st(&s, ":0.0"), SessionStatus::Gone);
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
            "9\t$1\t%3\t1\t/dev/pts/9\ta_b\t/w\n9\t$2\t%4\t1\t/dev/pts/9\ttab\\there\t/w\n",
        );
        assert_eq!(st(&s, "a:b"), SessionStatus::Alive);
        assert_eq!(st(&s, "a_b"), SessionStatus::Alive);
        assert_eq!(st(&s, "tab\there"), SessionStatus::Alive);
        assert_eq!(st(&s, "a-b"), SessionStatus::Gone);
    }

    #[test]
    fn an_error_makes_absence_unknown_but_presence_still_counts() {
        let s = snap(
            &[ServerState::Ok, ServerState::Error],
            "9\t$1\t%3\t1\t/dev/pts/9\tmain\t/w\n",
        );
        assert_eq!(st(&s, "main"), SessionStatus::Alive);
        assert!(matches!(st(&s, "other"), SessionStatus::Unknown(_)));
        assert!(!s.is_known());
        let s = snap(&[ServerState::NoServer], "");
        assert_eq!(st(&s, "main"), SessionStatus::Gone);
        assert!(s.is_known());
    }

    #[test]
    fn a_recorded_server_is_the_only_one_that_counts() {
        let mut s = snap(
            &[ServerState::Ok, ServerState::Error],
            "9\t$1\t%0\t1\t/dev/pts/9\tmain\t/w\n",
        );
        // %0 lives on /tmp/s0; a lock made for %0 on /tmp/s2 is not kept alive by it.
        assert_eq!(
            s.session_status("%0", Some(Path::new("/tmp/s0")), Some(1000)),
            SessionStatus::Alive
        );
        assert!(matches!(
            s.session_status("%0", Some(Path::new("/tmp/s2")), Some(1000)),
            SessionStatus::Unknown(_)
        ));
        // On a server that answered without it: gone, whatever other servers say.
        assert_eq!(
            s.session_status("%7", Some(Path::new("/tmp/s0")), Some(1000)),
            SessionStatus::Gone
        );
        // On a server that failed: unknown.
        assert!(matches!(
            s.session_status("%0", Some(Path::new("/tmp/s1")), Some(1000)),
            SessionStatus::Unknown(_)
        ));
        s.servers[1].state = ServerState::NoServer;
        assert_eq!(
            s.session_status("%0", Some(Path::new("/tmp/s1")), Some(1000)),
            SessionStatus::Gone
        );
    }
}
