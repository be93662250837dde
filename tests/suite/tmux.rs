//! Session liveness against real, private tmux servers. Each test has its own
//! TMUX_TMPDIR and ends only the servers it started.

use crate::common::*;

use predicates::str::contains;
use std::time::Duration;

#[test]
fn dead_pid_with_live_pane_is_held_by_session_until_the_pane_goes() {
    let sb = Sandbox::new();
    let w = sb.worker("polecat");
    let tmux = sb.tmux("agents", "keeper");
    tmux.new_session("agent", &w);
    let pane = tmux.pane_id("agent");
    assert!(pane.starts_with('%'), "{pane}");
    write_lock(&w, &go_lock(dead_pid(), Some(&pane)));

    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "held-by-session", "{e}");
    assert_eq!(e["pid_alive"], false);
    assert_eq!(e["session_alive"], true);
    let claimant = sleeper();
    let pid = claimant.pid().to_string();
    sb.cmd()
        .args(["claim", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(1)
        .stderr(contains(format!("pane {pane} is alive")))
        .stderr(contains("end that session/pane first"));

    tmux.kill_session("agent");
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "stale", "{e}");
    assert_eq!(e["session_alive"], false);
    let out = sb
        .cmd()
        .args(["claim", "--json", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["action"], "replaced-stale");
}

#[test]
fn session_names_and_ids_match_by_kind() {
    let sb = Sandbox::new();
    let w = sb.worker("crew");
    let tmux = sb.tmux("s", "gt-crew-max");
    let sid = tmux.query("gt-crew-max", "#{session_id}");
    assert!(sid.starts_with('$'));
    for session in ["gt-crew-max", sid.as_str()] {
        write_lock(&w, &go_lock(dead_pid(), Some(session)));
        assert_eq!(state_of(&sb, &w, &[]), "held-by-session", "{session}");
    }
    // A pane id that does not exist, on a live server: gone.
    write_lock(&w, &go_lock(dead_pid(), Some("%999")));
    assert_eq!(state_of(&sb, &w, &[]), "stale");
}

#[test]
fn whole_server_gone_leaves_a_socket_that_proves_no_sessions() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("solo", "only");
    write_lock(&w, &go_lock(dead_pid(), Some("only")));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    tmux.kill_server();
    // Leave the socket file behind as a crashed server would.
    if !tmux.socket.exists() {
        let _l = std::os::unix::net::UnixListener::bind(&tmux.socket).unwrap();
    }
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(entry(&out.get_output().stdout)["state"], "stale");
}

#[test]
fn live_pid_with_gone_session_is_orphaned() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let _tmux = sb.tmux("s", "other");
    let holder = sleeper();
    write_lock(&w, &go_lock(holder.pid(), Some("vanished")));
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "orphaned");
    assert_eq!(e["pid_alive"], true);
    assert_eq!(e["session_alive"], false);
    let c = sleeper();
    sb.claim(&w, c.pid(), &[]).code(1);
}

#[test]
fn failing_tmux_makes_locks_unverified_and_nothing_is_removed() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let _tmux = sb.tmux("s", "agent");
    sb.fake_tool("tmux", "echo 'server exploded' >&2; exit 1");
    write_lock(&w, &go_lock(dead_pid(), Some("agent")));
    // The Go tool leaves its guard file beside its lock; claim would create it.
    std::fs::write(w.join(".runtime/agent.lock.flock"), "").unwrap();
    let before = tree_digest(sb.path());
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert_eq!(e["session_alive"], serde_json::Value::Null);
    assert!(
        e["reason"].as_str().unwrap().contains("server exploded"),
        "{e}"
    );
    let c = sleeper();
    sb.claim(&w, c.pid(), &[])
        .code(1)
        .stderr(contains("could not be verified"));
    sb.cmd()
        .args(["release", "--pid", &c.pid().to_string()])
        .arg(&w)
        .assert()
        .code(1);
    assert_eq!(tree_digest(sb.path()), before, "nothing changed");
}

#[test]
fn hung_tmux_server_times_out_as_unverified() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    // A real server, stopped: it accepts connections but never answers.
    let tmux = sb.tmux("hung", "other");
    let pid = nix::unistd::Pid::from_raw(tmux.server_pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let _cont = SignalOnDrop(tmux.server_pid, nix::sys::signal::Signal::SIGCONT);
    write_lock(&w, &go_lock(dead_pid(), Some("agent")));
    let start = std::time::Instant::now();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert!(start.elapsed() < Duration::from_secs(30));
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"].as_str().unwrap().contains("no answer within"),
        "{e}"
    );
}

