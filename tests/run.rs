//! `agentlock run`: the lock is held while the command runs and released
//! however it ends; the exit status is the command's.

mod common;
use common::*;

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
    cmd.arg("run").arg(&w).args(["--", "sleep", "0.5"]);
    let mut run = Group::spawn(cmd);
    let lock = lock_path(&w);
    wait_for("the lock", Duration::from_secs(10), || lock.exists());
    let command = LockRecord::parse(&std::fs::read(&lock).unwrap())
        .unwrap()
        .pid;
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
    wait_gone(command, Duration::from_secs(10));
    // It exited with no run left to release: stale, and claimable.
    assert_eq!(state_of(&sb, &w, &[]), "stale");
    sb.claim(&w, c.pid(), &[]).code(0);
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
    // Perl counts every delivery (its deferred handlers run once per signal
    // received), where a shell trap would merge two quick SIGINTs into one.
    let script = format!(
        "$SIG{{INT}} = sub {{ open my $f, q(>>), q({m}); print $f qq(int\\n); close $f }}; sleep 1 while 1",
        m = marker.display()
    );
    let cmd = format!(
        "TMUX_TMPDIR='{}' '{}' run '{}' -- perl -e '{}'",
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
    let lock = lock_path(&w);
    wait_for("the lock", Duration::from_secs(10), || lock.exists());
    let rec = LockRecord::parse(&std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(
        rec.session_id.as_deref(),
        Some(tmux.pane_id("agent").as_str()),
        "records $TMUX_PANE"
    );
    std::thread::sleep(Duration::from_millis(300));
    tmux.run(&["send-keys", "-t", "agent", "C-c"]);
    wait_for("the trap", Duration::from_secs(10), || marker.exists());
    std::thread::sleep(Duration::from_millis(500));
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
