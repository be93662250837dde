//! The keeper: one process per host and store that keeps the host's lease
//! alive (renewed every TTL/3) and, every period, deletes this host's
//! records that the local PID + tmux rules prove stale (compare-and-delete).
//! If the host or its keeper dies, the lease expires and every record on it
//! with it: the host's workers become free fleet-wide.
//!
//! One keeper per host and store: it holds a `flock` on
//! `<state dir>/keeper-<store>.lock` and publishes its lease id in
//! `keeper-<store>.lease`, where the state dir is `$XDG_RUNTIME_DIR/agentlock`
//! or `/tmp/agentlock-<uid>`. `claim` starts one when none runs.

use super::StoreSpec;
use super::etcd::Fleet;
use super::ops::judge_stored;
use crate::error::{Error, Result};
use crate::probe::{LiveProbes, TmuxQuery};
use crate::verdict::State;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lease TTL by default, in seconds.
pub const DEFAULT_TTL: i64 = 15;

/// Where keepers keep their lock and lease files.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Path::new(&d).join("agentlock"),
        None => PathBuf::from(format!("/tmp/agentlock-{}", nix::unistd::getuid())),
    }
}

/// The state dir, created `0700` if missing; refused unless it is a
/// directory of this user that nobody else may write (`/tmp` is shared: a
/// planted lease file would hang this user's records on another's lease).
fn ensure_state_dir() -> Result<PathBuf> {
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

/// `keeper-<store>` with every character but letters, digits, `.` and `-`
/// made `_` (endpoints sorted: one keeper whatever their order).
fn stem(spec: &StoreSpec) -> String {
    let mut endpoints = spec.endpoints.clone();
    endpoints.sort();
    let raw = format!("{}{}", endpoints.join(","), spec.prefix);
    let name: String = raw
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(180)
        .collect();
    format!("keeper-{name}")
}

fn paths(spec: &StoreSpec) -> Result<(PathBuf, PathBuf)> {
    let dir = ensure_state_dir()?;
    let stem = stem(spec);
    Ok((
        dir.join(format!("{stem}.lock")),
        dir.join(format!("{stem}.lease")),
    ))
}

fn open_lock(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// `<lease id> <keeper pid>` as the keeper publishes them.
fn read_lease_file(path: &Path) -> Option<(i64, i32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The lease of the keeper running for `spec` on this host, if one runs and
/// its lease is alive.
pub fn running_lease(spec: &StoreSpec, fleet: &Fleet) -> Result<Option<i64>> {
    let (_, lease) = paths(spec)?;
    let Some((id, pid)) = read_lease_file(&lease) else {
        return Ok(None);
    };
    // Published by a keeper that still runs (a new keeper removes its dead
    // predecessor's file before anything else), and the lease is alive.
    let running = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"keeper"));
    if !running {
        return Ok(None);
    }
    Ok((fleet.lease_ttl(id)? > 0).then_some(id))
}

/// The PID of the keeper running for `spec` on this host, as it published it.
pub fn keeper_pid(spec: &StoreSpec) -> Option<i32> {
    read_lease_file(&paths(spec).ok()?.1).map(|(_, pid)| pid)
}

/// The lease of this host's keeper for `spec`, starting the keeper (in the
/// background, detached) when none runs. Either way the store is asked
/// first, within the time limit: an unreachable store is an error here,
/// before a caller touches anything local (and before a keeper is started
/// that could only wait for it).
pub fn ensure(
    spec: &StoreSpec,
    store: &str,
    ttl: i64,
    timeout: Duration,
    fleet: &Fleet,
) -> Result<i64> {
    if let Some(id) = running_lease(spec, fleet)? {
        return Ok(id);
    }
    fleet.get(&spec.prefix)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["keeper", "--foreground", "--store", store, "--lease-ttl"])
        .arg(ttl.to_string())
        .arg("--store-timeout")
        .arg(timeout.as_secs_f64().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(&exe, e))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(id) = running_lease(spec, fleet)? {
            return Ok(id);
        }
        match child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                return Err(Error::Store {
                    endpoints: spec.endpoints.join(","),
                    why: format!(
                        "the keeper could not start ({status}); `agentlock keeper --foreground` says why"
                    ),
                });
            }
            // Exited 0: another keeper won the start race; wait for its lease.
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(Error::Store {
                endpoints: spec.endpoints.join(","),
                why: "no keeper published a lease within 15 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// This host's records looked at.
    pub records: usize,
    /// Stale ones deleted.
    pub deleted: usize,
}

/// Deletes this host's records the local rules prove stale, each by
/// compare-and-delete on the revision judged; tmux is asked afresh.
pub fn sweep(fleet: &Fleet, fleet_root: &Path) -> Result<Swept> {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let mut swept = Swept::default();
    for (key, stored) in fleet.list()? {
        let Ok(fr) = &stored.record else { continue };
        if !super::ops::this_host(&fr.record, &probes) {
            continue;
        }
        // A session recorded without its server could live on a tmux server
        // this long-lived process cannot see (another TMUX_TMPDIR): never
        // proven gone here; its holder or `--force` clears it.
        if fr.record.session_id.is_some() && fr.record.tmux_socket.is_none() {
            continue;
        }
        swept.records += 1;
        let worker = super::worker_of(fleet.spec(), fleet_root, &key).unwrap_or_default();
        let judged = judge_stored(&worker, &key, Some(&stored), &probes);
        if judged.judgement.state == State::Stale && fleet.delete(&key, stored.revision)? {
            swept.deleted += 1;
        }
    }
    Ok(swept)
}

/// Runs the keeper in the foreground until killed: one per host and store
/// (returns at once if another runs).
pub fn run(
    spec: &StoreSpec,
    ttl: i64,
    period: Duration,
    timeout: Duration,
    fleet: &Fleet,
) -> Result<()> {
    let (lock, lease_path) = paths(spec)?;
    let Ok(_held) = Flock::lock(open_lock(&lock)?, FlockArg::LockExclusiveNonblock) else {
        return Ok(()); // another keeper runs for this store
    };
    // A dead predecessor's lease must not be handed out while this one starts.
    let _ = std::fs::remove_file(&lease_path);
    let publish = |id: i64| -> Result<()> {
        let tmp = lease_path.with_extension("lease.tmp");
        let me = nix::unistd::getpid();
        std::fs::write(&tmp, format!("{id} {me}\n")).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &lease_path).map_err(|e| Error::io(&lease_path, e))
    };
    let mut id = fleet.grant(ttl)?;
    publish(id)?;
    // Sweeping asks tmux, which may hang for its own time limit: on its own
    // thread and connection, so renewal never waits for it.
    let sweeper = spec.clone();
    std::thread::spawn(move || {
        let Ok(fleet) = Fleet::connect(&sweeper, timeout) else {
            return;
        };
        loop {
            let _ = sweep(&fleet, Path::new("/"));
            std::thread::sleep(period);
        }
    });
    let renew = Duration::from_secs_f64(ttl as f64 / 3.0);
    loop {
        let (expired, renewed) = match fleet.keep_alive(id) {
            Ok(left) => (left <= 0, left > 0),
            // Renewing an expired lease is an error; so is an unreachable store.
            Err(_) => (fleet.lease_ttl(id).is_ok_and(|left| left <= 0), false),
        };
        if expired {
            // The keeper stalled past its TTL (or etcd was away that long):
            // every record on the old lease is gone; a new one for new claims.
            if let Ok(new) = fleet.grant(ttl) {
                id = new;
                publish(id)?;
            }
        }
        // Not renewed (a member down, an election): try again soon, not a
        // third of the TTL later.
        std::thread::sleep(if renewed || expired {
            renew
        } else {
            renew.min(Duration::from_millis(200))
        });
    }
}
