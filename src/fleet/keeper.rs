//! The keeper: one process per host and store that keeps the host's lease
//! alive and sweeps this host's stale records ([`crate::fleet::keeping`]).
//! This module holds what claims need of it: finding the running keeper,
//! starting one, and the rule that acknowledges a claim on its lease.
//!
//! A keeper holds a `flock` on `<state dir>/keeper-<store>.lock` and
//! publishes `keeper-<store>.lease` after every renewal: lease id, PID, TTL
//! granted, store time limit, and when the renewal that succeeded was sent
//! (`CLOCK_BOOTTIME`). The lease lives at least until that time plus its
//! TTL, so a claim can tell from here, without asking the store, how long
//! its record is sure to live. The state dir is `$XDG_RUNTIME_DIR/agentlock`
//! or `/tmp/agentlock-<uid>`; `<store>` is the endpoints and prefix made
//! readable, plus a hash of them exactly (stores that differ never share).

use super::StoreSpec;
use super::etcd::Fleet;
use crate::error::{Error, Result};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::{DEFAULT_TTL, MIN_TTL};

/// Kept off a lease's known life: clock-rate skew between this host and the
/// etcd leader, and the time a claim's own answer takes to arrive.
pub const MARGIN: Duration = Duration::from_millis(500);

/// Now on the host's `CLOCK_BOOTTIME`: unlike `Instant` it goes on while
/// the machine is suspended, as the lease's time does on the store; and a
/// process in a time namespace (`unshare --time --boottime N`) reads it
/// without its offset, so the keeper and every claim compare the same clock.
pub fn now() -> Duration {
    let own = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
        .as_nanos() as i128;
    let host = own - crate::probe::process::own_boottime_offset_nanos();
    Duration::from_nanos(u64::try_from(host.max(0)).unwrap_or(u64::MAX))
}

/// Where keepers keep their lock, lease and log files.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Path::new(&d).join("agentlock"),
        None => PathBuf::from(format!("/tmp/agentlock-{}", nix::unistd::getuid())),
    }
}

/// The state dir, created `0700` if missing; refused unless it is a
/// directory of this user that nobody else may write (`/tmp` is shared: a
/// planted lease file would hang this user's records on another's lease).
pub(crate) fn ensure_state_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = state_dir();
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let md = std::fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
    let me = nix::unistd::getuid().as_raw();
    if !md.is_dir() || md.uid() != me || md.mode() & 0o022 != 0 {
        return Err(Error::UnsafeRuntime {
            path: dir,
            why: format!(
                "the keeper's state dir must be a directory of uid {me} that only it may write"
            ),
        });
    }
    Ok(dir)
}

/// `keeper-<readable store>-<hash>`: endpoints sorted (one keeper whatever
/// their order) and prefix, every character but letters, digits, `.` and `-`
/// made `_` and cut at 100, then a 64-bit FNV-1a hash of the exact text, so
/// `/a/b` and `/a_b`, or prefixes that differ after the cut, never share.
pub fn stem(spec: &StoreSpec) -> String {
    let mut endpoints = spec.endpoints.clone();
    endpoints.sort();
    let raw = format!("{} {}", endpoints.join(","), spec.prefix);
    let readable: String = raw
        .replace("http://", "")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let mut h = fnv::FnvHasher::default();
    h.write(raw.as_bytes());
    format!("keeper-{readable}-{:016x}", h.finish())
}

/// The keeper's lock, lease, log and claims files for `spec`.
pub(crate) struct Files {
    pub lock: PathBuf,
    pub lease: PathBuf,
    pub log: PathBuf,
    /// One line per acknowledged claim on this host (`{"key":…,"record":…}`):
    /// what the keeper claims again if its lease is lost before it has seen
    /// the claim in a sweep.
    pub claims: PathBuf,
}

