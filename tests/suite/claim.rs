//! claim / release / check / status against real processes and real files.

use crate::common::*;

use agentlock::record::LockRecord;
use predicates::str::contains;

fn read_record(worker: &std::path::Path) -> LockRecord {
    LockRecord::parse(&std::fs::read(lock_path(worker)).unwrap()).unwrap()
}

#[test]
fn claim_free_worker_writes_full_record_and_guard() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let holder = sleeper();
    let out = sb
        .cmd()
        .args(["claim", "--json", "--session", "gt-max", "--pid"])
        .arg(holder.pid().to_string())
        .arg(&w)
        .assert()
        .code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["action"], "claimed");
    assert_eq!(e["state"], "held");
    assert_eq!(e["pid"], holder.pid());
    assert_eq!(e["worker_dir"], w.canonicalize().unwrap().to_str().unwrap());
    let rec = read_record(&w);
    assert_eq!(rec.pid, holder.pid());
    assert_eq!(rec.session_id.as_deref(), Some("gt-max"));
    assert_eq!(rec.hostname, Some(hostname()));
    assert_eq!(rec.uid, Some(nix::unistd::getuid().as_raw()));
    assert!(rec.pid_start.is_some());
    assert!(rec.boot_id.is_some());
    assert!(w.join(".runtime/agent.lock.flock").is_file());
    // No temp file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(w.join(".runtime"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("agent.lock.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn default_holder_is_the_invoking_process() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    // `sh -c 'agentlock claim W; cat lock'`: the shell is the holder.
    let out = sb
        .command("sh")
        .arg("-c")
        .arg(r#""$0" claim -q "$1" && echo "$$""#)
        .arg(BIN)
        .arg(&w)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shell_pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(read_record(&w).pid, shell_pid);
}

#[test]
fn second_claimant_is_refused_with_the_holder_named() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let (a, b) = (sleeper(), sleeper());
    sb.claim(&w, a.pid(), &[]).code(0);
    let before = std::fs::read(lock_path(&w)).unwrap();
    sb.claim(&w, b.pid(), &[])
        .code(1)
        .stderr(contains(format!("is held (pid {} is alive)", a.pid())))
        .stderr(contains(format!("holder: pid {}", a.pid())))
        .stderr(contains("--force"));
    assert_eq!(
        std::fs::read(lock_path(&w)).unwrap(),
        before,
        "a refusal changes nothing"
    );
    // check as B: held by another → 1; as A: yours → 0.
    sb.cmd()
        .args(["check", "--pid", &b.pid().to_string()])
        .arg(&w)
        .assert()
        .code(1);
    sb.cmd()
        .args(["check", "--pid", &a.pid().to_string()])
        .arg(&w)
        .assert()
        .code(0)
        .stdout(contains("held by you"));
}

#[test]
fn same_holder_refreshes() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let a = sleeper();
    let pid = a.pid().to_string();
    sb.cmd()
        .args(["claim", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
    let first = read_record(&w);
    let out = sb
        .cmd()
        .args(["claim", "--json", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "refreshed");
    let second = read_record(&w);
    assert!(second.acquired_at > first.acquired_at);
    // The same process naming a session now: still the same holder.
    let out = sb
        .claim(&w, a.pid(), &["--json", "--session", "%7"])
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "refreshed");
    assert_eq!(read_record(&w).session_id.as_deref(), Some("%7"));
    // Another live process in the same pane is another holder.
    let b = sleeper();
    sb.claim(&w, b.pid(), &["--json", "--session", "%7"])
        .code(1)
        .stderr(contains(format!("pid {} is alive", a.pid())));
    assert_eq!(read_record(&w).pid, a.pid());
    // The same process in another pane is not the same holder either.
    sb.claim(&w, a.pid(), &["--session", "%8"]).code(1);
}

#[test]
fn stale_lock_without_session_is_replaced() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    write_lock(&w, &go_lock(dead_pid(), None));
    assert_eq!(state_of(&sb, &w, &[]), "stale");
    let a = sleeper();
    let out = sb.claim(&w, a.pid(), &["--json"]).code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "replaced-stale");
    assert_eq!(read_record(&w).pid, a.pid());
}

