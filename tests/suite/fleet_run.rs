//! `run` on the fleet store: the command gets its worker and fence, and is
//! stopped (or warned) when the worker is lost while it runs.

use crate::common::*;
use crate::fleet::{Host, fence_of};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A perl command that writes "FENCE WORKER" to `seen`, then waits for
/// `go` (then kills its child and exits 3); SIGTERM appends "term" to
/// `seen` and exits 0, leaving its child behind. The child (`sleep`, its
/// PID in `seen.child`) is started first.
fn agent(seen: &Path, go: &Path) -> String {
    format!(
        r#"my $c = fork; if ($c == 0) {{ exec "sleep", "600" }}
open my $p, ">", "{s}.child"; print $p $c; close $p;
$SIG{{TERM}} = sub {{ open my $f, ">>", "{s}"; print $f "term\n"; close $f; exit 0 }};
open my $f, ">", "{s}.tmp"; print $f "$ENV{{AGENTLOCK_FENCE}} $ENV{{AGENTLOCK_WORKER}}\n"; close $f;
rename "{s}.tmp", "{s}";
select(undef, undef, undef, 0.05) until -e "{g}";
kill "KILL", $c; exit 3;"#,
        s = seen.display(),
        g = go.display()
    )
}

/// Host `h` runs [`agent`] in `w`, its stderr read line by line.
/// The `sleep` [`agent`] started: SIGKILLed on drop if still that process.
struct Leftover(i32, u64);

impl Drop for Leftover {
    fn drop(&mut self) {
        let now =
            agentlock::probe::ProcessProbe::start_time(&agentlock::probe::LiveProcesses, self.0);
        if now == Some(self.1) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn start_run(
    h: &Host,
    w: &Path,
    seen: &Path,
    go: &Path,
    extra: &[&str],
) -> (Child, Lines, Leftover) {
    let mut args = vec!["run", w.to_str().unwrap()];
    args.extend(extra);
    let script = agent(seen, go);
    args.extend(["--", "perl", "-e", &script]);
    let mut child = h
        .cmd(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(child.stderr.take().unwrap());
    wait_for("the command to start", Duration::from_secs(30), || {
        seen.exists()
    });
    let pid: i32 = std::fs::read_to_string(seen.with_extension("child"))
        .unwrap()
        .parse()
        .unwrap();
    (child, lines, Leftover(pid, start_of(pid)))
}

/// The lines of a pipe, read on their own thread.
struct Lines(std::sync::mpsc::Receiver<String>, Vec<String>);

impl Lines {
    fn of(r: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Lines(rx, Vec::new())
    }

    /// Waits for a line containing `what`.
    fn wait(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.1.iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => self.1.push(l),
                Err(_) => panic!("no line with {what:?} in {:?}", self.1),
            }
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let mut code = None;
    wait_for("run to exit", limit, || {
        code = child.try_wait().unwrap().and_then(|s| s.code());
        code.is_some()
    });
    code.unwrap()
}

fn seen_fence(seen: &Path) -> (i64, String) {
    let s = std::fs::read_to_string(seen).unwrap();
    let first = s.lines().next().unwrap();
    let (fence, worker) = first.split_once(' ').unwrap();
    (
        fence.parse().expect("a numeric AGENTLOCK_FENCE"),
        worker.into(),
    )
}

/// The partition of the issue: A's keeper is SIGSTOPped past the TTL while
/// A's `run` holds the worker. B takes it once the lease expired; A's run
/// SIGTERMs its command and exits 76; the command saw a lower fence than B's.
#[test]
fn a_run_whose_lease_expires_stops_its_command() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("partition");
    let (a, b) = Host::pair(&sb, &store);
    let w = a.worker("max");
    let (seen, go) = (sb.path().join("seen"), sb.path().join("go"));
    let (mut run, mut err, sleep) = start_run(&a, &w, &seen, &go, &[]);
    let (fence_a, worker) = seen_fence(&seen);
    assert_eq!(worker, std::fs::canonicalize(&w).unwrap().to_str().unwrap());
    // Held fleet-wide while A's keeper lives.
    let other = sleeper();
    assert_eq!(b.claim("max", other.pid()).status.code(), Some(1));
    let keeper = nix::unistd::Pid::from_raw(a.keeper().unwrap());
    nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut won = None;
    wait_for(
        "B to claim once A's lease expired",
        Duration::from_secs(60),
        || {
            let out = b.claim("max", other.pid());
            let ok = out.status.code() == Some(0);
            won = Some(out);
            ok
        },
    );
    let fence_b = fence_of(won.as_ref().unwrap());
    assert!(fence_a < fence_b, "{fence_a} < {fence_b}");
    assert_eq!(wait_exit(&mut run, Duration::from_secs(30)), 76);
    let line = err.wait("worker lost", Duration::from_secs(5));
    assert!(line.contains("SIGTERM"), "{line}");
    let s = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        s.lines().nth(1),
        Some("term"),
        "the command was stopped: {s:?}"
    );
    // What the command started works in the worker too: stopped with it.
    wait_for(
        "the command's child to be stopped",
        Duration::from_secs(10),
        || !pid_alive(sleep.0),
    );
    nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGCONT).unwrap();
    // B still holds it: A's run released nothing of B's.
    let now = b.run(&["status", "--json", b.worker("max").to_str().unwrap()]);
    assert_eq!(entry(&now.stdout)["fence"], fence_b);
}

