//! What the keeper does while it runs: renew the host's lease every third of
//! its TTL (each renewal sent to every member at once, and given a third of
//! the TTL, not the store's time limit), publish each renewal for claims to
//! see, and sweep this host's records on a thread of its own
//! ([`crate::fleet::sweep`]). If the lease expired anyway (the keeper was
//! stopped, the store was away longer than the TTL), a new one is granted
//! and the sweeper claims again what it remembers. A keeper started before
//! its store answers (at boot) waits for it rather than exit: exit status 2
//! is for what a restart would not mend (another keeper holds the lock, a
//! setting is wrong).
//!
//! Every event is a `tracing` event: `info` for the lease kept, lost and
//! kept again, `warn` and `error` for failures, `debug` for each routine
//! renewal; the binary writes them to stderr (the journal under systemd,
//! the log file in the state dir when a claim started the keeper). Anything
//! quoted from the store is escaped first.
use super::StoreSpec;
use super::etcd::Fleet;
use super::journal::Journal;
use super::keeper::{self, KeeperLease, now};
use super::sweep::{Remembered, reclaim, sweep};
use crate::error::{Error, Result};
use crate::probe::{LiveProbes, TmuxQuery};
use crate::record::LockRecord;
use crate::trust::escape;
use nix::fcntl::{Flock, FlockArg};
use std::sync::mpsc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// An error from the store, escaped (it may quote a key or a value).
pub(crate) fn esc(e: &Error) -> String {
    escape(&e.to_string()).into_owned()
}

/// Takes the keeper's lock for `spec` and writes this process's PID in it,
/// or names the keeper that holds it. A claim from a sandbox may hold the
/// lock shared for a moment (it probes whether a keeper runs): it is tried
/// for 200 ms before giving up.
fn take_lock(spec: &StoreSpec, path: &std::path::Path) -> Result<Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut tries = 0;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                let mut f: &std::fs::File = &held;
                let _ = f.set_len(0);
                let _ = f.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(f, "{}", std::process::id());
                return Ok(held);
            }
            Err((f, _)) if tries < 10 => {
                file = f;
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((mut f, _)) => {
                // Its PID as it wrote it in the lock, else as it published it.
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                let written = text.trim().parse::<i32>().ok().filter(|&p| p > 0);
                let published = keeper::keeper_pid(spec);
                let why = match (published, written) {
                    (Some(_), _) => "it already keeps this host's lease",
                    (None, Some(_)) => "it already runs for this store (no lease yet)",
                    (None, None) => "another process holds the keeper's lock",
                };
                let pid = published.or(written);
                return Err(Error::Keeper {
                    pid: pid.unwrap_or(0),
                    why: format!(
                        "{why} on {} (lock {}); this one exits",
                        spec.endpoints.join(","),
                        path.display()
                    ),
                });
            }
        }
    }
}

/// What `attempt` gives, tried again every `every` until it succeeds: the
/// first failure is a warning (`first`), the others debug events (`again`).
fn until_ok<T>(every: Duration, first: &str, again: &str, attempt: impl Fn() -> Result<T>) -> T {
    let mut tries = 0u32;
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(e) if tries == 0 => warn!("{first}: {}", esc(&e)),
            Err(e) => debug!("{again}: {}", esc(&e)),
        }
        tries += 1;
        std::thread::sleep(every);
    }
}

/// Connects to the store, trying again every second until it answers: a
/// keeper started before the store is reachable (at boot) waits for it.
fn connect(spec: &StoreSpec, timeout: Duration) -> Fleet {
    until_ok(
        Duration::from_secs(1),
        "cannot reach the store yet, trying again every second",
        "cannot reach the store yet",
        || Fleet::connect(spec, timeout),
    )
}

/// A lease from `grant`, tried again every `every` until the store grants
/// one.
fn until_granted(grant: &dyn Fn() -> Result<KeeperLease>, every: Duration) -> KeeperLease {
    let first = format!(
        "granting a lease failed, trying again every {:.1} s",
        every.as_secs_f64()
    );
    until_ok(every, &first, "granting a lease failed again", grant)
}

