//! Unit tests of claim and release on real temp dirs, with a mocked process
//! table (`mockall`): which outcome each judged state leads to.

use super::*;
use crate::error::Error;
use crate::probe::process::MockProcessProbe;
use crate::probe::tmux::MockSessionProbe;
use crate::probe::{Existence, HostInfo};

const ME: i32 = 4242;
const OTHER: i32 = 5151;
const DEAD: i32 = 6161;

/// This host, as the mocked tests see it.
pub(super) fn host() -> HostInfo {
    HostInfo {
        hostname: "here".into(),
        uid: 1000,
        pid_ns: Some(7),
        ticks_per_sec: 100,
        ..HostInfo::default()
    }
}

/// A temp dir, opened as a worker.
pub(super) fn temp_worker() -> (tempfile::TempDir, Worker) {
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::open(dir.path()).unwrap();
    (dir, w)
}

/// ME and OTHER are alive (each with its own start time), DEAD is gone.
fn procs() -> MockProcessProbe {
    let mut p = MockProcessProbe::new();
    p.expect_existence().returning(|pid| match pid {
        ME | OTHER => Existence::Alive,
        _ => Existence::Gone,
    });
    p.expect_start_time().returning(|pid| Some(pid as u64));
    p.expect_owner_uid().return_const(Some(1000));
    p.expect_parent().return_const(None);
    p.expect_comm().return_const(None);
    p
}

fn sessions() -> MockSessionProbe {
    let mut s = MockSessionProbe::new();
    s.expect_refresh().return_const(());
    s.expect_session_status()
        .return_const(crate::probe::SessionStatus::Gone);
    s
}

fn with_probes<T>(f: impl FnOnce(&Probes) -> T) -> T {
    let (procs, sessions) = (procs(), sessions());
    f(&Probes {
        host: host(),
        procs: &procs,
        sessions: &sessions,
    })
}

fn claim_as(worker: &Path, me: &Claimant, opts: ClaimOptions) -> ClaimOutcome {
    with_probes(|p| claim(worker, me, opts, p)).unwrap()
}

fn action(o: ClaimOutcome) -> ClaimAction {
    match o {
        ClaimOutcome::Done(c) => c.action,
        ClaimOutcome::Refused(j) => panic!("refused: {}", j.reason),
    }
}

fn recorded(worker: &Path) -> LockRecord {
    LockRecord::parse(&std::fs::read(worker.join(RUNTIME_DIR).join(LOCK_FILE)).unwrap()).unwrap()
}

#[test]
fn claim_writes_a_full_record_and_refuses_a_second_holder() {
    let w = tempfile::tempdir().unwrap();
    assert_eq!(
        action(claim_as(w.path(), &Claimant::pid(ME), Default::default())),
        ClaimAction::Claimed
    );
    let rec = recorded(w.path());
    assert_eq!(
        (rec.pid, rec.pid_start, rec.uid, rec.pid_ns),
        (ME, Some(ME as u64), Some(1000), Some(7))
    );
    assert_eq!(rec.hostname.as_deref(), Some("here"));
    match claim_as(w.path(), &Claimant::pid(OTHER), Default::default()) {
        ClaimOutcome::Refused(j) => assert_eq!(j.state, State::Held),
        ClaimOutcome::Done(c) => panic!("second holder got it: {:?}", c.action),
    }
    assert_eq!(
        recorded(w.path()).pid,
        ME,
        "the refused claim changed nothing"
    );
}

#[test]
fn a_refresh_keeps_the_session_and_first_free_skips_what_is_mine() {
    let w = tempfile::tempdir().unwrap();
    let in_pane = Claimant {
        session: Some("%3".into()),
        ..Claimant::pid(ME)
    };
    claim_as(w.path(), &in_pane, Default::default());
    assert_eq!(
        action(claim_as(w.path(), &Claimant::pid(ME), Default::default())),
        ClaimAction::Refreshed
    );
    assert_eq!(recorded(w.path()).session_id.as_deref(), Some("%3"));
    let only_free = ClaimOptions {
        only_free: true,
        ..Default::default()
    };
    match claim_as(w.path(), &Claimant::pid(ME), only_free) {
        ClaimOutcome::Refused(j) => assert!(j.reason.starts_with("already yours"), "{}", j.reason),
        ClaimOutcome::Done(_) => panic!("--first-free handed out a worker the asker holds"),
    }
}

