//! `--wait` on lock files, against real processes, real tmux and real
//! signals: woken by the release (inotify), by the holder's exit (pidfd),
//! by the session's end; timeouts, `--conflict-exit-code`, signals while
//! waiting, arrival order across processes, dead waiters in the queue, and
//! `run` putting back a lock a guard-less tool removed.
//!
//! No test asserts how fast: each waits for the event itself. Where a test
//! shows that an event woke the waiter, it checks that the waiter was done
//! well before the periodic re-judge could have run.

use crate::common::*;
use agentlock::wait::{HANDOVER, NET_COVERED};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// `agentlock ARGS` started in the background, its output captured.
fn waiter(sb: &Sandbox, args: &[&str]) -> Child {
    sb.std_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `agentlock claim WAIT --json --pid PID WORKER` in the background.
fn claim_waiting(sb: &Sandbox, w: &Path, pid: impl ToString, wait: &str) -> Child {
    let pid = pid.to_string();
    waiter(
        sb,
        &["claim", wait, "--json", "--pid", &pid, w.to_str().unwrap()],
    )
}

/// The waiters' tickets in `worker`'s queue.
fn tickets(worker: &Path) -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(worker.join(".runtime"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(agentlock::wait::queue::TICKET_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// Waits until `n` waiters queue for `worker`.
fn queued(worker: &Path, n: usize) {
    wait_for(&format!("{n} waiters queued"), LIMIT, || {
        tickets(worker).len() == n
    });
}

/// The waiter's exit code, stdout and stderr.
fn finish(c: Child) -> (i32, String, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn waited(stdout: &str) -> f64 {
    json(stdout.as_bytes())["waited"].as_f64().expect("waited")
}

#[test]
fn a_release_wakes_the_waiter_which_then_holds_the_worker() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let (holder, me) = (sleeper(), sleeper());
    sb.claim(&w, holder.pid(), &[]).success();
    let c = claim_waiting(&sb, &w, me.pid(), "--wait");
    queued(&w, 1);
    sb.cmd()
        .args(["release", "--pid", &holder.pid().to_string()])
        .arg(&w)
        .assert()
        .success();
    let (code, out, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(entry(out.as_bytes())["action"], "claimed");
    assert_eq!(record_at(&w).pid, me.pid());
    assert!(
        waited(&out) < NET_COVERED.as_secs_f64(),
        "woken by the release: {out}"
    );
    assert!(tickets(&w).is_empty(), "the ticket is gone with the waiter");
}

#[test]
fn the_holders_exit_wakes_the_waiter() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let me = sleeper();
    let mut holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    let c = claim_waiting(&sb, &w, me.pid(), "--wait=60s");
    queued(&w, 1);
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let (code, out, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(entry(out.as_bytes())["action"], "replaced-stale");
    assert_eq!(record_at(&w).pid, me.pid());
    assert!(
        waited(&out) < NET_COVERED.as_secs_f64(),
        "woken by the exit: {out}"
    );
}

#[test]
fn the_end_of_the_recorded_session_wakes_the_waiter() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    sb.make_socket_dir();
    let tmux = sb.tmux("s", "keep");
    // The pane's process ignores SIGHUP and outlives the session; another
    // session keeps the server up: only the pane's terminal hanging up
    // tells the session closed.
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "agent",
        "sh -c 'trap \"\" HUP; exec sleep 1000'",
    ]);
    // It outlives its session by design: ended with its process group (the
    // pane's, which tmux made it lead) when the test ends.
    let pane: i32 = tmux.query("agent", "#{pane_pid}").parse().unwrap();
    let _pane = SignalOnDrop(-pane, nix::sys::signal::Signal::SIGKILL);
    let me = sleeper();
    // The holder process goes; the session keeps the lock held.
    let mut gone = sleeper();
    sb.claim(&w, gone.pid(), &["--session", "agent"]).success();
    gone.0.kill().unwrap();
    gone.0.wait().unwrap();
    let c = claim_waiting(&sb, &w, me.pid(), "--wait=60s");
    queued(&w, 1);
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    tmux.kill_session("agent");
    let (code, out, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(record_at(&w).pid, me.pid());
    assert!(
        waited(&out) < NET_COVERED.as_secs_f64(),
        "woken by the session's end: {out}"
    );
}

#[test]
fn a_timeout_is_the_refusal_with_how_long_it_waited_or_the_conflict_code() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    let out = sb
        .claim(&w, std::process::id() as i32, &["--wait=300ms", "--json"])
        .code(1);
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["workers"][0]["action"], "refused");
    assert_eq!(doc["workers"][0]["pid"], holder.pid());
    assert!(doc["waited"].as_f64().unwrap() >= 0.3, "{doc}");
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("is held") && err.contains("still taken"),
        "{err}"
    );
    sb.claim(
        &w,
        std::process::id() as i32,
        &["--wait=0.2", "--conflict-exit-code", "7"],
    )
    .code(7);
    // run: 75, or the conflict code; the command never starts.
    let marker = sb.path().join("ran");
    let sh = format!("touch {}", marker.display());
    sb.cmd()
        .args(["run", "--wait=200ms"])
        .arg(&w)
        .args(["--", "sh", "-c", &sh])
        .assert()
        .code(75);
    sb.cmd()
        .args(["run", "--wait=200ms", "--conflict-exit-code", "9"])
        .arg(&w)
        .args(["--", "sh", "-c", &sh])
        .assert()
        .code(9);
    assert!(!marker.exists(), "the command ran without the worker");
    assert_eq!(record_at(&w).pid, holder.pid());
    assert!(tickets(&w).is_empty());
    // A bad duration is a usage error.
    sb.claim(&w, std::process::id() as i32, &["--wait=soon"])
        .code(2);
}

