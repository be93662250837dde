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

/// A simulated host: its own hostname (`unshare --uts`), its own state dir
/// (so its own keeper), its own tmux dir and its own checkout of the fleet.
pub struct Host {
    name: &'static str,
    pub root: std::path::PathBuf,
    xdg: std::path::PathBuf,
    tmux: std::path::PathBuf,
    store: String,
    /// Lease TTL in seconds (short, so expiry tests are quick).
    pub ttl: u32,
}

impl Host {
    pub fn new(sb: &Sandbox, name: &'static str, store: &str) -> Host {
        let base = sb.path().join(name);
        let h = Host {
            name,
            root: base.join("town"),
            xdg: base.join("xdg"),
            tmux: base.join("tmux"),
            store: store.to_string(),
            ttl: 3,
        };
        for d in [&h.root, &h.xdg, &h.tmux] {
            std::fs::create_dir_all(d).unwrap();
        }
        h
    }

    /// Hosts `host-a` and `host-b` on one store.
    pub fn pair(sb: &Sandbox, store: &str) -> (Host, Host) {
        (
            Host::new(sb, "host-a", store),
            Host::new(sb, "host-b", store),
        )
    }

    pub fn worker(&self, rel: &str) -> std::path::PathBuf {
        let w = self.root.join(rel);
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    /// `agentlock --store S --fleet-root ROOT ARGS` on this host.
    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        self.cmd_after("", args)
    }

    /// [`Host::cmd`] in its own mount namespace too, after `setup` (shell).
    pub fn cmd_after(&self, setup: &str, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("unshare");
        if !setup.is_empty() {
            c.arg("--mount");
        }
        c.args([
            "--uts",
            "sh",
            "-c",
            &format!("hostname \"$1\" && shift && {setup} exec \"$@\""),
            "sh",
        ])
        .arg(self.name)
        .arg(BIN)
        .args(["--store", &self.store, "--fleet-root"])
        .arg(&self.root)
        .args(args)
        .env("XDG_RUNTIME_DIR", &self.xdg)
        .env("TMUX_TMPDIR", &self.tmux)
        .env("AGENTLOCK_TMUX_SERVERS", "dir")
        .env("AGENTLOCK_LEASE_TTL", self.ttl.to_string())
        .env("AGENTLOCK_KEEPER_PERIOD", "0.2")
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        .env_remove("AGENTLOCK_STORE")
        .env_remove("AGENTLOCK_FLEET_ROOT")
        .env_remove("AGENTLOCK_LOG")
        .env_remove("JOURNAL_STREAM");
        c
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    pub fn claim(&self, rel: &str, pid: i32) -> std::process::Output {
        let w = self.worker(rel);
        self.run(&[
            "claim",
            "--json",
            "--pid",
            &pid.to_string(),
            w.to_str().unwrap(),
        ])
    }

    /// When this host's keeper last renewed its lease (nanoseconds, its
    /// clock), from the lease file it published.
    pub fn keeper_renewed(&self) -> Option<u64> {
        self.lease_field(4)
    }

    /// The keeper this host started, from the lease file it published.
    pub fn keeper(&self) -> Option<i32> {
        self.lease_field(1).map(|p: u64| p as i32)
    }

    fn lease_field(&self, n: usize) -> Option<u64> {
        let dir = self.xdg.join("agentlock");
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".lease") {
                return None;
            }
            let s = std::fs::read_to_string(e.path()).ok()?;
            s.split_whitespace().nth(n)?.parse().ok()
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(pid) = self.keeper().filter(|&p| p > 1) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// One round of `hosts` racing to claim `rel`, each for its holder, while
/// `meanwhile` runs: a claimant retries exit 2 (the store did not answer in
/// time: an election, a hung member), as a spawner would; 0 and 1 are final.
/// Each host's index and last exit code.
pub fn race_round(
    hosts: &[Host],
    holders: &[Proc],
    rel: &str,
    meanwhile: impl FnOnce(),
) -> Vec<(usize, Option<i32>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .zip(holders)
            .enumerate()
            .map(|(i, (h, p))| {
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let code = h.claim(rel, p.pid()).status.code();
                        if code != Some(2) || Instant::now() > deadline {
                            return (i, code);
                        }
                    }
                })
            })
            .collect();
        meanwhile();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn fence_of(out: &std::process::Output) -> i64 {
    entry(&out.stdout)["fence"].as_i64().unwrap()
}

