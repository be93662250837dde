//! Which tmux servers there are, and what a socket path says before tmux is
//! run: the default servers (every socket of the user's socket directory,
//! or the `--tmux-socket` ones, plus `$TMUX`'s), paths as tmux bound them,
//! and missing socket files judged by why they are asked and by the
//! listening sockets of `/proc/net/unix`.

use super::tmux::{ServerReport, ServerState};
use super::tmux_procs::{Found, listening_anywhere, same_socket};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one server may take to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which servers to ask by default, and how.
#[derive(Debug, Clone)]
pub struct TmuxQuery {
    /// `--tmux-socket` values; empty means every server of the user.
    pub sockets: Vec<String>,
    /// Per-server time limit.
    pub timeout: Duration,
    /// The directory tmux keeps its default sockets under, instead of
    /// `$TMUX_TMPDIR` (or `/tmp`) from the environment.
    pub tmpdir: Option<PathBuf>,
    /// Whether every tmux server of the caller running on the host counts,
    /// found by its process (the default), or only the sockets of the
    /// socket directory, `$TMUX`'s and the recorded ones
    /// (`AGENTLOCK_TMUX_SERVERS=dir`, for a caller that must not see
    /// other servers, such as a test in its own `TMUX_TMPDIR`).
    pub discover: bool,
}

/// The environment variable that narrows the default servers to the
/// socket directory's: `AGENTLOCK_TMUX_SERVERS=dir`.
pub const SERVERS_ENV: &str = "AGENTLOCK_TMUX_SERVERS";

impl Default for TmuxQuery {
    fn default() -> Self {
        TmuxQuery {
            sockets: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            tmpdir: None,
            discover: std::env::var(SERVERS_ENV).map_or(true, |v| v != "dir"),
        }
    }
}

/// `${TMUX_TMPDIR:-/tmp}/tmux-<uid>`, as tmux computes it.
pub fn socket_dir() -> PathBuf {
    socket_dir_under(None)
}

/// `<tmpdir>/tmux-<uid>`; `tmpdir` defaults as tmux does it.
fn socket_dir_under(tmpdir: Option<&Path>) -> PathBuf {
    let base = tmpdir.map(|d| d.as_os_str().to_owned()).unwrap_or_else(|| {
        std::env::var_os("TMUX_TMPDIR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/tmp".into())
    });
    Path::new(&base).join(format!("tmux-{}", nix::unistd::getuid().as_raw()))
}

/// A socket path in the form it is recorded and compared in: absolute, and
/// otherwise as tmux bound it (symlinks are not resolved: `/proc/net/unix`
/// lists a socket by the path it was bound to).
pub fn normalize_socket(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The server of the caller's own tmux client: the first field of `$TMUX`
/// (`socket,server pid,session index`).
pub fn env_socket() -> Option<PathBuf> {
    let v = std::env::var("TMUX").ok()?;
    let socket = v.rsplitn(3, ',').last()?;
    // A relative `-S` path is relative to the server's directory, not ours:
    // unusable, so not recorded.
    Path::new(socket)
        .is_absolute()
        .then(|| PathBuf::from(socket))
}

/// Why a socket is asked: decides what a missing socket file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Listed in the socket directory just now.
    Listed,
    /// Named by `--tmux-socket`: missing is an error.
    Named,
    /// Recorded in a lock, or `$TMUX`: missing with its directory present is
    /// a server that exited.
    Recorded,
}

impl TmuxQuery {
    /// The default servers: listed (or named) ones plus `$TMUX`'s; or an error
    /// report for a socket directory that exists but cannot be listed.
    pub(crate) fn defaults(&self) -> Vec<Result<(PathBuf, Origin), ServerReport>> {
        let dir = socket_dir_under(self.tmpdir.as_deref());
        let mut out = Vec::new();
        if self.sockets.is_empty() {
            // tmux itself refuses a socket directory that is another user's
            // or open to others: whoever made it may listen there.
            if let Some(why) = unsafe_socket_dir(&dir) {
                out.push(Err(ServerReport {
                    socket: dir.clone(),
                    state: ServerState::Error,
                    detail: why,
                    owner: None,
                }));
                return out;
            }
            match std::fs::read_dir(&dir) {
                Ok(entries) => out.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                        .map(|e| Ok((normalize_socket(&e.path()), Origin::Listed))),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out.push(Err(ServerReport {
                    socket: dir.clone(),
                    state: ServerState::Error,
                    detail: format!("cannot list socket directory: {e}"),
                    owner: None,
                })),
            }
        } else {
            out.extend(self.sockets.iter().map(|s| {
                let p = if s.contains('/') {
                    PathBuf::from(s)
                } else {
                    dir.join(s)
                };
                Ok((normalize_socket(&p), Origin::Named))
            }));
        }
        out.extend(env_socket().map(|s| Ok((s, Origin::Recorded))));
        // Every other server of the caller running here, found by its
        // process: one under another TMUX_TMPDIR, or started with -S PATH.
        if self.sockets.is_empty() && self.discover {
            for found in super::tmux_procs::servers() {
                match found {
                    Found::Socket(p) => {
                        let known = out
                            .iter()
                            .any(|o| matches!(o, Ok((s, _)) if same_socket(s, &p)));
                        if !known {
                            out.push(Ok((p, Origin::Listed)));
                        }
                    }
                    Found::Unreachable(report) => out.push(Err(report)),
                }
            }
        }
        // A server whose socket file was deleted still listens on its path:
        // it holds sessions nobody can ask about. Say so, never "no sessions".
        if self.sockets.is_empty() {
            let canonical = std::fs::canonicalize(&dir).ok();
            for path in listening_paths() {
                let under = |d: &Path| path.parent() == Some(d);
                if (under(&dir) || canonical.as_deref().is_some_and(under)) && !path.exists() {
                    out.push(Err(ServerReport {
                        socket: path,
                        state: ServerState::Error,
                        detail: DELETED.into(),
                        owner: None,
                    }));
                }
            }
        }
        out
    }
}

