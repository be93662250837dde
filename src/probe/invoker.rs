//! The default holder: the process that invoked agentlock, seen through
//! what only waits for it.
//!
//! `slot=$(agentlock claim ...)` in a script, `subprocess.run("agentlock
//! claim w", shell=True)` in Python, `timeout 5 agentlock claim w`: the
//! process that invoked agentlock is a `$(...)` subshell, a `sh -c` or a
//! wrapper that exits as soon as agentlock does. Those are skipped, up to
//! the process that goes on living (the script, the Python spawner). A
//! holder that is init, or a process manager agentlock may have been
//! reparented to when its real invoker died, is never taken silently.

use super::ProcessProbe;
use super::process::{LiveProcesses, parent_of};
use super::shell_words::{execs_after, last_command_is_agentlock};
use crate::error::{Error, Result};
use std::sync::OnceLock;

/// Programs that run a command and wait for it, and are no holder themselves:
/// `timeout 10 agentlock claim w` in a script names the script.
const WRAPPERS: &[&str] = &["timeout", "sudo", "doas", "flock", "time", "runuser", "su"];

/// Shells whose `-c` string may end in agentlock.
const SHELLS: &[&str] = &["sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox"];

/// Process managers that adopt orphans: a holder that is one of them may be
/// the process agentlock was reparented to, not the one that invoked it.
pub(crate) const REAPERS: &[&str] = &[
    "systemd",
    "init",
    "tini",
    "dumb-init",
    "catatonit",
    "s6-svscan",
    "runit",
    "supervisord",
];

/// The longest chain of wrappers followed.
const MAX_CHAIN: usize = 16;

static PARENT: OnceLock<i32> = OnceLock::new();

/// Remembers this process's parent now, before anything else runs: a
/// parent that dies while agentlock works leaves it to init, and the
/// parent read then would be PID 1.
pub fn remember_parent() {
    let _ = PARENT.set(nix::unistd::getppid().as_raw());
}

/// The default holder, and a warning when it may not outlive the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    /// The process taken as the holder.
    pub pid: i32,
    /// Said on stderr and in JSON (`holder_warning`): why this holder may
    /// not be the process that goes on living.
    pub warning: Option<String>,
}

/// The default holder: the process that invoked this one, skipping `$(...)`
/// command substitutions (and pipelines inside them), `sh -c` strings whose
/// last command is agentlock, and wrappers such as `timeout(1)`. Init of
/// this host (PID 1 of the initial PID namespace) is never the holder: then
/// agentlock's invoker exited before it could be named (exit 2).
pub fn invoker() -> Result<Invoker> {
    let first = *PARENT.get_or_init(|| nix::unistd::getppid().as_raw());
    let mut pid = first;
    for _ in 0..MAX_CHAIN {
        // Stepping up to PID 1 is allowed: a container's entrypoint script
        // is PID 1 of its namespace.
        let Some(parent) = parent_of(pid).filter(|p| *p >= 1) else {
            break;
        };
        let comm = LiveProcesses.comm(pid).unwrap_or_default();
        let skip = WRAPPERS.contains(&comm.as_str())
            || shell_waiting_for_agentlock(pid, &comm)
            || is_command_substitution(pid, parent)
            || is_pipeline_member_in_substitution(pid, parent);
        if !skip {
            break;
        }
        pid = parent;
    }
    let in_initial_ns = super::own_pid_ns() == Some(crate::verdict::INIT_PID_NS);
    if LiveProcesses.comm(pid).is_some_and(|c| c == "tmux: server") {
        return Err(Error::BadPid {
            pid: pid.into(),
            why: "the default holder would be a tmux server (tmux run-shell?): every pane would act for it; name the holder with --pid or its pane with --session".into(),
        });
    }
    if pid == 1 && in_initial_ns {
        return Err(Error::BadPid {
            pid: 1,
            why: "the default holder would be init: the process that invoked agentlock exited (agentlock was reparented); nothing is held (name the holder with --pid)".into(),
        });
    }
    let comm = LiveProcesses.comm(pid).unwrap_or_default();
    let warning = if REAPERS.contains(&comm.as_str()) {
        Some(format!(
            "the holder is pid {pid} ({comm}), a process manager: if agentlock was reparented to it, the lock outlives its real holder (name the holder with --pid)"
        ))
    } else if TRANSIENT.contains(&comm.as_str()) || shell_uncertain(pid, &comm) {
        Some(format!(
            "the holder is pid {pid} ({comm}), which may exit as soon as agentlock does; the lock then lives only as long as its recorded tmux session, and is stale at once without one (name the holder with --pid)"
        ))
    } else {
        None
    };
    Ok(Invoker { pid, warning })
}

/// Programs that run agentlock for a moment and end: as holders they say
/// nothing of the agent.
const TRANSIENT: &[&str] = &[
    "xargs", "find", "strace", "ltrace", "parallel", "watch", "entr",
];

/// Whether `&>file` is a redirection in the shell `pid` runs (bash, zsh) or
/// backgrounds (dash, POSIX sh): by its executable, since `sh` is bash on
/// some systems.
fn bash_like(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("bash") || n.starts_with("zsh"))
    })
}

