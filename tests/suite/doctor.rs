//! `list` and `doctor` on real trees: every finding kind, `--fix` changing
//! exactly the fixable things, collisions from real tmux panes, tmux failing
//! during a fix, and the scan rules.

use crate::common::*;

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Sets a file's mtime into the past.
fn age_file(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(chrono::Utc::now().timestamp() - secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// `(a, b)` string pairs from the objects of `report[key]`, sorted.
fn pairs(report: &Value, key: &str, a: &str, b: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[a].as_str().unwrap().to_string(),
                f[b].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `(kind, worker_dir)` of the findings or fixes of a report.
fn kinds(report: &Value, key: &str) -> Vec<(String, String)> {
    pairs(report, key, "kind", "worker_dir")
}

/// Fields drop in order: the tmux server and the processes end before the
/// sandbox (and the socket in it) is deleted.
struct Town {
    _tmux: Tmux,
    _procs: Vec<Proc>,
    sb: Sandbox,
    root: PathBuf,
    outside: tempfile::TempDir,
}

impl Town {
    fn w(&self, name: &str) -> String {
        self.root.join(name).to_str().unwrap().to_string()
    }
}

/// A town with a worker in every state.
fn sample_town() -> Town {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("target.lock"), go_lock(1, None)).unwrap();
    let tmux = sb.tmux("town", "keeper");
    let mut procs = Vec::new();

    let held = sb.worker("town/rig/crew/held");
    let p = sleeper();
    sb.claim(&held, p.pid(), &["-q"]).code(0);
    procs.push(p);

    let by_session = sb.worker("town/rig/polecats/by-session");
    tmux.new_session("agent", &by_session);
    write_lock(
        &by_session,
        &go_lock(dead_pid(), Some(&tmux.pane_id("agent"))),
    );

    write_lock(
        &sb.worker("town/rig/polecats/stale"),
        &go_lock(dead_pid(), Some("long-gone")),
    );

    let orphan = sleeper();
    write_lock(
        &sb.worker("town/rig/polecats/orphaned"),
        &go_lock(orphan.pid(), Some("vanished")),
    );
    procs.push(orphan);

    write_lock(&sb.worker("town/rig/polecats/corrupt"), "{\"pid\": 12,");

    let dir_lock = sb.worker("town/rig/polecats/dir-lock");
    std::fs::create_dir_all(lock_path(&dir_lock).join("inside")).unwrap();

    let link = sb.worker("town/rig/polecats/symlink");
    std::fs::create_dir_all(link.join(".runtime")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("target.lock"), lock_path(&link)).unwrap();

    let temp = sb.worker("town/rig/polecats/temp");
    std::fs::create_dir_all(temp.join(".runtime")).unwrap();
    std::fs::write(
        temp.join(format!(".runtime/agent.lock.tmp.{}.x1y2z3", dead_pid())),
        "{\"pid\":",
    )
    .unwrap();
    let go_tmp = temp.join(".runtime/agent.lock.tmp");
    std::fs::write(&go_tmp, "{").unwrap();
    age_file(&go_tmp, 120);
    // A live writer's temp file is not a leftover.
    std::fs::write(
        temp.join(format!(
            ".runtime/agent.lock.tmp.{}.live00",
            std::process::id()
        )),
        "",
    )
    .unwrap();

    write_lock(
        &sb.worker("town/rig/polecats/foreign"),
        r#"{"pid":77,"acquired_at":"2026-01-05T10:00:00Z","hostname":"far-away-host"}"#,
    );

    let locked_out = sb.worker("town/rig/unreadable");
    write_lock(&locked_out.join("w"), &go_lock(dead_pid(), None));
    std::fs::set_permissions(&locked_out, std::fs::Permissions::from_mode(0o000)).unwrap();

    // Never looked into: a lock below a default-skipped directory.
    write_lock(
        &sb.worker("town/rig/crew/held/node_modules/pkg"),
        &go_lock(dead_pid(), None),
    );

    Town {
        sb,
        root: root.canonicalize().unwrap(),
        outside,
        _tmux: tmux,
        _procs: procs,
    }
}

impl Drop for Town {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(
            self.root.join("rig/unreadable"),
            std::fs::Permissions::from_mode(0o755),
        );
    }
}

#[test]
fn doctor_reports_every_kind_and_fix_changes_exactly_the_fixable_ones() {
    let town = sample_town();
    let sb = &town.sb;
    let out = sb
        .cmd_no_dac()
        .args(["doctor", "--json"])
        .arg(&town.root)
        .assert()
        .code(1);
    let report = json(&out.get_output().stdout);
    let want: Vec<(String, String)> = vec![
        ("corrupt", "rig/polecats/corrupt"),
        ("corrupt", "rig/polecats/dir-lock"),
        ("corrupt", "rig/polecats/symlink"),
        ("leftover-temp", "rig/polecats/temp"),
        ("leftover-temp", "rig/polecats/temp"),
        ("orphaned", "rig/polecats/orphaned"),
        ("scan-error", "rig/unreadable"),
        ("stale", "rig/polecats/stale"),
        ("unverified", "rig/polecats/foreign"),
    ]
    .into_iter()
    .map(|(k, w)| (k.to_string(), town.w(w)))
    .collect();
    assert_eq!(kinds(&report, "findings"), want, "{report:#}");
    let fixable: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["fixable"] == true)
        .map(|f| f["worker_dir"].as_str().unwrap())
        .collect();
    let expect_fixable: BTreeSet<String> = ["corrupt", "dir-lock", "temp", "stale"]
        .iter()
        .map(|w| town.w(&format!("rig/polecats/{w}")))
        .collect();
    assert_eq!(fixable, expect_fixable.iter().map(String::as_str).collect());
    let states = pairs(&report, "locks", "worker_dir", "state");
    assert!(
        states.contains(&(town.w("rig/crew/held"), "held".into())),
        "{states:?}"
    );
    assert!(states.contains(&(town.w("rig/polecats/by-session"), "held-by-session".into())));
    assert_eq!(report["tmux"]["state"], "known");
    assert_eq!(report["fixed"], Value::Array(vec![]));
    assert_eq!(report["root"], town.root.to_str().unwrap());

    // The read-only run changed nothing.
    let before = tree_digest(&town.root);
    let outside_before = tree_digest(town.outside.path());
    let out = sb
        .cmd_no_dac()
        .args(["doctor"])
        .arg(&town.root)
        .assert()
        .code(1);
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("fixable with --fix"), "{text}");
    assert_eq!(tree_digest(&town.root), before);

    let out = sb
        .cmd_no_dac()
        .args(["doctor", "--fix", "--json"])
        .arg(&town.root)
        .assert()
        .code(1);
    let report = json(&out.get_output().stdout);
    let fixed = kinds(&report, "fixed");
    assert_eq!(
        fixed,
        vec![
            ("corrupt".to_string(), town.w("rig/polecats/corrupt")),
            ("corrupt".to_string(), town.w("rig/polecats/dir-lock")),
            ("leftover-temp".to_string(), town.w("rig/polecats/temp")),
            ("leftover-temp".to_string(), town.w("rig/polecats/temp")),
            ("stale".to_string(), town.w("rig/polecats/stale")),
        ]
    );
    // What is left: exactly the unfixable findings.
    let left: BTreeSet<String> = kinds(&report, "findings")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        ["corrupt", "orphaned", "scan-error", "unverified"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // Everything outside the fixed workers' .runtime dirs is byte-identical.
    let touched: Vec<PathBuf> = ["corrupt", "dir-lock", "temp", "stale"]
        .iter()
        .map(|w| town.root.join("rig/polecats").join(w).join(".runtime"))
        .collect();
    let strip = |d: Vec<(PathBuf, String)>| -> Vec<(PathBuf, String)> {
        d.into_iter()
            .filter(|(p, _)| !touched.iter().any(|t| p.starts_with(t)))
            .collect()
    };
    assert_eq!(strip(tree_digest(&town.root)), strip(before.clone()));
    assert_eq!(
        tree_digest(town.outside.path()),
        outside_before,
        "symlink target untouched"
    );
    // And inside them, exactly the repairs.
    let names = |w: &str| -> BTreeSet<String> {
        std::fs::read_dir(town.root.join("rig/polecats").join(w).join(".runtime"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .map(|n| {
                if n.starts_with("agent.lock.corrupt-") {
                    "agent.lock.corrupt-*".into()
                } else {
                    n
                }
            })
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names("stale"), set(&["agent.lock.flock"]));
    assert_eq!(
        names("corrupt"),
        set(&["agent.lock.corrupt-*", "agent.lock.flock"])
    );
    assert_eq!(
        names("dir-lock"),
        set(&["agent.lock.corrupt-*", "agent.lock.flock"])
    );
    let live_tmp = format!("agent.lock.tmp.{}.live00", std::process::id());
    assert_eq!(names("temp"), set(&["agent.lock.flock", &live_tmp]));

    // A second fix finds nothing more to fix.
    let out = sb
        .cmd_no_dac()
        .args(["doctor", "--fix", "--json"])
        .arg(&town.root)
        .assert()
        .code(1);
    assert_eq!(
        json(&out.get_output().stdout)["fixed"],
        Value::Array(vec![])
    );
}

#[test]
fn list_prints_one_aligned_row_per_worker_sorted() {
    let town = sample_town();
    let out = town
        .sb
        .cmd_no_dac()
        .args(["list"])
        .arg(&town.root)
        .assert()
        .code(2);
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("rig/unreadable"),
        "scan errors are reported: {err}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("WORKER"), "{text}");
    let workers: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut sorted = workers.clone();
    sorted.sort();
    assert_eq!(workers, sorted);
    // held, by-session, stale, orphaned, corrupt, dir-lock, symlink, foreign ("temp" has no lock).
    assert_eq!(workers.len(), 8, "{text}");
    let state_col = lines[0].find("STATE").unwrap();
    for l in &lines[1..] {
        assert!(l[..state_col].ends_with("  "), "columns aligned: {l:?}");
    }
    assert!(text.contains("rig/polecats/by-session"));
    assert!(text.contains("held-by-session"));
    assert!(!text.contains('\x1b'), "no colour when piped");
}

#[test]
fn collisions_from_real_panes() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let (w1, w2, w3) = (
        sb.worker("town/w1"),
        sb.worker("town/w2"),
        sb.worker("town/w3"),
    );
    let tmux = sb.tmux("c", "keeper");
    // Two panes in w1; the lock names only the first.
    tmux.new_session("owner", &w1);
    tmux.new_session("intruder", &w1.join("."));
    let holder = sleeper();
    write_lock(&w1, &go_lock(holder.pid(), Some(&tmux.pane_id("owner"))));
    // One pane holding w2 and w3.
    tmux.new_session("greedy", sb.path());
    let greedy = tmux.pane_id("greedy");
    write_lock(&w2, &go_lock(dead_pid(), Some(&greedy)));
    write_lock(&w3, &go_lock(dead_pid(), Some(&greedy)));

    let out = sb
        .cmd()
        .args(["doctor", "--json"])
        .arg(&root)
        .assert()
        .code(1);
    let report = json(&out.get_output().stdout);
    let findings = report["findings"].as_array().unwrap();
    let collisions: Vec<&Value> = findings
        .iter()
        .filter(|f| f["kind"] == "collision")
        .collect();
    assert_eq!(collisions.len(), 2, "{report:#}");
    let msgs: Vec<&str> = collisions
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    let intruder = tmux.pane_id("intruder");
    assert!(
        msgs.iter().any(|m| m.contains(&format!(
            "pane {intruder} (session intruder) is working inside"
        ))),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(
            |m| m.contains(&format!("pane {greedy} holds live locks on 2 workers"))
                && m.ends_with("not fixed: decide which worker it keeps")
        ),
        "{msgs:?}"
    );
    assert!(collisions.iter().all(|f| f["fixable"] == false));
    // --fix leaves them all.
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    for w in [&w1, &w2, &w3] {
        assert!(lock_path(w).exists());
    }
}

#[test]
fn tmux_failing_during_fix_removes_nothing() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let _tmux = sb.tmux("s", "agent");
    for i in 0..5 {
        write_lock(
            &sb.worker(&format!("town/w{i}")),
            &go_lock(dead_pid(), Some("agent")),
        );
    }
    write_lock(&sb.worker("town/no-session"), &go_lock(dead_pid(), None));
    sb.fake_tool("tmux", "echo 'lost connection to server' >&2; exit 1");
    let before = tree_digest(&root);
    let out = sb
        .cmd()
        .args(["doctor", "--fix", "--json"])
        .arg(&root)
        .assert()
        .code(1);
    let report = json(&out.get_output().stdout);
    assert_eq!(report["tmux"]["state"], "unknown");
    assert_eq!(report["tmux"]["servers"][0]["state"], "error");
    let unverified = kinds(&report, "findings")
        .iter()
        .filter(|(k, _)| k == "unverified")
        .count();
    assert_eq!(unverified, 5, "{report:#}");
    // Only the lock that recorded no session was provably dead without tmux.
    assert_eq!(
        kinds(&report, "fixed"),
        vec![(
            "stale".to_string(),
            root.join("no-session")
                .canonicalize()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        )]
    );
    let after = tree_digest(&root);
    let changed: Vec<_> = before.iter().filter(|e| !after.contains(e)).collect();
    assert!(
        changed
            .iter()
            .all(|(p, _)| p.starts_with(root.join("no-session"))),
        "only the provably dead lock changed: {changed:?}"
    );
}