#[test]
fn a_signal_while_waiting_ends_it_holding_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (sig, code) in [
        (Signal::SIGTERM, 143),
        (Signal::SIGINT, 130),
        (Signal::SIGHUP, 129),
    ] {
        let sb = Sandbox::new();
        let w = sb.worker("max");
        let holder = sleeper();
        sb.claim(&w, holder.pid(), &[]).success();
        let before = std::fs::read(lock_path(&w)).unwrap();
        let c = claim_waiting(&sb, &w, std::process::id(), "--wait");
        queued(&w, 1);
        kill(Pid::from_raw(c.id() as i32), sig).unwrap();
        let (got, out, err) = finish(c);
        assert_eq!(got, code, "{sig}: {err}");
        let doc = json(out.as_bytes());
        assert_eq!(doc["error"]["kind"], "interrupted", "{doc}");
        assert!(doc["waited"].as_f64().is_some(), "{doc}");
        assert_eq!(
            std::fs::read(lock_path(&w)).unwrap(),
            before,
            "lock untouched"
        );
        assert!(tickets(&w).is_empty(), "no ticket left behind");
        // run --wait: the command never starts.
        let marker = sb.path().join("ran");
        let mut r = sb.std_cmd();
        r.args(["run", "--wait"])
            .arg(&w)
            .args(["--", "touch"])
            .arg(&marker);
        let r = r.stderr(Stdio::piped()).spawn().unwrap();
        queued(&w, 1);
        kill(Pid::from_raw(r.id() as i32), sig).unwrap();
        let (got, _, err) = finish(r);
        assert_eq!(got, code, "run, {sig}: {err}");
        assert!(!marker.exists());
        assert_eq!(std::fs::read(lock_path(&w)).unwrap(), before);
    }
}

/// Twenty `run --wait` arriving in a known order (each queued before the
/// next starts) get the worker in that order.
#[test]
fn waiters_are_served_in_arrival_order() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let order = sb.path().join("order");
    let mut holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    let mut runs = Vec::new();
    for i in 0..20 {
        let sh = format!("echo {i} >> {}", order.display());
        let mut c = sb.std_cmd();
        c.args(["run", "--wait"])
            .arg(&w)
            .args(["--", "sh", "-c", &sh]);
        runs.push(Group::spawn(c));
        queued(&w, i + 1);
    }
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    for mut r in runs {
        let st = r.0.wait().unwrap();
        assert!(st.success(), "{st}");
    }
    let got: Vec<u32> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(tickets(&w).is_empty());
}

/// A waiter SIGKILLed in the queue leaves its ticket; the next waiter sees
/// it is dead (its flock is free), removes it and takes the worker without
/// waiting for the handover.
#[test]
fn a_waiter_killed_in_the_queue_blocks_nobody() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    let mut first = Proc(waiter(
        &sb,
        &[
            "claim",
            "--wait",
            "--pid",
            &std::process::id().to_string(),
            w.to_str().unwrap(),
        ],
    ));
    queued(&w, 1);
    let me = sleeper();
    let second = claim_waiting(&sb, &w, me.pid(), "--wait");
    queued(&w, 2);
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let dead = tickets(&w)[0].clone();
    sb.cmd()
        .args(["release", "--force"])
        .arg(&w)
        .assert()
        .success();
    let (code, out, err) = finish(second);
    assert_eq!(code, 0, "{err}");
    assert_eq!(record_at(&w).pid, me.pid());
    assert!(!tickets(&w).contains(&dead), "the dead ticket was removed");
    assert!(waited(&out) < HANDOVER.as_secs_f64() + 30.0);
}

