//! In-process benchmarks (`cargo bench`): record parsing and writing, the
//! verdict, inspecting one worker, and scanning a generated tree next to a
//! plain single-threaded `walkdir` pass over the same tree (the baseline the
//! ratio is read against). Whole-command comparisons with `find`, `fd` and
//! `flock(1)` are in scripts/bench-scan.sh and scripts/bench-claim.sh.

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

criterion_group!(benches, record, tree);
criterion_main!(benches);
