//! Unit tests of `verdict`.
use super::*;
use crate::probe::process::MockProcessProbe;
use crate::probe::tmux::MockSessionProbe;
use mockall::predicate::eq;

fn host() -> HostInfo {
    HostInfo {
        hostname: "here".into(),
        uid: 1000,
        boot_id: Some("boot-now".into()),
        pid_ns: Some(INIT_PID_NS),
        mnt_ns: Some(9),
        boot_time: Some("2026-11-20T00:00:00Z".parse().unwrap()),
        ticks_per_sec: 100,
    }
}

fn rec(session: Option<&str>) -> LockRecord {
    LockRecord {
        pid: 100,
        session_id: session.map(str::to_string),
        hostname: Some("here".into()),
        ..LockRecord::default()
    }
}

fn at(t: &str) -> Option<DateTime<FixedOffset>> {
    Some(DateTime::parse_from_rfc3339(t).unwrap())
}

fn procs(existence: Existence, start: Option<u64>) -> MockProcessProbe {
    let mut p = MockProcessProbe::new();
    p.expect_existence().with(eq(100)).return_const(existence);
    p.expect_start_time().return_const(start);
    p
}

fn sessions(status: SessionStatus) -> MockSessionProbe {
    let mut s = MockSessionProbe::new();
    s.expect_session_status().return_const(status);
    s
}

fn verdict_of(r: &LockRecord, e: Existence, start: Option<u64>, s: SessionStatus) -> Verdict {
    judge(r, None, &host(), &procs(e, start), &sessions(s))
}

/// Judges `r` with probes that fail the test if asked anything.
fn judge_unprobed(r: &LockRecord) -> Verdict {
    let mut p = MockProcessProbe::new();
    p.expect_existence().never();
    let mut s = MockSessionProbe::new();
    s.expect_session_status().never();
    judge(r, None, &host(), &p, &s)
}

fn state(r: &LockRecord, e: Existence, start: Option<u64>, s: SessionStatus) -> State {
    judge(r, None, &host(), &procs(e, start), &sessions(s)).state
}

#[test]
fn table() {
    let r = rec(Some("%3"));
    use Existence as E;
    use SessionStatus as S;
    assert_eq!(state(&r, E::Alive, None, S::Alive), State::Held);
    assert_eq!(state(&r, E::Alive, None, S::Gone), State::Orphaned);
    assert_eq!(
        state(&r, E::Alive, None, S::Unknown("x".into())),
        State::Held
    );
    assert_eq!(state(&r, E::Gone, None, S::Alive), State::HeldBySession);
    assert_eq!(state(&r, E::Zombie, None, S::Alive), State::HeldBySession);
    assert_eq!(state(&r, E::Gone, None, S::Gone), State::Stale);
    assert_eq!(state(&r, E::Zombie, None, S::Gone), State::Stale);
    assert_eq!(
        state(&r, E::Gone, None, S::Unknown("x".into())),
        State::Unverified
    );
    assert_eq!(
        state(&r, E::Unknown("x".into()), None, S::Gone),
        State::Unverified
    );
}

#[test]
fn no_session_recorded_never_asks_tmux() {
    let r = rec(None);
    let mut s = MockSessionProbe::new();
    s.expect_session_status().never();
    let v = judge(&r, None, &host(), &procs(Existence::Gone, None), &s);
    assert_eq!(v.state, State::Stale);
    assert_eq!(v.reason, "pid 100 has exited and no session was recorded");
    let v = judge(&r, None, &host(), &procs(Existence::Alive, None), &s);
    assert_eq!(v.state, State::Held);
}

#[test]
fn reused_pid_counts_as_dead() {
    let mut r = rec(Some("gt-max"));
    r.pid_start = Some(500);
    let v = verdict_of(&r, Existence::Alive, Some(900), SessionStatus::Gone);
    assert_eq!(v.state, State::Stale);
    assert!(v.reason.contains("reused"), "{}", v.reason);
    assert_eq!(v.pid_alive, Some(false));
    // Same start time: the same process.
    let v = verdict_of(&r, Existence::Alive, Some(500), SessionStatus::Gone);
    assert_eq!(v.state, State::Orphaned);
    // Start time unreadable: cannot prove reuse, so alive (the safe side).
    let v = verdict_of(&r, Existence::Alive, None, SessionStatus::Gone);
    assert_eq!(v.state, State::Orphaned);
}

#[test]
fn reboot_counts_as_dead_without_probing_the_pid() {
    let mut r = rec(Some("%1"));
    r.boot_id = Some("boot-before".into());
    r.acquired_at = at("2026-11-19T23:00:00Z");
    let mut p = MockProcessProbe::new();
    p.expect_existence().never();
    let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
    assert_eq!(v.state, State::Stale);
    assert!(v.reason.contains("rebooted"));
}

#[test]
fn another_boot_id_after_this_boot_is_a_clone_not_a_reboot() {
    let mut r = rec(Some("%1"));
    r.boot_id = Some("boot-of-the-clone".into());
    let mut p = MockProcessProbe::new();
    p.expect_existence().never();
    // Acquired after this host booted (or within the slack before it), or
    // at an unknown time: another machine of this name wrote it.
    for t in ["2026-11-25T00:00:00Z", "2026-11-19T23:59:30Z"] {
        r.acquired_at = at(t);
        let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
        assert_eq!(v.state, State::Unverified, "{t}: {}", v.reason);
        assert!(v.reason.contains("clone"), "{}", v.reason);
    }
    r.acquired_at = None;
    let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
    assert_eq!(v.state, State::Unverified);
}