#[test]
fn scan_rules_skips_depth_and_symlink_loops() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let ids = |args: &[&str]| -> BTreeSet<String> {
        let out = sb
            .cmd()
            .args(["list", "--json"])
            .args(args)
            .arg(&root)
            .assert()
            .code(0);
        json(&out.get_output().stdout)["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| output_rel(l["worker_dir"].as_str().unwrap(), &root))
            .collect()
    };
    let lock_at = |rel: &str| {
        write_lock(
            &sb.worker(&format!("town/{rel}")),
            &go_lock(dead_pid(), None),
        )
    };
    lock_at("a");
    lock_at("a/b");
    lock_at("a/b/c/d");
    lock_at("x/node_modules/m");
    lock_at("x/.git/hooks");
    lock_at("x/vendor/v");
    // A lock inside .runtime is never looked at.
    lock_at("a/.runtime/deeper");
    // Symlink loops and symlinks out of the tree are not followed.
    std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
    std::os::unix::fs::symlink("/", root.join("a/b/to-root")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_lock(outside.path(), &go_lock(dead_pid(), None));
    std::os::unix::fs::symlink(outside.path(), root.join("linked-worker")).unwrap();

    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&[]), set(&["a", "a/b", "a/b/c/d", "x/vendor/v"]));
    assert_eq!(
        ids(&["--no-default-skips"]),
        set(&[
            "a",
            "a/b",
            "a/b/c/d",
            "x/.git/hooks",
            "x/node_modules/m",
            "x/vendor/v"
        ])
    );
    assert_eq!(
        ids(&["--skip", "vendor", "--skip", "c"]),
        set(&["a", "a/b"])
    );
    assert_eq!(ids(&["--max-depth", "0"]), set(&[]));
    assert_eq!(ids(&["--max-depth", "1"]), set(&["a"]));
    assert_eq!(ids(&["--max-depth", "2"]), set(&["a", "a/b"]));
    // ROOT itself can be a worker; the default root is the current directory.
    write_lock(&root, &go_lock(dead_pid(), None));
    let out = sb
        .cmd()
        .current_dir(root.join("a/b"))
        .args(["list", "--json"])
        .assert()
        .code(0);
    let locks = json(&out.get_output().stdout)["locks"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(locks, 2, "a/b and a/b/c/d");
    assert!(ids(&[]).contains("."));
}

