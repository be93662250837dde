//! Process liveness and identity: `kill(pid, 0)` plus `/proc/<pid>/stat`,
//! the thread group under `/proc/<pid>/task`, and the process tree.

use super::Existence;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Questions asked of the process table.
#[cfg_attr(test, mockall::automock)]
pub trait ProcessProbe {
    /// Does `pid` name a live (non-zombie) process?
    fn existence(&self, pid: i32) -> Existence;
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Real user id owning `pid`.
    fn owner_uid(&self, pid: i32) -> Option<u32>;
    /// Parent of `pid`.
    fn parent(&self, pid: i32) -> Option<i32>;
    /// Command name of `pid` (`/proc/<pid>/comm`).
    fn comm(&self, pid: i32) -> Option<String>;
}

/// Longest parent chain followed (a guard against a cycle in a racing `/proc`).
const MAX_CHAIN: usize = 4096;

/// The ancestors of `pid`, nearest first, up to and including PID 1.
pub fn ancestors(procs: &dyn ProcessProbe, pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Some(p) = procs.parent(cur) {
        if p <= 0 || out.len() >= MAX_CHAIN || out.contains(&p) {
            break;
        }
        out.push(p);
        cur = p;
    }
    out
}

/// The real process table of this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveProcesses;

impl ProcessProbe for LiveProcesses {
    fn existence(&self, pid: i32) -> Existence {
        if pid <= 0 {
            return Existence::Gone;
        }
        match kill(Pid::from_raw(pid), None) {
            // A process that exits between kill() and the read of /proc is
            // reported alive: the safe side, since alive never leads to removal.
            Ok(()) | Err(Errno::EPERM) => match proc_state(pid) {
                // A leader whose main thread exited shows `Z` while its other
                // threads run: the process is alive until every thread is gone.
                Some('Z') | Some('X') if !other_thread_runs(pid) => Existence::Zombie,
                _ => Existence::Alive,
            },
            Err(Errno::ESRCH) => Existence::Gone,
            Err(e) => Existence::Unknown(format!("kill({pid}, 0) failed: {}", e.desc())),
        }
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        Some(stat_of(pid)?.start_time)
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        parent_of(pid)
    }

    fn comm(&self, pid: i32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }

    fn owner_uid(&self, pid: i32) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|uid| uid.parse().ok())
    }
}

/// Whether any thread of `pid`'s thread group is not a zombie. Unreadable
/// task lists count as running: the safe side.
fn other_thread_runs(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return std::path::Path::new(&format!("/proc/{pid}")).exists();
    };
    tasks.filter_map(Result::ok).any(|t| {
        match std::fs::read_to_string(t.path().join("stat")) {
            Ok(stat) => parse_stat(&stat).is_none_or(|s| !matches!(s.state, 'Z' | 'X')),
            Err(_) => false, // that thread exited meanwhile
        }
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of start times.
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100, |t| t as u64)
}

/// This process's time namespace `boottime` offset, in nanoseconds
/// (`/proc/self/timens_offsets`; 0 without time namespaces): what this
/// process's `CLOCK_BOOTTIME` reads more than the host's.
pub(crate) fn own_boottime_offset_nanos() -> i128 {
    static OFFSET: std::sync::OnceLock<i128> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/self/timens_offsets") else {
            return 0;
        };
        text.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == "boottime").then_some(())?;
                let secs: i128 = f.next()?.parse().ok()?;
                let nanos: i128 = f.next()?.parse().ok()?;
                Some(secs * 1_000_000_000 + nanos)
            })
            .unwrap_or(0)
    })
}

/// The same offset in clock ticks.
pub(crate) fn own_boottime_offset_ticks() -> i128 {
    own_boottime_offset_nanos() * clock_ticks() as i128 / 1_000_000_000
}

fn proc_state(pid: i32) -> Option<char> {
    stat_of(pid).map(|s| s.state)
}

/// A start time as `/proc` shows it to this reader, in the host's ticks
/// since boot: `/proc` shifts start times by the reader's time namespace
/// offset; undone here, so every namespace records and compares the same.
pub fn host_ticks(seen: u64) -> u64 {
    u64::try_from(seen as i128 - own_boottime_offset_ticks()).unwrap_or(0)
}

/// `/proc/<pid>/stat`, read and parsed, its start time in the host's ticks
/// ([`host_ticks`]): the one unit every start time is recorded and
/// compared in.
pub fn stat_of(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut st = parse_stat(&stat)?;
    st.start_time = host_ticks(st.start_time);
    Some(st)
}