/// B takes the worker over with `--force` while A's `run --on-lost=warn`
/// runs: A warns, the command runs on until it ends by itself, and run
/// exits 76, not the command's 3.
#[test]
fn a_run_taken_over_with_on_lost_warn_only_warns() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("takeover");
    let (a, b) = Host::pair(&sb, &store);
    let w = a.worker("max");
    let (seen, go) = (sb.path().join("seen"), sb.path().join("go"));
    let (mut run, mut err, _sleep) = start_run(&a, &w, &seen, &go, &["--on-lost", "warn"]);
    let (fence_a, _) = seen_fence(&seen);
    let other = sleeper();
    let wb = b.worker("max");
    let forced = b.run(&[
        "claim",
        "--json",
        "--force",
        "--pid",
        &other.pid().to_string(),
        wb.to_str().unwrap(),
    ]);
    assert_eq!(forced.status.code(), Some(0));
    assert!(fence_of(&forced) > fence_a);
    let line = err.wait("worker lost", Duration::from_secs(30));
    assert!(
        line.contains("taken over") && line.contains("host-b"),
        "{line}"
    );
    assert!(line.contains("--on-lost=warn"), "{line}");
    assert!(run.try_wait().unwrap().is_none(), "run goes on");
    std::fs::write(&go, "").unwrap();
    assert_eq!(wait_exit(&mut run, Duration::from_secs(30)), 76);
    err.wait("exited with 3", Duration::from_secs(5));
    let s = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(s.lines().count(), 1, "no SIGTERM: {s:?}");
    // B's record and A's local file: B's stays, A's own local lock is gone.
    let now = b.run(&["status", "--json", wb.to_str().unwrap()]);
    assert_eq!(entry(&now.stdout)["fence"], fence_of(&forced));
    assert!(!lock_path(&w).exists(), "A's local lock released");
}

/// A run that is not disturbed: the command sees its fence, run exits with
/// the command's status and leaves the worker free.
#[test]
fn a_run_on_the_store_exports_its_fence_and_releases() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("plain"));
    let w = a.worker("max");
    let (seen, go) = (sb.path().join("seen"), sb.path().join("go"));
    let (mut run, _err, _sleep) = start_run(&a, &w, &seen, &go, &[]);
    let (fence, _) = seen_fence(&seen);
    let held = a.run(&["status", "--json", w.to_str().unwrap()]);
    assert_eq!(entry(&held.stdout)["fence"], fence);
    assert_eq!(entry(&held.stdout)["state"], "held");
    std::fs::write(&go, "").unwrap();
    assert_eq!(wait_exit(&mut run, Duration::from_secs(30)), 3);
    let after = a.run(&["status", "--json", w.to_str().unwrap()]);
    assert_eq!(entry(&after.stdout)["state"], "free");
    assert!(!lock_path(&w).exists());
}

