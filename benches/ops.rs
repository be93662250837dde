//! In-process benchmarks (`cargo bench`): record parsing and writing, the
//! verdict, inspecting one worker, and scanning a generated tree next to a
//! plain single-threaded `walkdir` pass over the same tree (the baseline the
//! ratio is read against). Whole-command comparisons with `find`, `fd` and
//! `flock(1)` are in scripts/bench-scan.sh and scripts/bench-claim.sh; the
//! wait for a freed worker (release -> a waiting thread holds it) is
//! measured next to a thread blocked in `flock(2)`, and whole-command
//! waiting in scripts/bench-wait.sh.

use agentlock::lock::{self, LiveProbes};
use agentlock::probe::{SessionStatus, TmuxQuery};
use agentlock::record::LockRecord;
use agentlock::scan::{self, Progress, ScanOptions};
use agentlock::verdict::{PidStatus, judge_statuses};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;

const GO_LOCK: &[u8] = b"{\n  \"pid\": 48213,\n  \"acquired_at\": \"2026-01-05T10:00:00.123456789-08:00\",\n  \"session_id\": \"%12\",\n  \"hostname\": \"gastown-dev\"\n}";

fn record(c: &mut Criterion) {
    c.bench_function("record/parse Go lock", |b| {
        b.iter(|| LockRecord::parse(black_box(GO_LOCK)).unwrap())
    });
    let rec = LockRecord::parse(GO_LOCK).unwrap();
    c.bench_function("record/to_json", |b| b.iter(|| black_box(&rec).to_json()));
    c.bench_function("verdict/judge_statuses", |b| {
        b.iter(|| {
            judge_statuses(
                black_box(7),
                PidStatus::Dead("pid 7 has exited".into()),
                Some(("pane %3".into(), SessionStatus::Gone)),
            )
        })
    });
}

/// 200 workers x (10 source dirs + 20 .git dirs), 60% locked.
fn town(root: &Path) {
    for w in 0..200 {
        let wd = root.join(format!("rig{}/w{w}", w % 5));
        for d in 0..10 {
            std::fs::create_dir_all(wd.join(format!("src/m{d}/inner"))).unwrap();
        }
        for d in 0..20 {
            std::fs::create_dir_all(wd.join(format!(".git/objects/{d:02x}"))).unwrap();
        }
        if w % 5 < 3 {
            std::fs::create_dir_all(wd.join(".runtime")).unwrap();
            std::fs::write(wd.join(".runtime/agent.lock"), GO_LOCK).unwrap();
        }
    }
}

fn tree(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    town(dir.path());
    let root = dir.path();
    // SAFETY: set before any other thread exists: no tmux server is ever asked.
    unsafe { std::env::set_var("TMUX_TMPDIR", root.join("no-tmux")) };
    let opts = ScanOptions::default();
    c.bench_function("scan/agentlock scan (200 workers)", |b| {
        b.iter(|| {
            scan::scan(root, &opts, &Progress::default())
                .unwrap()
                .locks
                .len()
        })
    });
    c.bench_function("scan/walkdir baseline, same pruning", |b| {
        b.iter(|| {
            let mut n = 0;
            let mut it = walkdir::WalkDir::new(root).into_iter();
            while let Some(Ok(e)) = it.next() {
                let name = e.file_name();
                if e.file_type().is_dir() && (name == ".git" || name == ".runtime") {
                    n += usize::from(name == ".runtime" && e.path().join("agent.lock").exists());
                    it.skip_current_dir();
                }
            }
            n
        })
    });
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let worker = root.join("rig0/w0");
    c.bench_function("lock/inspect one worker", |b| {
        b.iter(|| lock::judge(&worker, &probes).unwrap())
    });
}

/// Release -> a waiter in another thread holds the worker (`claim_wait`),
/// next to the kernel's own wake-up: a thread blocked in `flock(LOCK_EX)` on
/// a plain file when another descriptor unlocks it (the floor).
fn wait(c: &mut Criterion) {
    use agentlock::lock::{Asker, ClaimOptions, Claimant};
    use agentlock::wait::{WaitOptions, claim_wait};
    use nix::fcntl::{Flock, FlockArg};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    std::fs::create_dir(&w).unwrap();
    let query = || TmuxQuery {
        tmpdir: Some(dir.path().join("no-tmux")),
        discover: false,
        ..TmuxQuery::default()
    };
    let live = LiveProbes::new(query());
    let probes = live.probes();
    let mut holder = std::process::Command::new("sleep")
        .arg("100000")
        .spawn()
        .unwrap();
    let other = Claimant {
        pid: holder.id() as i32,
        ..Claimant::this_process()
    };
    let queued = |w: &Path| {
        std::fs::read_dir(w.join(".runtime")).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("agent.lock.wait.")
            })
        })
    };
    let mut g = c.benchmark_group("wait");
    g.sample_size(30);
    g.bench_function("release -> claim_wait holds", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                lock::claim(&w, &other, ClaimOptions::default(), &probes).unwrap();
                let wt = w.clone();
                let q = query();
                let waiter = std::thread::spawn(move || {
                    let live = LiveProbes::new(q);
                    let me = Claimant::this_process();
                    let wait = WaitOptions::up_to(Duration::from_secs(30));
                    claim_wait(&wt, &me, ClaimOptions::default(), &wait, &live.probes()).unwrap();
                    Instant::now()
                });
                while !queued(&w) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                std::thread::sleep(Duration::from_millis(2));
                let t0 = Instant::now();
                lock::release(&w, &Asker::new(Some(other.pid), None, None), false, &probes)
                    .unwrap();
                total += waiter.join().unwrap() - t0;
                lock::release(&w, &Asker::this_process(), false, &probes).unwrap();
            }
            total
        })
    });
    let f = dir.path().join("plain");
    g.bench_function("flock(2) baseline: unlock -> blocked thread holds", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let held = Flock::lock(std::fs::File::create(&f).unwrap(), FlockArg::LockExclusive)
                    .unwrap();
                let ft = f.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let waiter = std::thread::spawn(move || {
                    let file = std::fs::File::open(&ft).unwrap();
                    tx.send(()).unwrap();
                    let _l = Flock::lock(file, FlockArg::LockExclusive).unwrap();
                    Instant::now()
                });
                rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(2));
                let t0 = Instant::now();
                drop(held);
                total += waiter.join().unwrap() - t0;
            }
            total
        })
    });
    g.finish();
    let _ = holder.kill();
    let _ = holder.wait();
}

criterion_group!(benches, record, tree, wait);
criterion_main!(benches);
