//! Holder identity and liveness: no live holder is shared,
//! misjudged or signalled by mistake. Real processes, real shells, real
//! PID namespaces, real other users; each test names the issue item it covers.

use crate::common::*;

use predicates::str::contains;
use std::process::Stdio;
use std::time::Duration;

/// Item 1: ten `run`s from one pane at once: exactly one runs its command.
#[test]
fn a_shared_pane_is_not_one_holder_for_concurrent_runs() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let started = sb.path().join("started");
    let go = sb.path().join("go");
    let script = format!(
        "echo $$ >> '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
        started.display(),
        go.display()
    );
    let runs: Vec<Group> = (0..10)
        .map(|_| {
            let mut c = sb.std_cmd();
            c.env("TMUX_PANE", "%0")
                .arg("run")
                .arg(&w)
                .args(["--", "sh", "-c", &script])
                .stderr(Stdio::null());
            Group::spawn(c)
        })
        .collect();
    // Every run but the one whose command holds the worker is refused (75).
    let mut runs = runs;
    let mut refused = 0;
    wait_for("nine refusals", Duration::from_secs(60), || {
        refused = runs
            .iter_mut()
            .map(|r| {
                r.0.try_wait()
                    .unwrap()
                    .is_some_and(|s| s.code() == Some(75))
            })
            .filter(|refused| *refused)
            .count();
        refused == 9
    });
    std::fs::write(&go, "").unwrap();
    let mut codes: Vec<i32> = runs
        .iter_mut()
        .map(|r| r.0.wait().unwrap().code().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, [0, 75, 75, 75, 75, 75, 75, 75, 75, 75]);
    let lines = std::fs::read_to_string(&started).unwrap();
    assert_eq!(
        lines.lines().count(),
        1,
        "exactly one command ran: {lines:?}"
    );
    assert!(!lock_path(&w).exists());
}

/// Item 1: inside a real pane, a second `run` of the same worker is refused
/// and does not release the first one's lock.
#[test]
fn a_nested_run_in_the_same_pane_is_refused_and_keeps_the_outer_lock() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let rc = sb.path().join("rc");
    let tmux = sb.tmux("s", "keeper");
    let cmd = format!(
        "'{bin}' run '{w}' -- sleep 600 & while [ ! -e '{w}/.runtime/agent.lock' ]; do sleep 0.05; done; '{bin}' run '{w}' -- true; echo $? > '{rc}'; wait",
        bin = BIN,
        w = w.display(),
        rc = rc.display()
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
        "sh",
        "-c",
        &cmd,
    ]);
    wait_for("the inner run's status", Duration::from_secs(30), || {
        std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "75");
    let rec = record_at(&w);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", rec.pid))
            .unwrap()
            .trim(),
        "sleep"
    );
    assert_eq!(state_of(&sb, &w, &[]), "held");
    let other = sleeper();
    sb.claim(&w, other.pid(), &[]).code(1);
}

/// Item 2: one shell claiming for three sessions gets three workers.
#[test]
fn first_free_never_hands_out_a_worker_the_asker_holds() {
    let sb = Sandbox::new();
    let pool: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| sb.worker(&format!("pool/{n}")))
        .collect();
    let (out, done, go) = (
        sb.path().join("out"),
        sb.path().join("done"),
        sb.path().join("go"),
    );
    let script = format!(
        "for s in a1 a2 a3; do '{}' claim --first-free '{}' '{}' '{}' --session $s 2>/dev/null; done > '{}'; touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
        BIN,
        pool[0].display(),
        pool[1].display(),
        pool[2].display(),
        out.display(),
        done.display(),
        go.display()
    );
    let spawner = sb.script("sh", &script);
    wait_for("the three claims", Duration::from_secs(30), || {
        done.exists()
    });
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = pool.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(got, want);
    // The spawner (alive) holds all three: a fourth session of it, and the
    // first session again, find nothing free.
    let pid = spawner.pid().to_string();
    for session in ["a4", "a1"] {
        sb.cmd()
            .args(["claim", "--first-free"])
            .args(&pool)
            .args(["--session", session, "--pid", &pid])
            .assert()
            .code(1);
    }
    std::fs::write(&go, "").unwrap();
}

