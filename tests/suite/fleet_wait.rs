//! `--wait` on the fleet store, against a real etcd: a waiter on one host
//! woken by the etcd watch when another host gives the worker up, arrival
//! order across hosts (the store's create revisions), a dead waiter of the
//! same host removed from the queue, and the timeout.

use crate::common::*;
use crate::fleet::Host;
use agentlock::wait::NET_COVERED;
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// How many waiters queue for `rel` on the store.
fn waiters(etcd: &Etcd, prefix: &str, rel: &str) -> usize {
    let out = etcdctl(
        &etcd.endpoint,
        &[
            "get",
            "--prefix",
            "--keys-only",
            &format!("/{prefix}/waiters/{rel}/"),
        ],
    )
    .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Two hosts on `store`, with leases long enough that a loaded machine
/// never lets one expire mid-test (an expired lease frees its host's
/// workers: a waiter would rightly take one out of turn).
fn hosts(sb: &Sandbox, store: &str) -> (Host, Host) {
    let (mut a, mut b) = Host::pair(sb, store);
    a.ttl = 10;
    b.ttl = 10;
    (a, b)
}

/// Every change under `/prefix/` so far (for a failure message).
fn history(etcd: &Etcd, prefix: &str) -> String {
    let out = etcdctl(&etcd.endpoint, &["get", "x", "-w", "json"]).unwrap_or_default();
    let rev = json(&out)["header"]["revision"].as_i64().unwrap_or(0);
    let mut h = String::new();
    for r in 1..=rev {
        let kvs = etcdctl(
            &etcd.endpoint,
            &[
                "get",
                "--prefix",
                &format!("/{prefix}/"),
                "--rev",
                &r.to_string(),
            ],
        )
        .unwrap_or_default();
        h.push_str(&format!("--- rev {r}\n{}", String::from_utf8_lossy(&kvs)));
    }
    h
}

fn spawn(c: &mut std::process::Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (i32, serde_json::Value, String) {
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), doc, err)
}

#[test]
fn a_waiter_on_another_host_is_woken_by_the_release() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let (a, b) = hosts(&sb, &etcd.store("fw1"));
    let (ha, hb) = (sleeper(), sleeper());
    let w = b.worker("rig/max");
    assert_eq!(a.claim("rig/max", ha.pid()).status.code(), Some(0));
    let c = spawn(&mut b.cmd(&[
        "claim",
        "--wait=60s",
        "--json",
        "--pid",
        &hb.pid().to_string(),
        w.to_str().unwrap(),
    ]));
    wait_for("the waiter queued", LIMIT, || {
        waiters(&etcd, "fw1", "rig/max") == 1
    });
    let aw = a.worker("rig/max");
    let rel = a.run(&[
        "release",
        "--pid",
        &ha.pid().to_string(),
        aw.to_str().unwrap(),
    ]);
    assert_eq!(rel.status.code(), Some(0), "{rel:?}");
    let (code, doc, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(doc["workers"][0]["pid"], hb.pid());
    assert_eq!(doc["workers"][0]["hostname"], "host-b");
    assert!(
        doc["waited"].as_f64().unwrap() < NET_COVERED.as_secs_f64(),
        "woken by the watch: {doc}"
    );
    assert_eq!(waiters(&etcd, "fw1", "rig/max"), 0, "the queue key is gone");
}

#[test]
fn waiters_on_two_hosts_are_served_in_arrival_order() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let (a, b) = hosts(&sb, &etcd.store("fw2"));
    let order = sb.path().join("order");
    let mut holder = sleeper();
    assert_eq!(a.claim("max", holder.pid()).status.code(), Some(0));
    let mut runs = Vec::new();
    for i in 0..8 {
        let h = if i % 2 == 0 { &b } else { &a };
        let w = h.worker("max");
        let sh = format!("echo {i} >> {}", order.display());
        runs.push(Proc(
            h.cmd(&["run", "--wait", w.to_str().unwrap(), "--", "sh", "-c", &sh])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        wait_for("the waiter queued", LIMIT, || {
            waiters(&etcd, "fw2", "max") == i + 1
        });
    }
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    for r in &mut runs {
        let st = r.0.wait().unwrap();
        assert!(st.success(), "{st}");
    }
    let got: Vec<usize> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert_eq!(waiters(&etcd, "fw2", "max"), 0);
}

#[test]
fn a_dead_waiter_of_this_host_leaves_the_queue_and_a_timeout_refuses() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let (a, b) = hosts(&sb, &etcd.store("fw3"));
    let holder = sleeper();
    let w = b.worker("max");
    assert_eq!(a.claim("max", holder.pid()).status.code(), Some(0));
    // A timeout: the refusal, with how long it waited, or the conflict code.
    let out = b.run(&[
        "claim",
        "--wait=300ms",
        "--json",
        "--pid",
        &std::process::id().to_string(),
        w.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out.stdout);
    assert_eq!(doc["workers"][0]["action"], "refused");
    assert!(doc["waited"].as_f64().unwrap() >= 0.3, "{doc}");
    let out = b.run(&[
        "claim",
        "--wait=100ms",
        "--conflict-exit-code",
        "5",
        "--pid",
        &std::process::id().to_string(),
        w.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(waiters(&etcd, "fw3", "max"), 0);
    // A waiter SIGKILLed in the queue: the next one on its host removes it.
    let first = sleeper();
    let mut dead = Proc(spawn(&mut b.cmd(&[
        "claim",
        "--wait",
        "--pid",
        &first.pid().to_string(),
        w.to_str().unwrap(),
    ])));
    wait_for("the first waiter queued", LIMIT, || {
        waiters(&etcd, "fw3", "max") == 1
    });
    let me = sleeper();
    let c = spawn(&mut b.cmd(&[
        "claim",
        "--wait=60s",
        "--json",
        "--pid",
        &me.pid().to_string(),
        w.to_str().unwrap(),
    ]));
    wait_for("the second waiter queued", LIMIT, || {
        waiters(&etcd, "fw3", "max") == 2
    });
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    let aw = a.worker("max");
    let rel = a.run(&["release", "--force", aw.to_str().unwrap()]);
    assert_eq!(rel.status.code(), Some(0));
    let (code, doc, err) = finish(c);
    assert_eq!(
        code,
        0,
        "first (the dead waiter's claimant) {}, me {}: {err}\n{}\n{}",
        first.pid(),
        me.pid(),
        crate::fleet_failures::keeper_log(&sb, "host-b"),
        history(&etcd, "fw3")
    );
    assert_eq!(doc["workers"][0]["pid"], me.pid());
    assert_eq!(
        waiters(&etcd, "fw3", "max"),
        0,
        "the dead waiter's key was removed"
    );
    // A waiter killed with nobody behind it (the worker is `me`'s now):
    // its host's keeper sweeps it.
    let mut alone = Proc(spawn(&mut a.cmd(&[
        "claim",
        "--wait",
        "--pid",
        &first.pid().to_string(),
        aw.to_str().unwrap(),
    ])));
    wait_for("the lone waiter queued", LIMIT, || {
        waiters(&etcd, "fw3", "max") == 1
    });
    alone.0.kill().unwrap();
    alone.0.wait().unwrap();
    wait_for("the keeper to sweep the dead waiter", LIMIT, || {
        waiters(&etcd, "fw3", "max") == 0
    });
}