#[test]
fn a_listener_that_is_not_tmux_is_never_asked() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    sb.make_socket_dir();
    // A socket that accepts connections, held by this (non-tmux) process.
    let _listener = std::os::unix::net::UnixListener::bind(sb.socket_dir().join("fake")).unwrap();
    write_lock(&w, &go_lock(dead_pid(), Some("agent")));
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("is not a tmux server"),
        "{e}"
    );
}

#[test]
fn tmux_socket_flag_restricts_the_query() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let _a = sb.tmux("a", "alpha");
    let _b = sb.tmux("b", "beta");
    write_lock(&w, &go_lock(dead_pid(), Some("beta")));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    assert_eq!(
        state_of(&sb, &w, &["--tmux-socket", "b"]),
        "held-by-session"
    );
    // Asked only server a, which lacks "beta": b was not asked, so nothing
    // is proven (the lock records no server).
    assert_eq!(state_of(&sb, &w, &["--tmux-socket", "a"]), "unverified");
    let by_path = sb.socket_dir().join("b");
    assert_eq!(
        state_of(&sb, &w, &["--tmux-socket", by_path.to_str().unwrap()]),
        "held-by-session"
    );
    _b.kill_server();
    let _ = std::fs::remove_file(&by_path);
    // With no other server left: gone.
    let out = sb
        .cmd()
        .args(["status", "--json", "--tmux-socket", "a"])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(
        entry(&out.get_output().stdout)["state"],
        "stale",
        "{}",
        String::from_utf8_lossy(&out.get_output().stdout)
    );
}

#[test]
fn no_tmux_binary_and_no_sockets_means_no_sessions() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    write_lock(&w, &go_lock(dead_pid(), Some("%1")));
    // PATH without tmux at all.
    let out = sb
        .cmd()
        .env("PATH", &sb.bin_dir)
        .args(["status", "--json"])
        .arg(&w)
        .assert()
        .code(0);
    assert_eq!(entry(&out.get_output().stdout)["state"], "stale");
}

#[test]
fn claim_inside_a_pane_records_tmux_pane() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("s", "main");
    let pane = tmux.pane_id("main");
    let holder = sleeper();
    sb.cmd()
        .env("TMUX_PANE", &pane)
        .args(["claim", "-q", "--pid", &holder.pid().to_string()])
        .arg(&w)
        .assert()
        .code(0);
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["session_id"], pane.as_str());
    assert_eq!(e["state"], "held");
    assert_eq!(e["session_alive"], true);
}

#[test]
fn tmux_is_asked_once_per_server_whatever_the_number_of_locks() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let _a = sb.tmux("a", "alpha");
    let _b = sb.tmux("b", "beta");
    for i in 0..50 {
        let session = ["alpha", "beta", "%0", "$1", "gone"][i % 5];
        write_lock(
            &sb.worker(&format!("town/w{i:02}")),
            &go_lock(dead_pid(), Some(session)),
        );
    }
    let log = sb.path().join("tmux-calls");
    let real = which::which("tmux").unwrap();
    sb.fake_tool(
        "tmux",
        &format!(
            "echo \"$@\" >> '{}'\nexec '{}' \"$@\"",
            log.display(),
            real.display()
        ),
    );
    let calls = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    sb.cmd()
        .args(["doctor", "--json"])
        .arg(&root)
        .assert()
        .code(1);
    assert_eq!(calls(), 2, "one list-panes per server");
    sb.cmd().args(["list"]).arg(&root).assert().code(0);
    assert_eq!(calls(), 4);
    let workers: Vec<_> = (0..10).map(|i| root.join(format!("w{i:02}"))).collect();
    sb.cmd().args(["status"]).args(&workers).assert().code(0);
    assert_eq!(calls(), 6, "status over 10 workers: still once per server");
}

/// Item 5: a server outside the socket directory (`tmux -S`), named by the
/// lock's `tmux_socket`, keeps its pane's lock alive for a caller outside it.
#[test]
fn a_lock_made_inside_an_s_server_is_judged_on_that_server() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let socket = sb.path().join("elsewhere/sock");
    let tmux = sb.tmux_at(&socket, "keeper", sb.path(), None);
    let rec = claim_from_a_pane(&tmux, &w);
    assert_eq!(rec.tmux_socket.as_deref(), Some(socket.to_str().unwrap()));
    assert_eq!(
        rec.session_id.as_deref(),
        Some(tmux.pane_id("agent").as_str())
    );
    wait_gone(rec.pid, Duration::from_secs(20));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(0);
    assert!(lock_path(&w).exists());
    tmux.kill_session("agent");
    assert_eq!(state_of(&sb, &w, &[]), "stale");
}

