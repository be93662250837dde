//! `agentlock run`: the lock is held while the command runs and released
//! however it ends; the exit status is the command's.

use crate::common::*;

use agentlock::record::LockRecord;
use predicates::str::contains;
use std::time::Duration;

#[test]
fn holds_while_running_releases_after_and_passes_the_status() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let seen = sb.path().join("seen");
    let out = sb
        .cmd()
        .arg("run")
        .arg(&w)
        .arg("--")
        .args([
            "sh",
            "-c",
            "cat \"$1\" > \"$2\"; echo $$ > \"$2.pid\"; exit 7",
            "sh",
        ])
        .arg(lock_path(&w))
        .arg(&seen)
        .assert()
        .code(7);
    let _ = out;
    let rec = LockRecord::parse(&std::fs::read(&seen).unwrap())
        .expect("lock was present while the command ran");
    let command: i32 = std::fs::read_to_string(seen.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rec.pid, command, "the lock names the command's own process");
    assert!(rec.pid_start.is_some());
    assert!(!lock_path(&w).exists(), "released after exit");
}

/// The command finds its worker in AGENTLOCK_WORKER (canonical), and no
/// AGENTLOCK_FENCE: an outer run's on the store is not its own; the rest
/// of the environment is passed on.
#[test]
fn the_command_gets_its_worker_and_no_inherited_fence() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let out = sb
        .cmd()
        .env("AGENTLOCK_FENCE", "41")
        .env("AGENTLOCK_WORKER", "/elsewhere")
        .env("KEPT", "yes")
        .current_dir(sb.path())
        .args(["run", "w", "--", "sh", "-c"])
        .arg("echo \"${AGENTLOCK_WORKER}|${AGENTLOCK_FENCE-unset}|$KEPT\"")
        .assert()
        .code(0);
    let canonical = std::fs::canonicalize(&w).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout).trim(),
        format!("{}|unset|yes", canonical.display())
    );
}

#[test]
fn released_when_the_command_is_killed_by_a_signal() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    sb.cmd()
        .arg("run")
        .arg(&w)
        .args(["--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(128 + 9);
    assert!(!lock_path(&w).exists());
}

#[test]
fn sigterm_to_run_is_forwarded_and_the_lock_released() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("got-term");
    let script = format!(
        "trap 'echo term > {}; exit 3' TERM; while :; do sleep 0.02; done",
        marker.display()
    );
    let mut cmd = sb.std_cmd();
    cmd.arg("run").arg(&w).args(["--", "sh", "-c", &script]);
    let mut run = Group::spawn(cmd);
    let lock = lock_path(&w);
    wait_for("the lock", Duration::from_secs(10), || lock.exists());
    let rec = LockRecord::parse(&std::fs::read(&lock).unwrap()).unwrap();
    assert_ne!(rec.pid, run.pid(), "the lock names the command, not run");
    assert_eq!(
        agentlock::probe::process::parent_of(rec.pid),
        Some(run.pid()),
        "the command is run's child"
    );
    // Give sh time to install its trap.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the command's own status");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "term");
    assert!(!lock.exists(), "released after SIGTERM");
}

#[test]
fn sigkill_to_run_leaves_the_command_holding_until_it_exits() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let mut cmd = sb.std_cmd();
    cmd.arg("run").arg(&w).args(["--", "sleep", "600"]);
    let mut run = Group::spawn(cmd);
    let lock = lock_path(&w);
    wait_for("the lock", Duration::from_secs(10), || lock.exists());
    let command = LockRecord::parse(&std::fs::read(&lock).unwrap())
        .unwrap()
        .pid;
    // Killed once the command really runs (item 16: not while it is gated).
    wait_exec(command, "sleep");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.0.wait().unwrap();
    // The command still runs: the worker is still held by it.
    assert!(pid_alive(command));
    assert_eq!(state_of(&sb, &w, &[]), "held");
    let c = sleeper();
    sb.claim(&w, c.pid(), &[]).code(1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(command),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_gone(command, Duration::from_secs(10));
    // It exited with no run left to release: stale, and claimable.
    assert_eq!(state_of(&sb, &w, &[]), "stale");
    sb.claim(&w, c.pid(), &[]).code(0);
}

/// Holds `w`'s guard with flock(1) until dropped, as another mutation would.
/// `run`, its gated command forked, waiting for the guard.
fn run_waiting_for_the_guard(sb: &Sandbox, w: &std::path::Path, marker: &std::path::Path) -> Group {
    let mut cmd = sb.std_cmd();
    cmd.arg("run")
        .arg(w)
        .args(["--", "touch"])
        .arg(marker)
        .stderr(std::process::Stdio::piped());
    let run = Group::spawn(cmd);
    // The sentinel and the gated command are forked before the claim starts.
    let pid = run.pid();
    wait_for("run to fork its command", Duration::from_secs(20), || {
        children(pid).len() >= 2
    });
    run
}

