//! The conventions users already know: `release --all` for tmux
//! `session-closed` hooks, local times (`--utc` to keep UTC), tables laid
//! out by display width, and `status` naming what the holder runs.

use crate::common::*;
use std::time::Duration;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `w` claimed for session `agent-max` on the server at `socket` by an
/// agent that then exits: the lock lives on through the session alone.
fn claimed_by_a_gone_agent(sb: &Sandbox, socket: &std::path::Path, w: &std::path::Path) {
    let agent = sleeper();
    sb.cmd()
        .args([
            "--tmux-socket",
            s(socket),
            "claim",
            "--session",
            "agent-max",
        ])
        .args(["--pid", &agent.pid().to_string(), s(w)])
        .assert()
        .success();
    drop(agent);
}

#[test]
fn release_all_releases_what_the_asker_holds_and_nothing_else() {
    let sb = Sandbox::new();
    let (mine, theirs) = (sleeper(), sleeper());
    let root = sb.path().join("town");
    let a = sb.worker("town/rig/a");
    let b = sb.worker("town/rig/deep/b");
    let c = sb.worker("town/rig/c");
    let outside = sb.worker("elsewhere/d");
    for w in [&a, &b, &outside] {
        sb.claim(w, mine.pid(), &[]).success();
    }
    sb.claim(&c, theirs.pid(), &[]).success();
    let pid = mine.pid().to_string();

    let out = sb
        .cmd()
        .args(["release", "--all", "--json", "--pid", &pid, s(&root)])
        .assert()
        .success();
    let v = json(&out.get_output().stdout);
    let mut released: Vec<_> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let dir = e["worker_dir"].as_str().unwrap().to_string();
            (dir, e["action"].as_str().unwrap().to_string())
        })
        .collect();
    released.sort();
    let canon = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        released,
        [
            (canon(&a), "released".to_string()),
            (canon(&b), "released".to_string())
        ]
    );
    assert!(!lock_path(&a).exists() && !lock_path(&b).exists());
    assert_eq!(
        state_of(&sb, &c, &[]),
        "held",
        "another holder's lock is untouched"
    );
    assert_eq!(
        state_of(&sb, &outside, &[]),
        "held",
        "a lock outside ROOT is untouched"
    );

    // Nothing left to release: success, said on stderr.
    sb.cmd()
        .args(["release", "--all", "--pid", &pid, s(&root)])
        .assert()
        .success()
        .stdout("")
        .stderr(format!("agentlock: nothing held under {}\n", s(&root)));
    // --all and --force do not mix: --force would release others' locks.
    sb.cmd()
        .args(["release", "--all", "--force", s(&root)])
        .assert()
        .code(2);
}

/// The recipe: a tmux `session-closed` hook releases every worker the
/// session held once it is gone, and leaves other sessions' workers alone.
#[test]
fn a_session_closed_hook_releases_the_sessions_workers() {
    let sb = Sandbox::new();
    let root = sb.path().join("town");
    let max = sb.worker("town/max");
    let kim = sb.worker("town/kim");
    let t = sb.tmux("hooks", "keep");
    t.new_session("agent-max", &max);
    t.new_session("agent-kim", &kim);
    let pane_pid = |s: &str| t.query(s, "#{pane_pid}");
    let (max_pid, kim_pid) = (pane_pid("agent-max"), pane_pid("agent-kim"));
    let socket = t.socket.to_str().unwrap().to_string();
    for (w, session, pid) in [(&max, "agent-max", &max_pid), (&kim, "agent-kim", &kim_pid)] {
        sb.cmd()
            .args([
                "--tmux-socket",
                &socket,
                "claim",
                "--session",
                session,
                "--pid",
                pid,
                s(w),
            ])
            .assert()
            .success();
    }
    let hook = format!(
        "run-shell \"{BIN} --tmux-socket {socket} release --all --session #{{hook_session_name}} {} >>{}/hook.log 2>&1\"",
        s(&root),
        s(sb.path())
    );
    t.run(&["set-hook", "-g", "session-closed", &hook]);
    // The agent exits; its session closes with it; the hook runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(max_pid.parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let log = || std::fs::read_to_string(sb.path().join("hook.log")).unwrap_or_default();
    wait_for(
        "the hook to say it released",
        Duration::from_secs(20),
        || log().contains(&format!("released {}", s(&max))),
    );
    assert!(!lock_path(&max).exists(), "hook said: {}", log());
    let log = log();
    assert_eq!(
        state_of(&sb, &kim, &["--tmux-socket", &socket]),
        "held",
        "agent-kim's worker stays held; hook said: {log}"
    );
    t.kill_server();
}