/// Item 3: `slot=$(agentlock claim --first-free ...)` names the script, not
/// the `$(...)` subshell: 20 spawners over 5 slots, exactly 5 winners.
#[test]
fn command_substitution_names_the_spawner_script() {
    let sb = Sandbox::new();
    let slots: Vec<String> = (1..=5)
        .map(|i| sb.worker(&format!("pool/s{i}")).display().to_string())
        .collect();
    let winners = sb.path().join("winners");
    let tried = sb.path().join("tried");
    let go = sb.path().join("go");
    let script = format!(
        "slot=$('{}' claim --first-free {} 2>/dev/null) && echo \"$$ $slot\" >> '{}'; echo >> '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
        BIN,
        slots.join(" "),
        winners.display(),
        tried.display(),
        go.display()
    );
    let mut spawners: Vec<Group> = (0..20).map(|_| sb.script("bash", &script)).collect();
    // Every spawner has tried once its claim command is gone from its children.
    wait_for(
        "every spawner to have tried",
        Duration::from_secs(60),
        || std::fs::read_to_string(&tried).is_ok_and(|t| t.lines().count() == 20),
    );
    let text = std::fs::read_to_string(&winners).unwrap();
    let mut won: Vec<(i32, String)> = text
        .lines()
        .map(|l| {
            let (pid, slot) = l.split_once(' ').unwrap();
            (pid.parse().unwrap(), slot.to_string())
        })
        .collect();
    assert_eq!(won.len(), 5, "{text}");
    won.sort_by(|a, b| a.1.cmp(&b.1));
    for ((pid, slot), want) in won.iter().zip(&slots) {
        assert_eq!(slot, want);
        // The lock names the live spawner script itself.
        assert_eq!(record_at(std::path::Path::new(slot)).pid, *pid);
        assert!(pid_alive(*pid));
    }
    std::fs::write(&go, "").unwrap();
    for s in &mut spawners {
        s.0.wait().unwrap();
    }
    for slot in &slots {
        assert_eq!(state_of(&sb, std::path::Path::new(slot), &[]), "stale");
    }
}

/// Item 4: a lock of another host whose PID number happens to be live here is
/// not "held by you", and `release` without `--force` keeps it.
#[test]
fn a_foreign_hosts_lock_is_never_the_askers() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let local = sleeper();
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"acquired_at":"{}","hostname":"elsewhere"}}"#,
            local.pid(),
            go_time()
        ),
    );
    let pid = local.pid().to_string();
    sb.cmd()
        .args(["check", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(1)
        .stdout(contains("unverified"));
    sb.cmd()
        .args(["release", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists());
}

/// Item 7: a lock written in another PID namespace is unverified on both
/// sides, and `doctor --fix` leaves it.
#[test]
fn another_pid_namespace_is_unverified_both_ways() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let inner = sb.worker("town/inner");
    let outer = sb.worker("town/outer");
    // Inside: PID 1 of a new namespace claims, then lives on.
    let script = format!("'{}' claim '{}' && exec sleep 600", BIN, inner.display());
    let mut c = sb.command("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script]);
    let _ns = Group::spawn(c);
    wait_for("the namespaced claim", Duration::from_secs(30), || {
        lock_path(&inner).exists()
    });
    let rec = record_at(&inner);
    assert_eq!(rec.pid, 1, "PID 1 of its own namespace");
    assert_ne!(rec.pid_ns, agentlock::probe::own_pid_ns());
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .arg(&inner)
        .assert()
        .code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"].as_str().unwrap().contains("PID namespace"),
        "{e}"
    );
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    assert!(lock_path(&inner).exists());
    let stranger = sleeper();
    sb.claim(&inner, stranger.pid(), &[]).code(1);

    // Outside's lock, judged from inside another namespace: unverified too.
    sb.claim(&outer, stranger.pid(), &[]).code(0);
    let out = sb
        .command("unshare")
        .args(["--pid", "--fork", "--mount-proc", BIN, "status", "--json"])
        .arg(&outer)
        .output()
        .unwrap();
    assert_eq!(entry(&out.stdout)["state"], "unverified");
}

const THREADED: &str = r#"
#include <pthread.h>
#include <unistd.h>
static void *work(void *a) { (void)a; sleep(600); return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, work, 0); pthread_exit(0); }
"#;

