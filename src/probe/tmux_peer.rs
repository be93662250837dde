//! Who listens on a tmux socket, decided before any tmux client is run
//! against it, and as whom that client may run.
//!
//! A socket path can come from a lock file that anybody who can write the
//! worker wrote, and a tmux client obeys its server: a server may tell the
//! client to exec a program (`MSG_SHELL`). So a client is only ever run
//! against a listener whose owner is known from the kernel (`SO_PEERCRED`),
//! that runs tmux and lives in the caller's mount namespace, and only as
//! that owner: the caller's own servers as the caller; another user's server
//! as that user when the caller is root (supplementary groups, gid and uid
//! dropped to the owner's, environment cleared, before exec) and not at all
//! otherwise; always in a session of its own, without the caller's
//! terminal. The client reaches the very socket that was vetted through an
//! `O_PATH` descriptor (`-S /proc/self/fd/3`), so the path cannot be swapped
//! between the check and the call.
//!
//! The "runs tmux" check only classifies the listener (anything else is an
//! `error`): a process can listen and then exec tmux. What makes a forged
//! server harmless is the rest: its client runs as the server's own user,
//! with no terminal and nothing of the caller's but two pipes.

use super::tmux::ServerState;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket, sockopt,
};
use nix::sys::stat::{Mode, fstat};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The descriptor number the vetted socket has in the tmux client.
const CLIENT_FD: i32 = 3;

/// A listener found to be a tmux server, with the credentials it runs as.
#[derive(Debug)]
pub(crate) struct Vetted {
    /// The listening process.
    pid: i32,
    /// Its user.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// `O_PATH` descriptor of the socket file that was vetted.
    fd: OwnedFd,
}

/// Why a socket is not asked: its state and the words for it.
pub(crate) type Refusal = (ServerState, String);

/// Whether `pid` runs tmux: the very binary of the client `bin` (a shim on
/// `PATH` resolved), or a binary named `tmux` (another install, or one a
/// package upgrade replaced: `/usr/bin/tmux (deleted)`).
fn runs_tmux(pid: i32, bin: &Path) -> Result<(), String> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let unknown =
        |e: std::io::Error| format!("cannot tell what the listening process (pid {pid}) runs: {e}");
    let target = std::fs::read_link(&exe).map_err(unknown)?;
    let running = std::fs::metadata(&exe).map_err(unknown)?;
    let same_file = std::fs::metadata(bin)
        .is_ok_and(|md| md.dev() == running.dev() && md.ino() == running.ino());
    let name = target
        .to_str()
        .map(|t| t.strip_suffix(" (deleted)").unwrap_or(t));
    let named_tmux = name.is_some_and(|t| Path::new(t).file_name() == Some("tmux".as_ref()));
    if same_file || named_tmux {
        return Ok(());
    }
    Err(format!(
        "the process listening on it (pid {pid}, {}) is not a tmux server",
        target.display()
    ))
}

/// The socket file at `socket` (opened `O_PATH`, never through a symlink)
/// and the credentials of the process listening on it, from the kernel.
/// `Err` says what it is instead: `no-server` when nobody listens.
fn listener_of(socket: &Path) -> Result<(OwnedFd, nix::sys::socket::UnixCredentials), Refusal> {
    let err = |s: String| (ServerState::Error, s);
    let fd = open(
        socket,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("cannot open socket: {}", e.desc())))?;
    let st = fstat(&fd).map_err(|e| err(format!("cannot stat socket: {}", e.desc())))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(err("not a socket".into()));
    }
    let via = UnixAddr::new(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str())
        .map_err(|e| err(format!("cannot address socket: {}", e.desc())))?;
    let conn = socket_fd().map_err(|e| err(format!("cannot create a socket: {}", e.desc())))?;
    match connect(conn.as_raw_fd(), &via) {
        Ok(()) => {}
        Err(Errno::ECONNREFUSED) => {
            return Err((
                ServerState::NoServer,
                "nobody listens on the socket: the server exited".into(),
            ));
        }
        Err(Errno::EAGAIN) => {
            return Err(err(
                "the listener accepts no connections (its queue is full)".into(),
            ));
        }
        Err(e) => return Err(err(format!("cannot connect: {}", e.desc()))),
    }
    let cred = getsockopt(&conn, sockopt::PeerCredentials).map_err(|e| {
        err(format!(
            "cannot read the listener's credentials: {}",
            e.desc()
        ))
    })?;
    Ok((fd, cred))
}

