//! Probes of the outside world: processes, tmux servers, this host.
//!
//! The decision logic ([`crate::verdict`], [`crate::holder`]) only sees these
//! traits, so it is unit-tested with `mockall`; the real implementations are
//! proven against real processes and real tmux servers in `tests/`.

pub mod invoker;
pub mod process;
pub mod shell_words;
pub mod tmux;
mod tmux_call;
mod tmux_names;
mod tmux_peer;
mod tmux_procs;
pub mod tmux_query;
pub mod tmux_sockets;

pub use process::{LiveProcesses, ProcessProbe};
pub use tmux::{SessionProbe, TmuxQuery};

use chrono::{DateTime, Utc};

/// Where this boot's id is read.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Whether a PID names a running process, as `kill(pid, 0)` and `/proc` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existence {
    /// `kill(pid, 0)` succeeded or failed with `EPERM`, and some thread of its
    /// thread group still runs.
    Alive,
    /// `ESRCH`: no such process.
    Gone,
    /// The whole thread group has exited; only the zombie entry is left.
    Zombie,
    /// The probe itself failed (any other error).
    Unknown(String),
}

/// What a tmux query says of one recorded session, pane or session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// A server that was asked has it.
    Alive,
    /// Every server that could have it answered (or provably none runs) and
    /// none has it.
    Gone,
    /// Not found, and at least one server that could have it could not be asked.
    Unknown(String),
}

/// Facts about the machine (and PID namespace) running the tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `gethostname()`.
    pub hostname: String,
    /// Real user id.
    pub uid: u32,
    /// `/proc/sys/kernel/random/boot_id`, when readable.
    pub boot_id: Option<String>,
    /// Inode of this process's PID namespace (`/proc/self/ns/pid`).
    pub pid_ns: Option<u64>,
    /// Inode of this process's mount namespace (`/proc/self/ns/mnt`).
    pub mnt_ns: Option<u64>,
    /// When this host booted (`btime` of `/proc/stat`).
    pub boot_time: Option<DateTime<Utc>>,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of start times.
    pub ticks_per_sec: u64,
}

/// Inode of this process's PID namespace.
pub fn own_pid_ns() -> Option<u64> {
    own_ns("pid")
}

/// Inode of this process's namespace of `kind` (`/proc/self/ns/<kind>`).
fn own_ns(kind: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .ok()
        .map(|m| m.ino())
}

/// When this host booted, to the nanosecond: the wall clock now less the
/// time since boot (`CLOCK_BOOTTIME`, which counts suspends, as start
/// times do). `btime` of `/proc/stat` says the same to the second only, and
/// a PID reused within that second would pass for the claimer. Both are
/// shifted by the reader's time namespace offset, as start times are not:
/// undo it, so that both are the root namespace's.
fn boot_time(ticks_per_sec: u64) -> Option<DateTime<Utc>> {
    use nix::time::{ClockId, clock_gettime};
    let offset_ns =
        process::own_boottime_offset_ticks() * 1_000_000_000 / ticks_per_sec.max(1) as i128;
    let precise = (|| {
        let real = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
        let since = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
        let ns =
            |t: nix::sys::time::TimeSpec| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128;
        let boot = ns(real) - ns(since) + offset_ns;
        let secs = i64::try_from(boot.div_euclid(1_000_000_000)).ok()?;
        DateTime::from_timestamp(secs, boot.rem_euclid(1_000_000_000) as u32)
    })();
    precise.or_else(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let secs: i64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let offset = i64::try_from(offset_ns / 1_000_000_000).ok()?;
        DateTime::from_timestamp(secs.checked_add(offset)?, 0)
    })
}

impl HostInfo {
    /// Reads this host's facts.
    pub fn current() -> HostInfo {
        let ticks = process::clock_ticks();
        HostInfo {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            uid: nix::unistd::getuid().as_raw(),
            boot_id: std::fs::read_to_string(BOOT_ID)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            pid_ns: own_pid_ns(),
            mnt_ns: own_ns("mnt"),
            boot_time: boot_time(ticks),
            ticks_per_sec: ticks,
        }
    }

    /// Whether a lock written on `recorded` was written here. A lock without a
    /// hostname is taken as local (old Go versions may omit it).
    pub fn is_local(&self, recorded: Option<&str>) -> bool {
        match recorded {
            None => true,
            Some(h) => h == self.hostname,
        }
    }

    /// The wall-clock time a process started, from its start time in ticks.
    pub fn started_at(&self, start_ticks: u64) -> Option<DateTime<Utc>> {
        let boot = self.boot_time?;
        let ticks = self.ticks_per_sec.max(1);
        let millis = (start_ticks as u128 * 1000 / ticks as u128) as i64;
        Some(boot + chrono::Duration::milliseconds(millis))
    }
}

/// The probes a judgement needs.
pub struct Probes<'a> {
    /// This host.
    pub host: HostInfo,
    /// The process table.
    pub procs: &'a dyn ProcessProbe,
    /// tmux.
    pub sessions: &'a dyn SessionProbe,
}

/// The real probes: this host, its process table, and tmux asked on need.
pub struct LiveProbes {
    /// This host.
    pub host: HostInfo,
    /// Every tmux answer of this run.
    pub tmux: tmux::Tmux,
}

impl LiveProbes {
    /// Real probes; each tmux server is asked at most once, on first need.
    pub fn new(query: TmuxQuery) -> LiveProbes {
        LiveProbes {
            host: HostInfo::current(),
            tmux: tmux::Tmux::new(query),
        }
    }

    /// Borrows these as [`Probes`].
    pub fn probes(&self) -> Probes<'_> {
        Probes {
            host: self.host.clone(),
            procs: &LiveProcesses,
            sessions: &self.tmux,
        }
    }
}