#[test]
fn a_lock_without_a_pid_namespace_is_judged_only_from_the_initial_one() {
    let r = rec(None);
    let mut in_container = host();
    in_container.pid_ns = Some(4026532999);
    let mut p = MockProcessProbe::new();
    p.expect_existence().never();
    let mut s = MockSessionProbe::new();
    s.expect_session_status().never();
    let v = judge(&r, None, &in_container, &p, &s);
    assert_eq!(v.state, State::Unverified);
    assert!(v.reason.contains("not in the initial one"), "{}", v.reason);
    // The same lock, naming the container's namespace, is judged there.
    let mut r = r;
    r.pid_ns = Some(4026532999);
    let v = judge(&r, None, &in_container, &procs(Existence::Gone, None), &s);
    assert_eq!(v.state, State::Stale);
}

#[test]
fn the_reuse_slack_keeps_a_lock_but_never_makes_an_asker_its_claimer() {
    // Boot at 2026-11-20T00:00:00Z, 100 ticks a second; acquired a day later.
    let mut r = rec(None);
    r.acquired_at = at("2026-11-21T00:00:00Z");
    let day = 86_400 * 100;
    for (start, claimer) in [
        (day - 100, true),
        (day + 1, true),
        (day + 50, false),
        (day + 3_000, false),
    ] {
        let p = procs(Existence::Alive, Some(start));
        assert_eq!(
            pid_status(&r, &host(), &p),
            PidStatus::Alive,
            "within the slack the lock lives"
        );
        assert_eq!(proven_claimer(&r, &host(), &p), claimer, "start {start}");
    }
    r.pid_start = Some(day);
    assert!(proven_claimer(
        &r,
        &host(),
        &procs(Existence::Alive, Some(day))
    ));
    assert!(!proven_claimer(
        &r,
        &host(),
        &procs(Existence::Alive, Some(day + 1))
    ));
}

#[test]
fn foreign_host_is_unverified_without_any_probe() {
    let mut r = rec(Some("%1"));
    r.hostname = Some("elsewhere".into());
    let v = judge_unprobed(&r);
    assert_eq!(v.state, State::Unverified);
    assert!(v.reason.contains("elsewhere"));
}

#[test]
fn another_pid_namespace_is_unverified_without_any_probe() {
    let mut r = rec(Some("%1"));
    r.pid_ns = Some(8);
    let v = judge_unprobed(&r);
    assert_eq!(v.state, State::Unverified);
    assert!(v.reason.contains("PID namespace 8"), "{}", v.reason);
    // The same namespace: judged as usual.
    r.pid_ns = Some(INIT_PID_NS);
    assert_eq!(
        state(&r, Existence::Gone, None, SessionStatus::Gone),
        State::Stale
    );
}

#[test]
fn go_locks_prove_reuse_by_start_time_and_boot() {
    // Boot at 2026-11-20T00:00:00Z; 100 ticks a second.
    let mut r = rec(Some("%1"));
    r.acquired_at = at("2026-11-21T00:00:00Z");
    // The process at that PID started a day after the lock: reused.
    let day = 2 * 86_400 * 100;
    let v = verdict_of(&r, Existence::Alive, Some(day), SessionStatus::Gone);
    assert_eq!(v.state, State::Stale, "{}", v.reason);
    assert!(v.reason.contains("reused"), "{}", v.reason);
    // Started before the lock (or within the clock slack): the same process.
    for start in [86_400 * 100 - 100, 86_400 * 100 + 5_900] {
        let v = verdict_of(&r, Existence::Alive, Some(start), SessionStatus::Gone);
        assert_eq!(v.state, State::Orphaned, "start {start}: {}", v.reason);
    }
    // Acquired before this boot: dead, whatever runs at that PID now.
    r.acquired_at = at("2026-11-19T23:00:00Z");
    let mut p = MockProcessProbe::new();
    p.expect_existence().never();
    let v = judge(&r, None, &host(), &p, &sessions(SessionStatus::Gone));
    assert_eq!(v.state, State::Stale);
    assert!(v.reason.contains("before this host booted"), "{}", v.reason);
}

#[test]
fn another_users_session_is_looked_up_only_on_its_recorded_server() {
    let mut r = rec(Some("%1"));
    r.uid = Some(65534);
    let mut s = MockSessionProbe::new();
    s.expect_session_status().never();
    let v = judge(&r, None, &host(), &procs(Existence::Gone, None), &s);
    assert_eq!(v.state, State::Unverified, "{}", v.reason);
    assert!(v.reason.contains("uid 65534"), "{}", v.reason);
    // The Go tool records no uid: the file's owner stands in.
    r.uid = None;
    let v = judge(&r, Some(65534), &host(), &procs(Existence::Gone, None), &s);
    assert_eq!(v.state, State::Unverified, "{}", v.reason);
    // With its server recorded, that server alone is asked.
    r.tmux_socket = Some("/tmp/tmux-65534/default".into());
    let mut s = MockSessionProbe::new();
    s.expect_session_status()
        .withf(|id, sock, speaker| {
            id == "%1"
                && *sock == Some(Path::new("/tmp/tmux-65534/default"))
                && *speaker == Some(65534)
        })
        .return_const(SessionStatus::Alive);
    let v = judge(&r, Some(65534), &host(), &procs(Existence::Gone, None), &s);
    assert_eq!(v.state, State::HeldBySession);
}

#[test]
fn reasons_name_pane_or_session() {
    let v = judge_statuses(
        7,
        PidStatus::Dead("pid 7 has exited".into()),
        Some((describe_session("%2"), SessionStatus::Alive)),
    );
    assert_eq!(v.reason, "pid 7 has exited but pane %2 is alive");
    let v = judge_statuses(
        7,
        PidStatus::Alive,
        Some((describe_session("gt-max"), SessionStatus::Gone)),
    );
    assert_eq!(v.reason, "pid 7 is alive but session gt-max is gone");
}
