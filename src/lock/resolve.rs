//! Resolving a worker path without a race and without a stranger's symlink.
//!
//! A worker path may run through directories other users write: root's
//! spawner claims `/home/alice/town/w1`, root's `doctor --fix` reopens what
//! it scanned. Resolving it by name and opening it later lets its owner swap
//! a directory for a symlink in between, and root would then create
//! `.runtime/agent.lock` wherever the symlink points. So the path is walked
//! one component at a time through directory descriptors (`O_PATH`,
//! `O_NOFOLLOW`): what was checked is what is opened. Symlinks on the way
//! are followed only when owned by the caller or root (a stricter
//! `fs.protected_symlinks`); another user's symlink is refused.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// Opens the directory at `path` (relative to the current directory, or
/// absolute); returns it and its resolved absolute path (no `.`, `..` or
/// symlink in it).
pub(crate) fn open_dir(path: &Path) -> Result<(OwnedFd, PathBuf)> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let io = |e: Errno| match e {
        Errno::ENOENT => Error::NoSuchWorker { path: path.into() },
        Errno::ENOTDIR => Error::NotADirectory { path: path.into() },
        e => Error::io(path, e),
    };
    let path_fd = |at: &OwnedFd, name: &OsString| {
        openat(
            at.as_fd(),
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let root = || {
        openat(
            nix::fcntl::AT_FDCWD,
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let me = nix::unistd::geteuid().as_raw();
    // The walked directories (their descriptors), from `/`; and the
    // components still to walk, last first.
    let mut dirs: Vec<(OwnedFd, OsString)> = vec![(root().map_err(io)?, OsString::new())];
    let mut pending: Vec<OsString> = components(&abs);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let (at, _) = dirs.last().expect("the root is never popped");
        let child = path_fd(at, &name).map_err(io)?;
        let st = fstat(&child).map_err(io)?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            if st.st_uid != me && st.st_uid != 0 {
                return Err(Error::NotAWorker {
                    path: path.into(),
                    why: format!(
                        "the symlink {} on its way belongs to uid {}: only your own or root's symlinks are followed",
                        walked(&dirs).join(&name).display(),
                        st.st_uid
                    ),
                    meant: None,
                });
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(io(Errno::ELOOP));
            }
            let target = readlinkat(at.as_fd(), name.as_os_str()).map_err(io)?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                dirs.truncate(1);
            }
            pending.extend(components(&target));
            continue;
        }
        if kind != SFlag::S_IFDIR {
            return Err(Error::NotADirectory {
                path: walked(&dirs).join(&name),
            });
        }
        dirs.push((child, name));
    }
    let resolved = walked(&dirs);
    let (last, _) = dirs.pop().expect("the root is never popped");
    let dir = openat(
        last.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    Ok((dir, resolved))
}

/// The path of the walked directories.
fn walked(dirs: &[(OwnedFd, OsString)]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for (_, name) in &dirs[1..] {
        p.push(name);
    }
    p
}

/// The components of `path` to walk, last first (`.` dropped).
fn components(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_kernel_through_own_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::os::unix::fs::symlink(base.join("a/b"), base.join("abs")).unwrap();
        std::os::unix::fs::symlink("a/b", base.join("rel")).unwrap();
        std::os::unix::fs::symlink("rel/..", base.join("up")).unwrap();
        for (given, want) in [
            ("a/b", "a/b"),
            ("abs", "a/b"),
            ("rel", "a/b"),
            ("abs/../b/.", "a/b"),
            ("up", "a"),
        ] {
            let (_, got) = open_dir(&base.join(given)).unwrap();
            assert_eq!(got, base.join(want), "{given}");
            assert_eq!(got, std::fs::canonicalize(base.join(given)).unwrap());
        }
        assert!(matches!(
            open_dir(&base.join("nope")),
            Err(Error::NoSuchWorker { .. })
        ));
        std::fs::write(base.join("f"), "").unwrap();
        assert!(matches!(
            open_dir(&base.join("f")),
            Err(Error::NotADirectory { .. })
        ));
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        assert!(open_dir(&base.join("loop")).is_err());
    }

    #[test]
    fn another_users_symlink_is_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(base.join("t")).unwrap();
        let link = base.join("l");
        std::os::unix::fs::symlink(base.join("t"), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = open_dir(&link).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }
}