#[test]
fn first_free_wait_takes_whichever_worker_frees_first() {
    let sb = Sandbox::new();
    let (a, b) = (sb.worker("a"), sb.worker("b"));
    let ha = sleeper();
    let mut hb = sleeper();
    sb.claim(&a, ha.pid(), &[]).success();
    sb.claim(&b, hb.pid(), &[]).success();
    let me = sleeper();
    let c = waiter(
        &sb,
        &[
            "claim",
            "--first-free",
            "--wait=60s",
            "--pid",
            &me.pid().to_string(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    queued(&a, 1);
    queued(&b, 1);
    hb.0.kill().unwrap();
    hb.0.wait().unwrap();
    let (code, out, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        std::fs::canonicalize(&b).unwrap().to_str().unwrap()
    );
    assert_eq!(record_at(&b).pid, me.pid());
    assert_eq!(record_at(&a).pid, ha.pid());
    assert!(tickets(&a).is_empty() && tickets(&b).is_empty());
}

/// The Go tool's stale cleanup deletes `agent.lock` without the guard:
/// `run` notices and puts its lock back while the worker is free; a lock
/// of another live holder written over it is the worker lost.
#[test]
fn run_puts_back_a_lock_removed_under_it_and_reports_one_replaced() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let go = sb.path().join("go");
    let sh = format!("while [ ! -e {0} ]; do sleep 0.05; done", go.display());
    let mut c = sb.std_cmd();
    c.args(["run"]).arg(&w).args(["--", "sh", "-c", &sh]);
    let run = c.stderr(Stdio::piped()).process_group_spawn();
    let _end = SignalOnDrop(-(run.id() as i32), nix::sys::signal::Signal::SIGKILL);
    wait_for("the lock", LIMIT, || lock_path(&w).exists());
    let held = record_at(&w);
    std::fs::remove_file(lock_path(&w)).unwrap();
    wait_for("the lock put back", LIMIT, || {
        lock_path(&w).exists() && record_at(&w).pid == held.pid
    });
    // Now another live holder's lock, written without the guard.
    let other = sleeper();
    let mut rec = record_at(&w);
    rec.pid = other.pid();
    rec.pid_start = Some(start_of(other.pid()));
    let tmp = w.join(".runtime/x");
    std::fs::write(&tmp, serde_json::to_string(&rec).unwrap()).unwrap();
    std::fs::rename(&tmp, lock_path(&w)).unwrap();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{err}");
    assert!(err.contains("put back"), "{err}");
    assert!(err.contains("replaced by another holder"), "{err}");
    // The other holder's lock is left alone.
    assert_eq!(record_at(&w).pid, other.pid());
}

trait GroupSpawn {
    fn process_group_spawn(&mut self) -> Child;
}

impl GroupSpawn for std::process::Command {
    fn process_group_spawn(&mut self) -> Child {
        use std::os::unix::process::CommandExt;
        self.process_group(0).spawn().unwrap()
    }
}

#[test]
fn the_library_guard_releases_on_drop_and_waits() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let al = agentlock::Agentlock::with_tmux(sb.tmux_query());
    fn work(al: &agentlock::Agentlock, w: &Path) -> Result<(), agentlock::Error> {
        let _held = al.lock(w)?;
        // An early return with `?` ...
        Err(agentlock::Error::NoCommand { path: w.into() })
    }
    assert!(work(&al, &w).is_err());
    // ... left the worker free.
    assert_eq!(
        al.status(&w).unwrap().state,
        agentlock::verdict::State::Free
    );
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    match al.lock(&w) {
        Err(agentlock::Error::Held { state, .. }) => {
            assert_eq!(state, agentlock::verdict::State::Held)
        }
        other => panic!("{other:?}"),
    }
    let wait = agentlock::wait::WaitOptions::up_to(Duration::from_millis(200));
    assert!(matches!(
        al.lock_wait(&w, &wait),
        Err(agentlock::Error::WaitTimedOut { .. })
    ));
    drop(holder);
    let held = al
        .lock_wait(&w, &agentlock::wait::WaitOptions::up_to(LIMIT))
        .unwrap();
    assert_eq!(record_at(&w).pid, std::process::id() as i32);
    // A nested lock of a worker already held releases nothing on drop.
    drop(al.lock(&w).unwrap());
    assert_eq!(record_at(&w).pid, std::process::id() as i32);
    held.release().unwrap();
    assert!(!lock_path(&w).exists());
}

/// A guard held by someone else: a wait with a time limit gives up by its
/// limit (not the guard's 30 s), exit 2 naming the guard.
#[test]
fn a_busy_guard_costs_a_wait_no_more_than_its_limit() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let _guard = hold_guard(&w);
    let out = sb
        .claim(&w, std::process::id() as i32, &["--wait=1s", "--json"])
        .code(2);
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["error"]["kind"], "guard-timeout", "{doc}");
    assert!(doc["waited"].as_f64().unwrap() < 20.0, "{doc}");
}