/// The store dies while A's `run` holds the worker (a partition, seen from
/// A): once the lease could have expired (its time left, as last read), run
/// cannot know that nobody else holds the worker: it stops the command and
/// exits 76, naming why.
#[test]
fn a_run_that_loses_the_store_stops_its_command_by_the_lease_deadline() {
    let mut etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("gone"));
    let w = a.worker("max");
    let (seen, go) = (sb.path().join("seen"), sb.path().join("go"));
    let (mut run, mut err, sleep) = start_run(&a, &w, &seen, &go, &["--store-timeout", "1"]);
    etcd.kill();
    // TTL 3 s: stopped well within the TTL plus one check.
    assert_eq!(wait_exit(&mut run, Duration::from_secs(30)), 76);
    let line = err.wait("worker lost", Duration::from_secs(5));
    assert!(
        line.contains("could expire") && line.contains("vouched"),
        "{line}"
    );
    let s = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(s.lines().nth(1), Some("term"), "{s:?}");
    wait_for(
        "the command's child to be stopped",
        Duration::from_secs(10),
        || !pid_alive(sleep.0),
    );
}

/// A command that ignores SIGTERM after its worker was taken over is
/// SIGKILLed [`agentlock::run::KILL_AFTER`] later; run exits 76.
#[test]
fn a_command_that_ignores_sigterm_after_a_loss_is_killed() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("stubborn");
    let (a, b) = Host::pair(&sb, &store);
    let w = a.worker("max");
    let seen = sb.path().join("seen");
    let script = format!(
        r#"$SIG{{TERM}} = "IGNORE"; open my $f, ">", "{s}.tmp"; print $f "$$\n"; close $f; rename "{s}.tmp", "{s}"; sleep 1 while 1;"#,
        s = seen.display()
    );
    let (mut run, mut err) = run_then_take_over(&a, &b, &w, &["perl", "-e", &script], &seen);
    assert_eq!(wait_exit(&mut run, Duration::from_secs(60)), 76);
    // 128 + 9: SIGTERM was ignored, SIGKILL ended it.
    err.wait("exited with 137", Duration::from_secs(5));
}

/// A command that dies on SIGTERM but leaves a child that ignores it: the
/// child is SIGKILLed [`agentlock::run::KILL_AFTER`] later, before run
/// releases the worker and exits.
#[test]
fn an_orphan_that_ignores_sigterm_after_a_loss_is_killed() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("orphan");
    let (a, b) = Host::pair(&sb, &store);
    let w = a.worker("max");
    let seen = sb.path().join("seen");
    let script = format!(
        r#"sh -c 'trap "" TERM; echo $$ > "{s}.tmp"; mv "{s}.tmp" "{s}"; exec sleep 600' & wait"#,
        s = seen.display()
    );
    let (mut run, _err) = run_then_take_over(&a, &b, &w, &["sh", "-c", &script], &seen);
    let orphan: i32 = std::fs::read_to_string(&seen)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = Leftover(orphan, start_of(orphan));
    assert_eq!(wait_exit(&mut run, Duration::from_secs(60)), 76);
    assert!(
        !pid_alive(orphan),
        "run exited with the orphan still running"
    );
    assert!(!lock_path(&w).exists(), "released once the orphan was gone");
}

/// Host `a` runs `argv` in `w` (stderr read line by line) until `seen`
/// exists; then host `b` takes the worker over with `--force`, and run
/// reports the loss.
fn run_then_take_over(a: &Host, b: &Host, w: &Path, argv: &[&str], seen: &Path) -> (Child, Lines) {
    let mut args = vec!["run", w.to_str().unwrap(), "--"];
    args.extend(argv);
    let mut run = a
        .cmd(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Lines::of(run.stderr.take().unwrap());
    wait_for("the command to start", Duration::from_secs(30), || {
        seen.exists()
    });
    let other = sleeper();
    let wb = b.worker("max");
    let pid = other.pid().to_string();
    let forced = b.run(&["claim", "--force", "--pid", &pid, wb.to_str().unwrap()]);
    assert_eq!(forced.status.code(), Some(0));
    err.wait("worker lost", Duration::from_secs(30));
    (run, err)
}