pub(crate) fn files(spec: &StoreSpec) -> Result<Files> {
    let dir = ensure_state_dir()?;
    let stem = stem(spec);
    Ok(Files {
        lock: dir.join(format!("{stem}.lock")),
        lease: dir.join(format!("{stem}.lease")),
        log: dir.join(format!("{stem}.log")),
        claims: dir.join(format!("{stem}.claims")),
    })
}

/// A keeper's lease as it published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperLease {
    /// The lease id.
    pub id: i64,
    /// The keeper's PID.
    pub pid: i32,
    /// The TTL etcd granted, in seconds.
    pub ttl: i64,
    /// The keeper's store time limit.
    pub timeout: Duration,
    /// When the last renewal that succeeded was sent (`CLOCK_BOOTTIME`).
    pub renewed: Duration,
    /// The keeper's PID namespace (inode; 0: unknown): its PID means
    /// something only there.
    pub pid_ns: u64,
}

/// Whether the last keeper for `spec` (running or not: its lease file
/// stays until a new keeper starts) ran in another PID namespace than this
/// process: a keeper started from here (a sandbox) would die with it, and
/// every claim of the host on its lease with it.
fn last_keeper_elsewhere(spec: &StoreSpec) -> bool {
    let Ok(f) = files(spec) else { return false };
    std::fs::read_to_string(&f.lease)
        .ok()
        .and_then(|t| KeeperLease::parse(&t))
        .is_some_and(|l| l.pid_ns != 0 && l.pid_ns != own_pid_ns())
}

/// This process's PID namespace (inode of `/proc/self/ns/pid`; 0: unknown).
pub(crate) fn own_pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

impl KeeperLease {
    /// `<id> <pid> <ttl> <timeout ms> <renewed ns> <pid ns>`.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            self.id,
            self.pid,
            self.ttl,
            self.timeout.as_millis(),
            self.renewed.as_nanos(),
            self.pid_ns
        )
    }

    fn parse(s: &str) -> Option<KeeperLease> {
        let mut it = s.split_whitespace();
        let mut next = || it.next()?.parse::<u128>().ok();
        let (id, pid, ttl, ms, ns) = (next()?, next()?, next()?, next()?, next()?);
        Some(KeeperLease {
            id: i64::try_from(id).ok()?,
            pid: i32::try_from(pid).ok()?,
            ttl: i64::try_from(ttl).ok()?,
            timeout: Duration::from_millis(u64::try_from(ms).ok()?),
            renewed: Duration::from_nanos(u64::try_from(ns).ok()?),
            pid_ns: next().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        })
    }

    /// The renewal period: a third of the TTL.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.ttl as f64 / 3.0)
    }

    /// Until when (`CLOCK_BOOTTIME`) the lease is sure to live: the last
    /// renewal sent, plus the TTL, minus [`MARGIN`].
    pub fn sure_until(&self) -> Duration {
        (self.renewed + Duration::from_secs(self.ttl.max(0) as u64)).saturating_sub(MARGIN)
    }

    /// Why a claim may not be acknowledged on this lease now, if it may
    /// not: the keeper is stopped (SIGSTOP, a debugger) or no longer runs
    /// (final), or the lease could expire before one more renewal (a
    /// renewal late: an election, a slow store; it may come yet).
    pub fn unsafe_now(&self, spec: &StoreSpec) -> Option<Unsafe> {
        let Ok(Files { lock, .. }) = files(spec) else {
            return Some(Unsafe::Final("its state dir cannot be read".into()));
        };
        let state = self.state(&lock);
        match state {
            None => return Some(Unsafe::Final("it no longer runs".into())),
            Some(Some('T' | 't')) => {
                return Some(Unsafe::Final(
                    "it is stopped (SIGSTOP or a debugger)".into(),
                ));
            }
            Some(_) => {}
        }
        let since = now().saturating_sub(self.renewed);
        // Seen only through its lock (another PID namespace), a stopped
        // keeper looks like a running one: its renewals must be on time.
        if state == Some(None) && since > self.period() + self.period() / 2 + MARGIN {
            return Some(Unsafe::Late(format!(
                "its last renewal was {:.1} s ago (it renews every {:.1} s; from here it cannot be seen whether it is stopped)",
                since.as_secs_f64(),
                self.period().as_secs_f64()
            )));
        }
        let left = self.sure_until().saturating_sub(now());
        (left <= self.period()).then(|| {
            Unsafe::Late(format!(
                "its lease {:x} was last renewed {:.1} s ago and could expire in {:.1} s, before one more renewal",
                self.id,
                now().saturating_sub(self.renewed).as_secs_f64(),
                left.as_secs_f64()
            ))
        })
    }
}

