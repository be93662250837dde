//! The fleet store against a real etcd member (feature `etcd`): one
//! transaction per claim, compare-and-swap on the judged revision, fences
//! that grow with every new holder, bounded answers when etcd is gone.

use crate::common::*;
use agentlock::Error;
use agentlock::fleet::etcd::{Created, Fleet};
use agentlock::fleet::{StoreSpec, worker_key};
use agentlock::record::LockRecord;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn rec(pid: i32) -> LockRecord {
    LockRecord {
        pid,
        hostname: Some("host-a".into()),
        ..LockRecord::default()
    }
}

fn connect(etcd: &Etcd, prefix: &str) -> Fleet {
    Fleet::connect(
        &StoreSpec::parse(&etcd.store(prefix)).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[test]
fn create_replace_delete_by_revision_with_growing_fences() {
    let etcd = Etcd::start();
    let fleet = connect(&etcd, "t1");
    let sb = Sandbox::new();
    let w = sb.worker("rig/max");
    let key = worker_key(fleet.spec(), sb.path(), &w).unwrap();
    assert!(fleet.get(&key).unwrap().is_none());
    let Created::Fence(first) = fleet.create(&key, &rec(10), None).unwrap() else {
        panic!("absent key not created");
    };
    // A second create finds the first holder and writes nothing.
    let Created::Exists(stored) = fleet.create(&key, &rec(11), None).unwrap() else {
        panic!("created over an existing key");
    };
    let held = stored.record.unwrap();
    assert_eq!((held.record.pid, held.fence), (10, first));
    // A refresh by the same holder keeps its fence.
    let kept = fleet
        .replace(&key, stored.revision, &rec(10), Some(first), None)
        .unwrap();
    assert_eq!(kept, Some(first));
    // A replacement judged on the old revision is refused: it changed since.
    assert_eq!(
        fleet
            .replace(&key, stored.revision, &rec(12), None, None)
            .unwrap(),
        None
    );
    let now = fleet.get(&key).unwrap().unwrap();
    assert_eq!(now.record.as_ref().unwrap().fence, first);
    // A new holder gets a larger fence.
    let second = fleet
        .replace(&key, now.revision, &rec(12), None, None)
        .unwrap()
        .unwrap();
    assert!(second > first, "{second} > {first}");
    let now = fleet.get(&key).unwrap().unwrap();
    assert_eq!(now.record.as_ref().unwrap().fence, second);
    assert_eq!(fleet.list().unwrap().len(), 1);
    // Compare-and-delete: a stale revision deletes nothing.
    assert!(!fleet.delete(&key, stored.revision).unwrap());
    assert!(fleet.delete(&key, now.revision).unwrap());
    assert!(fleet.get(&key).unwrap().is_none());
}

/// Twelve clients, each with its own connection, race to create one key,
/// 200 rounds: exactly one wins each round, and every loser is told who.
#[test]
fn racing_creates_have_exactly_one_winner_per_round() {
    let etcd = Etcd::start();
    const CLIENTS: usize = 12;
    const ROUNDS: usize = 200;
    let spec = StoreSpec::parse(&etcd.store("race")).unwrap();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (spec, barrier) = (spec.clone(), barrier.clone());
            std::thread::spawn(move || {
                let fleet = Fleet::connect(&spec, Duration::from_secs(10)).unwrap();
                let mut outcomes = Vec::new();
                for round in 0..ROUNDS {
                    let key = format!("{}/workers/w{round}", spec.prefix);
                    barrier.wait();
                    let pid = 1000 + i as i32;
                    outcomes.push(match fleet.create(&key, &rec(pid), None).unwrap() {
                        Created::Fence(f) => Ok((pid, f)),
                        Created::Exists(s) => Err(s.record.unwrap().record.pid),
                    });
                }
                outcomes
            })
        })
        .collect();
    let results: Vec<Vec<_>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..ROUNDS {
        let winners: Vec<(i32, i64)> = results.iter().filter_map(|r| r[round].ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = winners[0].0;
        assert!(
            results
                .iter()
                .filter_map(|r| r[round].err())
                .all(|named| named == winner),
            "round {round}: every loser names the winner"
        );
    }
}

/// etcd gone: every call ends with a store error naming the endpoint,
/// within the time limit (the bound here only guards against a hang).
#[test]
fn a_stopped_store_answers_with_an_error_not_a_hang() {
    let mut etcd = Etcd::start();
    let fleet = connect(&etcd, "gone");
    let key = "/gone/workers/w";
    etcd.kill();
    let started = Instant::now();
    for r in [
        fleet.get(key).map(|_| ()),
        fleet.create(key, &rec(1), None).map(|_| ()),
        fleet.delete(key, 1).map(|_| ()),
    ] {
        match r {
            Err(Error::Store { endpoints, .. }) => {
                assert_eq!(endpoints, etcd.endpoint)
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60), "bounded");
    // A new connection to it fails on its first call, within its limit.
    let spec = StoreSpec::parse(&etcd.store("gone")).unwrap();
    let late = Fleet::connect(&spec, Duration::from_secs(1)).and_then(|f| f.get(key));
    assert!(matches!(late, Err(Error::Store { .. })), "{late:?}");
}
