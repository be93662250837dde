//! What the keeper does while it runs: renew the host's lease every third of
//! its TTL (each renewal sent to every member at once, and given a third of
//! the TTL, not the store's time limit), publish each renewal for claims to
//! see, and on its own thread sweep this host's records: delete those the
//! local PID + tmux rules prove stale (compare-and-delete, then their local
//! lock file), and remember the live ones. If the lease expired anyway (the
//! keeper was stopped, the store was away longer than the TTL), a new one is
//! granted and every remembered claim whose holder still lives and still
//! has its lock file is claimed again on it, with a new fence, unless
//! another holder took the worker meanwhile: that collision is logged (and
//! `doctor` shows it). Claims are remembered from the sweeps and from the
//! claims file every acknowledged claim appends to, so a claim made just
//! before a stall, or on a predecessor keeper's lease (a restart), is not
//! forgotten. Every event is one line on stderr.

use super::StoreSpec;
use super::etcd::{Created, Fleet};
use super::journal::Journal;
use super::keeper::{self, KeeperLease, now};
use super::ops::{judge_stored, this_host};
use crate::error::{Error, Result};
use crate::probe::{LiveProbes, Probes, TmuxQuery};
use crate::record::LockRecord;
use crate::verdict::State;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// One line of the keeper's log, on stderr (the journal under systemd, the
/// log file in the state dir when a claim started it).
pub fn log(line: impl std::fmt::Display) {
    let at = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
    eprintln!("{at} agentlock keeper[{}]: {line}", std::process::id());
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// This host's records looked at.
    pub records: usize,
    /// Stale ones deleted.
    pub deleted: usize,
}

/// This host's live claims on the keeper's lease, by key: what is claimed
/// again if the lease expires.
pub(crate) type Remembered = BTreeMap<String, LockRecord>;

/// What `rec`'s lock file on this host (`fleet_dir`) holds now, read the
/// way every lock file is (no symlinks of others, regular files only, size
/// capped: a FIFO or `/dev/zero` planted there stops nothing).
#[derive(Debug, PartialEq, Eq)]
enum Mirror {
    /// Exactly `rec`: the claim was not released.
    Same,
    /// Another host's fleet claim of the same key (a fleet root the hosts
    /// share): the worker was taken from this host's holder.
    Taken,
    /// Anything else: released, or claimed again on this host.
    Gone,
}

fn mirror(key: &str, rec: &LockRecord, probes: &Probes) -> Mirror {
    let Some(dir) = rec.fleet_dir.as_deref() else {
        return Mirror::Gone;
    };
    match crate::lock::judge(dir, probes).ok().and_then(|j| j.record) {
        Some(r) if r == *rec => Mirror::Same,
        Some(r) if r.fleet_key.as_deref() == Some(key) && !this_host(&r, probes) => Mirror::Taken,
        _ => Mirror::Gone,
    }
}

/// Whether a remembered claim is still worth remembering: its holder lives
/// and its lock file was not released.
fn keep(key: &str, rec: &LockRecord, probes: &Probes) -> bool {
    lives(rec, probes) && mirror(key, rec, probes) != Mirror::Gone
}

/// Whether `rec`'s holder still lives by the local rules.
fn lives(rec: &LockRecord, probes: &Probes) -> bool {
    // Provably: a holder this keeper cannot judge (another PID namespace)
    // is never claimed again on its behalf.
    let v = crate::verdict::judge(rec, rec.uid, &probes.host, probes.procs, probes.sessions);
    matches!(
        v.state,
        State::Held | State::HeldBySession | State::Orphaned
    )
}

/// Whether no process on this host started at clock tick `start` (since
/// boot): then a holder recorded with that start time, in whatever PID
/// namespace, is provably gone. A `/proc/PID/stat` that cannot be read
/// makes the answer "not proven".
fn nothing_started_at(start: u64) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<i32>() else {
            continue;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(text) => match crate::probe::process::parse_stat(&text) {
                Some(st) if st.start_time == start && st.state != 'Z' => return false,
                Some(_) => {}
                None => return false,
            },
            // Exited meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return false,
        }
    }
    true
}

/// A record written from a PID namespace of its own (a sandbox) is
/// `unverified` by the PID rules (its PID means nothing here). With no
/// session recorded and no process on the host started at its holder's
/// start time, the holder is provably gone, whatever namespace it was in.
fn sandbox_gone(rec: &LockRecord, probes: &Probes) -> bool {
    rec.session_id.is_none()
        && rec.pid_ns.is_some_and(|ns| Some(ns) != probes.host.pid_ns)
        && rec.pid_start.is_some_and(nothing_started_at)
}

