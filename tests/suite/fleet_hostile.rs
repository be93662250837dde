//! The fleet store's keeper and claims on a messy, hostile machine: a keeper
//! restarted under a running `run`, a FIFO planted as a lock file the
//! keeper reads, `--force` on a fleet root shared by two hosts, and claims
//! from sandboxes with a PID namespace or a time namespace of their own.

use crate::common::*;
use crate::fleet::Host;
use crate::fleet_failures::WaitingRun;
use nix::sys::signal::Signal;
use std::process::Stdio;
use std::time::Duration;

fn status(h: &Host, w: &std::path::Path) -> serde_json::Value {
    entry(&h.run(&["status", "--json", w.to_str().unwrap()]).stdout)
}

/// `agentlock --store … ARGS` as host `h`, inside `unshare WRAP…` (which
/// must fork): the same environment as [`Host::cmd`].
fn sandboxed(h: &Host, wrap: &[&str], args: &[&str]) -> std::process::Output {
    unshared(h, wrap, args).output().unwrap()
}

/// `h`'s `agentlock ARGS` run through `unshare WRAP...`, with its
/// environment.
fn unshared(h: &Host, wrap: &[&str], args: &[&str]) -> std::process::Command {
    let base = h.cmd(args);
    let mut c = std::process::Command::new("unshare");
    c.args(wrap)
        .arg(base.get_program())
        .args(base.get_args())
        .stdin(Stdio::null());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// A keeper killed and started again (an upgrade, a systemd restart) moves
/// the records of its predecessor's lease onto its own: a `run` holding a
/// worker meanwhile goes on, well past the old lease's TTL.
#[test]
fn a_keeper_restart_does_not_stop_a_run() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("restart"));
    let w = a.worker("max");
    let run = WaitingRun::start(&sb, &a, &w);
    let old = a.keeper().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    let holder = sleeper();
    wait_for("a new keeper", Duration::from_secs(30), || {
        a.claim("other", holder.pid()).status.code() == Some(0) && a.keeper() != Some(old)
    });
    // Three TTLs of 3 s: the old lease is long gone.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(status(&a, &w)["state"], "held");
    run.finish_untouched();
}

/// A FIFO planted where a claim's lock file was: the keeper reads lock
/// files the careful way, so its sweep goes on and a dead holder's worker
/// elsewhere is still freed.
#[test]
fn a_planted_fifo_does_not_stop_the_sweep() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("fifo"));
    let holder = sleeper();
    assert_eq!(a.claim("trap", holder.pid()).status.code(), Some(0));
    let lock = lock_path(&a.worker("trap"));
    std::fs::remove_file(&lock).unwrap();
    nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // Five sweep periods (0.2 s here) with the FIFO in place before the
    // next claim: a keeper that opened it would be stuck by now.
    std::thread::sleep(Duration::from_secs(1));
    let doomed = sleeper();
    assert_eq!(a.claim("later", doomed.pid()).status.code(), Some(0));
    drop(doomed);
    let w = a.worker("later");
    wait_for(
        "the sweep to free the dead holder's worker",
        Duration::from_secs(60),
        || status(&a, &w)["state"] == "free",
    );
}

/// Two hosts share a fleet root: host B's `claim --force` takes over host
/// A's worker (store record and lock file), as it would on its own root.
#[test]
fn force_works_on_a_shared_fleet_root() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let (a, mut b) = Host::pair(&sb, &etcd.store("sharedforce"));
    b.root = a.root.clone();
    let (ha, hb) = (sleeper(), sleeper());
    assert_eq!(a.claim("max", ha.pid()).status.code(), Some(0));
    let w = b.worker("max");
    let p = hb.pid().to_string();
    let out = b.run(&[
        "claim",
        "--force",
        "--json",
        "--pid",
        &p,
        w.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(entry(&out.stdout)["action"], "took-over");
    assert_eq!(record_at(&w).pid, hb.pid());
    assert_eq!(status(&a, &a.worker("max"))["pid"], hb.pid());
}

/// Claims from a sandbox with its own PID namespace (the keeper's PID means
/// nothing there) and from one with its own time namespace (its
/// `CLOCK_BOOTTIME` runs 5000 s ahead) use the host's running keeper.
#[test]
fn claims_from_pid_and_time_namespaces_use_the_hosts_keeper() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("sandbox"));
    let holder = sleeper();
    assert_eq!(a.claim("first", holder.pid()).status.code(), Some(0));
    let keeper = a.keeper().unwrap();
    let outside = holder.pid().to_string();
    // In the PID namespace, `sh` is PID 1 and starts the holder as PID 2.
    let in_ns = ["sh", "-c", "sleep 100 & exec \"$@\"", "sh"];
    for (rel, wrap, pid) in [
        (
            "pidns",
            [&["--pid", "--fork", "--mount-proc"][..], &in_ns].concat(),
            "2",
        ),
        (
            "timens",
            vec!["--time", "--fork", "--boottime", "5000"],
            outside.as_str(),
        ),
    ] {
        let w = a.worker(rel);
        let args = ["claim", "--json", "--pid", pid, w.to_str().unwrap()];
        let out = sandboxed(&a, &wrap, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{rel}: {err}");
        assert_eq!(a.keeper(), Some(keeper), "{rel}: the same keeper");
    }
}