fn output_rel(abs: &str, root: &Path) -> String {
    let root = root.canonicalize().unwrap();
    match Path::new(abs).strip_prefix(&root) {
        Ok(r) if r.as_os_str().is_empty() => ".".into(),
        Ok(r) => r.to_str().unwrap().into(),
        Err(_) => abs.into(),
    }
}

#[test]
fn ten_thousand_workers_all_found() {
    let sb = Sandbox::new();
    let root = sb.worker("big");
    let lock = go_lock(dead_pid(), None);
    for i in 0..10_000 {
        let rt = root.join(format!("rig{:02}/w{i:05}/.runtime", i % 50));
        std::fs::create_dir_all(&rt).unwrap();
        std::fs::write(rt.join("agent.lock"), &lock).unwrap();
    }
    let out = sb
        .cmd()
        .args(["list", "--json"])
        .arg(&root)
        .assert()
        .code(0);
    let report = json(&out.get_output().stdout);
    assert_eq!(report["scanned"]["locks"], 10_000);
    let locks = report["locks"].as_array().unwrap();
    let distinct: BTreeSet<&str> = locks
        .iter()
        .map(|l| l["worker_dir"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 10_000);
    assert!(locks.iter().all(|l| l["state"] == "stale"));
    // Piped: no progress line, no colour; --color always colours the states.
    let out = sb.cmd().args(["list"]).arg(&root).assert().code(0);
    assert!(
        out.get_output().stderr.is_empty(),
        "no progress line when piped"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout)
            .lines()
            .count(),
        10_001
    );
    assert!(!out.get_output().stdout.contains(&b'\x1b'));
    let out = sb
        .cmd()
        .args(["--color", "always", "list"])
        .arg(&root)
        .assert()
        .code(0);
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("\x1b[31mstale\x1b[0m"));
}