#[test]
fn times_are_local_unless_utc_is_asked() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    write_lock(
        &w,
        &format!(
            "{{\"pid\": {}, \"acquired_at\": \"2026-01-05T10:00:00-08:00\", \"hostname\": \"{}\"}}",
            dead_pid(),
            hostname()
        ),
    );
    let holder = |tz: &str, extra: &[&str]| {
        let out = sb
            .cmd()
            .env("TZ", tz)
            .args(extra)
            .args(["status", s(&w)])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("holder:"))
            .unwrap_or_default()
            .to_string();
        line.split("since ")
            .nth(1)
            .unwrap_or_default()
            .split(" (")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(holder("Asia/Tokyo", &[]), "2026-01-06 03:00:00 +09:00");
    assert_eq!(holder("UTC", &[]), "2026-01-05 18:00:00 +00:00");
    assert_eq!(holder("Asia/Tokyo", &["--utc"]), "2026-01-05 18:00:00 UTC");
    // JSON keeps the time as recorded.
    let out = sb
        .cmd()
        .env("TZ", "Asia/Tokyo")
        .args(["status", "--json", s(&w)])
        .output()
        .unwrap();
    assert_eq!(
        entry(&out.stdout)["acquired_at"],
        "2026-01-05T10:00:00-08:00"
    );
}

/// Wide characters take two columns; names with newlines are escaped: the
/// columns after the name still line up.
#[test]
fn the_list_table_lines_up_by_display_width() {
    let sb = Sandbox::new();
    for name in ["名前だ", "ab", "new\nline"] {
        write_lock(&sb.worker(name), &go_lock(dead_pid(), None));
    }
    let out = sb.cmd().args(["list", s(sb.path())]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let state_col = |l: &str| {
        let at = l.find("STATE").or_else(|| l.find("stale")).unwrap();
        unicode_width::UnicodeWidthStr::width(&l[..at])
    };
    let cols: Vec<usize> = lines.iter().map(|l| state_col(l)).collect();
    assert!(cols.iter().all(|c| *c == cols[0]), "{cols:?}\n{text}");
    assert!(text.contains("new\\nline"), "{text}");
}

#[test]
fn status_names_what_the_holder_runs() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[]).success();
    let out = sb.cmd().args(["status", s(&w)]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\n  command: sleep\n") || text.ends_with("\n  command: sleep\n"),
        "{text}"
    );
    // Once it is gone, no command is named (a reused PID is not the holder).
    drop(holder);
    let out = sb.cmd().args(["status", "--json", s(&w)]).output().unwrap();
    let e = entry(&out.stdout);
    assert_eq!(
        (e["state"].as_str(), e["command"].is_null()),
        (Some("stale"), true),
        "{e}"
    );
}

/// A closed session's hook names it by name only: a live session of the
/// same name on another server (its agent's process gone, the agent living
/// on in its pane) is not the closed one, and its lock stays.
#[test]
fn a_closed_sessions_name_never_releases_a_live_namesake() {
    let sb = Sandbox::new();
    let root = sb.path().join("town");
    let w = sb.worker("town/max");
    let other = sb.tmux("other", "agent-max");
    claimed_by_a_gone_agent(&sb, &other.socket, &w);
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    // Asked on a server where agent-max does not exist (it just closed).
    let closed = sb.tmux("closed", "keep");
    sb.cmd()
        .args(["--tmux-socket", closed.socket.to_str().unwrap()])
        .args(["release", "--all", "--session", "agent-max", s(&root)])
        .assert()
        .success();
    assert!(
        lock_path(&w).exists(),
        "the live namesake's lock was released"
    );
    closed.kill_server();
    other.kill_server();
}

/// The same rule for a plain `release --session` and `check --session`: a
/// session gone from the servers asked is not a live namesake elsewhere.
#[test]
fn a_gone_sessions_name_is_not_a_live_namesakes_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("max");
    let other = sb.tmux("other", "agent-max");
    let socket = other.socket.to_str().unwrap().to_string();
    claimed_by_a_gone_agent(&sb, &other.socket, &w);
    let closed = sb.tmux("closed", "keep");
    let asked = ["--tmux-socket", closed.socket.to_str().unwrap()];
    sb.cmd()
        .args(asked)
        .args(["check", "--session", "agent-max", s(&w)])
        .assert()
        .code(1);
    sb.cmd()
        .args(asked)
        .args(["release", "--session", "agent-max", s(&w)])
        .assert()
        .code(1);
    assert!(
        lock_path(&w).exists(),
        "a live namesake's lock was released"
    );
    // Asked on the server where it lives, the session is its holder.
    sb.cmd()
        .args([
            "--tmux-socket",
            &socket,
            "release",
            "--session",
            "agent-max",
            s(&w),
        ])
        .assert()
        .success();
    assert!(!lock_path(&w).exists());
    closed.kill_server();
    other.kill_server();
}

