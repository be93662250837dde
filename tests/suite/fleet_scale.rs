//! The fleet store at size and on a messy network: a fleet whose records
//! exceed a gRPC message (listed and swept page by page), a value near
//! etcd's request limit, writes whose answers are lost (a proxy that lets
//! requests through and drops the answers), a release racing the keeper's
//! sweep, and a fleet root shared by two hosts (NFS homes).

use crate::common::*;
use crate::fleet::{Host, fence_of};
use agentlock::record::LockRecord;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes `n` well-formed records of host `host-x` (alive for everyone
/// else: another host's) under `<prefix>/workers/fill/NNNNNN`, 128 puts a
/// transaction, with the etcd client itself.
fn fill(endpoint: &str, prefix: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let rec = LockRecord {
            pid: 4242,
            hostname: Some("host-x".into()),
            boot_id: Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
            session_id: Some("agent-with-a-long-session-name".into()),
            tmux_socket: Some("/tmp/tmux-1000/default".into()),
            ..LockRecord::default()
        }
        .to_json();
        for chunk in (0..n).collect::<Vec<_>>().chunks(128) {
            let ops: Vec<etcd_client::TxnOp> = chunk
                .iter()
                .map(|i| {
                    etcd_client::TxnOp::put(
                        format!("/{prefix}/workers/fill/{i:06}"),
                        rec.clone(),
                        None,
                    )
                })
                .collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
        }
    });
}

/// 20,000 records (about 8 MiB, twice a gRPC message): `list` shows every
/// one, and this host's keeper still sweeps a dead holder's record that
/// sorts after all of them.
#[test]
fn a_fleet_larger_than_a_message_lists_and_sweeps() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("big"));
    fill(&etcd.endpoint, "big", 20_000);
    let doomed = sleeper();
    assert_eq!(a.claim("zz-last", doomed.pid()).status.code(), Some(0));
    let list = a.run(&["list", "--json"]);
    assert_eq!(
        list.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(
        json(&list.stdout)["locks"].as_array().unwrap().len(),
        20_001
    );
    drop(doomed);
    let w = a.worker("zz-last");
    wait_for(
        "the keeper to sweep the dead holder",
        Duration::from_secs(60),
        || {
            let s = a.run(&["status", "--json", w.to_str().unwrap()]);
            entry(&s.stdout)["state"] == "free"
        },
    );
    assert!(
        !lock_path(&w).exists(),
        "the sweep removed the lock file too"
    );
}

/// A value just under etcd's 1.5 MiB request limit, which cannot be kept
/// aside in one request: `claim` refuses naming `--force`, `doctor --fix`
/// reports it without failing, and `claim --force` replaces it.
#[test]
fn a_value_too_large_to_keep_aside_is_replaced_by_force_only() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("huge"));
    let mut put = std::process::Command::new("etcdctl")
        .args(["--endpoints", &etcd.endpoint, "put", "/huge/workers/max"])
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Within a few hundred bytes of the 1.5 MiB request limit: stored, but
    // not copied aside with a record in one more request.
    let big = "x".repeat(1_572_800);
    put.stdin.take().unwrap().write_all(big.as_bytes()).unwrap();
    assert!(put.wait().unwrap().success());
    let holder = sleeper();
    let plain = a.claim("max", holder.pid());
    let text = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(plain.status.code(), Some(1), "{text}");
    assert!(
        text.contains("too large") && text.contains("--force"),
        "{text}"
    );
    let doctor = a.run(&["doctor", "--fix", "--json", a.root.to_str().unwrap()]);
    let report = json(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{report}");
    assert!(report.to_string().contains("too large"), "{report}");
    let w = a.worker("max");
    let p = holder.pid().to_string();
    let forced = a.run(&[
        "claim",
        "--force",
        "--json",
        "--pid",
        &p,
        w.to_str().unwrap(),
    ]);
    assert_eq!(forced.status.code(), Some(0), "{forced:?}");
    assert_eq!(entry(&forced.stdout)["pid"], holder.pid());
}

/// A TCP proxy in front of an etcd member that forwards every request and
/// drops the answers to those that mention `marker` (HTTP/2 frames of
/// their streams): the write is applied, its answer is lost.
pub fn lossy_proxy(upstream: &str, marker: &'static [u8]) -> String {
    let up = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&up) else {
                continue;
            };
            let marked = Arc::new(Mutex::new(Vec::<u32>::new()));
            let (c2, s2, m2) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                marked.clone(),
            );
            std::thread::spawn(move || {
                frames(c2, s2, 24, |id, payload| {
                    if id != 0 && payload.windows(marker.len()).any(|w| w == marker) {
                        m2.lock().unwrap().push(id);
                    }
                    true
                })
            });
            std::thread::spawn(move || {
                frames(server, client, 0, |id, _| {
                    id == 0 || !marked.lock().unwrap().contains(&id)
                })
            });
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