/// Why the socket directory must not be trusted, if it must not: another
/// user's, or open to others (tmux refuses both); `None` when it is fine or
/// does not exist.
fn unsafe_socket_dir(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir).ok()?;
    let me = nix::unistd::getuid().as_raw();
    if !md.is_dir() {
        Some("the socket directory is not a directory (tmux would refuse it): not asked".into())
    } else if md.uid() != me {
        Some(format!(
            "the socket directory belongs to uid {}, not {me} (tmux would refuse it): not asked",
            md.uid()
        ))
    } else if md.mode() & 0o007 != 0 {
        Some(format!(
            "the socket directory is open to others (mode {:o}; tmux would refuse it): not asked",
            md.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// What is at a socket path before tmux is run: `None` to go ahead and ask.
pub(crate) fn precheck(socket: &Path, origin: Origin) -> Option<(ServerState, String)> {
    if !socket.is_absolute() {
        // A recorded relative path would be looked up from wherever the
        // checker happens to run.
        return Some((ServerState::Error, "not an absolute socket path".into()));
    }
    match std::fs::symlink_metadata(socket) {
        // Two servers bound to one path: the first lost its file to the
        // second, and tmux would answer for the second only.
        Ok(md) if md.file_type().is_socket() && bound_count(socket) > 1 => Some((
            ServerState::Error,
            "several tmux servers listen on this path (one lost its socket file); cannot tell which one holds the session".into(),
        )),
        Ok(md) if md.file_type().is_socket() => None,
        Ok(_) => Some((ServerState::Error, "not a socket".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(match origin {
            // Deleted (say by a temp cleaner) while its server still listens:
            // the server lives on, and `kill -USR1` recreates the file.
            Origin::Recorded if bound_count(socket) > 0 || listening_anywhere(socket) => {
                (ServerState::Error, DELETED.into())
            }
            Origin::Recorded
                if socket
                    .parent()
                    .is_some_and(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir())) =>
            {
                (
                    ServerState::NoServer,
                    "socket file is gone: the server exited".into(),
                )
            }
            Origin::Recorded => (
                ServerState::Error,
                "socket directory does not exist here; cannot tell whether that server runs".into(),
            ),
            _ => (ServerState::Error, "no such tmux socket".into()),
        }),
        Err(e) => Some((ServerState::Error, format!("cannot stat socket: {e}"))),
    }
}

/// What a server whose socket file was deleted is reported as.
pub(crate) const DELETED: &str = "socket file is gone but a server still listens on it (kill -USR1 the tmux server to recreate it)";

/// Paths of the listening unix sockets of this network namespace
/// (`/proc/net/unix` keeps the path of a socket whose file was deleted).
fn listening_paths() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    super::tmux_procs::listening(&table)
        .map(|(_, p)| p)
        .collect()
}

/// How many listening sockets are bound to `path`. Unreadable table: 1 (a
/// server may listen), the safe side.
pub(crate) fn bound_count(path: &Path) -> usize {
    if std::fs::metadata("/proc/net/unix").is_err() {
        return 1;
    }
    listening_paths()
        .iter()
        .filter(|p| p.as_path() == path)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_sockets_by_origin() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let listening = dir.path().join("listening");
        let l = std::os::unix::net::UnixListener::bind(&listening).unwrap();
        std::fs::remove_file(&listening).unwrap();
        assert_eq!(
            precheck(&listening, Origin::Recorded).unwrap().0,
            ServerState::Error
        );
        drop(l);
        assert_eq!(
            precheck(&gone, Origin::Recorded).unwrap().0,
            ServerState::NoServer
        );
        assert_eq!(
            precheck(&gone, Origin::Named).unwrap().0,
            ServerState::Error
        );
        let no_dir = dir.path().join("nodir/sock");
        assert_eq!(
            precheck(&no_dir, Origin::Recorded).unwrap().0,
            ServerState::Error
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(
            precheck(&file, Origin::Recorded).unwrap().0,
            ServerState::Error
        );
    }
}