/// From a sandbox with a PID namespace of its own: when the host's keeper
/// died, a claim does not start one (it would die with the sandbox) and
/// says so;
/// with the host's keeper stopped, the claim fails (its renewals are late);
/// and once the sandbox is gone, its claim's record is swept.
#[test]
fn sandbox_claims_start_no_keeper_notice_a_stopped_one_and_are_swept() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("sandboxed"));
    let in_ns = [
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "sleep 100 & exec \"$@\"",
        "sh",
    ];
    let claim_in_ns = |rel: &str| {
        let w = a.worker(rel);
        sandboxed(&a, &in_ns, &["claim", "--pid", "2", w.to_str().unwrap()])
    };
    let holder = sleeper();
    assert_eq!(a.claim("host", holder.pid()).status.code(), Some(0));
    let first = a.keeper().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    wait_for("the keeper to die", Duration::from_secs(10), || {
        !pid_alive(first)
    });
    let refused = claim_in_ns("none");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("another PID namespace"), "{err}");
    assert_eq!(
        a.keeper(),
        Some(first),
        "no keeper was started in the sandbox"
    );
    assert_eq!(a.claim("host2", holder.pid()).status.code(), Some(0));
    // The sandbox's claim stands while it lives, and is swept once the
    // sandbox (PID 1 and the holder in it) is gone.
    let ok = claim_in_ns("boxed");
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let boxed = a.worker("boxed");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = status(&a, &boxed);
        if now["state"] == "free" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not swept: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let keeper = a.keeper().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(keeper), Signal::SIGSTOP).unwrap();
    let _cont = SignalOnDrop(keeper, Signal::SIGCONT);
    // Stopped for longer than one and a half renewal periods (1 s each).
    std::thread::sleep(Duration::from_millis(2500));
    let stopped = claim_in_ns("stopped");
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(2), "{err}");
    assert!(err.contains("last renewal was"), "{err}");
}

/// A lock file planted in a shared fleet root, naming another host's
/// fleet claim with a claim time far in the future, does not hold the
/// worker off.
#[test]
fn a_planted_mirror_from_the_future_blocks_nothing() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("future"));
    let holder = sleeper();
    assert_eq!(a.claim("warm", holder.pid()).status.code(), Some(0));
    let lease = record_at(&a.worker("warm")).fleet_lease.unwrap();
    let w = a.worker("max");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    let forged = serde_json::json!({
        "pid": 4242,
        "acquired_at": "2099-01-01T00:00:00Z",
        "hostname": "host-b",
        "boot_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "fleet_key": "/future/workers/max",
        "fleet_lease": lease,
        "fleet_dir": w.to_string_lossy(),
    });
    std::fs::write(lock_path(&w), forged.to_string()).unwrap();
    let out = a.claim("max", holder.pid());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(record_at(&w).pid, holder.pid());
}

/// This host's keeper runs in a time namespace (its boot time moved by a
/// day): start times it reads are shifted, and must still be compared in
/// the host's unit. A live holder in a PID namespace of its own (whose
/// record only the start time can clear) keeps its record through many
/// sweeps.
#[test]
fn a_keeper_in_a_time_namespace_sweeps_no_live_sandbox_record() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("timekeeper"));
    let k = unshared(
        &a,
        &["--time", "--fork", "--boottime", "86400"],
        &["keeper", "--foreground"],
    );
    let _keeper = Group::spawn(k);
    wait_for(
        "the keeper to publish its lease",
        Duration::from_secs(30),
        || a.keeper().is_some(),
    );
    let w = a.worker("boxed");
    let in_ns = [
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "sleep 1000 & \"$@\"; wait",
        "sh",
    ];
    let c = unshared(&a, &in_ns, &["claim", "--pid", "2", w.to_str().unwrap()]);
    let _sandbox = Group::spawn(c);
    wait_for("the sandbox's claim", Duration::from_secs(30), || {
        status(&a, &w)["state"] != "free"
    });
    // Three renewals (a second apart with a 3 s TTL) span many sweeps
    // (every 0.2 s).
    for _ in 0..3 {
        let seen = a.keeper_renewed();
        wait_for("a renewal", Duration::from_secs(30), || {
            a.keeper_renewed() != seen
        });
    }
    let now = status(&a, &w);
    assert_ne!(
        now["state"], "free",
        "a live holder's record was swept: {now}"
    );
}
