//! `doctor`, `list ROOT` and `claim --first-free` on the fleet store.

use crate::common::*;
use crate::fleet::{Host, fence_of};
use agentlock::fleet::StoreSpec;
use agentlock::fleet::etcd::Fleet;
use agentlock::record::LockRecord;
use std::time::Duration;

/// A `gt`-style lock written on host `host` (its hostname in the record).
fn lock_of(host: &str, pid: i32) -> String {
    go_lock(pid, None).replace(&hostname(), host)
}

fn etcdctl(etcd: &Etcd, args: &[&str]) -> String {
    let out = crate::common::etcdctl(&etcd.endpoint, args);
    String::from_utf8_lossy(&out.unwrap_or_else(|| panic!("etcdctl {args:?} failed"))).into_owned()
}

/// doctor on host A: A's own record of a dead holder is `stale` (fixed by
/// deleting it), a value that is not a record is `corrupt` (moved aside,
/// kept under `corrupt/`), a live local holder with no fleet record and one
/// whose record names host B are collisions (never fixed); B's live record
/// is left alone.
#[test]
fn doctor_judges_the_store_against_the_lock_files() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("doc");
    let (a, b) = Host::pair(&sb, &store);
    let spec = StoreSpec::parse(&store).unwrap();
    let fleet = Fleet::connect(&spec, Duration::from_secs(5)).unwrap();
    // A's record of a dead holder, on no lease (no keeper runs for A).
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let dead = LockRecord {
        pid: dead_pid(),
        hostname: Some("host-a".into()),
        boot_id: Some(boot.trim().into()),
        ..LockRecord::default()
    };
    let stale_key = format!("{}/workers/stale", spec.prefix);
    fleet.create(&stale_key, &dead, None).unwrap();
    a.worker("stale");
    // The same without a boot id (a clone named host-a, another writer):
    // not provably A's, so `held`, never deleted.
    let unproven = LockRecord {
        boot_id: None,
        ..dead.clone()
    };
    let clone_key = format!("{}/workers/clone", spec.prefix);
    let (lease, _) = fleet.grant(300).unwrap();
    fleet.create(&clone_key, &unproven, Some(lease)).unwrap();
    let clone = a.worker("clone");
    // Another host's record on no lease: it never expires.
    let forever = LockRecord {
        hostname: Some("host-z".into()),
        ..unproven.clone()
    };
    let forever_key = format!("{}/workers/forever", spec.prefix);
    fleet.create(&forever_key, &forever, None).unwrap();
    a.worker("forever");
    etcdctl(
        &etcd,
        &["put", &format!("{}/workers/junk", spec.prefix), "{not json"],
    );
    a.worker("junk");
    // A live gt holder on A that the fleet does not know.
    let gt = sleeper();
    write_lock(&a.worker("gt"), &lock_of("host-a", gt.pid()));
    // B holds "both" on the store; A's lock file says a live A process does.
    let hb = sleeper();
    assert_eq!(b.claim("both", hb.pid()).status.code(), Some(0));
    let ha = sleeper();
    write_lock(&a.worker("both"), &lock_of("host-a", ha.pid()));
    let root = a.root.to_str().unwrap().to_string();
    let report = json(&a.run(&["doctor", "--json", &root]).stdout);
    let kinds = |r: &serde_json::Value| {
        let mut k: Vec<(String, String)> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let w = f["worker_dir"].as_str().unwrap();
                let name = w.rsplit('/').next().unwrap().to_string();
                (f["kind"].as_str().unwrap().to_string(), name)
            })
            .collect();
        k.sort();
        k
    };
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, w)| (k.to_string(), w.to_string()))
            .collect()
    };
    assert_eq!(
        kinds(&report),
        want(&[
            ("collision", "both"),
            ("collision", "gt"),
            ("corrupt", "junk"),
            ("stale", "stale"),
            ("unverified", "clone"),
            ("unverified", "forever")
        ]),
        "{report:#}"
    );
    let msgs = report["findings"].to_string();
    assert!(msgs.contains("host-b"), "{msgs}");
    assert!(
        msgs.contains("not this boot") && msgs.contains("no lease"),
        "{msgs}"
    );
    let fixed = a.run(&["doctor", "--fix", "--json", &root]);
    assert_eq!(fixed.status.code(), Some(1), "collisions remain");
    let after = json(&fixed.stdout);
    assert_eq!(
        kinds(&after),
        want(&[
            ("collision", "both"),
            ("collision", "gt"),
            ("unverified", "clone"),
            ("unverified", "forever")
        ]),
        "{after:#}"
    );
    let actions: Vec<&str> = after["fixed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 2, "{after:#}");
    assert!(actions.contains(&"removed") && actions.contains(&"moved-aside"));
    assert!(fleet.get(&stale_key).unwrap().is_none());
    assert!(fleet.get(&clone_key).unwrap().is_some());
    let seen = a.run(&["status", "--json", clone.to_str().unwrap()]);
    assert_eq!(entry(&seen.stdout)["state"], "held");
    // The corrupt value is kept aside, byte for byte.
    let aside = etcdctl(
        &etcd,
        &["get", "--prefix", &format!("{}/corrupt/", spec.prefix)],
    );
    assert!(aside.contains("{not json"), "{aside}");
    // B's record and both lock files are untouched.
    let wb = b.worker("both");
    let seen = b.run(&["status", "--json", wb.to_str().unwrap()]);
    assert_eq!(entry(&seen.stdout)["hostname"], "host-b");
    assert!(lock_path(&a.worker("gt")).exists() && lock_path(&a.worker("both")).exists());
    // A's own live fleet claim whose lock file was removed by hand: gt would
    // see the worker free.
    let hm = sleeper();
    assert_eq!(a.claim("mirror", hm.pid()).status.code(), Some(0));
    std::fs::remove_file(lock_path(&a.worker("mirror"))).unwrap();
    // One whose lock file is there, in a directory the scan skips: no
    // finding (its lock file is read, not looked up in the scan).
    assert_eq!(a.claim("node_modules/w6", hm.pid()).status.code(), Some(0));
    let again = json(&a.run(&["doctor", "--json", &root]).stdout);
    assert_eq!(
        kinds(&again),
        want(&[
            ("collision", "both"),
            ("collision", "gt"),
            ("collision", "mirror"),
            ("unverified", "clone"),
            ("unverified", "forever")
        ]),
        "{again:#}"
    );
    assert!(
        again["findings"].to_string().contains("is missing"),
        "{again:#}"
    );
}

/// `claim --first-free` on the store: skips a worker another host holds and
/// one the claimant already holds; `list ROOT` shows only the workers under
/// ROOT.
#[test]
fn first_free_and_list_root_on_the_store() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("pool");
    let (a, b) = Host::pair(&sb, &store);
    let hb = sleeper();
    assert_eq!(b.claim("pool/p1", hb.pid()).status.code(), Some(0));
    let me = sleeper();
    let pool: Vec<String> = ["p1", "p2", "p3"]
        .iter()
        .map(|p| a.worker(&format!("pool/{p}")).to_str().unwrap().to_string())
        .collect();
    let first_free = |json: bool| {
        let mut args = vec!["claim", "--first-free", "--pid"];
        let pid = me.pid().to_string();
        args.push(&pid);
        if json {
            args.push("--json");
        }
        args.extend(pool.iter().map(String::as_str));
        a.run(&args)
    };
    let one = first_free(false);
    assert_eq!(
        one.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let canon = |p: &str| {
        std::fs::canonicalize(p)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(String::from_utf8_lossy(&one.stdout).trim(), canon(&pool[1]));
    // Again for the same holder: p2 is its own, not free; p3 is next.
    let two = first_free(true);
    assert_eq!(two.status.code(), Some(0));
    let doc = json(&two.stdout);
    let ws = doc["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 3, "{doc:#}");
    assert_eq!(ws[0]["action"], "refused");
    assert_eq!(ws[0]["hostname"], "host-b");
    assert_eq!(ws[1]["action"], "refused");
    assert_eq!(ws[2]["action"], "claimed");
    assert_eq!(ws[2]["worker_dir"], canon(&pool[2]).as_str());
    assert!(ws[2]["fence"].as_i64().unwrap() > ws[0]["fence"].as_i64().unwrap());
    // Nothing left.
    let none = first_free(false);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no free worker"));
    // list ROOT: only what is under it.
    a.worker("other/x");
    let hx = sleeper();
    let x = a.claim("other/x", hx.pid());
    assert_eq!(x.status.code(), Some(0));
    let all = json(&a.run(&["list", "--json"]).stdout);
    assert_eq!(all["locks"].as_array().unwrap().len(), 4, "{all:#}");
    let under = a.root.join("pool");
    let some = json(&a.run(&["list", "--json", under.to_str().unwrap()]).stdout);
    let locks = some["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 3, "{some:#}");
    assert!(locks.iter().all(|l| l["fence"].as_i64().is_some()));
    assert!(fence_of(&x) > 0);
    // One clear line, exit 2: ROOT outside the fleet root, tree-walking
    // flags (the store is not walked), a fleet root that does not exist.
    let elsewhere = sb.worker("elsewhere");
    for (args, says) in [
        (
            vec!["list", elsewhere.to_str().unwrap()],
            "not inside the fleet root",
        ),
        (vec!["list", "--skip", "pool"], "--skip"),
    ] {
        let out = a.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let out = sb
        .cmd()
        .args([
            "--store",
            &store,
            "--fleet-root",
            "/nonexistent/town",
            "doctor",
        ])
        .arg(sb.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/town") && err.lines().count() == 1,
        "{err}"
    );
}

/// A claim over a value that is not a record keeps the value aside (under
/// `corrupt/`), as a claim over a corrupt lock file moves it aside.
#[test]
fn a_claim_over_a_corrupt_value_keeps_it_aside() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let store = etcd.store("junk");
    let a = Host::new(&sb, "host-a", &store);
    etcdctl(&etcd, &["put", "/junk/workers/max", "\u{1}garbage"]);
    let me = sleeper();
    let out = a.claim("max", me.pid());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entry(&out.stdout)["action"], "replaced-corrupt");
    let aside = etcdctl(&etcd, &["get", "--prefix", "/junk/corrupt/"]);
    assert!(
        aside.contains("/junk/corrupt/max@") && aside.contains("garbage"),
        "{aside}"
    );
}

/// A host whose boot id cannot be read refuses fleet claims: its records
/// could never be proven its own, so nobody could ever judge them stale.
#[test]
fn a_host_without_a_boot_id_refuses_fleet_claims() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let a = Host::new(&sb, "host-a", &etcd.store("noboot"));
    let w = a.worker("max");
    let empty = sb.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let me = sleeper();
    let hide = format!(
        "mount --bind '{}' /proc/sys/kernel/random/boot_id &&",
        empty.display()
    );
    let out = a
        .cmd_after(
            &hide,
            &["claim", "--pid", &me.pid().to_string(), w.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boot_id") && err.lines().count() == 1, "{err}");
    assert!(!lock_path(&w).exists(), "nothing local either");
    let seen = a.run(&["status", "--json", w.to_str().unwrap()]);
    assert_eq!(entry(&seen.stdout)["state"], "free");
}