#[test]
fn stale_is_replaced_held_is_taken_only_by_force() {
    let w = tempfile::tempdir().unwrap();
    claim_as(w.path(), &Claimant::pid(OTHER), Default::default());
    let force = ClaimOptions {
        force: true,
        ..Default::default()
    };
    assert_eq!(
        action(claim_as(w.path(), &Claimant::pid(ME), force)),
        ClaimAction::TookOver
    );
    let mut rec = recorded(w.path());
    rec.pid = DEAD;
    std::fs::write(w.path().join(".runtime/agent.lock"), rec.to_json()).unwrap();
    assert_eq!(
        action(claim_as(
            w.path(),
            &Claimant::pid(OTHER),
            Default::default()
        )),
        ClaimAction::ReplacedStale
    );
}

#[test]
fn a_dead_or_bad_claimant_is_an_error() {
    let w = tempfile::tempdir().unwrap();
    for pid in [0, -1, DEAD] {
        let e = with_probes(|p| claim(w.path(), &Claimant::pid(pid), Default::default(), p));
        assert!(matches!(e, Err(Error::BadPid { .. })), "pid {pid}");
    }
    assert!(!w.path().join(RUNTIME_DIR).exists(), "nothing created");
}

#[test]
fn release_only_by_the_holder_unless_forced() {
    let w = tempfile::tempdir().unwrap();
    let release_as = |pid: i32, force: bool| {
        with_probes(|p| release(w.path(), &Asker::new(Some(pid), None, None), force, p)).unwrap()
    };
    // Nothing there: already free, and .runtime is not created.
    assert!(matches!(
        release_as(ME, false),
        ReleaseOutcome::Done {
            action: ReleaseAction::AlreadyFree,
            ..
        }
    ));
    assert!(!w.path().join(RUNTIME_DIR).exists());
    claim_as(w.path(), &Claimant::pid(ME), Default::default());
    assert!(matches!(
        release_as(OTHER, false),
        ReleaseOutcome::Refused(_)
    ));
    assert_eq!(recorded(w.path()).pid, ME);
    assert!(matches!(
        release_as(ME, false),
        ReleaseOutcome::Done {
            action: ReleaseAction::Released,
            ..
        }
    ));
    claim_as(w.path(), &Claimant::pid(ME), Default::default());
    assert!(matches!(
        release_as(OTHER, true),
        ReleaseOutcome::Done {
            action: ReleaseAction::Released,
            ..
        }
    ));
    // A corrupt file is moved aside by force, never deleted.
    std::fs::write(w.path().join(".runtime/agent.lock"), "{").unwrap();
    assert!(matches!(release_as(ME, false), ReleaseOutcome::Refused(_)));
    match release_as(ME, true) {
        ReleaseOutcome::Done {
            action: ReleaseAction::MovedAside,
            moved_to: Some(to),
            ..
        } => assert_eq!(std::fs::read_to_string(to).unwrap(), "{"),
        other => panic!("{other:?}"),
    }
}

/// The holder's command is named only while the PID is provably the
/// claimer: a process that took its PID (another start time) names nothing.
#[test]
fn the_holder_command_names_only_the_claimer() {
    let mut p = MockProcessProbe::new();
    p.expect_comm().return_const(Some("claude".to_string()));
    // ME's recorded start is ME; the process now at ME started later.
    let reused = std::sync::atomic::AtomicBool::new(false);
    p.expect_start_time().returning(move |pid| {
        let later = reused.swap(true, std::sync::atomic::Ordering::Relaxed);
        Some(pid as u64 + u64::from(later))
    });
    let sessions = sessions();
    let probes = Probes {
        host: host(),
        procs: &p,
        sessions: &sessions,
    };
    let judged = |start| Judgement {
        record: Some(LockRecord {
            pid: ME,
            pid_start: Some(start),
            hostname: Some("here".into()),
            ..LockRecord::default()
        }),
        pid_alive: Some(true),
        ..Judgement::at(
            Path::new("/w"),
            Path::new("/w/l"),
            State::Held,
            "alive".into(),
        )
    };
    // First read: the start time matches.
    assert_eq!(
        judged(ME as u64).holder_command(&probes).as_deref(),
        Some("claude")
    );
    // Then the PID is reused: the name read is not the holder's.
    assert_eq!(judged(ME as u64).holder_command(&probes), None);
    // A stale or unverified verdict names nothing either.
    let stale = Judgement {
        state: State::Stale,
        ..judged(ME as u64 + 1)
    };
    assert_eq!(stale.holder_command(&probes), None);
}