/// Item 15: Ctrl-C while `run` waits for the guard aborts: the command never starts.
#[test]
fn a_signal_while_waiting_for_the_guard_aborts_before_the_command_starts() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ran");
    let guard = hold_guard(&w);
    let mut run = run_waiting_for_the_guard(&sb, &w, &marker);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    // It ends while the guard is still held by flock: it did not wait it out.
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("was not started"), "{err}");
    drop(guard);
    assert!(!marker.exists(), "the command never ran");
    assert!(!lock_path(&w).exists());
}

/// Item 16: `run` SIGKILLed while its command waits at the gate: the command
/// exits quietly, without running and without a Rust runtime abort.
#[test]
fn sigkill_before_the_gate_opens_ends_the_gated_command_quietly() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ran");
    let guard = hold_guard(&w);
    let mut run = run_waiting_for_the_guard(&sb, &w, &marker);
    let gated = children(run.pid());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.0.wait().unwrap();
    // stderr reaches EOF once every process that inherited it is gone.
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("fatal runtime error"), "{err}");
    assert_eq!(err, "");
    for pid in gated {
        wait_gone(pid, Duration::from_secs(10));
        assert!(!pid_alive(pid));
    }
    drop(guard);
    assert!(!marker.exists(), "the command never ran");
    assert!(!lock_path(&w).exists());
}

/// Perl appends a line to `marker` per signal `sig` delivered (its deferred
/// handlers run once per signal received; a shell trap would merge two quick
/// ones), and exits after the first if `exit`.
fn signal_logger(sig: &str, marker: &std::path::Path, exit: bool) -> String {
    format!(
        "$SIG{{{sig}}} = sub {{ open my $f, q(>>), q({m}); print $f qq({sig}\\n); close $f; {end} }}; sleep 1 while 1",
        m = marker.display(),
        end = if exit { "exit 0" } else { "" }
    )
}

fn int_counter(marker: &std::path::Path) -> String {
    signal_logger("INT", marker, false)
}

/// `agentlock run W -- perl -e SCRIPT` as the command of a new pane (session
/// `agent`); returns the lock once perl runs and catches `sig`.
fn run_in_pane(
    sb: &Sandbox,
    tmux: &Tmux,
    w: &std::path::Path,
    script: &str,
    sig: nix::sys::signal::Signal,
) -> LockRecord {
    // `exec`: run is the pane's process, whatever shell tmux starts it with
    // (bash execs a lone command itself; dash does not).
    let cmd = format!(
        "exec env TMUX_TMPDIR='{}' '{}' run '{}' -- perl -e '{}'",
        sb.tmux_tmpdir.display(),
        BIN,
        w.display(),
        script
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "agent",
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    wait_for("the lock", Duration::from_secs(10), || {
        lock_path(w).exists()
    });
    let rec = record_at(w);
    wait_exec(rec.pid, "perl");
    wait_catches(rec.pid, sig as i32);
    rec
}

fn ints(marker: &std::path::Path) -> usize {
    std::fs::read_to_string(marker).map_or(0, |s| s.lines().count())
}

/// Waits for `n` SIGINTs, then long enough for a forwarded duplicate to land.
fn expect_ints(marker: &std::path::Path, n: usize) {
    wait_for(&format!("{n} SIGINTs"), Duration::from_secs(20), || {
        ints(marker) >= n
    });
    std::thread::sleep(agentlock::forward::GROUP_WINDOW * 3);
    assert_eq!(ints(marker), n, "each signal delivered exactly once");
}

/// Item 17: a signal sent to `run` alone is forwarded once; one sent to the
/// whole process group (the command included) is not forwarded again.
#[test]
fn signals_reach_the_command_exactly_once() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ints");
    let mut cmd = sb.std_cmd();
    cmd.arg("run")
        .arg(&w)
        .args(["--", "perl", "-e", &int_counter(&marker)]);
    let run = Group::spawn(cmd);
    wait_for("the lock", Duration::from_secs(20), || {
        lock_path(&w).exists()
    });
    let perl = record_at(&w).pid;
    wait_exec(perl, "perl");
    wait_catches(perl, libc_sigint());
    let int = nix::sys::signal::Signal::SIGINT;
    // To run alone: forwarded.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.pid()), int).unwrap();
    expect_ints(&marker, 1);
    // To the whole group (run leads it): the command got it from the kernel.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(-run.pid()), int).unwrap();
    expect_ints(&marker, 2);
    // To run alone again, soon after: a new signal, forwarded.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.pid()), int).unwrap();
    expect_ints(&marker, 3);
}

