//! A fact proves absence only where it is visible: a PID in the PID
//! namespace it was recorded in, a boot on the machine that booted, a
//! process as the claimer only when it started before the claim. Each test
//! here deleted or replaced a live lock, or answered "yours" to a stranger,
//! before these rules.

use crate::common::*;

/// A Go-tool lock (no `pid_ns`) of a live host process, judged from inside
/// a child PID namespace that shares the hostname and the workers (a
/// container): the process is invisible there, which proves nothing.
#[test]
fn a_container_never_judges_a_go_lock_of_the_host_dead() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let holder = sleeper();
    write_lock(&w, &go_lock(holder.pid(), None));
    let before = std::fs::read(lock_path(&w)).unwrap();
    let inside = |args: &[&str]| {
        let script = format!("exec '{BIN}' \"$@\"");
        sb.command("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script, "sh"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = inside(&["status", "--json", w.to_str().unwrap()]);
    let e = entry(&out.stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("not in the initial one"),
        "{e}"
    );
    // A claimant of the container (its own sleep), refused.
    let script = format!("sleep 600 & '{BIN}' claim --pid $! \"$1\"; r=$?; kill $!; exit $r");
    let out = sb
        .command("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script, "sh"])
        .arg(&w)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inside(&["doctor", "--fix", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(lock_path(&w)).unwrap(),
        before,
        "the live lock stays"
    );
    // From the host, the same lock is judged as usual.
    assert_eq!(state_of(&sb, &w, &[]), "held");
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// Two machines with one hostname (a cloned VM) sharing workers: another
/// boot id on a lock acquired after this boot is the clone's, not a reboot.
#[test]
fn a_clone_with_the_same_hostname_is_not_a_reboot() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let clone_boot = "00000000-0000-4000-8000-000000000001";
    assert_ne!(clone_boot, boot_id());
    let lock = |at: &str| {
        serde_json::json!({
            "pid": 4242,
            "acquired_at": at,
            "hostname": hostname(),
            "boot_id": clone_boot,
            "pid_start": 1,
        })
        .to_string()
    };
    write_lock(&w, &lock(&go_time()));
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .arg(&w)
        .output()
        .unwrap();
    let e = entry(&out.stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(e["reason"].as_str().unwrap().contains("clone"), "{e}");
    let claimer = sleeper();
    sb.claim(&w, claimer.pid(), &[]).code(1);
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists());
    // Acquired before this boot: a reboot, stale.
    write_lock(&w, &lock("2001-01-01T00:00:00Z"));
    assert_eq!(state_of(&sb, &w, &[]), "stale");
}

/// A Go-tool lock whose PID now belongs to a process that started after the
/// claim, within the clock slack: the lock lives on (the slack protects
/// holders), but that process is not its holder for claim, check or release.
#[test]
fn the_reuse_slack_never_makes_a_newcomer_the_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let newcomer = sleeper();
    let acquired = (chrono::Utc::now() - chrono::Duration::seconds(20)).to_rfc3339();
    let lock = format!(
        r#"{{"pid":{},"acquired_at":"{acquired}","hostname":"{}"}}"#,
        newcomer.pid(),
        hostname()
    );
    write_lock(&w, &lock);
    assert_eq!(state_of(&sb, &w, &[]), "held");
    let pid = newcomer.pid().to_string();
    for args in [
        vec!["claim", "--pid", &pid],
        vec!["check", "--pid", &pid],
        vec!["release", "--pid", &pid],
    ] {
        let out = sb.cmd().args(&args).arg(&w).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(lock_path(&w)).unwrap(), lock);
    // The same lock acquired after the process started: it is the holder.
    let now = format!(
        r#"{{"pid":{},"acquired_at":"{}","hostname":"{}"}}"#,
        newcomer.pid(),
        go_time(),
        hostname()
    );
    write_lock(&w, &now);
    sb.cmd()
        .args(["check", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(0);
}

/// `--json` usage errors carry clap's whole message; help and version that
/// cannot be written are an error, not a silent success.
#[test]
fn usage_errors_and_help_are_whole_and_checked() {
    let sb = Sandbox::new();
    let out = sb.cmd().args(["claim", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = json(&out.stdout);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("<WORKER>"), "{msg}");
    for args in [vec!["--help"], vec!["--version"], vec!["claim", "--help"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = sb.std_cmd().args(&args).stdout(full).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No space left"),
            "{args:?}"
        );
    }
}

/// An agent sandboxed in its own mount and network namespaces (bubblewrap's
/// `--unshare-net --tmpfs /tmp`, systemd's `PrivateTmp=` + `PrivateNetwork=`)
/// claims with its tmux session: from the host its server is invisible, its
/// socket directory empty and its socket in no listening table here. That
/// proves nothing: the lock is unverified, never stale.
#[test]
fn a_sandboxed_agents_session_is_never_proven_gone_from_outside() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = sb.worker("town/w");
    let server_pid = sb.path().join("server-pid");
    let script = format!(
        "mount -t tmpfs none \"$TMUX_TMPDIR\" && \
         tmux -f /dev/null new-session -d -s agent 'sleep 600' && \
         tmux display -p '#{{pid}}' > '{}' && \
         '{BIN}' claim --session agent --pid $$ \"$1\"",
        server_pid.display(),
    );
    let out = sb
        .command("unshare")
        .args(["--mount", "--net", "--fork", "sh", "-c", &script, "sh"])
        .arg(&w)
        .output()
        .unwrap();
    let pid: i32 = std::fs::read_to_string(&server_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Ended by its own PID: from here its socket cannot be reached.
    let _server = SignalOnDrop(pid, nix::sys::signal::Signal::SIGTERM);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host has the same socket directory, empty: "the server exited"
    // would be read there, but from another mount namespace it proves nothing.
    sb.make_socket_dir();
    let rec = record_at(&w);
    assert!(rec.mnt_ns.is_some() && rec.tmux_socket.is_some(), "{rec:?}");
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .arg(&w)
        .output()
        .unwrap();
    let e = entry(&out.stdout);
    assert_eq!(e["state"], "unverified", "{e}");
    // Its mount namespace (and its network namespace's listening table,
    // seen through its process) both say so.
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("mount namespace") || reason.contains("still listens"),
        "{e}"
    );
    sb.cmd()
        .args(["doctor", "--fix"])
        .arg(&root)
        .assert()
        .code(1);
    assert!(lock_path(&w).exists());
    let claimer = sleeper();
    sb.claim(&w, claimer.pid(), &[]).code(1);
}

/// `release --session %0` from outside tmux while two servers each have a
/// pane `%0`: it names neither, so nothing is released until
/// `--tmux-socket` picks one.
#[test]
fn an_ambiguous_session_releases_nothing() {
    let sb = Sandbox::new();
    let _a = sb.tmux("a", "alpha");
    let b = sb.tmux("b", "beta");
    assert_eq!(b.pane_id("beta"), "%0");
    let w = sb.worker("w");
    let holder = sleeper();
    sb.claim(
        &w,
        holder.pid(),
        &[
            "--session",
            "%0",
            "--tmux-socket",
            b.socket.to_str().unwrap(),
        ],
    )
    .code(0);
    let pid = holder.pid();
    drop(holder);
    wait_gone(pid, std::time::Duration::from_secs(10));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    let before = std::fs::read(lock_path(&w)).unwrap();
    let out = sb
        .cmd()
        .args(["release", "--session", "%0"])
        .arg(&w)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists on 2 tmux servers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(lock_path(&w)).unwrap(), before);
    sb.cmd()
        .args(["release", "--session", "%0", "--tmux-socket"])
        .arg(&b.socket)
        .arg(&w)
        .assert()
        .code(0);
    assert!(!lock_path(&w).exists());
}

/// A Go-tool lock (no server recorded) whose session lives on a server
/// outside the socket directory (`tmux -S PATH`, another `TMUX_TMPDIR`):
/// the server is found by its process, so the session is alive. Run in a
/// PID namespace of its own, so that only this test's server is seen.
#[test]
fn a_server_outside_the_socket_directory_is_found_by_its_process() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let elsewhere = sb.worker("elsewhere");
    std::fs::set_permissions(
        &elsewhere,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let setup = format!(
        "tmux -f /dev/null -S '{}/sock' new-session -d -s only-here-7 'sleep 600'",
        elsewhere.display()
    );
    let [found, narrowed] =
        &status_in_own_pid_ns(&sb, &setup, &w, "only-here-7", &["all", "dir"])[..]
    else {
        unreachable!()
    };
    assert_eq!(found["state"], "held-by-session", "{found}");
    // Only the socket directory asked: the session looks gone.
    assert_eq!(narrowed["state"], "stale", "{narrowed}");
}

/// The agent's tmux server runs in its own network namespace
/// (`PrivateNetwork=`) and a temp cleaner deleted its socket file: the
/// server still listens, in a table this namespace does not show. That
/// proves nothing: the lock stays, unverified.
#[test]
fn a_server_in_another_network_namespace_is_not_gone_with_its_socket_file() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let dir = sb.worker("private");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let socket = dir.join("sock");
    let out = sb
        .command("unshare")
        .args(["--net", "--fork", "tmux", "-f", "/dev/null", "-S"])
        .arg(&socket)
        .args(["new-session", "-d", "-s", "agent", "sleep 600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = String::from_utf8(
        sb.command("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["display", "-p", "#{pid}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let _server = SignalOnDrop(pid, nix::sys::signal::Signal::SIGTERM);
    let spawner = sleeper();
    sb.claim(
        &w,
        spawner.pid(),
        &[
            "--session",
            "agent",
            "--tmux-socket",
            socket.to_str().unwrap(),
        ],
    )
    .code(0);
    let gone = spawner.pid();
    drop(spawner);
    wait_gone(gone, std::time::Duration::from_secs(10));
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    std::fs::remove_file(&socket).unwrap();
    let e = entry(
        &sb.cmd()
            .args(["status", "--json"])
            .arg(&w)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(e["state"], "unverified", "{e}");
    let claimer = sleeper();
    sb.claim(&w, claimer.pid(), &[]).code(1);
    sb.cmd().args(["doctor", "--fix"]).arg(&w).assert().code(1);
    assert!(lock_path(&w).exists());
}

/// root's lock recording no server, whose session lives on another user's
/// tmux (a root spawner starting agents as other users): root finds that
/// server by its process and asks it as its owner; the session is alive.
/// In a PID namespace of its own, so that only this test's server is seen.
#[test]
fn root_finds_a_session_on_another_users_server() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let sb = Sandbox::new();
    open_to_all(sb.path());
    let w = sb.worker("w");
    let theirs = sb.worker("theirs");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let setup = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups env TMUX_TMPDIR='{}' tmux -f /dev/null new-session -d -s agent-of-65534 'sleep 600'",
        theirs.display()
    );
    let e = &status_in_own_pid_ns(&sb, &setup, &w, "agent-of-65534", &["all"])[0];
    assert_eq!(e["state"], "held-by-session", "{e}");
}
