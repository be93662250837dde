//! Measures candidate walkers on one tree, doing the scan's job: find every
//! `<worker>/.runtime/agent.lock` with the default skips, not descending into
//! `.runtime`, not following symlinks, no `stat` beyond the dirent type.
//!
//! Usage: cargo run --release --example walkers -- ROOT [RUNS]
//! Prints the median wall time of each walker and the locks it found.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SKIP: &[&str] = &[".git", ".dolt-data", ".dolt-backup", "node_modules"];

fn walkdir_scan(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut it = walkdir::WalkDir::new(root).follow_links(false).into_iter();
    while let Some(e) = it.next() {
        let Ok(e) = e else { continue };
        if !e.file_type().is_dir() {
            continue;
        }
        let name = e.file_name();
        if SKIP.iter().any(|s| name == *s) {
            it.skip_current_dir();
        } else if name == ".runtime" {
            let lock = e.path().join("agent.lock");
            if std::fs::symlink_metadata(&lock).is_ok() {
                out.push(lock);
            }
            it.skip_current_dir();
        }
    }
    out
}

fn jwalk_scan(root: &Path, threads: usize) -> Vec<PathBuf> {
    let found = Mutex::new(Vec::new());
    let walk = jwalk::WalkDir::new(root)
        .follow_links(false)
        .skip_hidden(false)
        .parallelism(jwalk::Parallelism::RayonNewPool(threads))
        .process_read_dir(|_, _, _, children| {
            for c in children.iter_mut().flatten() {
                if c.file_type.is_dir() {
                    let n = c.file_name.to_str().unwrap_or("");
                    if SKIP.contains(&n) || n == ".runtime" {
                        c.read_children = None;
                    }
                }
            }
        });
    for e in walk.into_iter().flatten() {
        if e.file_type.is_dir() && e.file_name == ".runtime" {
            let lock = e.path().join("agent.lock");
            if std::fs::symlink_metadata(&lock).is_ok() {
                found.lock().unwrap().push(lock);
            }
        }
    }
    found.into_inner().unwrap()
}

fn ignore_scan(root: &Path, threads: usize) -> Vec<PathBuf> {
    let found = Mutex::new(Vec::new());
    ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .threads(threads)
        .build_parallel()
        .run(|| {
            let found = &found;
            Box::new(move |e| {
                let Ok(e) = e else {
                    return ignore::WalkState::Continue;
                };
                if e.file_type().is_some_and(|t| t.is_dir()) {
                    let n = e.file_name();
                    if SKIP.iter().any(|s| n == *s) {
                        return ignore::WalkState::Skip;
                    }
                    if n == ".runtime" {
                        let lock = e.path().join("agent.lock");
                        if std::fs::symlink_metadata(&lock).is_ok() {
                            found.lock().unwrap().push(lock);
                        }
                        return ignore::WalkState::Skip;
                    }
                }
                ignore::WalkState::Continue
            })
        });
    found.into_inner().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(args.get(1).expect("usage: walkers ROOT [RUNS]"));
    let runs: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(7);
    type Walker<'a> = Box<dyn Fn() -> Vec<PathBuf> + 'a>;
    let candidates: Vec<(&str, Walker)> = vec![
        ("walkdir (1 thread)", Box::new(|| walkdir_scan(&root))),
        ("jwalk (2 threads)", Box::new(|| jwalk_scan(&root, 2))),
        ("ignore (1 thread)", Box::new(|| ignore_scan(&root, 1))),
        ("ignore (2 threads)", Box::new(|| ignore_scan(&root, 2))),
    ];
    for (name, f) in &candidates {
        let _ = f(); // warm
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            n = f().len();
            times.push(t.elapsed());
        }
        println!(
            "{name:20} median {:>7.1} ms  locks {n}",
            median(times).as_secs_f64() * 1e3
        );
    }
}