/// Whether `pid` is still the process whose [`stat_of`] start time was
/// `start`, and not a zombie.
pub fn still_runs(pid: i32, start: u64) -> bool {
    stat_of(pid).is_some_and(|s| s.start_time == start && s.state != 'Z')
}

/// The fields of `/proc/<pid>/stat` this tool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `Z`, …
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Every process descending from `root` now (its children, theirs, …),
/// each with its [`stat_of`] start time (for [`still_runs`]), from one pass
/// over `/proc`; not `root` itself.
pub fn descendants(root: i32) -> Vec<(i32, u64)> {
    let mut children: std::collections::HashMap<i32, Vec<(i32, u64)>> = Default::default();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(s) = stat_of(pid) {
            children
                .entry(s.ppid)
                .or_default()
                .push((pid, s.start_time));
        }
    }
    let (mut out, mut todo) = (Vec::new(), vec![root]);
    while let Some(p) = todo.pop() {
        for &(c, start) in children.get(&p).into_iter().flatten() {
            out.push((c, start));
            todo.push(c);
        }
    }
    out
}

/// Parent of `pid`, from `/proc`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_of(pid).map(|s| s.ppid)
}

/// A pidfd for `pid` (`pidfd_open(2)`): readable once the process exits.
/// `None` where the kernel has none, or `pid` is not a process (a thread,
/// gone, another namespace's number).
pub fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor.
    let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor we now own.
    (raw >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_with_a_start_time() {
        let me = std::process::id() as i32;
        assert_eq!(LiveProcesses.existence(me), Existence::Alive);
        assert!(LiveProcesses.start_time(me).is_some());
        assert_eq!(
            LiveProcesses.owner_uid(me),
            Some(nix::unistd::getuid().as_raw())
        );
    }

    #[test]
    fn ancestors_of_this_process_end_at_init() {
        let me = std::process::id() as i32;
        let chain = ancestors(&LiveProcesses, me);
        assert_eq!(chain.first().copied(), parent_of(me));
        assert!(!chain.contains(&me));
        // The top of the chain is PID 1 of this namespace (or 0's child).
        assert!(chain.last().is_some_and(|p| *p >= 1));
    }

    #[test]
    fn reaped_child_is_gone_and_unreaped_child_is_zombie() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Wait for it to exit without reaping it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_state(pid) != Some('Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(LiveProcesses.existence(pid), Existence::Zombie);
        child.wait().unwrap();
        assert_eq!(LiveProcesses.existence(pid), Existence::Gone);
    }
}

/// A process table asked once per question: every answer remembered. For
/// one report over many locks of the same few holders (`list --json`
/// judging where the asker stands with each), where a moment's answer is
/// good enough; never for a decision that deletes or signals.
#[derive(Default)]
pub struct Remembered<P> {
    inner: P,
    existence: Memo<Existence>,
    start_time: Memo<Option<u64>>,
    owner_uid: Memo<Option<u32>>,
    parent: Memo<Option<i32>>,
    comm: Memo<Option<String>>,
}

/// Answers by PID.
type Memo<T> = std::sync::Mutex<std::collections::HashMap<i32, T>>;

/// The remembered answer for `pid`, asked of `ask` the first time.
fn memo<T: Clone>(m: &Memo<T>, pid: i32, ask: impl FnOnce() -> T) -> T {
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(pid).or_insert_with(ask).clone()
}

impl<P: ProcessProbe> Remembered<P> {
    /// Remembers what `inner` answers.
    pub fn new(inner: P) -> Remembered<P> {
        Remembered {
            inner,
            existence: Default::default(),
            start_time: Default::default(),
            owner_uid: Default::default(),
            parent: Default::default(),
            comm: Default::default(),
        }
    }
}

impl<P: ProcessProbe> ProcessProbe for Remembered<P> {
    fn existence(&self, pid: i32) -> Existence {
        memo(&self.existence, pid, || self.inner.existence(pid))
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        memo(&self.start_time, pid, || self.inner.start_time(pid))
    }

    fn owner_uid(&self, pid: i32) -> Option<u32> {
        memo(&self.owner_uid, pid, || self.inner.owner_uid(pid))
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        memo(&self.parent, pid, || self.inner.parent(pid))
    }

    fn comm(&self, pid: i32) -> Option<String> {
        memo(&self.comm, pid, || self.inner.comm(pid))
    }
}