/// Whether process `pid` is the one listening on `socket`: a path read
/// from `/proc/net/unix` (where a socket path may hold a newline and forge
/// a line) is only trusted once the kernel says who answers on it.
pub(crate) fn listens_on(pid: i32, socket: &Path) -> bool {
    listener_of(socket).is_ok_and(|(_, cred)| cred.pid() == pid)
}

/// Vets the listener on `socket`: its owner from the kernel, and that it is
/// a tmux server process running `bin`. `Err` says what the socket is
/// instead: `no-server` when nobody listens, else an `error`.
pub(crate) fn vet(socket: &Path, bin: &Path) -> Result<Vetted, Refusal> {
    let err = |s: String| (ServerState::Error, s);
    let (fd, cred) = listener_of(socket)?;
    if cred.pid() <= 0 {
        return Err(err(
            "the listening process is not visible here (another PID namespace)".into(),
        ));
    }
    runs_tmux(cred.pid(), bin).map_err(err)?;
    Ok(Vetted {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        fd,
    })
}

fn socket_fd() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

impl Vetted {
    /// Whether this caller may ask the server: its own, or any as root; and
    /// only a server of this mount namespace (one reached through another
    /// namespace's view, such as `/proc/PID/root/...`, runs where its owner
    /// may be someone else entirely, and its answer means nothing here).
    pub fn askable(&self) -> Result<(), Refusal> {
        let me = nix::unistd::geteuid().as_raw();
        if self.uid != me && me != 0 {
            return Err((
                ServerState::Error,
                format!(
                    "the server belongs to uid {}; only that user or root can ask it",
                    self.uid
                ),
            ));
        }
        let ns = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        match (
            ns(format!("/proc/{}/ns/mnt", self.pid)),
            ns("/proc/self/ns/mnt".into()),
        ) {
            (Ok(theirs), Ok(ours)) if theirs == ours => Ok(()),
            (Ok(_), Ok(_)) => Err((
                ServerState::Error,
                format!(
                    "the server (pid {}) runs in another mount namespace: not asked from here",
                    self.pid
                ),
            )),
            (Err(e), _) | (_, Err(e)) => Err((
                ServerState::Error,
                format!("cannot tell the server's mount namespace: {e}"),
            )),
        }
    }

    /// `tmux -u -S /proc/self/fd/3 ARGS`, run as the server's owner, with a
    /// clean environment and `/` as its directory.
    pub fn command(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        // -u: names as they are, whatever the locale. Without a UTF-8 locale
        // (cron, `env -i`) tmux prints `café` as `caf_`, and a live session
        // would look gone.
        cmd.arg("-u")
            .arg("-S")
            .arg(format!("/proc/self/fd/{CLIENT_FD}"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/");
        let fd = self.fd.as_raw_fd();
        let drop_to = (nix::unistd::geteuid().as_raw() != self.uid).then_some((self.uid, self.gid));
        // SAFETY: between fork and exec only async-signal-safe system calls
        // are made (setsid, dup2, fcntl, close_range or close, setgroups,
        // setgid, setuid); nothing allocates.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                // Its own session, without a controlling terminal: a client
                // run as another user (who can ptrace it, or make it exec a
                // program) must never reach the caller's terminal.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if fd == CLIENT_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CLIENT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing of the caller's but the pipes and the socket: a
                // descriptor a cron job passed in must not reach a client
                // that runs as another user (who may ptrace it).
                if libc::syscall(libc::SYS_close_range, CLIENT_FD + 1, u32::MAX, 0) < 0 {
                    let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(64, 1 << 20) as i32;
                    for fd in CLIENT_FD + 1..max {
                        libc::close(fd);
                    }
                }
                if let Some((uid, gid)) = drop_to {
                    if libc::setgroups(0, std::ptr::null()) < 0
                        || libc::setgid(gid) < 0
                        || libc::setuid(uid) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Never go on as root when the drop did not take.
                    if libc::geteuid() != uid || libc::getegid() != gid {
                        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_is_not_tmux_is_an_error_and_a_dead_one_no_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tmux = which::which("sh").unwrap();
        let (state, why) = vet(&path, &tmux).unwrap_err();
        assert_eq!(state, ServerState::Error);
        assert!(why.contains("is not a tmux server"), "{why}");
        // The test binary itself listens: it is "tmux" when it is the binary.
        let me = std::env::current_exe().unwrap();
        let v = vet(&path, &me).unwrap();
        assert_eq!(v.uid, nix::unistd::geteuid().as_raw());
        drop(l);
        let (state, _) = vet(&path, &me).unwrap_err();
        assert_eq!(state, ServerState::NoServer);
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert_eq!(vet(&file, &me).unwrap_err().1, "not a socket");
    }
}
