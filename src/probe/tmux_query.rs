//! Running tmux: one `list-panes -a` per server per run, never one per lock.
//!
//! [`Tmux`] asks the default servers (see [`super::tmux_sockets`]) on first
//! need, and each server a judged lock records the first time one does, in
//! parallel, and remembers every answer; it also resolves `--session`
//! targets to pane ids.

use super::SessionStatus;
use super::tmux::{FORMAT, ServerReport, ServerState, SessionKind, SessionProbe, TmuxSnapshot};
pub use super::tmux_call::classify_failure;
use super::tmux_call::{Answer, call_all};
pub use super::tmux_sockets::{
    DEFAULT_TIMEOUT, TmuxQuery, env_socket, normalize_socket, socket_dir,
};
use super::tmux_sockets::{DELETED, Origin, bound_count, precheck};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Asks each server once, in parallel; returns their reports and panes.
fn ask(targets: Vec<(PathBuf, Origin)>, timeout: Duration) -> TmuxSnapshot {
    let mut snap = TmuxSnapshot::default();
    let bin = which::which("tmux").ok();
    let known: Vec<Option<(ServerState, String)>> = targets
        .iter()
        .map(|(socket, origin)| match (precheck(socket, *origin), &bin) {
            (Some(known), _) => Some(known),
            (None, None) => Some((ServerState::Error, "tmux binary not found on PATH".into())),
            (None, Some(_)) => None,
        })
        .collect();
    let to_ask: Vec<PathBuf> = targets
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .map(|((s, _), _)| s.clone())
        .collect();
    let mut calls = match &bin {
        Some(bin) => call_all(bin, &to_ask, &["list-panes", "-a", "-F", FORMAT], timeout),
        None => Vec::new(),
    }
    .into_iter();
    for ((socket, origin), known) in targets.into_iter().zip(known) {
        let (owner, result) = match known {
            Some(known) => (None, Err(known)),
            None => match calls.next() {
                Some(call) => (call.owner, call.result),
                None => (None, Err((ServerState::Error, "not asked".into()))),
            },
        };
        let (state, detail) = match result {
            Err(known) => known,
            Ok(Answer::Output {
                success: true,
                stdout,
                ..
            }) => {
                let panes = super::tmux::parse_list_panes(&socket, &stdout);
                let detail = format!("{} panes", panes.len());
                snap.panes.extend(panes);
                (ServerState::Ok, detail)
            }
            // Listed or recorded, then gone before tmux connected: exited,
            // unless a server still listens on the path.
            Ok(Answer::Output { stderr, .. })
                if origin != Origin::Named && stderr.contains("No such file") =>
            {
                if bound_count(&socket) > 0 || super::tmux_procs::listening_anywhere(&socket) {
                    (ServerState::Error, DELETED.into())
                } else {
                    (ServerState::NoServer, stderr)
                }
            }
            Ok(Answer::Output { stderr, .. }) => classify_failure(&stderr),
            Ok(Answer::Failed(why)) => (ServerState::Error, why),
        };
        snap.servers.push(ServerReport {
            socket,
            state,
            detail,
            owner,
        });
    }
    snap
}

/// How many per-server time limits one run may spend asking tmux (between
/// refreshes).
pub const BUDGET: u32 = 3;

/// Every tmux answer of one run: the default servers on first need, and
/// each recorded server the first time a lock names it.
#[derive(Debug)]
pub struct Tmux {
    query: TmuxQuery,
    state: Mutex<(bool, TmuxSnapshot)>,
    /// Time spent asking since the last refresh: bounded by [`BUDGET`]
    /// times the per-server limit, so servers that answer once and then hang
    /// cannot stall a run (a `doctor --fix` re-judging many locks) for long.
    spent: Mutex<Duration>,
    /// Every server of the user, listed once: what a `--tmux-socket` run
    /// did not ask.
    all_servers: std::sync::OnceLock<Vec<PathBuf>>,
}

/// A session given at claim time, resolved through tmux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What to record: a pane id for a target like `main:0.0`, else as given.
    pub session: String,
    /// The server it lives on, when exactly one has it.
    pub socket: Option<PathBuf>,
    /// Said on stderr when the session does not exist now, or is ambiguous.
    pub warning: Option<String>,
    /// How many servers have it, when more than one: it names no one
    /// session then, and must not act for any of them.
    pub ambiguous: Option<usize>,
}

