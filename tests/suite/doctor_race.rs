//! `doctor --fix` in a loop against concurrent claim / release loops on the
//! same workers (and claimers that die, leaving stale locks for doctor to
//! clean): no live lock is ever removed, no lock file is ever torn.
//! Runs 30 s by default; AGENTLOCK_RACE_SECS changes that.

use crate::common::*;

use agentlock::record::LockRecord;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: usize = 4;
const HOLDERS: usize = 4;

#[test]
fn doctor_fix_never_removes_a_live_lock() {
    let secs: u64 = std::env::var("AGENTLOCK_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let sb = Arc::new(Sandbox::new());
    let root = sb.worker("town");
    let workers: Vec<PathBuf> = (0..WORKERS)
        .map(|i| sb.worker(&format!("town/w{i}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let held_rounds = Arc::new(AtomicUsize::new(0));
    let stale_made = Arc::new(AtomicUsize::new(0));
    let fixed_total = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();

    // Holders: claim, check the lock is theirs twice, release (which must find it).
    for h in 0..HOLDERS {
        let (sb, workers, failures, held) = (
            sb.clone(),
            workers.clone(),
            failures.clone(),
            held_rounds.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let me = sleeper();
            let pid = me.pid().to_string();
            let mut i = h;
            while Instant::now() < deadline {
                let w = &workers[i % WORKERS];
                i += 1;
                let out = sb
                    .std_cmd()
                    .args(["claim", "-q", "--pid", &pid])
                    .arg(w)
                    .output()
                    .unwrap();
                match out.status.code() {
                    Some(0) => {}
                    Some(1) => continue,
                    other => {
                        failures.lock().unwrap().push(format!(
                            "claim exit {other:?}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                        continue;
                    }
                }
                for _ in 0..2 {
                    match std::fs::read(lock_path(w)).map(|b| LockRecord::parse(&b)) {
                        Ok(Ok(r)) if r.pid == me.pid() => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("holder {pid} lost {}: {other:?}", w.display())),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let out = sb
                    .std_cmd()
                    .args(["release", "--json", "--pid", &pid])
                    .arg(w)
                    .output()
                    .unwrap();
                let action = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .map(|v| v["workers"][0]["action"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                if action != "released" {
                    failures.lock().unwrap().push(format!(
                        "holder {pid} release of {} said {action:?}: {}",
                        w.display(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                held.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Crasher: claims with a process that then dies, leaving a stale lock.
    {
        let (sb, workers, stale_made) = (sb.clone(), workers.clone(), stale_made.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while Instant::now() < deadline {
                let mut short = std::process::Command::new("sleep")
                    .arg("0.02")
                    .spawn()
                    .unwrap();
                let out = sb
                    .std_cmd()
                    .args(["claim", "-q", "--pid", &short.id().to_string()])
                    .arg(&workers[i % WORKERS])
                    .output()
                    .unwrap();
                short.wait().unwrap();
                if out.status.success() {
                    stale_made.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }

    // Doctor: fix in a loop.
    {
        let (sb, root, failures, fixed_total) = (
            sb.clone(),
            root.clone(),
            failures.clone(),
            fixed_total.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                let out = sb
                    .std_cmd()
                    .args(["doctor", "--fix", "--json"])
                    .arg(&root)
                    .output()
                    .unwrap();
                if !matches!(out.status.code(), Some(0 | 1)) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("doctor: {}", String::from_utf8_lossy(&out.stderr)));
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                fixed_total.fetch_add(v["fixed"].as_array().unwrap().len(), Ordering::Relaxed);
            }
        }));
    }

    // Reader: every lock file read parses.
    let reader = {
        let (workers, failures, stop, reads) = (
            workers.clone(),
            failures.clone(),
            stop.clone(),
            reads.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for w in &workers {
                    match std::fs::read(lock_path(w)) {
                        Ok(b) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = LockRecord::parse(&b) {
                                failures.lock().unwrap().push(format!("torn read: {e}"));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let failures = failures.lock().unwrap();
    eprintln!(
        "doctor race: {secs}s, {} holder rounds, {} stale locks made, {} fixes by doctor, {} reads, {} failures",
        held_rounds.load(Ordering::Relaxed),
        stale_made.load(Ordering::Relaxed),
        fixed_total.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{:#?}",
        &failures[..failures.len().min(20)]
    );
    assert!(
        held_rounds.load(Ordering::Relaxed) > 50,
        "holders actually held"
    );
    assert!(
        fixed_total.load(Ordering::Relaxed) > 0,
        "doctor actually fixed stale locks while racing"
    );
}

/// Whether process `pid` has `file` open (it waits for the guard on it).
fn has_open(pid: u32, file: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == file))
        })
        .unwrap_or(false)
}

/// Two `doctor --fix` over one tree, both scanned before either fixes: one
/// fixes each finding, the other finds it gone, and neither reports the
/// other's fixes as findings it could not fix.
#[test]
fn two_doctors_at_once_agree_on_a_healthy_tree() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let stale = sb.worker("town/stale");
    let corrupt = sb.worker("town/corrupt");
    write_lock(&stale, &go_lock(dead_pid(), None));
    std::fs::write(
        stale.join(format!(".runtime/agent.lock.tmp.{}.abc123", dead_pid())),
        "{",
    )
    .unwrap();
    write_lock(&corrupt, "{not json");
    let g1 = hold_guard(&stale);
    let g2 = hold_guard(&corrupt);
    let doctor = || {
        sb.std_cmd()
            .args(["doctor", "--fix", "--json"])
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (doctor(), doctor());
    let guard = stale.join(".runtime/agent.lock.flock");
    wait_for(
        "both doctors to wait for the guard",
        Duration::from_secs(30),
        || has_open(a.id(), &guard) && has_open(b.id(), &guard),
    );
    drop(g1);
    drop(g2);
    let mut fixed = 0;
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let doc = json(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{doc:#}");
        assert_eq!(doc["findings"].as_array().unwrap().len(), 0, "{doc:#}");
        fixed += doc["fixed"].as_array().unwrap().len();
    }
    assert_eq!(fixed, 3, "each finding fixed exactly once");
    sb.cmd().args(["doctor"]).arg(&root).assert().code(0);
}

/// Stale workers whose guards someone holds and never lets go (another
/// user can `flock` its own workers' guards): `doctor --fix` waits a bounded
/// time for each, skips them as findings it could not fix, and ends.
#[test]
fn held_guards_cost_doctor_fix_a_bounded_wait() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let ws: Vec<_> = (0..2).map(|i| sb.worker(&format!("town/w{i}"))).collect();
    for w in &ws {
        write_lock(w, &go_lock(dead_pid(), None));
    }
    let _held: Vec<_> = ws.iter().map(|w| hold_guard(w)).collect();
    let out = sb
        .std_cmd()
        .args(["doctor", "--fix", "--json"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out.stdout);
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{doc:#}");
    for f in findings {
        assert!(
            f["message"].as_str().unwrap().contains("guard stayed held"),
            "{f}"
        );
    }
    for w in &ws {
        assert!(lock_path(w).exists());
    }
}