/// Item 8: a holder whose main thread exited (`Z` in /proc) while another
/// thread runs is alive.
#[test]
fn a_threaded_holder_whose_main_thread_exited_is_alive() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let bin = compile_c(&sb, "threaded", THREADED);
    let holder = Proc(std::process::Command::new(&bin).spawn().unwrap());
    let pid = holder.pid();
    wait_for("the main thread to exit", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    });
    sb.claim(&w, pid, &[]).code(0);
    assert_eq!(state_of(&sb, &w, &[]), "held");
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(0);
    assert!(lock_path(&w).exists());
    drop(holder);
}

/// Item 9: a Go lock (no start time) naming a PID now used by a process that
/// started after the lock was acquired, or acquired before this boot, is stale.
#[test]
fn go_locks_detect_pid_reuse_by_time() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let v = sb.worker("town/v");
    let newcomer = sleeper();
    // Acquired before the newcomer started (by more than the clock slack).
    let earlier = (chrono::Utc::now() - chrono::Duration::seconds(600)).to_rfc3339();
    let lock = |pid: i32, at: &str| {
        format!(
            r#"{{"pid":{pid},"acquired_at":"{at}","session_id":"%999","hostname":"{}"}}"#,
            hostname()
        )
    };
    write_lock(&w, &lock(newcomer.pid(), &earlier));
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "stale", "{e}");
    let why = e["reason"].as_str().unwrap();
    // (On a machine booted less than 10 minutes ago, the boot proves it first.)
    assert!(
        why.contains("reused") || why.contains("before this host booted"),
        "{e}"
    );
    // Acquired before this boot (PID 1 has run since boot).
    write_lock(&v, &lock(1, "2001-01-01T00:00:00Z"));
    let out = sb.cmd().args(["status", "--json"]).arg(&v).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "stale", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("before this host booted"),
        "{e}"
    );
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(0);
    assert!(!lock_path(&w).exists() && !lock_path(&v).exists());
    // The same lock acquired now: its process is older, so it is the holder.
    write_lock(&w, &lock(newcomer.pid(), &go_time()));
    assert_eq!(state_of(&sb, &w, &[]), "orphaned");
}

/// Item 10: `--signal-other` never signals an ancestor, PID 1 or a tmux server.
#[test]
fn signal_other_spares_ancestors_init_and_tmux_servers() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let taker = sleeper();
    let marker = sb.path().join("survived");
    // The spawner script holds the lock itself, then forces it over with --signal-other.
    let script = format!(
        "'{bin}' claim '{w}' --pid $$ && '{bin}' claim '{w}' --force --signal-other --pid {t} 2> '{m}.err'; echo survived > '{m}'",
        bin = BIN,
        w = w.display(),
        t = taker.pid(),
        m = marker.display()
    );
    let status = sb.command("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());
    assert!(marker.exists(), "the script was not killed");
    let err = std::fs::read_to_string(marker.with_extension("err")).unwrap();
    assert!(err.contains("ancestors"), "{err}");
    assert_eq!(record_at(&w).pid, taker.pid());

    let forced = |pid: i32| {
        write_lock(
            &w,
            &format!(
                r#"{{"pid":{pid},"acquired_at":"{}","hostname":"{}","pid_start":{},"uid":0}}"#,
                go_time(),
                hostname(),
                start_of(pid)
            ),
        );
        sb.claim(&w, taker.pid(), &["--force", "--signal-other"])
            .code(0)
    };
    forced(1).stderr(contains("did not signal pid 1: it is PID 1"));
    let tmux = sb.tmux("s", "keeper");
    forced(tmux.server_pid).stderr(contains("it is a tmux server"));
    assert!(pid_alive(tmux.server_pid));
}