impl Tmux {
    /// Nothing is asked until first needed.
    pub fn new(query: TmuxQuery) -> Tmux {
        Tmux {
            query,
            state: Mutex::new((false, TmuxSnapshot::default())),
            spent: Mutex::new(Duration::ZERO),
            all_servers: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, TmuxSnapshot)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`ask`] within what is left of the run's time for tmux; with nothing
    /// left, every target is an error, never proof.
    fn ask_within(&self, targets: Vec<(PathBuf, Origin)>) -> TmuxSnapshot {
        let budget = self.query.timeout * BUDGET;
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let left = budget.saturating_sub(*spent);
        let got = if left.is_zero() {
            TmuxSnapshot {
                servers: targets
                    .into_iter()
                    .map(|(socket, _)| ServerReport {
                        socket,
                        state: ServerState::Error,
                        detail: format!(
                            "not asked: this run spent its {} s for tmux on servers that did not answer",
                            budget.as_secs()
                        ),
                        owner: None,
                    })
                    .collect(),
                panes: Vec::new(),
            }
        } else {
            let started = std::time::Instant::now();
            let got = ask(targets, self.query.timeout.min(left));
            *spent += started.elapsed();
            got
        };
        got.servers.iter().for_each(ServerReport::explain);
        got
    }

    /// Asks the default servers, once.
    pub fn ensure_default(&self) {
        let mut st = self.lock();
        if st.0 {
            return;
        }
        let mut targets = Vec::new();
        for d in self.query.defaults() {
            match d {
                Ok((s, o))
                    if st.1.server(&s).is_none() && !targets.iter().any(|(t, _)| *t == s) =>
                {
                    targets.push((s, o))
                }
                Ok(_) => {}
                Err(report) => {
                    report.explain();
                    st.1.servers.push(report)
                }
            }
        }
        let got = self.ask_within(targets);
        st.1.servers.extend(got.servers);
        st.1.panes.extend(got.panes);
        st.0 = true;
    }

    /// Asks the recorded servers not asked yet, in parallel.
    pub fn ensure<'a>(&self, sockets: impl IntoIterator<Item = &'a Path>) {
        let mut st = self.lock();
        let wanted: BTreeSet<PathBuf> = sockets
            .into_iter()
            .filter(|s| st.1.server(s).is_none())
            .map(Path::to_path_buf)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let got = self.ask_within(wanted.into_iter().map(|s| (s, Origin::Recorded)).collect());
        st.1.servers.extend(got.servers);
        st.1.panes.extend(got.panes);
    }

    /// Everything learned so far, default servers included.
    pub fn snapshot(&self) -> TmuxSnapshot {
        self.ensure_default();
        self.lock().1.clone()
    }

    /// Resolves a `--session` value: a tmux target such as `main:0.0` becomes
    /// the pane id it names now; a name or id is looked up to learn its
    /// server. A session that does not exist now is kept as given, with a
    /// warning (a spawner may claim before it creates the session).
    pub fn resolve(&self, requested: &str) -> Resolved {
        let snap = self.snapshot();
        let is_target = SessionKind::of(requested) == SessionKind::Name
            && (requested.contains(':') || requested.contains('.'));
        let hits: Vec<(String, PathBuf)> = if is_target {
            self.resolve_target(&snap, requested)
        } else {
            let mut hits: Vec<(String, PathBuf)> = snap
                .matching(requested, None)
                .map(|p| (requested.to_string(), p.socket.clone()))
                .collect();
            hits.dedup();
            hits
        };
        match hits.as_slice() {
            [(session, socket)] => Resolved {
                session: session.clone(),
                socket: Some(socket.clone()),
                warning: None,
                ambiguous: None,
            },
            [] => Resolved {
                session: requested.to_string(),
                socket: None,
                warning: Some(if is_target {
                    format!(
                        "no tmux pane matches target '{requested}' now on the servers asked; taken as given (it counts as alive while its session exists)"
                    )
                } else {
                    format!(
                        "no tmux session or pane '{requested}' exists now on the servers asked; taken as given"
                    )
                }),
                ambiguous: None,
            },
            many => Resolved {
                session: requested.to_string(),
                socket: None,
                warning: Some(format!(
                    "'{requested}' exists on {} tmux servers; recorded without a server (pass --tmux-socket to pick one)",
                    many.len()
                )),
                ambiguous: Some(many.len()),
            },
        }
    }

    /// `display-message -p -t TARGET '#{pane_id}'` on every server that
    /// answered, with the session (and a window given by name) matched
    /// exactly: tmux would otherwise take a prefix or a pattern (`agent`
    /// finding `agent-2`).
    fn resolve_target(&self, snap: &TmuxSnapshot, target: &str) -> Vec<(String, PathBuf)> {
        let target = exact_target(target);
        let target = target.as_str();
        let Ok(bin) = which::which("tmux") else {
            return Vec::new();
        };
        let sockets: Vec<PathBuf> = snap
            .servers
            .iter()
            .filter(|s| s.state == ServerState::Ok)
            .map(|s| s.socket.clone())
            .collect();
        let args = ["display-message", "-p", "-t", target, "#{pane_id}"];
        call_all(&bin, &sockets, &args, self.query.timeout)
            .into_iter()
            .zip(sockets)
            .filter_map(|(call, socket)| match call.result {
                Ok(Answer::Output {
                    success: true,
                    stdout,
                    ..
                }) => {
                    let pane = stdout.trim().to_string();
                    (SessionKind::of(&pane) == SessionKind::Pane).then_some((pane, socket))
                }
                _ => None,
            })
            .collect()
    }
}