/// Why a claim may not be acknowledged on a keeper's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    /// It will not change: the keeper is stopped or gone.
    Final(String),
    /// A renewal is late: it may yet come.
    Late(String),
}

impl KeeperLease {
    /// Whether the keeper runs: `None` if not; its state letter
    /// (`/proc/PID/stat`) when its PID means something here (the same PID
    /// namespace), else `Some(None)` when its lock is held (a claim from a
    /// sandbox with a PID namespace of its own that shares the state dir).
    fn state(&self, lock: &Path) -> Option<Option<char>> {
        if self.pid_ns != 0 && self.pid_ns == own_pid_ns() {
            return keeper_state(self.pid).map(Some);
        }
        let file = std::fs::File::open(lock).ok()?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
            // Nobody holds it exclusively: no keeper runs.
            Ok(_probe) => None,
            Err(_) => Some(None),
        }
    }
}

/// The state letter (`/proc/PID/stat`) of `pid` if it runs agentlock's
/// `keeper` command.
fn keeper_state(pid: i32) -> Option<char> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !cmdline.split(|&b| b == 0).any(|a| a == b"keeper") {
        return None;
    }
    crate::probe::process::stat_of(pid)
        .map(|s| s.state)
        .filter(|&s| s != 'Z')
}

/// The lease the keeper for `spec` published, if one runs.
pub fn published(spec: &StoreSpec) -> Result<Option<KeeperLease>> {
    let f = files(spec)?;
    let Ok(text) = std::fs::read_to_string(&f.lease) else {
        return Ok(None);
    };
    Ok(KeeperLease::parse(&text).filter(|l| l.state(&f.lock).is_some()))
}

/// The PID of the keeper running for `spec` on this host, as it published it.
pub fn keeper_pid(spec: &StoreSpec) -> Option<i32> {
    published(spec).ok().flatten().map(|l| l.pid)
}

/// Re-reads the lease published for `spec` and checks that a claim on
/// `lease` may be acknowledged ([`KeeperLease::unsafe_now`]); the same lease
/// must still be the keeper's (a new one means the old expired). A late
/// renewal (an election) is waited for, up to `wait`; a stopped or gone
/// keeper fails at once.
pub fn confirm(spec: &StoreSpec, lease: &KeeperLease, wait: Duration) -> Result<KeeperLease> {
    let deadline = Instant::now() + wait;
    let bad = |why: String| Error::Keeper {
        pid: lease.pid,
        why,
    };
    loop {
        let current = match published(spec)? {
            Some(l) if l.id == lease.id => l,
            Some(l) => {
                return Err(bad(format!(
                    "its lease {:x} expired and it took a new one ({:x}) meanwhile",
                    lease.id, l.id
                )));
            }
            None => return Err(bad("it no longer runs".into())),
        };
        match current.unsafe_now(spec) {
            None => return Ok(current),
            Some(Unsafe::Late(why)) if Instant::now() >= deadline => return Err(bad(why)),
            Some(Unsafe::Late(_)) => std::thread::sleep(Duration::from_millis(20)),
            Some(Unsafe::Final(why)) => return Err(bad(why)),
        }
    }
}