/// Closing a pane hangs up its terminal: the kernel sends SIGHUP to the
/// session leader alone (`run`, the pane's command), which passes it on.
#[test]
fn a_closed_pane_hangs_up_the_command() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("hup");
    let tmux = sb.tmux("s", "keeper");
    let hup = nix::sys::signal::Signal::SIGHUP;
    let perl = run_in_pane(&sb, &tmux, &w, &signal_logger("HUP", &marker, true), hup).pid;
    let lock = lock_path(&w);
    // Should the hangup be lost, the orphaned run and command end with the test.
    let run_pid: i32 = tmux.query("agent", "#{pane_pid}").parse().unwrap();
    let _cleanup = KillOnDrop(vec![(perl, start_of(perl)), (run_pid, start_of(run_pid))]);
    tmux.kill_session("agent");
    wait_for("the hangup", Duration::from_secs(20), || marker.exists());
    wait_for("release", Duration::from_secs(20), || !lock.exists());
}

/// Item 17: `timeout -s INT` signals run and then its whole group: one SIGINT.
#[test]
fn timeout_s_int_delivers_one_sigint() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ints");
    let started = sb.path().join("started");
    let script = format!(
        "open my $s, q(>), q({}); close $s; {}",
        started.display(),
        int_counter(&marker)
    );
    let mut cmd = sb.command("timeout");
    cmd.args(["-k", "30", "-s", "INT", "3", BIN, "run"])
        .arg(&w)
        .args(["--", "perl", "-e", &script]);
    let _timeout = Group::spawn(cmd);
    wait_for("perl to start", Duration::from_secs(20), || {
        started.exists()
    });
    expect_ints(&marker, 1);
}

fn libc_sigint() -> i32 {
    nix::sys::signal::Signal::SIGINT as i32
}

#[test]
fn refused_claim_exits_75_without_running_the_command() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).code(0);
    let marker = sb.path().join("ran");
    sb.cmd()
        .arg("run")
        .arg(&w)
        .args(["--", "touch"])
        .arg(&marker)
        .assert()
        .code(75)
        .stderr(contains(format!("holder: pid {}", holder.pid())));
    assert!(!marker.exists());
    assert_eq!(
        LockRecord::parse(&std::fs::read(lock_path(&w)).unwrap())
            .unwrap()
            .pid,
        holder.pid()
    );
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    sb.cmd()
        .arg("run")
        .arg(&w)
        .args(["--", "definitely-not-a-command-xyz"])
        .assert()
        .code(127);
    assert!(!lock_path(&w).exists());
    let script = sb.path().join("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    sb.cmd()
        .arg("run")
        .arg(&w)
        .arg("--")
        .arg(&script)
        .assert()
        .code(126);
    assert!(!lock_path(&w).exists());
}