/// Runs the keeper in the foreground until killed: one per host and store.
/// Another keeper running for the store is an error naming it; a store that
/// does not answer yet is waited for.
pub fn run(spec: &StoreSpec, ttl: i64, period: Duration, timeout: Duration) -> Result<()> {
    let files = keeper::files(spec)?;
    let _held = take_lock(spec, &files.lock)?;
    // A dead predecessor's lease must not be handed out while this one starts.
    let _ = std::fs::remove_file(&files.lease);
    let fleet = &connect(spec, timeout);
    let publish = |l: &KeeperLease| -> Result<()> {
        let tmp = files.lease.with_extension("lease.tmp");
        std::fs::write(&tmp, l.line()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &files.lease).map_err(|e| Error::io(&files.lease, e))
    };
    // A key on each lease: a linearizable read of it tells whether the
    // lease still lives, which a renewal answered by a leader that was
    // hung and has not yet learnt it was replaced does not.
    let sentinel = |id: i64| format!("{}/keepers/{id:x}", spec.prefix);
    let grant = || -> Result<KeeperLease> {
        let sent = now();
        let (id, granted) = fleet.grant(ttl)?;
        let me = LockRecord {
            pid: std::process::id() as i32,
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok()),
            ..LockRecord::default()
        };
        fleet.create(&sentinel(id), &me, Some(id))?;
        Ok(KeeperLease {
            id,
            pid: std::process::id() as i32,
            ttl: granted,
            timeout: fleet.timeout(),
            renewed: sent,
            pid_ns: keeper::own_pid_ns(),
        })
    };
    let mut lease = until_granted(&grant, Duration::from_secs(1));
    publish(&lease)?;
    info!(
        "keeping lease {:x} on {}{} (ttl {} s, renewed every {:.1} s; state in {})",
        lease.id,
        escape(&spec.endpoints.join(",")),
        escape(&spec.prefix),
        lease.ttl,
        lease.period().as_secs_f64(),
        escape(&files.lock.to_string_lossy())
    );
    // Sweeping asks tmux, which may hang for its own time limit: on its own
    // thread and connection, so renewal never waits for it.
    let (tx, rx) = mpsc::channel::<i64>();
    let (sweeper, timeout, first) = (spec.clone(), fleet.timeout(), lease.id);
    let mut journal = Journal {
        path: files.claims.clone(),
        offset: 0,
    };
    std::thread::spawn(move || {
        let fleet = connect(&sweeper, timeout);
        let (mut current, mut remembered) = (first, Remembered::new());
        // Claims made on a predecessor's lease (this keeper restarted):
        // moved onto this one before that lease can expire.
        let live = LiveProbes::new(TmuxQuery::default());
        journal.catch_up(&mut remembered, &live.probes());
        reclaim(&fleet, current, &mut remembered);
        loop {
            let got = rx.recv_timeout(period);
            journal.catch_up(&mut remembered, &live.probes());
            match got {
                Ok(new) => {
                    current = new;
                    reclaim(&fleet, current, &mut remembered);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if let Err(e) = sweep(&fleet, current, &mut remembered) {
                warn!("sweep failed: {}", esc(&e));
            }
            journal.compact(&mut remembered);
        }
    });
    let mut failing = false;
    loop {
        let sent = now();
        // A renewal may take a third of the TTL, whatever the store's limit.
        let renewed = fleet.within(lease.period(), |f| f.keep_alive(lease.id));
        // After a failure (an election, a hung member), the renewal is
        // believed only once a linearizable read finds the lease's key.
        let renewed = match renewed {
            Ok(left) if left > 0 && failing => {
                match fleet.within(lease.period(), |f| f.get(&sentinel(lease.id))) {
                    Ok(Some(_)) => Ok(left),
                    Ok(None) => Ok(0),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let suspect = match renewed {
            Ok(left) if left > 0 => {
                lease.renewed = sent;
                publish(&lease)?;
                if std::mem::take(&mut failing) {
                    info!("lease {:x} renewed again", lease.id);
                } else {
                    debug!("lease {:x} renewed ({left} s left)", lease.id);
                }
                false
            }
            Ok(_) => true,
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!("renewing lease {:x} failed: {}", lease.id, esc(&e));
                } else {
                    debug!("renewing lease {:x} failed again: {}", lease.id, esc(&e));
                }
                now() >= lease.sure_until()
            }
        };
        // Expired only if the store confirms the lease is gone: a lease
        // given up while alive would take its records with it later.
        let expired = suspect
            && fleet
                .within(lease.period(), |f| f.get(&sentinel(lease.id)))
                .is_ok_and(|s| s.is_none());
        if expired {
            error!(
                "lease {:x} EXPIRED (this keeper stalled, or the store was away longer than the TTL): this host's records on it are gone",
                lease.id
            );
            lease = until_granted(&grant, Duration::from_millis(200));
            publish(&lease)?;
            failing = false;
            info!("keeping the new lease {:x}", lease.id);
            let _ = tx.send(lease.id);
            continue;
        }
        let next = if failing {
            Duration::from_millis(200)
        } else {
            (sent + lease.period()).saturating_sub(now())
        };
        std::thread::sleep(next);
    }
}