/// Host A claims; host B is refused, naming A; A's holder dies, A's keeper
/// deletes the record, and B claims with a larger fence.
#[test]
fn another_hosts_claim_is_held_until_its_keeper_proves_it_stale() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("hosts");
    let (a, b) = Host::pair(&sb, &store);
    let holder = sleeper();
    let won = a.claim("rig/max", holder.pid());
    assert_eq!(
        won.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&won.stderr)
    );
    assert!(a.keeper().is_some(), "claim started host A's keeper");
    let other = sleeper();
    let lost = b.claim("rig/max", other.pid());
    assert_eq!(lost.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&lost.stderr).contains("host-a"));
    assert_eq!(entry(&lost.stdout)["hostname"], "host-a");
    let w = b.worker("rig/max");
    let seen = b.run(&["status", "--json", w.to_str().unwrap()]);
    assert_eq!(entry(&seen.stdout)["state"], "held");
    assert_eq!(entry(&seen.stdout)["fence"], entry(&won.stdout)["fence"]);
    // B lists the whole fleet, all hosts: A's worker, under B's own root.
    let all = json(&b.run(&["list", "--json"]).stdout);
    assert_eq!(all["locks"].as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(all["locks"][0]["hostname"], "host-a");
    assert_eq!(all["locks"][0]["worker_dir"], w.to_str().unwrap());
    assert_eq!(all["locks"][0]["fence"], entry(&won.stdout)["fence"]);
    let table = String::from_utf8(b.run(&["list"]).stdout).unwrap();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("rig/max")),
        "{table}"
    );
    // A's holder dies: A's keeper proves it stale and deletes it; then B wins.
    let dead = holder.pid();
    drop(holder);
    wait_gone(dead, Duration::from_secs(10));
    let mut got = None;
    wait_for(
        "B to claim after A's keeper swept",
        Duration::from_secs(60),
        || {
            let out = b.claim("rig/max", other.pid());
            let ok = out.status.code() == Some(0);
            got = Some(out);
            ok
        },
    );
    assert!(fence_of(got.as_ref().unwrap()) > fence_of(&won));
}

/// Host A's keeper is SIGKILLed (the host died): B's claim succeeds once A's
/// lease expired, never before two thirds of the TTL (the lease is renewed
/// every third).
#[test]
fn a_dead_hosts_workers_are_free_after_its_lease_expires() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("death");
    let (a, b) = Host::pair(&sb, &store);
    let holder = sleeper();
    let won = a.claim("max", holder.pid());
    assert_eq!(won.status.code(), Some(0));
    let keeper = a.keeper().unwrap();
    let other = sleeper();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let mut got = None;
    wait_for(
        "B to claim after A's lease expired",
        Duration::from_secs(60),
        || {
            let out = b.claim("max", other.pid());
            let ok = out.status.code() == Some(0);
            if !ok {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            got = Some(out);
            ok
        },
    );
    // TTL 3 s, renewed every 1 s: the lease outlives its keeper by >= 2 s.
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "freed before the lease expired"
    );
    assert!(fence_of(got.as_ref().unwrap()) > fence_of(&won));
}