/// The lease of this host's keeper for `spec`, starting the keeper (in the
/// background, detached, in `/`, logging to its state dir) when none runs.
/// The store is asked first, within its time limit: an unreachable store is
/// an error here, before a caller touches anything local. A stopped keeper
/// is an error at once; a keeper whose renewal is late, or whose lease just
/// expired (it takes a new one), is waited for, within the time limit.
pub fn ensure(spec: &StoreSpec, store: &str, ttl: i64, fleet: &Fleet) -> Result<KeeperLease> {
    let wait = fleet.timeout() + Duration::from_secs(2);
    let deadline = Instant::now() + wait;
    let mut started: Option<std::process::Child> = None;
    let mut why = String::from("none published a lease");
    loop {
        match published(spec)? {
            Some(l) => match l.unsafe_now(spec) {
                None if fleet.lease_ttl(l.id)? >= 0 => return Ok(l),
                None => why = format!("its lease {:x} is gone and it has no new one yet", l.id),
                Some(Unsafe::Late(w)) => why = w,
                Some(Unsafe::Final(w)) => return Err(Error::Keeper { pid: l.pid, why: w }),
            },
            None if started.is_none() && last_keeper_elsewhere(spec) => {
                return Err(Error::Keeper {
                    pid: 0,
                    why: "none runs, and the last one ran in another PID namespace than this claim (a sandbox): a keeper started from here would die with it, and every claim of this host on its lease with it; start `agentlock keeper --foreground` where the last one ran (or under systemd)".into(),
                });
            }
            None if started.is_none() => started = Some(start(spec, store, ttl, fleet)?),
            None => {}
        }
        if Instant::now() > deadline {
            let (pid, exited) = match started.as_mut() {
                Some(c) => (c.id() as i32, c.try_wait().ok().flatten()),
                None => (keeper_pid(spec).unwrap_or(0), None),
            };
            return Err(Error::Keeper {
                pid,
                why: format!(
                    "{why} within {:.1} s{}; see {}",
                    wait.as_secs_f64(),
                    exited
                        .map(|s| format!(" (it exited: {s})"))
                        .unwrap_or_default(),
                    files(spec)?.log.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a keeper for `spec` in the background, after asking the store
/// (an unreachable store is an error before anything is started). One that
/// loses the start race to another exits; its lease is waited for.
fn start(spec: &StoreSpec, store: &str, ttl: i64, fleet: &Fleet) -> Result<std::process::Child> {
    fleet.get(&spec.prefix)?;
    let f = files(spec)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&f.log)
        .map_err(|e| Error::io(&f.log, e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["keeper", "--foreground", "--store", store, "--lease-ttl"])
        .arg(ttl.to_string())
        .arg("--store-timeout")
        .arg(format!("{}ms", fleet.timeout().as_millis()))
        .current_dir("/")
        // It logs at the claim's AGENTLOCK_LOG (inherited), else at its
        // default, `info`; to its file, never to a journal stream it inherited.
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|e| Error::io(&exe, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_that_differ_never_share_a_keeper() {
        let s = |a: &str| stem(&StoreSpec::parse(a).unwrap());
        assert_ne!(s("etcd://h:1/a/b"), s("etcd://h:1/a_b"));
        let long = "x".repeat(200);
        assert_ne!(
            s(&format!("etcd://h:1/{long}1")),
            s(&format!("etcd://h:1/{long}2"))
        );
        assert_eq!(s("etcd://h:1,g:2/p"), s("etcd://g:2,h:1/p"));
        assert!(s(&format!("etcd://h:1/{long}")).len() < 140);
    }

    #[test]
    fn a_published_lease_reads_back() {
        let l = KeeperLease {
            id: 0x7a3b,
            pid: 42,
            ttl: 15,
            timeout: Duration::from_millis(1500),
            renewed: Duration::from_nanos(123_456_789_012),
            pid_ns: 4026531836,
        };
        assert_eq!(KeeperLease::parse(&l.line()), Some(l));
        assert_eq!(KeeperLease::parse("12 34"), None);
        assert_eq!(
            l.sure_until(),
            Duration::from_nanos(123_456_789_012) + Duration::from_secs(15) - MARGIN
        );
    }
}
