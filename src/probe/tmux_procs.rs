//! tmux servers found by their processes, not only by directory convention.
//!
//! A lock that records no server (the Go tool's) names a session that may
//! live on any server of its user: one under another `TMUX_TMPDIR`, or
//! started with `tmux -S PATH`. Its session is proven gone only when every
//! server running on this host that could hold it was asked. So tmux server
//! processes (the caller's; everyone's, as root) are found in `/proc` (by
//! `comm`), and each one's
//! listening socket by matching its socket descriptors against the unix
//! socket table of its own network namespace. A server whose socket cannot
//! be found, or that runs in another mount namespace (a sandbox), is
//! reported as an `error`: what it holds is unknown here.

use super::tmux::{ServerReport, ServerState};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What `/proc` says of one tmux server process of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// It listens on this path, in the caller's mount namespace.
    Socket(PathBuf),
    /// It cannot be asked from here, and why (a report to keep).
    Unreachable(ServerReport),
}

/// The tmux server processes on this host that can be asked: the caller's
/// (real uid), or every user's when the caller is root (a root spawner may
/// start its agents in another user's tmux; root asks each server as its
/// owner).
pub(crate) fn servers() -> Vec<Found> {
    let me = nix::unistd::getuid().as_raw();
    let everyone = nix::unistd::geteuid().is_root();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_mnt = ns_of("self");
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| is_tmux_server(pid))
        .filter(|&pid| {
            everyone || std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me)
        })
        .map(|pid| found(pid, own_mnt))
        .collect()
}

fn is_tmux_server(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end() == "tmux: server")
}

fn ns_of(pid: &str) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn unreachable(pid: i32, detail: String) -> Found {
    Found::Unreachable(ServerReport {
        socket: PathBuf::from(format!("/proc/{pid}")),
        state: ServerState::Error,
        detail,
        owner: None,
    })
}

fn found(pid: i32, own_mnt: Option<(u64, u64)>) -> Found {
    if ns_of(&pid.to_string()) != own_mnt || own_mnt.is_none() {
        return unreachable(
            pid,
            format!(
                "tmux server pid {pid} runs in another mount namespace: what it holds cannot be asked from here"
            ),
        );
    }
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let t = std::fs::read_link(e.path()).ok()?;
                    let t = t.to_str()?;
                    t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    // A path in the table is anybody's to forge (a socket path may hold a
    // newline and a line of its own): only one the kernel says this very
    // server answers on counts.
    let found = listening(&table)
        .filter(|(ino, _)| inodes.contains(ino))
        .map(|(_, path)| path)
        .find(|path| super::tmux_peer::listens_on(pid, path));
    match found {
        Some(path) => Found::Socket(path),
        None => unreachable(
            pid,
            format!("tmux server pid {pid} listens on no socket path found here"),
        ),
    }
}

/// Listening sockets with a path in a `/proc/net/unix` table: (inode, path).
pub(crate) fn listening(table: &str) -> impl Iterator<Item = (u64, PathBuf)> + '_ {
    table.lines().skip(1).filter_map(|l| {
        // Num RefCount Protocol Flags Type St Inode Path: the path is the rest.
        let mut rest = l.trim_start();
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let i = rest.find(char::is_whitespace)?;
            fields.push(&rest[..i]);
            rest = rest[i..].trim_start();
        }
        // Flags __SO_ACCEPTCON: a listening socket.
        let listens = u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & 0x10000 != 0);
        let ino = fields[6].parse().ok()?;
        (listens && rest.starts_with('/')).then(|| (ino, PathBuf::from(rest)))
    })
}

/// Whether a unix socket listens on `path` in any network namespace this
/// caller can see (all, as root; its own processes' otherwise): a server
/// sandboxed in its own network namespace (`PrivateNetwork=`, `unshare
/// --net`) is not in this namespace's table, and its socket file may have
/// been deleted by a temp cleaner while it runs.
pub(crate) fn listening_anywhere(path: &Path) -> bool {
    let me = nix::unistd::getuid().as_raw();
    let root = nix::unistd::geteuid().is_root();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let pids = std::iter::once("self".to_string()).chain(
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit())),
    );
    for pid in pids {
        if pid != "self"
            && !root
            && !std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me)
        {
            continue;
        }
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen.insert((ns.dev(), ns.ino())) {
            continue;
        }
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
        if listening(&table).any(|(_, p)| p == path) {
            return true;
        }
    }
    false
}

/// Whether `a` and `b` are one socket file (however each path reaches it).
pub(crate) fn same_socket(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unix_socket_table() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 4242 /tmp/x y/default\n\
                     0000000000000000: 00000002 00000000 00000000 0001 03 4243 /tmp/conn\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 4244 @abstract\n";
        let got: Vec<_> = listening(table).collect();
        assert_eq!(got, vec![(4242, PathBuf::from("/tmp/x y/default"))]);
    }
}