/// etcd stopped: `claim` exits 2 with one line naming the endpoint, within
/// the time limit; `status` says `unverified`; the local lock file is
/// unchanged.
#[test]
fn a_stopped_store_refuses_mutations_and_reads_say_unverified() {
    let mut etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("down"));
    let w = a.worker("max");
    let holder = sleeper();
    // A local (gt-style) lock of a live holder: it must survive untouched.
    write_lock(&w, &go_lock(holder.pid(), None));
    let before = std::fs::read(lock_path(&w)).unwrap();
    etcd.kill();
    let other = sleeper();
    let started = Instant::now();
    let out = a.run(&[
        "--store-timeout",
        "2",
        "claim",
        "--pid",
        &other.pid().to_string(),
        w.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&etcd.endpoint), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded");
    let seen = a.run(&[
        "--store-timeout",
        "2",
        "status",
        "--json",
        w.to_str().unwrap(),
    ]);
    assert_eq!(seen.status.code(), Some(0));
    assert_eq!(entry(&seen.stdout)["state"], "unverified");
    assert_eq!(std::fs::read(lock_path(&w)).unwrap(), before);
    // Several workers: each unverified (the store is asked once).
    let (w2, w3) = (a.worker("two"), a.worker("three"));
    let (w2, w3) = (w2.to_str().unwrap(), w3.to_str().unwrap());
    let many = a.run(&["--store-timeout", "2", "status", "--json", w2, w3]);
    let doc = json(&many.stdout);
    let states: Vec<&str> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unverified", "unverified"], "{doc:#}");
    // --first-free: "no free worker" is not established: exit 2, one line.
    let pid = other.pid().to_string();
    let ff = a.run(&[
        "--store-timeout",
        "2",
        "claim",
        "--first-free",
        "--pid",
        &pid,
        w2,
        w3,
    ]);
    assert_eq!(ff.status.code(), Some(2));
    let err = String::from_utf8_lossy(&ff.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");
}

/// A `gt`-style local lock of a live holder and a fleet claim of the same
/// worker: refused, and the store is left empty.
#[test]
fn a_live_local_lock_refuses_a_fleet_claim() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("mixed"));
    let w = a.worker("max");
    let gt_holder = sleeper();
    write_lock(&w, &go_lock(gt_holder.pid(), None));
    let other = sleeper();
    let out = a.claim("max", other.pid());
    assert_eq!(out.status.code(), Some(1));
    let seen = a.run(&["status", "--json", w.to_str().unwrap()]);
    assert_eq!(
        entry(&seen.stdout)["state"],
        "free",
        "nothing reached the store"
    );
    assert_eq!(record_at(&w).pid, gt_holder.pid());
}

