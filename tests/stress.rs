//! A short run of the reliability harness (tests/support/stress.rs): mixed
//! claimers, first-free pickers, run wrappers, doctor --fix and readers racing
//! on four workers, with SIGKILLs injected. Every failure count must be zero.
//! Longer runs: scripts/reliability.sh.

#[path = "support/stress.rs"]
mod stress;

use std::time::Duration;

#[test]
fn mixed_racing_with_crash_injection_keeps_every_invariant() {
    let dir = tempfile::Builder::new()
        .prefix("al-stress")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = stress::Config::new(env!("CARGO_BIN_EXE_agentlock").as_ref(), dir.path());
    cfg.rounds = 1500;
    cfg.kills = 150;
    cfg.limit = Duration::from_secs(60);
    let figures = stress::run(cfg);
    eprintln!("{}", figures.table());
    let notes = figures.notes.lock().unwrap();
    assert_eq!(figures.failures(), 0, "{:#?}", &notes[..]);
    use std::sync::atomic::Ordering::Relaxed;
    assert!(figures.rounds.load(Relaxed) >= 1500, "ran its rounds");
    assert!(figures.sigkills.load(Relaxed) >= 150, "injected its kills");
    assert!(figures.wins.load(Relaxed) > 100, "claims were actually won");
    assert!(
        figures.pane_wins.load(Relaxed) > 0,
        "shared-pane holders won rounds"
    );
    assert!(
        figures.spawner_wins.load(Relaxed) > 0,
        "$(...) spawners won slots"
    );
    assert!(
        figures.shell_wins.load(Relaxed) > 0,
        "sh -c spawners won slots"
    );
    assert!(
        figures.sandbox_wins.load(Relaxed) > 0,
        "sandboxed agents won rounds"
    );
}
