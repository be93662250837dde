//! Runs the reliability harness (tests/support/stress.rs) and prints its table.
//! Driven by scripts/reliability.sh.
//!
//! Usage: reliability --bin PATH [--rounds N] [--kills N] [--minutes M]
//!        [--workers N] [--holders N]
//! Exit status 1 if any failure count is non-zero.

#[path = "../tests/support/stress.rs"]
mod stress;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let bin = get("--bin").expect("--bin PATH");
    let dir = tempfile::Builder::new()
        .prefix("al-reliability")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = stress::Config::new(bin.as_ref(), dir.path());
    if let Some(n) = get("--rounds") {
        cfg.rounds = n.parse().unwrap();
    }
    if let Some(n) = get("--kills") {
        cfg.kills = n.parse().unwrap();
    }
    if let Some(m) = get("--minutes") {
        cfg.limit = Duration::from_secs_f64(m.parse::<f64>().unwrap() * 60.0);
    }
    if let Some(n) = get("--workers") {
        cfg.workers = n.parse().unwrap();
    }
    if let Some(n) = get("--holders") {
        cfg.holders = n.parse().unwrap();
    }
    let figures = stress::run(cfg);
    print!("{}", figures.table());
    let notes = figures.notes.lock().unwrap();
    for n in notes.iter() {
        eprintln!("failure: {n}");
    }
    let code = if figures.failures() == 0 { 0 } else { 1 };
    // exit() runs no destructors: the temp tree is removed first.
    drop(notes);
    drop(dir);
    std::process::exit(code);
}