/// Item 5: pane ids are per server: `%0` on one server neither keeps a lock
/// made for `%0` on another alive nor makes two locks one collision.
#[test]
fn the_same_pane_id_on_two_servers_is_two_panes() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let (w1, w2) = (sb.worker("town/w1"), sb.worker("town/w2"));
    let a = sb.tmux_at(&sb.socket_dir().join("a"), "a", &w1, None);
    let b = sb.tmux_at(&sb.socket_dir().join("b"), "b", &w2, None);
    assert_eq!(a.pane_id("a"), "%0");
    assert_eq!(b.pane_id("b"), "%0");
    let lock = |socket: &std::path::Path| {
        format!(
            r#"{{"pid":{},"acquired_at":"{}","session_id":"%0","hostname":"{}","tmux_socket":"{}"}}"#,
            dead_pid(),
            go_time(),
            hostname(),
            socket.display()
        )
    };
    write_lock(&w1, &lock(&a.socket));
    write_lock(&w2, &lock(&b.socket));
    let out = sb
        .cmd()
        .args(["doctor", "--json"])
        .arg(&root)
        .assert()
        .code(0);
    let report = json(&out.get_output().stdout);
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    b.kill_server();
    // b's socket file is gone, its directory remains: b exited; a's %0 is not b's.
    assert_eq!(state_of(&sb, &w2, &[]), "stale");
    assert_eq!(state_of(&sb, &w1, &[]), "held-by-session");
}

/// Item 5: a `--tmux-socket` that does not exist is an error, not proof.
#[test]
fn a_named_socket_that_does_not_exist_proves_nothing() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let _tmux = sb.tmux("real", "keeper");
    write_lock(&w, &go_lock(dead_pid(), Some("agent")));
    let out = sb
        .cmd()
        .args(["status", "--json", "--tmux-socket", "typo"])
        .arg(&w)
        .assert()
        .code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("no such tmux socket"),
        "{e}"
    );
    sb.cmd()
        .args(["claim", "--pid", "1", "--tmux-socket", "typo"])
        .arg(&w)
        .assert()
        .code(1);
}

/// Item 6: root judges another user's lock on that user's tmux server.
#[test]
fn another_users_session_keeps_its_lock() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let sb = Sandbox::new();
    open_to_all(sb.path());
    std::fs::set_permissions(
        &sb.tmux_tmpdir,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let root = sb.worker("town");
    let (w, v) = (sb.worker("town/w"), sb.worker("town/v"));
    for d in [&root, &w, &v] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let socket = sb.tmux_tmpdir.join("tmux-65534/default");
    let _tmux = sb.tmux_at(&socket, "nob", &w, Some(65534));
    let nobody = |args: &[&str]| sb.as_user(65534, args);
    let holder = Proc(nobody(&["sleep", "600"]).spawn().unwrap());
    wait_exec(holder.pid(), "sleep");
    let out = nobody(&[
        BIN,
        "claim",
        w.to_str().unwrap(),
        "--session",
        "nob",
        "--pid",
        &holder.pid().to_string(),
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = record_at(&w);
    assert_eq!(rec.uid, Some(65534));
    assert_eq!(rec.tmux_socket.as_deref(), Some(socket.to_str().unwrap()));
    let pid = holder.pid();
    drop(holder);
    wait_gone(pid, Duration::from_secs(10));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    // A Go-style lock of that user (no uid, no server; the file is theirs):
    // its session cannot be looked for with certainty.
    write_lock(&v, &go_lock(dead_pid(), Some("nob")));
    std::os::unix::fs::chown(lock_path(&v), Some(65534), Some(65534)).unwrap();
    assert_eq!(state_of(&sb, &v, &[]), "unverified");
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists() && lock_path(&v).exists());
}

/// Item 18: `--session` names a tmux target: resolved to its pane (and
/// server); a session that does not exist now is recorded with a warning.
#[test]
fn session_targets_resolve_to_panes_and_typos_warn() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("s", "main");
    let holder = sleeper();
    let pid = holder.pid().to_string();
    let out = sb
        .cmd()
        .args(["claim", "--json", "--session", "main:0.0", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["session_id"], tmux.pane_id("main"), "{e}");
    assert_eq!(e["tmux_socket"], tmux.socket.to_str().unwrap(), "{e}");
    sb.cmd()
        .args(["release", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
    sb.cmd()
        .args(["claim", "--session", "mian", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0)
        .stderr(contains(
            "warning: no tmux session or pane 'mian' exists now",
        ));
    assert_eq!(record_at(&w).session_id.as_deref(), Some("mian"));
}

/// A target that does not exist yet counts as alive while its session lives;
/// an existing target is matched exactly, never by prefix.
#[test]
fn targets_are_exact_and_unresolved_ones_keep_their_session() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("s", "agent-2");
    let holder = sleeper();
    let pid = holder.pid().to_string();
    // "agent" is a prefix of agent-2, not agent-2.
    sb.cmd()
        .args(["claim", "--session", "agent:0.0", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0)
        .stderr(contains("no tmux pane matches target"));
    assert_eq!(record_at(&w).session_id.as_deref(), Some("agent:0.0"));
    // The spawner creates the session after claiming, then exits.
    tmux.new_session("agent", sb.path());
    drop(holder);
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    tmux.kill_session("agent");
    assert_eq!(state_of(&sb, &w, &[]), "stale");
}

/// A recorded socket file deleted (by a temp cleaner) while its server runs
/// is no proof that the server exited.
#[test]
fn a_deleted_socket_of_a_live_server_proves_nothing() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("s", "agent");
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"acquired_at":"{}","session_id":"agent","hostname":"{}","tmux_socket":"{}"}}"#,
            dead_pid(),
            go_time(),
            hostname(),
            tmux.socket.display()
        ),
    );
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    std::fs::remove_file(&tmux.socket).unwrap();
    assert_eq!(state_of(&sb, &w, &[]), "unverified");
    // tmux recreates its socket on SIGUSR1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tmux.server_pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_for("the socket", Duration::from_secs(10), || {
        tmux.socket.exists()
    });
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
}