/// Whether `pid` is a shell running `-c STRING` that only waits for this
/// very agentlock (see [`last_command_is_agentlock`]): dash does not exec a
/// lone last command; Python's `shell=True`, `system(3)` and make recipes
/// run one.
fn shell_waiting_for_agentlock(pid: i32, comm: &str) -> bool {
    let mine = own_args();
    shell_string(pid, comm).is_some_and(|s| last_command_is_agentlock(&s, &mine, bash_like(pid)))
}

/// This agentlock's arguments, lossily (a worker path need not be UTF-8;
/// the shell string they are compared with is read lossily too).
fn own_args() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The `-c` string of a shell process, if it runs one.
fn shell_string(pid: i32, comm: &str) -> Option<String> {
    if !SHELLS.contains(&comm) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // `sh -c STRING`, `bash -ec STRING`, `sh -x -c STRING`: the string is the
    // first argument after the option that holds `c`.
    let i = args
        .iter()
        .skip(1)
        .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))?;
    args.get(i + 2).cloned()
}

/// A shell running a `-c` string that goes on after this agentlock and
/// does not `exec` the next program: whether it outlives the claim (as a
/// holder should) cannot be told.
fn shell_uncertain(pid: i32, comm: &str) -> bool {
    let Some(script) = shell_string(pid, comm) else {
        return false;
    };
    let mine = own_args();
    !execs_after(&script, &mine, bash_like(pid))
}

/// Whether `pid` is a member of a pipeline inside a `$(...)`: a fork of its
/// parent (same executable and command line) writing into a pipe, while the
/// parent is itself a command substitution (`slot=$(get | tail -n1)`).
fn is_pipeline_member_in_substitution(pid: i32, parent: i32) -> bool {
    same_program(pid, parent)
        && std::fs::read_link(format!("/proc/{pid}/fd/1"))
            .is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
        && parent_of(parent).is_some_and(|g| g >= 1 && is_command_substitution(parent, g))
}

/// The same executable and command line: a forked subshell.
fn same_program(pid: i32, parent: i32) -> bool {
    let exe = |p: i32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    let cmdline = |p: i32| std::fs::read(format!("/proc/{p}/cmdline")).ok();
    match (exe(pid), exe(parent), cmdline(pid), cmdline(parent)) {
        (Some(a), Some(b), Some(c), Some(d)) => a == b && c == d && !c.is_empty(),
        _ => false,
    }
}

/// Whether `pid` is a command substitution of its parent: the same
/// executable and command line (a forked subshell), writing its stdout into a
/// pipe the parent reads. A `( ... ) &` subshell or a prefork worker has the
/// same executable and command line but is not read by its parent: it may
/// live on, and is a holder of its own.
fn is_command_substitution(pid: i32, parent: i32) -> bool {
    same_program(pid, parent)
        && stdout_read_by(pid, parent).is_some_and(|fd| waits_reading(parent, fd))
}

/// Whether `pid` is blocked reading descriptor `fd` (`/proc/<pid>/syscall`),
/// as a shell is while it collects a `$(...)`'s output. A coprocess or a
/// `<(...)` whose output the shell is not reading now is asynchronous: it
/// may outlive the shell, and is a holder of its own. Polled briefly, since
/// the shell reaches its read just after forking.
fn waits_reading(pid: i32, fd: i32) -> bool {
    for _ in 0..20 {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
            // Not ours to trace (Yama's ptrace_scope): the kernel function it
            // sleeps in still says "reading a pipe", if not which one.
            return std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                .is_ok_and(|w| w.contains("pipe_read"));
        };
        let mut f = text.split_whitespace();
        let nr = f.next().and_then(|n| n.parse::<i64>().ok());
        let mut arg = || {
            f.next()
                .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        };
        let (fd_arg, _buf, count) = (arg(), arg(), arg());
        // A `$(...)` is read in blocks until EOF; the `read` builtin reads a
        // pipe one byte at a time (`exec 3< <(...); read -u 3`), and that
        // subshell runs on.
        if nr == Some(nix::libc::SYS_read) && fd_arg == Some(fd.into()) {
            return count.is_some_and(|c| c > 1);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// The descriptor by which `reader` holds open, for reading, the pipe that
/// is `pid`'s stdout.
fn stdout_read_by(pid: i32, reader: i32) -> Option<i32> {
    let out = std::fs::read_link(format!("/proc/{pid}/fd/1")).ok()?;
    if !out.to_string_lossy().starts_with("pipe:") {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{reader}/fd")).ok()?;
    fds.filter_map(Result::ok).find_map(|fd| {
        let name = fd.file_name().to_string_lossy().into_owned();
        (std::fs::read_link(fd.path()).is_ok_and(|l| l == out) && read_only(reader, &name))
            .then(|| name.parse().ok())
            .flatten()
    })
}

/// Whether descriptor `fd` of `pid` is open for reading only (`flags:` of
/// `/proc/<pid>/fdinfo/<fd>`, octal, access mode `O_RDONLY`).
fn read_only(pid: i32, fd: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            u32::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|f| f & nix::libc::O_ACCMODE as u32 == nix::libc::O_RDONLY as u32)
}