/// Deletes this host's records the local rules prove stale, each by
/// compare-and-delete on the revision judged, then the lock file the claim
/// wrote (only if it still holds that very record); tmux is asked afresh.
/// Records of this host on `lease` whose holders live are added to
/// `remembered`.
pub fn sweep(fleet: &Fleet, lease: i64, remembered: &mut Remembered) -> Result<Swept> {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let mut swept = Swept::default();
    let mut mine = Vec::new();
    let mut on_lease = std::collections::HashSet::new();
    fleet.scan(|key, stored| {
        if let Ok(fr) = &stored.record
            && this_host(&fr.record, &probes)
        {
            mine.push((key, stored));
        }
    })?;
    let seen: std::collections::HashSet<String> = mine.iter().map(|(k, _)| k.clone()).collect();
    for (key, stored) in mine {
        let Ok(fr) = &stored.record else { continue };
        // A session recorded without its server could live on a tmux server
        // this long-lived process cannot see (another TMUX_TMPDIR): never
        // proven gone here; its holder or `--force` clears it.
        if fr.record.session_id.is_some() && fr.record.tmux_socket.is_none() {
            continue;
        }
        swept.records += 1;
        if stored.lease == lease {
            on_lease.insert(key.clone());
        }
        let judged = judge_stored(Path::new("/"), &key, Some(&stored), &probes);
        let state = judged.judgement.state;
        let gone = state == State::Stale
            || (state == State::Unverified && sandbox_gone(&fr.record, &probes));
        if !gone {
            if lives(&fr.record, &probes) && stored.lease != 0 && stored.lease != lease {
                // Left on a lease nobody renews (a move that failed when
                // this keeper started): moved onto this keeper's, same fence.
                match fleet.replace(
                    &key,
                    stored.revision,
                    &fr.record,
                    Some(fr.fence),
                    Some(lease),
                ) {
                    Ok(Some(_)) => log(format_args!(
                        "moved {key} (fence {}) to lease {lease:x}",
                        fr.fence
                    )),
                    Ok(None) => {}
                    Err(e) => log(format_args!("could not move {key} to lease {lease:x}: {e}")),
                }
            }
            if lives(&fr.record, &probes) {
                remembered.insert(key, fr.record.clone());
            }
            continue;
        }
        if fleet.delete(&key, stored.revision)? {
            swept.deleted += 1;
            log(format_args!(
                "swept {key}: {} (fence {})",
                judged.judgement.reason, fr.fence
            ));
            if let Some(dir) = &fr.record.fleet_dir {
                let _ = crate::lock::release_written(dir, &fr.record, &probes);
            }
        }
    }
    // A claim is forgotten once its holder is gone or its lock file no
    // longer holds it (released).
    remembered.retain(|key, rec| keep(key, rec, &probes));
    // Some of this host's records on the lease were seen, so the lease
    // lived: a remembered claim missing from the store was removed on
    // purpose (`release --force` elsewhere), not lost with the lease.
    if !on_lease.is_empty() {
        remembered.retain(|key, _| seen.contains(key));
    }
    Ok(swept)
}

/// After the lease expired: claims every remembered worker again on `lease`
/// (the same record, a new fence) unless another holder took it.
fn reclaim(fleet: &Fleet, lease: i64, remembered: &mut Remembered) {
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    remembered.retain(|key, rec| keep(key, rec, &probes));
    for (key, rec) in remembered.iter() {
        // Its lock file now holds another host's claim (a shared fleet
        // root): never claimed again here; reported if that host holds it.
        let created = if mirror(key, rec, &probes) == Mirror::Taken {
            fleet.get(key).map(|s| match s {
                Some(s) => Created::Exists(Box::new(s)),
                None => Created::Fence(0),
            })
        } else {
            fleet.create(key, rec, Some(lease))
        };
        match created {
            Ok(Created::Fence(0)) => {}
            Ok(Created::Fence(f)) => log(format_args!(
                "re-claimed {key} for pid {} on the new lease {lease:x} (fence {f}): the worker was free while the lease was lost",
                rec.pid
            )),
            Ok(Created::Exists(s)) => match &s.record {
                // Still there on the old lease (it was not quite gone):
                // hung on the new one, same holder, same fence.
                Ok(fr) if fr.record.same_claim(rec) && s.lease != lease => {
                    match fleet.replace(key, s.revision, &fr.record, Some(fr.fence), Some(lease)) {
                        Ok(Some(_)) => log(format_args!(
                            "moved {key} (pid {}, fence {}) to the new lease {lease:x}",
                            rec.pid, fr.fence
                        )),
                        Ok(None) => log(format_args!(
                            "{key} changed while being moved to the new lease; the next sweep judges it"
                        )),
                        Err(e) => log(format_args!("could not move {key} to the new lease: {e}")),
                    }
                }
                Ok(fr) if fr.record.same_claim(rec) => {}
                Ok(fr) => log(format_args!(
                    "COLLISION {key}: pid {} on this host still holds it, but while this host's lease was lost pid {} on host {} claimed it (fence {})",
                    rec.pid,
                    fr.record.pid,
                    fr.record.hostname.as_deref().unwrap_or("?"),
                    fr.fence
                )),
                Err(why) => log(format_args!(
                    "COLLISION {key}: pid {} on this host still holds it, but the store holds a value that is not a record ({why})",
                    rec.pid
                )),
            },
            Err(e) => log(format_args!("could not re-claim {key}: {e}")),
        }
    }
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