/// A held-by-session lock with its server recorded (dead spawner, live pane).
fn lock_on(w: &std::path::Path, tmux: &Tmux, session: &str, record_socket: bool) {
    let socket = if record_socket {
        format!(r#","tmux_socket":"{}""#, tmux.socket.display())
    } else {
        String::new()
    };
    write_lock(
        w,
        &format!(
            r#"{{"pid":{},"acquired_at":"{}","session_id":"{session}","hostname":"{}"{socket}}}"#,
            dead_pid(),
            go_time(),
            hostname()
        ),
    );
}

/// Review: a temp cleaner deletes the socket file and the user starts a new
/// server on the same path: tmux answers for the new one only.
#[test]
fn a_new_server_on_a_deleted_servers_path_proves_nothing() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let old = sb.tmux("default", "agent");
    lock_on(&w, &old, "agent", true);
    std::fs::remove_file(&old.socket).unwrap();
    let _new = sb.tmux("default", "other");
    assert_eq!(state_of(&sb, &w, &[]), "unverified");
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists());
}

/// Review: a Go lock (no server recorded) and the only socket file deleted
/// while its server runs: the server is still looked for, not forgotten.
#[test]
fn a_listed_server_whose_file_was_deleted_is_an_error() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let tmux = sb.tmux("default", "agent");
    lock_on(&w, &tmux, "agent", false);
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    std::fs::remove_file(&tmux.socket).unwrap();
    assert_eq!(state_of(&sb, &w, &[]), "unverified");
}

/// Review: a server reached through a symlinked directory is recorded by the
/// path it was bound to, so its deleted file is still recognised.
#[test]
fn a_symlinked_socket_path_is_recorded_as_bound() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    std::fs::create_dir_all(sb.path().join("real")).unwrap();
    std::os::unix::fs::symlink(sb.path().join("real"), sb.path().join("link")).unwrap();
    let socket = sb.path().join("link/sock");
    let tmux = sb.tmux_at(&socket, "keeper", sb.path(), None);
    let rec = claim_from_a_pane(&tmux, &w);
    assert_eq!(rec.tmux_socket.as_deref(), Some(socket.to_str().unwrap()));
    wait_gone(rec.pid, Duration::from_secs(20));
    std::fs::remove_file(sb.path().join("real/sock")).unwrap();
    assert_eq!(state_of(&sb, &w, &[]), "unverified");
}

/// In a new pane (session `agent`) of `tmux`: a shell claims `w` and exits;
/// the pane lives on. Returns the lock, naming the shell that exited.
fn claim_from_a_pane(tmux: &Tmux, w: &std::path::Path) -> agentlock::record::LockRecord {
    let cmd = format!(
        "sh -c \"'{}' claim '{}'; sleep 0.01\"; sleep 600",
        BIN,
        w.display()
    );
    tmux.run(&["new-session", "-d", "-s", "agent", "sh", "-c", &cmd]);
    wait_for("the claim", Duration::from_secs(20), || {
        lock_path(w).exists()
    });
    record_at(w)
}