#[test]
fn reused_pid_and_reboot_count_as_dead() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let other = sleeper();
    // The PID is alive, but it is not the process that claimed.
    let start =
        agentlock::probe::ProcessProbe::start_time(&agentlock::probe::LiveProcesses, other.pid())
            .unwrap();
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"acquired_at":"{}","hostname":"{}","pid_start":{}}}"#,
            other.pid(),
            go_time(),
            hostname(),
            start + 1
        ),
    );
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "stale");
    assert_eq!(e["pid_alive"], false);
    assert!(e["reason"].as_str().unwrap().contains("reused"), "{e}");
    // Same PID, same start time: held.
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"hostname":"{}","pid_start":{start}}}"#,
            other.pid(),
            hostname()
        ),
    );
    assert_eq!(state_of(&sb, &w, &[]), "held");
    // Written before a reboot: dead whatever the PID is now.
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"acquired_at":"2001-01-01T00:00:00Z","hostname":"{}","boot_id":"not-this-boot"}}"#,
            other.pid(),
            hostname()
        ),
    );
    assert_eq!(state_of(&sb, &w, &[]), "stale");
}

#[test]
fn foreign_host_is_unverified_and_never_taken_without_force() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    write_lock(
        &w,
        r#"{"pid":1,"acquired_at":"2026-01-05T10:00:00Z","hostname":"some-other-host"}"#,
    );
    assert_eq!(state_of(&sb, &w, &[]), "unverified");
    let a = sleeper();
    sb.claim(&w, a.pid(), &[])
        .code(1)
        .stderr(contains("some-other-host"));
    sb.claim(&w, a.pid(), &["--force"])
        .code(0)
        .stdout(contains("took-over"));
    assert_eq!(read_record(&w).pid, a.pid());
}

#[test]
fn release_checks_the_owner() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let (a, b) = (sleeper(), sleeper());
    sb.claim(&w, a.pid(), &["--session", "gt-a"]).code(0);
    sb.cmd()
        .args(["release", "--pid", &b.pid().to_string()])
        .arg(&w)
        .assert()
        .code(1)
        .stderr(contains("only the holder may release it"));
    sb.cmd()
        .args(["release", "--session", "gt-b"])
        .arg(&w)
        .assert()
        .code(1);
    // Its session alone may not release a live holder that is not the caller
    // or one of its ancestors.
    sb.cmd()
        .args(["release", "--session", "gt-a"])
        .arg(&w)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists());
    drop(a);
    let out = sb
        .cmd()
        .args(["release", "--json", "--session", "gt-a"])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "released");
    assert!(!lock_path(&w).exists());
    assert!(
        w.join(".runtime/agent.lock.flock").exists(),
        "the guard file is never deleted"
    );
    // Releasing a free worker succeeds.
    let out = sb
        .cmd()
        .args(["release", "--json", "--pid", "1"])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "already-free");
    // --force removes whoever holds it.
    sb.claim(&w, b.pid(), &[]).code(0);
    sb.cmd()
        .args(["release", "--force", "--pid", "1"])
        .arg(&w)
        .assert()
        .code(0);
    assert!(!lock_path(&w).exists());
}

#[test]
fn first_free_claims_in_order_and_prints_the_worker() {
    let sb = Sandbox::new();
    let (w1, w2, w3) = (sb.worker("w1"), sb.worker("w2"), sb.worker("w3"));
    let (a, b) = (sleeper(), sleeper());
    sb.claim(&w1, a.pid(), &[]).code(0);
    write_lock(&w2, &go_lock(dead_pid(), None)); // stale: claimable
    let out = sb
        .cmd()
        .args(["claim", "--first-free", "--pid", &b.pid().to_string()])
        .args([&w1, &w2, &w3])
        .assert()
        .code(0);
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout).trim(),
        w2.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(read_record(&w2).pid, b.pid());
    let c = sleeper();
    sb.cmd()
        .args(["claim", "--first-free", "--pid", &c.pid().to_string()])
        .args([&w1, &w2])
        .assert()
        .code(1)
        .stderr(contains("no free worker"));
}

#[test]
fn force_with_signal_other_terminates_only_a_provable_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let mut victim = sleeper();
    let taker = sleeper();
    sb.claim(&w, victim.pid(), &[]).code(0);
    sb.claim(&w, taker.pid(), &["--force", "--signal-other"])
        .code(0)
        .stderr(contains(format!(
            "signalled pid {} with SIGTERM",
            victim.pid()
        )));
    let status = victim.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
    assert_eq!(read_record(&w).pid, taker.pid());

    // A Go-written lock has no start time: the holder cannot be proven, so no signal.
    let bystander = sleeper();
    write_lock(&w, &go_lock(bystander.pid(), None));
    sb.claim(&w, taker.pid(), &["--force", "--signal-other"])
        .code(0)
        .stderr(contains(format!("did not signal pid {}", bystander.pid())))
        .stderr(contains("no start time"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(pid_alive(bystander.pid()));
    // Asked for, it always says what it did: nobody to signal on a stale
    // lock or a free worker.
    let dead = dead_pid();
    write_lock(&w, &go_lock(dead, None));
    sb.claim(&w, taker.pid(), &["--force", "--signal-other"])
        .code(0)
        .stderr(contains(format!(
            "did not signal pid {dead}: the lock was stale"
        )));
    let free = sb.worker("free");
    let out = sb
        .cmd()
        .args(["claim", "--force", "--signal-other", "--json", "--pid"])
        .arg(taker.pid().to_string())
        .arg(&free)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        entry(&out.stdout)["signal"],
        "did not signal: no holder to signal (the worker was free)"
    );
    // --signal-other without --force is bad usage.
    sb.cmd()
        .args(["claim", "--signal-other"])
        .arg(&w)
        .assert()
        .code(2);
}