/// Forged and dead tickets: a directory, a symlink and a huge number named
/// like tickets are no tickets; a dead waiter's ticket is removed by the
/// next waiter, and `doctor` reports one and `--fix` removes it.
#[test]
fn forged_and_dead_tickets_block_nobody() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let rt = w.join(".runtime");
    std::fs::create_dir_all(rt.join("agent.lock.wait.0000000001")).unwrap();
    let target = sb.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, rt.join("agent.lock.wait.0000000002")).unwrap();
    std::fs::write(rt.join("agent.lock.wait.18446744073709551615"), "").unwrap();
    std::fs::write(rt.join("agent.lock.wait.0000000003"), "").unwrap();
    // A dead ticket in another worker, for doctor.
    let d = sb.worker("dead");
    std::fs::create_dir_all(d.join(".runtime")).unwrap();
    std::fs::write(d.join(".runtime/agent.lock.wait.0000000007"), "").unwrap();
    let out = sb
        .claim(&w, std::process::id() as i32, &["--wait=30s", "--json"])
        .success();
    assert_eq!(entry(&out.get_output().stdout)["action"], "claimed");
    assert!(rt.join("agent.lock.wait.0000000001").is_dir());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(
        !rt.join("agent.lock.wait.0000000003").exists(),
        "dead ticket removed"
    );
    let doc = sb
        .cmd()
        .args(["doctor", "--json"])
        .arg(&d)
        .output()
        .unwrap();
    let doc = json(&doc.stdout);
    let f = &doc["findings"][0];
    assert_eq!(f["kind"], "leftover-temp", "{doc}");
    assert!(f["message"].as_str().unwrap().contains("ticket"), "{doc}");
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&d)
        .assert()
        .success();
    assert!(!d.join(".runtime/agent.lock.wait.0000000007").exists());
}

/// Twenty-four `run --wait`, a third of them SIGKILLed at random moments
/// (queued, claiming, running their command): the commands never overlap
/// (each takes a directory as its critical section), and every survivor
/// ran.
#[test]
fn racing_waiters_killed_at_random_never_overlap() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let log = sb.path().join("log");
    let cs = sb.path().join("cs");
    let body = format!(
        "mkdir {cs} 2>/dev/null || echo DOUBLE >> {log}; sleep 0.02; rmdir {cs}; echo ran >> {log}",
        cs = cs.display(),
        log = log.display()
    );
    let mut rng = fastrand::Rng::with_seed(15);
    let mut runs = Vec::new();
    for _ in 0..24 {
        let mut c = sb.std_cmd();
        c.args(["run", "--wait=60s"])
            .arg(&w)
            .args(["--", "sh", "-c", &body])
            .stderr(Stdio::null());
        runs.push((c.spawn().unwrap(), rng.u8(..3) == 0));
    }
    let mut survivors = 0;
    for (mut c, kill) in runs {
        if kill {
            std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
            let _ = c.kill();
        } else {
            survivors += 1;
        }
        let _ = c.wait();
    }
    // A run killed while its command ran leaves the command to finish:
    // wait until no process runs the body any more.
    let marker = log.to_string_lossy().into_owned();
    wait_for("every command to finish", LIMIT, || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("DOUBLE"), "two commands at once:\n{text}");
    let ran = text.lines().filter(|l| *l == "ran").count();
    assert!(ran >= survivors, "{ran} ran, {survivors} survived:\n{text}");
}
