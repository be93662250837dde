//! What the keeper does while it runs: renew the host's lease every third of
//! its TTL (each renewal sent to every member at once, and given a third of
//! the TTL, not the store's time limit), publish each renewal for claims to
//! see, and sweep this host's records on a thread of its own
//! ([`crate::fleet::sweep`]). If the lease expired anyway (the keeper was
//! stopped, the store was away longer than the TTL), a new one is granted
//! and the sweeper claims again what it remembers. Every event is one line
//! on stderr.
use super::StoreSpec;
use super::etcd::Fleet;
use super::journal::Journal;
use super::keeper::{self, KeeperLease, now};
use super::sweep::{Remembered, reclaim, sweep};
use crate::error::{Error, Result};
use crate::probe::{LiveProbes, TmuxQuery};
use crate::record::LockRecord;
use nix::fcntl::{Flock, FlockArg};
use std::sync::mpsc;
use std::time::Duration;

/// One line of the keeper's log, on stderr (the journal under systemd, the
/// log file in the state dir when a claim started it).
pub fn log(line: impl std::fmt::Display) {
    let at = crate::record::local_now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
    eprintln!("{at} agentlock keeper[{}]: {line}", std::process::id());
}

/// Runs the keeper in the foreground until killed: one per host and store.
/// Another keeper running for the store is an error naming it.
pub fn run(spec: &StoreSpec, ttl: i64, period: Duration, fleet: &Fleet) -> Result<()> {
    let files = keeper::files(spec)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&files.lock)
        .map_err(|e| Error::io(&files.lock, e))?;
    // A claim from a sandbox may hold the lock shared for a moment (it
    // probes whether a keeper runs): tried for 200 ms before giving up.
    let mut file = file;
    let mut tries = 0;
    let _held = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => break held,
            Err((f, _)) if tries < 10 => {
                file = f;
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                let why = match keeper::keeper_pid(spec) {
                    Some(_) => "it already keeps this host's lease",
                    None => "another process holds the keeper's lock",
                };
                return Err(Error::Keeper {
                    pid: keeper::keeper_pid(spec).unwrap_or(0),
                    why: format!(
                        "{why} on {} (lock {}); this one exits",
                        spec.endpoints.join(","),
                        files.lock.display()
                    ),
                });
            }
        }
    };
    // A dead predecessor's lease must not be handed out while this one starts.
    let _ = std::fs::remove_file(&files.lease);
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
    let mut lease = grant()?;
    publish(&lease)?;
    log(format_args!(
        "keeping lease {:x} on {}{} (ttl {} s, renewed every {:.1} s)",
        lease.id,
        spec.endpoints.join(","),
        spec.prefix,
        lease.ttl,
        lease.period().as_secs_f64()
    ));
    // Sweeping asks tmux, which may hang for its own time limit: on its own
    // thread and connection, so renewal never waits for it.
    let (tx, rx) = mpsc::channel::<i64>();
    let (sweeper, timeout, first) = (spec.clone(), fleet.timeout(), lease.id);
    let mut journal = Journal {
        path: files.claims.clone(),
        offset: 0,
    };
    std::thread::spawn(move || {
        let fleet = loop {
            match Fleet::connect(&sweeper, timeout) {
                Ok(f) => break f,
                Err(e) => {
                    log(format_args!("the sweeper cannot connect yet: {e}"));
                    std::thread::sleep(period.max(Duration::from_secs(1)));
                }
            }
        };
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
                log(format_args!("sweep failed: {e}"));
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
                    log(format_args!("lease {:x} renewed again", lease.id));
                }
                false
            }
            Ok(_) => true,
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    log(format_args!("renewing lease {:x} failed: {e}", lease.id));
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
            log(format_args!(
                "lease {:x} EXPIRED (this keeper stalled, or the store was away longer than the TTL): this host's records on it are gone",
                lease.id
            ));
            loop {
                match grant() {
                    Ok(l) => {
                        lease = l;
                        break;
                    }
                    Err(e) => {
                        log(format_args!("granting a new lease failed: {e}"));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            publish(&lease)?;
            failing = false;
            log(format_args!("keeping the new lease {:x}", lease.id));
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