/// Item 11: root claiming in a user's worker leaves nothing the user cannot use.
#[test]
fn root_leaves_the_guard_and_runtime_to_the_workers_owner() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let sb = Sandbox::new();
    open_to_all(sb.path());
    let w = sb.worker("w");
    std::os::unix::fs::chown(&w, Some(65534), Some(65534)).unwrap();
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).code(0);
    sb.cmd()
        .args(["release", "--force"])
        .arg(&w)
        .assert()
        .code(0);
    use std::os::unix::fs::MetadataExt;
    for p in [w.join(".runtime"), w.join(".runtime/agent.lock.flock")] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            65534,
            "{}",
            p.display()
        );
    }
    // The owner claims and releases its own worker.
    let script = format!(
        "'{BIN}' claim '{}' && '{BIN}' release '{}'",
        w.display(),
        w.display()
    );
    let out = sb.as_user(65534, &["sh", "-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A guard root created 0644 before this fix: still usable, read-only.
    std::fs::remove_file(w.join(".runtime/agent.lock.flock")).unwrap();
    std::fs::write(w.join(".runtime/agent.lock.flock"), "").unwrap();
    let out = sb.as_user(65534, &["sh", "-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Background subshells `( ... ) &` of one script are holders of their own
/// (unlike `$(...)`): only one of three gets the worker.
#[test]
fn background_subshells_are_separate_holders() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let (got, tried, go) = (
        sb.path().join("got"),
        sb.path().join("tried"),
        sb.path().join("go"),
    );
    let script = format!(
        "for i in 1 2 3; do ( if '{bin}' claim -q '{w}' 2>/dev/null; then echo $i >> '{got}'; fi; echo >> '{tried}'; while [ ! -e '{go}' ]; do sleep 0.05; done ) & done; wait",
        bin = BIN,
        w = w.display(),
        got = got.display(),
        tried = tried.display(),
        go = go.display()
    );
    let mut script = sb.script("bash", &script);
    wait_for("three attempts", Duration::from_secs(30), || {
        std::fs::read_to_string(&tried).is_ok_and(|t| t.lines().count() == 3)
    });
    let winners = std::fs::read_to_string(&got).unwrap();
    assert_eq!(winners.lines().count(), 1, "{winners}");
    std::fs::write(&go, "").unwrap();
    script.0.wait().unwrap();
}

/// A wrapper that waits for agentlock (`timeout`) is not the holder: the
/// script that ran it is.
#[test]
fn a_wrapper_is_not_the_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let (pidfile, go) = (sb.path().join("pid"), sb.path().join("go"));
    let script = format!(
        "timeout 60 '{}' claim -q '{}' && echo $$ > '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
        BIN,
        w.display(),
        pidfile.display(),
        go.display()
    );
    let mut script = sb.script("sh", &script);
    wait_for("the claim", Duration::from_secs(30), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(record_at(&w).pid, pid);
    assert_eq!(state_of(&sb, &w, &[]), "held");
    std::fs::write(&go, "").unwrap();
    script.0.wait().unwrap();
}

/// A holder in another time namespace: start times are compared in the root
/// namespace's terms, so it is not "reused".
#[test]
fn a_holder_in_another_time_namespace_is_alive() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let script = format!("'{}' claim -q '{}' && exec sleep 600", BIN, w.display());
    let mut c = sb.command("unshare");
    c.args([
        "--time",
        "--boottime",
        "100000",
        "--fork",
        "sh",
        "-c",
        &script,
    ]);
    let _ns = Group::spawn(c);
    wait_for("the claim", Duration::from_secs(30), || {
        lock_path(&w).exists()
    });
    assert_eq!(state_of(&sb, &w, &[]), "held");
    let other = sleeper();
    sb.claim(&w, other.pid(), &[]).code(1);
}

/// The scan's tmux answer predates a spawner that claimed, created its
/// session and exited: `--fix` asks tmux again and keeps the lock.
#[test]
fn fix_and_claim_ask_tmux_again_before_removing() {
    use agentlock::lock::{self, ClaimOutcome, Claimant, LiveProbes};
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let tmux = sb.tmux("s", "keeper");
    let spawner = sleeper();
    sb.claim(&w, spawner.pid(), &["--session", "agentX"])
        .code(0);
    let live = LiveProbes::new(sb.tmux_query());
    live.tmux.ensure_default(); // before the session exists
    tmux.new_session("agentX", sb.path());
    let pid = spawner.pid();
    drop(spawner);
    wait_gone(pid, Duration::from_secs(10));
    let scanned = agentlock::scan::scan(&root, &Default::default(), &Default::default()).unwrap();
    let mut report = agentlock::doctor::judge_live(&scanned, &live);
    assert_eq!(
        report.locks[0].state.as_str(),
        "stale",
        "judged on the old answer"
    );
    agentlock::doctor::fix(&mut report, &live.probes());
    assert!(report.fixed.is_empty(), "{:?}", report.fixed);
    assert!(lock_path(&w).exists(), "the live session's lock was kept");
    // claim, too, asks again before replacing.
    let live = LiveProbes::new(sb.tmux_query());
    tmux.kill_session("agentX");
    live.tmux.ensure_default();
    tmux.new_session("agentX", sb.path());
    let me = sleeper();
    match lock::claim(
        &w,
        &Claimant::pid(me.pid()),
        Default::default(),
        &live.probes(),
    )
    .unwrap()
    {
        ClaimOutcome::Refused(ins) => assert_eq!(ins.state.as_str(), "held-by-session"),
        ClaimOutcome::Done(c) => panic!("took a live session's worker: {:?}", c.action),
    }
}

/// Review: `<(...)` subshells whose output the script reads (like `$(...)`)
/// but which run on as agents are holders of their own: one of two wins.
#[test]
fn process_substitutions_are_separate_holders() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let (out, go) = (sb.path().join("out"), sb.path().join("go"));
    let script = format!(
        "exec 3< <('{bin}' claim -q '{w}' 2>/dev/null; echo $?; while [ ! -e '{go}' ]; do sleep 0.05; done); read -u 3 a
exec 4< <('{bin}' claim -q '{w}' 2>/dev/null; echo $?; while [ ! -e '{go}' ]; do sleep 0.05; done); read -u 4 b
echo \"$a $b\" > '{out}'; wait",
        bin = BIN,
        w = w.display(),
        go = go.display(),
        out = out.display()
    );
    let mut script = sb.script("bash", &script);
    wait_for("both claims", Duration::from_secs(30), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "0 1");
    std::fs::write(&go, "").unwrap();
    let _ = script.0.wait();
}

/// Review: a container's entrypoint script is PID 1 of its namespace; a
/// `$(timeout 5 agentlock claim ...)` in it names the script.
#[test]
fn a_pid_1_spawner_is_the_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let script = format!(
        "slot=$(timeout 5 '{}' claim -q '{}'); exec sleep 600",
        BIN,
        w.display()
    );
    let mut c = sb.command("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "bash", "-c", &script]);
    let _ns = Group::spawn(c);
    wait_for("the claim", Duration::from_secs(30), || {
        lock_path(&w).exists()
    });
    assert_eq!(record_at(&w).pid, 1);
}

/// A script that claims and then `exec`s into `agentlock release` (its last
/// command, or an exit hook) releases its own lock: agentlock is the holder
/// process itself then, with the same PID and start time.
#[test]
fn a_holder_that_execs_into_release_releases() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let script = format!(
        "'{BIN}' claim -q '{w}' && exec '{BIN}' release -q '{w}'",
        w = w.display()
    );
    let status = sb.script("sh", &script).0.wait().unwrap();
    assert!(status.success());
    assert!(!lock_path(&w).exists());
}