#[test]
fn ctrl_c_in_a_tmux_pane_reaches_the_command_once() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ints");
    let tmux = sb.tmux("s", "keeper");
    let int = nix::sys::signal::Signal::SIGINT;
    let rec = run_in_pane(&sb, &tmux, &w, &int_counter(&marker), int);
    let lock = lock_path(&w);
    assert_eq!(
        rec.session_id, None,
        "names the command alone, not the pane it runs in"
    );
    tmux.run(&["send-keys", "-t", "agent", "C-c"]);
    wait_for("the trap", Duration::from_secs(10), || marker.exists());
    std::thread::sleep(agentlock::forward::GROUP_WINDOW * 3);
    let ints = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(ints.lines().count(), 1, "one Ctrl-C, one SIGINT: {ints:?}");
    assert!(lock.exists(), "still held: the command survived its trap");
    // SIGTERM sent to run (the pane's process) by a process is forwarded; the command ends; released.
    let run_pid: i32 = tmux.query("agent", "#{pane_pid}").parse().unwrap();
    assert_eq!(agentlock::probe::process::parent_of(rec.pid), Some(run_pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("release", Duration::from_secs(10), || !lock.exists());
}

/// Processes this test started indirectly (through tmux, or that left run's
/// group), SIGKILLed on drop (with their group, when they lead one) if still
/// the same processes (PID and start time).
struct KillOnDrop(Vec<(i32, u64)>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, start) in &self.0 {
            let same =
                agentlock::probe::ProcessProbe::start_time(&agentlock::probe::LiveProcesses, pid)
                    == Some(start);
            if same && pid_alive(pid) {
                let p = nix::unistd::Pid::from_raw(pid);
                // A group leader takes its group (its children) with it.
                let target = if nix::unistd::getpgid(Some(p)) == Ok(p) {
                    nix::unistd::Pid::from_raw(-pid)
                } else {
                    p
                };
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Review: a signal ignored when `run` starts (nohup) stays ignored for the command.
#[test]
fn ignored_signals_stay_ignored() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let out = sb.path().join("sigign");
    let script = format!(
        "trap '' HUP; exec '{}' run '{}' -- sh -c 'grep SigIgn /proc/self/status > \"$0\"' '{}'",
        BIN,
        w.display(),
        out.display()
    );
    let status = sb.script("sh", &script).0.wait().unwrap();
    assert!(status.success());
    let line = std::fs::read_to_string(&out).unwrap();
    let mask = u64::from_str_radix(line.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(mask & 1, 1, "SIGHUP still ignored: {line}");
}

/// Review: a command in a process group of its own (as `timeout(1)` or
/// `setsid` make) gets what is sent to run's group, through run. The command
/// leaves run's group itself (perl's `setpgrp`): `timeout(1)` would be the
/// natural example, but it sends each signal to its child twice (directly and
/// to its group), so the count would depend on timeout, not on run.
#[test]
fn a_command_in_its_own_group_gets_group_signals_forwarded() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let marker = sb.path().join("ints");
    let mut cmd = sb.std_cmd();
    let script = format!("setpgrp(0, 0); {}", int_counter(&marker));
    cmd.arg("run").arg(&w).args(["--", "perl", "-e", &script]);
    let run = Group::spawn(cmd);
    wait_for("the lock", Duration::from_secs(20), || {
        lock_path(&w).exists()
    });
    let perl = record_at(&w).pid;
    wait_exec(perl, "perl");
    // The handler is set after setpgrp, so perl now leads a group of its
    // own, which run's group kill misses.
    wait_catches(perl, libc_sigint());
    let _own_group = KillOnDrop(vec![(perl, start_of(perl))]);
    assert_eq!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(perl))).unwrap(),
        nix::unistd::Pid::from_raw(perl),
        "perl leads its own process group"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-run.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    expect_ints(&marker, 1);
}

/// Review: a command that refreshes its own claim (`claim --pid $$`) is
/// still run's holder: the lock is released when it exits, no error.
#[test]
fn a_command_that_refreshes_its_own_claim_is_released() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let out = sb
        .cmd()
        .args(["run"])
        .arg(&w)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "'{BIN}' claim -q \"$AGENTLOCK_WORKER\" --pid $$ && exit 4"
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lock_path(&w).exists(), "released");
}

/// Review: a command that hands its worker to a live tmux session
/// (`claim --session S`) made a claim that outlives it: run leaves it.
#[test]
fn a_lock_handed_to_a_live_session_is_left_to_it() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let _tmux = sb.tmux("handoff", "agent");
    let out = sb
        .cmd()
        .arg("run")
        .arg(&w)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "'{BIN}' claim -q \"$AGENTLOCK_WORKER\" --pid $$ --session agent && exit 0"
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
}

/// `run` killed inside a tmux pane: its command lives on and holds the
/// worker; once the command exits the lock is stale (it names the command,
/// not the pane), and the pane's next `run` gets the worker.
#[test]
fn a_killed_run_leaves_a_lock_that_ends_with_its_command() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("s", "shell");
    let pid_file = sb.path().join("command-pid");
    let rc = sb.path().join("rc");
    let typed = format!(
        "'{BIN}' run '{}' -- sh -c 'echo $$ > {}; exec sleep 600'",
        w.display(),
        pid_file.display()
    );
    tmux.run(&["send-keys", "-t", "shell", &typed, "Enter"]);
    wait_for("the command", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let command: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_exec(command, "sleep");
    let run_pid = agentlock::probe::process::parent_of(command).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(run_pid, Duration::from_secs(10));
    assert_eq!(record_at(&w).pid, command);
    assert_eq!(state_of(&sb, &w, &[]), "held", "the command lives on");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(command),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(command, Duration::from_secs(10));
    assert_eq!(state_of(&sb, &w, &[]), "stale");
    let again = format!(
        "'{BIN}' run '{}' -- true; echo $? > {}",
        w.display(),
        rc.display()
    );
    tmux.run(&["send-keys", "-t", "shell", &again, "Enter"]);
    wait_for("the pane's next run", Duration::from_secs(20), || {
        std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    assert!(!lock_path(&w).exists());
}