/// Three hosts race for a fresh worker each round, 500 rounds: exactly one
/// winner per round, every other claimant refused (exit 1).
#[test]
fn three_hosts_racing_have_exactly_one_winner_per_round() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("race3");
    let hosts: Vec<Arc<Host>> = ["host-a", "host-b", "host-c"]
        .into_iter()
        .map(|n| Arc::new(Host::new(&sb, n, &store)))
        .collect();
    const ROUNDS: usize = 500;
    for h in &hosts {
        for r in 0..ROUNDS {
            h.worker(&format!("w{r}"));
        }
    }
    let barrier = Arc::new(Barrier::new(hosts.len()));
    let holders: Vec<Proc> = hosts.iter().map(|_| sleeper()).collect();
    let threads: Vec<_> = hosts
        .iter()
        .zip(&holders)
        .map(|(h, p)| {
            let (h, barrier, pid) = (h.clone(), barrier.clone(), p.pid());
            std::thread::spawn(move || {
                (0..ROUNDS)
                    .map(|r| {
                        barrier.wait();
                        h.claim(&format!("w{r}"), pid).status.code()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let codes: Vec<Vec<Option<i32>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in 0..ROUNDS {
        let round: Vec<Option<i32>> = codes.iter().map(|c| c[r]).collect();
        assert_eq!(
            round.iter().filter(|c| **c == Some(0)).count(),
            1,
            "round {r}: {round:?}"
        );
        assert!(
            round.iter().all(|c| matches!(c, Some(0) | Some(1))),
            "round {r}: {round:?}"
        );
    }
}

/// Review: `--fleet-root` is never the current directory by default, and
/// out-of-range times are usage errors, not panics.
#[test]
fn store_usage_errors_are_clear() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    for (args, says) in [
        (
            vec!["--store", "etcd://127.0.0.1:9/p", "status"],
            "fleet root",
        ),
        (
            vec![
                "--store",
                "etcd://127.0.0.1:9/p",
                "--fleet-root",
                ".",
                "--store-timeout",
                "1e300",
                "status",
            ],
            "--store-timeout",
        ),
        (vec!["--store", "redis://x:1", "status"], "etcd://"),
        (
            vec![
                "--store",
                "etcd://127.0.0.1:9/p",
                "--lease-ttl",
                "9223372036854775807",
                "status",
            ],
            "--lease-ttl",
        ),
    ] {
        let out = sb.cmd().args(&args).arg(&w).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        // One line naming the flag (clap's own errors add its usual hint
        // to try --help after a blank line).
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(says) && err.lines().filter(|l| !l.is_empty()).count() <= 2,
            "{args:?}: {err}"
        );
    }
}

/// A store time limit longer than the lease lives is refused, and so is a
/// TTL below etcd's minimum; durations are written as etcdctl's users do.
#[test]
fn store_durations_and_their_limits() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let base = ["--store", "etcd://127.0.0.1:9/p", "--fleet-root"];
    for (args, code, says) in [
        (
            vec!["--lease-ttl", "3s", "--store-timeout", "10s"],
            2,
            "longer than the lease TTL",
        ),
        (vec!["--lease-ttl", "1s"], 2, "must be 2s to 1d"),
        (vec!["--lease-ttl", "2d"], 2, "must be 2s to 1d"),
        (vec!["--store-timeout", "0"], 2, "must be more than 0"),
        (vec!["--store-timeout", "soon"], 2, "write 500ms, 30s"),
        // Accepted: the store (nothing listens) is what fails, as unverified.
        (
            vec!["--lease-ttl", "1m", "--store-timeout", "300ms"],
            0,
            "unverified",
        ),
        (
            vec!["--lease-ttl", "3", "--store-timeout", "1.5"],
            0,
            "unverified",
        ),
    ] {
        let out = sb
            .cmd()
            .args(base)
            .arg(sb.path())
            .args(&args)
            .args(["status"])
            .arg(&w)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
}

/// Review: a keeper stopped past its TTL (a partition) loses its lease and
/// every record on it; resumed, it takes a new lease and claims work again.
#[test]
fn a_keeper_stalled_past_its_ttl_recovers() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("stall"));
    let holder = sleeper();
    assert_eq!(a.claim("one", holder.pid()).status.code(), Some(0));
    let keeper = nix::unistd::Pid::from_raw(a.keeper().unwrap());
    nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let w = a.worker("one");
    wait_for(
        "the stalled keeper's lease to expire",
        Duration::from_secs(60),
        || {
            let seen = a.run(&["status", "--json", w.to_str().unwrap()]);
            entry(&seen.stdout)["state"] == "free"
        },
    );
    nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGCONT).unwrap();
    let mut last = None;
    wait_for(
        "a claim on the resumed keeper's new lease",
        Duration::from_secs(60),
        || {
            let out = a.claim("two", holder.pid());
            let ok = out.status.code() == Some(0);
            last = Some(out);
            ok
        },
    );
    assert_eq!(
        a.keeper(),
        Some(keeper.as_raw()),
        "the same keeper, a new lease"
    );
    drop(last);
}

/// Review: a refused fleet claim by a holder that already held the worker
/// locally leaves its local lock in place.
#[test]
fn a_refused_fleet_claim_keeps_the_holders_own_local_lock() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("keep");
    let (a, b) = Host::pair(&sb, &store);
    let hb = sleeper();
    assert_eq!(b.claim("toast", hb.pid()).status.code(), Some(0));
    let ha = sleeper();
    let w = a.worker("toast");
    // A plain (file) claim on host A, then the fleet claim of the same holder.
    sb.claim(&w, ha.pid(), &[]).code(0);
    let before = std::fs::read(lock_path(&w)).unwrap();
    assert_eq!(a.claim("toast", ha.pid()).status.code(), Some(1));
    let after = record_at(&w);
    assert_eq!(after.pid, ha.pid(), "the local lock survived the refusal");
    assert!(!before.is_empty());
}

