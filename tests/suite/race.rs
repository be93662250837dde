//! Real processes racing `claim` on one worker: exactly one winner per round,
//! every loser exits 1 naming the winner, and no reader ever sees a torn or
//! empty lock file.

use crate::common::*;

use agentlock::record::LockRecord;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const PROCESSES: usize = 16;
const ROUNDS: usize = 200;

#[test]
fn sixteen_processes_race_two_hundred_rounds() {
    let sb = Sandbox::new();
    let w = sb.worker("contested");
    let holders: Vec<Proc> = (0..PROCESSES).map(|_| sleeper()).collect();
    let lock = lock_path(&w);

    // A reader hammering the lock file for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, lock) = (stop.clone(), reads.clone(), lock.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read(&lock) {
                    Ok(bytes) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = LockRecord::parse(&bytes) {
                            bad.push(format!("{e}: {:?}", String::from_utf8_lossy(&bytes)));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bad.push(e.to_string()),
                }
            }
            bad
        })
    };

    let mut winners_per_round = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let children: Vec<_> = holders
            .iter()
            .map(|h| {
                let child = sb
                    .std_cmd()
                    .args(["claim", "--json", "--pid", &h.pid().to_string()])
                    .arg(&w)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (h.pid(), child)
            })
            .collect();
        let results: Vec<_> = children
            .into_iter()
            .map(|(pid, c)| (pid, c.wait_with_output().unwrap()))
            .collect();
        let winners: Vec<i32> = results
            .iter()
            .filter(|(_, o)| o.status.code() == Some(0))
            .map(|(pid, _)| *pid)
            .collect();
        winners_per_round.push(winners.len());
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = winners[0];
        for (pid, out) in &results {
            if *pid == winner {
                continue;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "round {round} pid {pid}: {err}");
            assert!(
                err.contains(&format!("holder: pid {winner},")),
                "round {round}: loser does not name winner {winner}: {err}"
            );
        }
        let rec = LockRecord::parse(&std::fs::read(&lock).unwrap()).unwrap();
        assert_eq!(rec.pid, winner, "round {round}");
        sb.cmd()
            .args(["release", "-q", "--pid", &winner.to_string()])
            .arg(&w)
            .assert()
            .code(0);
    }
    stop.store(true, Ordering::Relaxed);
    let bad = reader.join().unwrap();
    assert!(bad.is_empty(), "torn or unreadable reads: {bad:?}");
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader never saw a lock"
    );
    assert!(winners_per_round.iter().all(|&n| n == 1));
    eprintln!(
        "race: {PROCESSES} processes x {ROUNDS} rounds, winners per round always 1, {} clean reads",
        reads.load(Ordering::Relaxed)
    );
}