/// The `session-closed` recipe exactly as `release --help` prints it: the
/// closed session's name lives on in a namesake on another server of the
/// same user (tmux's default names `0`, `1`, ... repeat on every server).
/// The namesake's agent lives on in its pane (its spawner exited), so its
/// lock is held-by-session, and the hook for the closed one must not
/// release it.
#[test]
fn the_documented_hook_spares_a_namesake_on_another_server() {
    let sb = Sandbox::new();
    let root = sb.path().join("town");
    let w = sb.worker("town/kim");
    let other = sb.tmux("other", "agent-max");
    let closing = sb.tmux("closing", "keep");
    closing.new_session("agent-max", sb.path());
    claimed_by_a_gone_agent(&sb, &other.socket, &w);
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    // The closing session's own worker, which the hook is for.
    let mine = sb.worker("town/max");
    claimed_by_a_gone_agent(&sb, &closing.socket, &mine);

    let help = sb.cmd().args(["release", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // The recipe: from `set-hook` to the closing brace, as tmux.conf lines.
    let start = help
        .find("set-hook -g session-closed")
        .expect("release --help documents the hook");
    let end = start + help[start..].find("\n  }").expect("the hook block ends") + 4;
    let log = sb.path().join("hook.log");
    let recipe = help[start..end]
        .replacen("'agentlock ", &format!("'{BIN} "), 1)
        .replace(
            "~/town'",
            &format!(
                "{} >>{log} 2>&1; echo hook-done >>{log}'",
                s(&root),
                log = s(&log)
            ),
        );
    let conf = sb.path().join("hook.conf");
    std::fs::write(&conf, recipe).unwrap();
    closing.run(&["source-file", s(&conf)]);
    closing.kill_session("agent-max");
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the hook to run", Duration::from_secs(20), || {
        said().contains("hook-done")
    });
    assert!(
        lock_path(&w).exists(),
        "the namesake's live lock was released; hook said: {}",
        said()
    );
    assert_eq!(state_of(&sb, &w, &[]), "held-by-session");
    assert!(
        !lock_path(&mine).exists(),
        "the closed session's worker stays locked; hook said: {}",
        said()
    );
    closing.kill_server();
    other.kill_server();
}

/// A lock that records a session by name and no server (the Go tool's) can
/// only be judged `unverified` when the servers asked are not all of them;
/// its session may be a live namesake on a server not asked. A session gone
/// from the servers asked never acts for it.
#[test]
fn a_gone_session_never_releases_an_unverified_namesakes_lock() {
    let sb = Sandbox::new();
    let root = sb.path().join("town");
    let w = sb.worker("town/max");
    let other = sb.tmux("other", "agent-max");
    let closed = sb.tmux("closed", "keep");
    write_lock(&w, &go_lock(dead_pid(), Some("agent-max")));
    let asked = ["--tmux-socket", closed.socket.to_str().unwrap()];
    assert_eq!(state_of(&sb, &w, &asked), "unverified");
    sb.cmd()
        .args(asked)
        .args(["check", "--session", "agent-max", s(&w)])
        .assert()
        .code(1);
    sb.cmd()
        .args(asked)
        .args(["release", "--session", "agent-max", s(&w)])
        .assert()
        .code(1);
    sb.cmd()
        .args(asked)
        .args(["release", "--all", "--session", "agent-max", s(&root)])
        .assert()
        .success();
    assert!(lock_path(&w).exists(), "an unverified lock was released");
    closed.kill_server();
    other.kill_server();
}