#[test]
fn read_only_commands_create_nothing() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let before = tree_digest(sb.path());
    sb.cmd()
        .args(["status"])
        .arg(&w)
        .assert()
        .code(0)
        .stdout(contains("free"));
    sb.cmd()
        .args(["check", "--pid", "1"])
        .arg(&w)
        .assert()
        .code(0);
    std::fs::create_dir(w.join(".runtime")).unwrap();
    let before_rt = tree_digest(sb.path());
    sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(tree_digest(sb.path()), before_rt);
    assert_ne!(before, before_rt);
    assert!(!w.join(".runtime/agent.lock.flock").exists());
}

#[test]
fn usage_and_path_errors_exit_2_with_one_line() {
    let sb = Sandbox::new();
    let file = sb.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    for (args, want) in [
        (
            vec!["claim", "--pid", "0"],
            "--pid 0: not a valid process id",
        ),
        (
            vec!["claim", "--pid", "-4"],
            "--pid -4: not a valid process id",
        ),
        (
            vec!["claim", "--pid", "99999999999"],
            "not a valid process id",
        ),
    ] {
        sb.cmd()
            .args(args)
            .arg(sb.path())
            .assert()
            .code(2)
            .stderr(contains(want));
    }
    let dead = dead_pid().to_string();
    sb.cmd()
        .args(["claim", "--pid", &dead])
        .arg(sb.path())
        .assert()
        .code(2)
        .stderr(contains(format!("pid {dead}: no such running process")));
    sb.cmd()
        .args(["status"])
        .arg(sb.path().join("missing"))
        .assert()
        .code(2)
        .stderr(contains("no such worker directory"));
    let out = sb
        .cmd()
        .args(["claim", "--pid", "1"])
        .arg(&file)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    sb.cmd().args(["frobnicate"]).assert().code(2);
}

/// `completions SHELL` prints a script the shell accepts; `man` a man page.
#[test]
fn completions_and_man_page() {
    let sb = Sandbox::new();
    let out = sb.cmd().args(["completions", "bash"]).assert().code(0);
    let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(script.contains("--first-free") && script.contains("doctor"));
    let file = sb.path().join("agentlock.bash");
    std::fs::write(&file, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .unwrap();
    assert!(check.success(), "bash accepts the completion script");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = sb.cmd().args(["completions", shell]).assert().code(0);
        assert!(out.get_output().stdout.len() > 500, "{shell}");
    }
    sb.cmd().args(["completions", "tcsh"]).assert().code(2);
    let out = sb.cmd().arg("man").assert().code(0);
    let page = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH agentlock 1"),
        "{page}"
    );
    assert!(page.contains(".TH agentlock 1"));
    assert!(
        page.contains("claim") && page.contains("\\-\\-tmux\\-socket"),
        "{page}"
    );
}

/// SIGTERM while `claim --json` waits for the guard: it gives up at once,
/// changes nothing, still prints one JSON document, and exits 128 + 15.
#[test]
fn a_signal_while_claim_waits_for_the_guard_ends_it_cleanly() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let guard = hold_guard(&w);
    let holder = sleeper();
    let mut cmd = sb.std_cmd();
    cmd.args(["claim", "--json", "--pid"])
        .arg(holder.pid().to_string())
        .arg(&w)
        .stdout(std::process::Stdio::piped());
    let mut claim = Group::spawn(cmd);
    // Its handlers are set before it opens the guard: wait for that open.
    let fd_dir = format!("/proc/{}/fd", claim.pid());
    wait_for(
        "claim to open the guard",
        std::time::Duration::from_secs(20),
        || {
            std::fs::read_dir(&fd_dir).is_ok_and(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.ends_with(".runtime/agent.lock.flock"))
                })
            })
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(claim.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = claim.0.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut claim.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(json(&stdout)["error"]["kind"], "interrupted");
    drop(guard);
    assert!(!lock_path(&w).exists(), "nothing was claimed");
}