#[test]
fn missing_root_is_an_error() {
    let sb = Sandbox::new();
    sb.cmd()
        .args(["doctor"])
        .arg(sb.path().join("nope"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("nope"));
}

/// The window a racing claimer could hit: a lock judged stale by the scan is
/// replaced by a live holder's claim before `--fix` reaches it. The fix must
/// re-read under the guard, see the change, and leave the live lock alone.
#[test]
fn fix_skips_a_lock_reclaimed_after_the_scan() {
    use agentlock::{doctor, lock::LiveProbes, scan};
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let v = sb.worker("town/v");
    write_lock(&w, &go_lock(dead_pid(), None));
    write_lock(&v, &go_lock(dead_pid(), None));
    let live = LiveProbes::new(sb.tmux_query());
    let probes = live.probes();
    let scanned = scan::scan(
        &root,
        &scan::ScanOptions::default(),
        &scan::Progress::default(),
    )
    .unwrap();
    let mut report = doctor::judge(&scanned, &probes, &live.tmux.snapshot());
    assert_eq!(report.findings.iter().filter(|f| f.fixable).count(), 2);

    // After the scan: a live agent claims w (replacing the stale lock), and v's
    // stale lock is rewritten by another tool with a different dead PID.
    let agent = sleeper();
    sb.claim(&w, agent.pid(), &["-q"]).code(0);
    let reclaimed = std::fs::read(lock_path(&w)).unwrap();
    write_lock(&v, &go_lock(dead_pid(), Some("x")));
    let rewritten = std::fs::read(lock_path(&v)).unwrap();

    let errors = doctor::fix(&mut report, &probes);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(report.fixed.is_empty(), "{:?}", report.fixed);
    assert_eq!(
        std::fs::read(lock_path(&w)).unwrap(),
        reclaimed,
        "the live lock is untouched"
    );
    assert_eq!(
        std::fs::read(lock_path(&v)).unwrap(),
        rewritten,
        "a changed lock is not removed"
    );
    assert!(report.findings.iter().all(|f| {
        f.message
            .contains("fix skipped: the lock changed since the scan")
    }));
}