/// A `TZ` naming a file that never ends (`/dev/zero`, directly or through
/// the zoneinfo directory) is read as UTC: `status` (and a refusal, which
/// prints the same time) answers instead of reading forever.
#[test]
fn a_tz_that_names_an_endless_file_is_read_as_utc() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    write_lock(
        &w,
        &format!(
            "{{\"pid\": {}, \"acquired_at\": \"2026-01-05T10:00:00-08:00\", \"hostname\": \"{}\"}}",
            dead_pid(),
            hostname()
        ),
    );
    for tz in ["/dev/zero", ":/dev/zero", "../../../dev/zero"] {
        let out = sb
            .cmd()
            .timeout(Duration::from_secs(20))
            .env("TZ", tz)
            .args(["status", s(&w)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("since 2026-01-05 18:00:00 +00:00"),
            "TZ={tz}: {:?} {text}",
            out.status
        );
    }
    // A claim records its time in UTC then, instead of reading forever.
    let holder = sleeper();
    let fresh = sb.worker("fresh");
    sb.cmd()
        .timeout(Duration::from_secs(20))
        .env("TZ", "/dev/zero")
        .args(["claim", "--pid", &holder.pid().to_string(), s(&fresh)])
        .assert()
        .success();
    assert!(lock_path(&fresh).exists());
}

/// The hook's release races a new session of the closed one's name: the
/// respawned agent claims the worker (its spawner exits, its session lives)
/// between the scan and the release taking the worker's guard. The session
/// was gone when tmux was first asked; the lock under the guard is a new
/// one, alive through its new session, and stays.
#[test]
fn release_all_asks_tmux_again_before_releasing_a_lock_it_reread() {
    let sb = Sandbox::new();
    let root = sb.path().join("town");
    let w = sb.worker("town/max");
    let t = sb.tmux("srv", "keep");
    let socket = t.socket.to_str().unwrap().to_string();
    t.new_session("agent-max", sb.path());
    claimed_by_a_gone_agent(&sb, &t.socket, &w);
    t.kill_session("agent-max");
    assert_eq!(state_of(&sb, &w, &["--tmux-socket", &socket]), "stale");

    let held = hold_guard(&w);
    let hook = sb
        .std_cmd()
        .args(["--tmux-socket", &socket, "release", "--all"])
        .args(["--session", "agent-max", s(&root)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let guard = std::fs::canonicalize(w.join(".runtime/agent.lock.flock")).unwrap();
    wait_for(
        "the release to wait for the guard",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(format!("/proc/{}/fd", hook.id()))
                .map(|d| {
                    d.flatten()
                        .any(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == guard))
                })
                .unwrap_or(false)
        },
    );
    // The respawned agent: a new agent-max, and its claim (spawner gone).
    t.new_session("agent-max", sb.path());
    write_lock(
        &w,
        &format!(
            "{{\"pid\": {}, \"acquired_at\": \"{}\", \"session_id\": \"agent-max\", \"tmux_socket\": \"{socket}\", \"hostname\": \"{}\"}}",
            dead_pid(),
            go_time(),
            hostname()
        ),
    );
    drop(held);
    let out = hook.wait_with_output().unwrap();
    assert!(
        lock_path(&w).exists(),
        "the new session's lock was released: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        state_of(&sb, &w, &["--tmux-socket", &socket]),
        "held-by-session"
    );
    t.kill_server();
}

/// The Go tool records `$TMUX_PANE` without its server. Every tmux server
/// has a pane `%0`: a process in server A's `%0` is not the holder of a lock
/// naming `%0` while server B has a `%0` too (it may be B's agent, living on
/// in its pane): `status` does not call it "yours", `check` says taken, and
/// `release` leaves it.
#[test]
fn a_pane_id_recorded_without_a_server_is_nobodys_when_two_servers_have_it() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let a = sb.tmux("a", "one");
    let b = sb.tmux("b", "two");
    assert_eq!(
        (a.pane_id("one"), b.pane_id("two")),
        ("%0".into(), "%0".into())
    );
    write_lock(&w, &go_lock(dead_pid(), Some("%0")));
    let tmux_env = format!("{},{},0", a.socket.to_str().unwrap(), a.server_pid);
    let in_a = |args: &[&str]| {
        let mut c = sb.cmd();
        c.env("TMUX", &tmux_env).env("TMUX_PANE", "%0").args(args);
        c
    };
    let out = in_a(&["status", "--json", s(&w)]).output().unwrap();
    let e = entry(&out.stdout);
    assert_eq!(
        (e["state"].as_str(), e["standing"].as_str()),
        (Some("held-by-session"), Some("taken")),
        "{e}"
    );
    in_a(&["check", s(&w)]).assert().code(1);
    in_a(&["release", s(&w)]).assert().code(1);
    assert!(
        lock_path(&w).exists(),
        "another server's pane's lock was released"
    );
    // With one server only, its %0 is the one recorded: the pane's own.
    b.kill_server();
    in_a(&["release", s(&w)]).assert().success();
    assert!(!lock_path(&w).exists());
    a.kill_server();
}