/// Copies HTTP/2 frames from `from` to `to` (after `skip` preface bytes),
/// each only if `keep(stream id, payload)`.
fn frames(
    mut from: TcpStream,
    mut to: TcpStream,
    skip: usize,
    mut keep: impl FnMut(u32, &[u8]) -> bool,
) {
    let mut pre = vec![0; skip];
    if from.read_exact(&mut pre).is_err() || to.write_all(&pre).is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if from.read_exact(&mut head).is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        if from.read_exact(&mut payload).is_err() {
            return;
        }
        if keep(id, &payload) && (to.write_all(&head).is_err() || to.write_all(&payload).is_err()) {
            return;
        }
    }
}

/// Every write about these workers reaches etcd through the proxy first and
/// its answer is lost: each command still tells the truth, and the store,
/// the lock files and the exit codes agree.
#[test]
fn writes_whose_answers_are_lost_are_judged_by_what_landed() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let proxy = lossy_proxy(&etcd.endpoint, b"lostanswer");
    let direct = etcd.endpoint.trim_start_matches("http://");
    let a = Host::new(&sb, "host-a", &format!("etcd://{proxy},{direct}/lossy"));
    let holder = sleeper();
    let p = holder.pid().to_string();
    let path = |rel: &str| a.worker(rel).to_string_lossy().into_owned();
    let status = |rel: &str| entry(&a.run(&["status", "--json", &path(rel)]).stdout);

    let first = a.claim("lostanswer1", holder.pid());
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(status("lostanswer1")["fence"], fence_of(&first));

    let ff = a.run(&[
        "claim",
        "--first-free",
        "--json",
        "--pid",
        &p,
        &path("lostanswer2"),
        &path("lostanswer3"),
    ]);
    assert_eq!(ff.status.code(), Some(0), "{ff:?}");
    assert_eq!(status("lostanswer2")["state"], "held");
    assert_eq!(
        status("lostanswer3")["state"],
        "free",
        "one claim, one worker"
    );

    let doomed = sleeper();
    assert_eq!(a.claim("lostanswer4", doomed.pid()).status.code(), Some(0));
    drop(doomed);
    let again = a.claim("lostanswer4", holder.pid());
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(status("lostanswer4")["pid"], holder.pid());

    for (rel, args) in [
        ("lostanswer1", vec!["--force"]),
        ("lostanswer2", vec!["--pid", p.as_str()]),
    ] {
        let mut full = vec!["release", "--json"];
        full.extend(args);
        let w = path(rel);
        full.push(&w);
        let out = a.run(&full);
        assert_eq!(out.status.code(), Some(0), "{rel}: {out:?}");
        assert_eq!(status(rel)["state"], "free", "{rel}");
        assert!(!lock_path(&a.worker(rel)).exists(), "{rel}");
    }
}

/// An exit hook releasing its just-exited agent's worker races the keeper
/// sweeping it: whoever wins, `release --pid` and `release --force` exit 0
/// and leave no lock file and no record.
#[test]
fn a_release_racing_the_sweep_leaves_nothing_behind() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("race"));
    for round in 0..20 {
        let rel = format!("w{round}");
        let agent = sleeper();
        let pid = agent.pid().to_string();
        assert_eq!(a.claim(&rel, agent.pid()).status.code(), Some(0));
        drop(agent);
        let w = a.worker(&rel);
        let args = if round % 2 == 0 {
            vec!["--pid", pid.as_str()]
        } else {
            vec!["--force"]
        };
        let mut full = vec!["release"];
        full.extend(args);
        let ws = w.to_string_lossy().into_owned();
        full.push(&ws);
        let out = a.run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "round {round}: {err}");
        assert!(!lock_path(&w).exists(), "round {round}: lock file left");
        let s = a.run(&["status", "--json", &ws]);
        assert_eq!(entry(&s.stdout)["state"], "free", "round {round}");
    }
}

/// Hosts A and B share one fleet root (NFS homes): A's lock file is judged
/// by the store from B: held while A's claim stands; claimable once A's
/// holder died and A's keeper swept it, or once A's lease expired (A died).
#[test]
fn a_fleet_root_shared_by_two_hosts_is_judged_by_the_store() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let (a, mut b) = Host::pair(&sb, &etcd.store("shared"));
    b.root = a.root.clone();
    let (ha, hb) = (sleeper(), sleeper());
    assert_eq!(a.claim("max", ha.pid()).status.code(), Some(0));
    let refused = b.claim("max", hb.pid());
    assert_eq!(refused.status.code(), Some(1));
    let e = entry(&refused.stdout);
    assert_eq!(e["state"], "held", "{e}");
    assert!(e["reason"].as_str().unwrap().contains("host-a"), "{e}");
    // A's holder dies: A's keeper sweeps the record and the lock file.
    let doomed = sleeper();
    assert_eq!(a.claim("toast", doomed.pid()).status.code(), Some(0));
    drop(doomed);
    wait_for(
        "B to claim the swept worker",
        Duration::from_secs(60),
        || b.claim("toast", hb.pid()).status.code() == Some(0),
    );
    // Host A dies (its keeper with it): once its lease expires, B claims
    // over A's lock file, whose holder B cannot see.
    let keeper = a.keeper().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "B to claim after A's lease expired",
        Duration::from_secs(60),
        || b.claim("max", hb.pid()).status.code() == Some(0),
    );
    assert_eq!(record_at(&a.worker("max")).pid, hb.pid());
}