/// A 3-member cluster: a member stopped (SIGSTOP) for rounds 20-39 costs at
/// most its share of the time limit; in round 40 the leader (as the
/// members report it) is SIGKILLed while the claims race. Every round has
/// exactly one winner (claimants retry while the cluster elects a new
/// leader, exit 2), and every acknowledged claim is found afterwards.
#[test]
fn a_three_member_cluster_survives_a_stopped_member_and_a_killed_leader() {
    let mut cluster = EtcdCluster::start(3);
    let sb = Sandbox::new();
    let store = cluster.store("c3");
    // A default-like TTL: a member stopped or killed must not cost a
    // healthy host its lease.
    let hosts: Vec<Host> = ["host-a", "host-b"]
        .into_iter()
        .map(|n| {
            let mut h = Host::new(&sb, n, &store);
            h.ttl = 15;
            h
        })
        .collect();
    let holders: Vec<Proc> = hosts.iter().map(|_| sleeper()).collect();
    let mut won = Vec::new();
    let mut killed = None;
    for round in 0..60 {
        match round {
            20 => cluster.signal(1, nix::sys::signal::Signal::SIGSTOP),
            40 => cluster.signal(1, nix::sys::signal::Signal::SIGCONT),
            _ => {}
        }
        let rel = format!("w{round}");
        let codes = race_round(&hosts, &holders, &rel, || {
            // Round 40: the leader is SIGKILLed while the claims race.
            if round == 40 {
                let leader = cluster.leader();
                cluster.kill(leader);
                killed = Some(leader);
            }
        });
        let winners: Vec<usize> = codes
            .iter()
            .filter(|c| c.1 == Some(0))
            .map(|c| c.0)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {codes:?}");
        won.push((rel, winners[0]));
    }
    let killed = killed.expect("a leader was killed");
    assert_ne!(cluster.leader(), killed, "a new leader was elected");
    // Every acknowledged claim is there, naming its winner.
    for (rel, i) in &won {
        let w = hosts[0].worker(rel);
        let seen = hosts[0].run(&["status", "--json", w.to_str().unwrap()]);
        assert_eq!(entry(&seen.stdout)["pid"], holders[*i].pid(), "{rel}");
    }
}

/// Any fleet member can write a value: its strings are shown escaped, like a
/// lock file's, by `status`, `list` and `doctor`.
#[test]
fn a_fleet_value_full_of_escape_sequences_is_shown_escaped() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("esc");
    let (_, b) = Host::pair(&sb, &store);
    let w = b.worker("rig/evil");
    let key = worker_key(&StoreSpec::parse(&store).unwrap(), &b.root, &w).unwrap();
    let nasty = "\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}\nholder: pid 4242 FORGED";
    let value = serde_json::json!({
        "pid": 4242,
        "acquired_at": go_time(),
        "session_id": format!("s{nasty}"),
        "hostname": format!("h{nasty}"),
        "tmux_socket": format!("/tmp/{nasty}"),
    });
    etcdctl(&etcd.endpoint, &["put", &key, &value.to_string()]).expect("etcdctl put");
    let runs = [
        vec!["status", w.to_str().unwrap()],
        vec!["list"],
        vec!["doctor"],
    ];
    // And the debug log of each (the etcd client's own events included).
    for (args, log) in runs.iter().flat_map(|a| [(a, ""), (a, "debug")]) {
        let out = b.cmd(args).env("AGENTLOCK_LOG", log).output().unwrap();
        if !log.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("DEBUG fleet key "), "{args:?}: {err}");
        }
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
                "{args:?}: {text}"
            );
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with("holder: pid 4242 FORGED")),
                "{args:?}: {text}"
            );
        }
        if args[0] != "doctor" {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("\\x1b]0;pwned\\x07"),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
