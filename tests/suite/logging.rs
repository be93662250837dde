//! Diagnostics on stderr (`AGENTLOCK_LOG`): a command run without it says
//! nothing new; with `debug` it says which tmux servers it asked and how
//! each verdict was reached; nothing read from a lock file reaches stderr
//! raw.

use crate::common::*;
use std::path::PathBuf;

/// A worker claimed for a live process in a pane of a real tmux server:
/// the worker, the server, the pane and the process.
fn held_in_tmux(sb: &Sandbox) -> (PathBuf, Tmux, String, i32) {
    let w = sb.worker("w");
    let tmux = sb.tmux("agents", "main");
    let made = tmux.run(&[
        "new-session",
        "-d",
        "-P",
        "-F",
        "#{pane_id} #{pane_pid}",
        "-s",
        "agent",
        "exec sleep 1000",
    ]);
    let (pane, pid) = made.split_once(' ').expect("pane id and pid");
    let (pane, pid) = (pane.to_string(), pid.parse::<i32>().unwrap());
    sb.claim(&w, pid, &["--session", &pane]).code(0);
    (w, tmux, pane, pid)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn debug_says_which_tmux_server_was_asked_and_why_the_verdict() {
    let sb = Sandbox::new();
    let (w, tmux, pane, pid) = held_in_tmux(&sb);
    let out = sb
        .std_cmd()
        .env("AGENTLOCK_LOG", "debug")
        .arg("status")
        .arg(&w)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let socket = tmux.socket.display();
    for said in [
        format!("tmux server {socket} asked: ok"),
        format!("pid {pid}: alive (start time recorded"),
        format!("pane {pane} on {socket}: alive"),
        format!("verdict on the lock of pid {pid}: held: pid {pid} is alive in pane {pane}"),
        format!("{}: held: ", w.display()),
    ] {
        assert!(err.contains(&said), "no {said:?} in:\n{err}");
    }
    for line in err.lines() {
        assert!(
            line.contains(" agentlock status[") && line.contains("]: DEBUG "),
            "{line}"
        );
    }
    // The human answer is on stdout, as without the variable.
    assert!(String::from_utf8_lossy(&out.stdout).contains("held"));
}

#[test]
fn without_agentlock_log_commands_print_nothing_new_on_stderr() {
    let sb = Sandbox::new();
    let (w, _tmux, _pane, _pid) = held_in_tmux(&sb);
    for args in [vec!["status"], vec!["status", "--json"], vec!["list"]] {
        let mut c = sb.std_cmd();
        c.args(&args);
        if args[0] == "list" {
            c.arg(sb.path());
        } else {
            c.arg(&w);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(stderr_of(&out), "", "{args:?}");
    }
}

/// Escape sequences in a lock's session and tmux server reach the debug
/// log escaped, never raw (an OSC `\x1b]` would retitle the terminal).
#[test]
fn debug_never_writes_a_lock_files_control_bytes_raw() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let evil = r"x\u001b]0;owned\u0007";
    write_lock(
        &w,
        &format!(
            r#"{{"pid":{},"acquired_at":"{}","session_id":"{evil}","hostname":"{}","tmux_socket":"/tmp/nowhere\u001b[2J"}}"#,
            dead_pid(),
            go_time(),
            hostname()
        ),
    );
    let out = sb
        .std_cmd()
        .env("AGENTLOCK_LOG", "agentlock=debug")
        .arg("status")
        .arg(&w)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control bytes on stderr:\n{err:?}"
    );
    assert!(err.contains(r"session x\x1b]0;owned\x07"), "{err}");
    assert!(err.contains(r"tmux server /tmp/nowhere\x1b[2J"), "{err}");
    assert!(err.contains("verdict on the lock of pid"), "{err}");
}

/// A log line that cannot be written (stderr `/dev/full`, or a pipe whose
/// reader is gone) is dropped: it never panics nor changes what the
/// command does or its exit status. An `AGENTLOCK_LOG` that does not parse
/// says so on that stderr the same way.
#[test]
fn a_log_line_that_cannot_be_written_changes_nothing() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let closed_pipe = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    for filter in ["debug", "trace", "agentlock=trace", "[bogus"] {
        for (what, stderr) in [
            ("/dev/full", std::process::Stdio::from(full())),
            ("a closed pipe", std::process::Stdio::from(closed_pipe())),
        ] {
            let out = sb
                .std_cmd()
                .env("AGENTLOCK_LOG", filter)
                .arg("status")
                .arg(&w)
                .stderr(stderr)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "AGENTLOCK_LOG={filter}, stderr {what}: {out:?}"
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains(": free"), "{filter}, {what}: {said}");
        }
    }
}