/// A tmux target with its session, and a window given by name, marked for
/// exact matching (`=name`); a `$N` session id or a window index as given.
pub fn exact_target(target: &str) -> String {
    let exact = |part: &str| {
        if part.is_empty()
            || part.starts_with('=')
            || part.starts_with('$')
            || part.starts_with('@')
            || part.bytes().all(|b| b.is_ascii_digit())
        {
            part.to_string()
        } else {
            format!("={part}")
        }
    };
    let Some((session, rest)) = target.split_once(':') else {
        return exact(target);
    };
    let (window, pane) = match rest.split_once('.') {
        Some((w, p)) => (w, Some(p)),
        None => (rest, None),
    };
    let mut out = format!("{}:{}", exact(session), exact(window));
    if let Some(p) = pane {
        out.push('.');
        out.push_str(p);
    }
    out
}

impl SessionProbe for Tmux {
    fn watch_pids(&self, id: &str, socket: Option<&Path>) -> Vec<i32> {
        let st = self.lock();
        let mut pids: Vec<i32> =
            st.1.matching(id, socket)
                .flat_map(|p| [p.pane_pid, p.server_pid])
                .flatten()
                .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn watch_ttys(&self, id: &str, socket: Option<&Path>) -> Vec<PathBuf> {
        let st = self.lock();
        let mut ttys: Vec<PathBuf> =
            st.1.matching(id, socket)
                .filter_map(|p| p.tty.clone())
                .collect();
        ttys.sort();
        ttys.dedup();
        ttys
    }

    fn alive_on_another_server(&self, id: &str, socket: &Path) -> bool {
        self.ensure_default();
        self.lock().1.alive_on_another_server(id, socket)
    }

    fn refresh(&self) {
        *self.lock() = (false, TmuxSnapshot::default());
        *self.spent.lock().unwrap_or_else(|p| p.into_inner()) = Duration::ZERO;
    }

    fn session_status(
        &self,
        id: &str,
        socket: Option<&Path>,
        speaker: Option<u32>,
    ) -> SessionStatus {
        match socket {
            Some(s) => self.ensure([s]),
            None => self.ensure_default(),
        }
        let st = self.lock().1.session_status(id, socket, speaker);
        // Restricted by --tmux-socket, a lock that names no server may live on
        // a server not asked: absence there proves nothing.
        if st == SessionStatus::Gone && socket.is_none() && !self.query.sockets.is_empty() {
            let all = self.all_servers.get_or_init(|| {
                TmuxQuery::default()
                    .defaults()
                    .into_iter()
                    .filter_map(Result::ok)
                    .map(|(s, _)| s)
                    .collect()
            });
            let st_now = self.lock();
            let unasked = all.iter().find(|s| st_now.1.server(s).is_none()).cloned();
            drop(st_now);
            if let Some(other) = unasked {
                return SessionStatus::Unknown(format!(
                    "not looked for on tmux server {} (--tmux-socket names others) and the lock records no server",
                    other.display()
                ));
            }
        }
        st
    }
}

#[cfg(test)]
mod tests;
