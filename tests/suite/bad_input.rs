//! Bad input: a clear reason or one-line error, the documented exit code, no
//! panic, no hang, and nothing outside the worker touched.

use crate::common::*;

use predicates::str::contains;
use std::path::Path;

fn assert_no_panic(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// The files named `agent.lock.corrupt-*` in `.runtime`.
fn moved_aside(worker: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(worker.join(".runtime"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("agent.lock.corrupt-")
        })
        .collect()
}

#[test]
fn corrupt_contents_are_reported_then_moved_aside_by_claim() {
    let sb = Sandbox::new();
    let cases: &[(&str, &[u8], &str)] = &[
        ("empty", b"", "empty file"),
        (
            "truncated",
            b"{\n  \"pid\": 12,\n  \"acquired_",
            "invalid JSON at line 3",
        ),
        ("array", b"[1,2]", "expected a JSON object, found an array"),
        (
            "pid-zero",
            br#"{"pid":0}"#,
            "pid 0 is not a positive process id",
        ),
        (
            "pid-negative",
            br#"{"pid":-12}"#,
            "pid -12 is not a positive process id",
        ),
        (
            "pid-string",
            br#"{"pid":"12"}"#,
            "\"pid\" must be an integer",
        ),
        ("pid-huge", br#"{"pid":4294967296}"#, "out of range"),
        (
            "bad-time",
            br#"{"pid":5,"acquired_at":"last tuesday"}"#,
            "not an RFC 3339 time",
        ),
        ("nul", b"{\"pid\":5\x00}", "invalid JSON"),
        (
            "not-utf8",
            b"{\"pid\":5,\"hostname\":\"\xff\xfe\"}",
            "invalid JSON",
        ),
    ];
    let holder = sleeper();
    for (name, bytes, reason) in cases {
        let w = sb.worker(name);
        std::fs::create_dir_all(w.join(".runtime")).unwrap();
        std::fs::write(lock_path(&w), bytes).unwrap();
        let out = sb
            .cmd()
            .args(["status", "--json"])
            .arg(&w)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let e = entry(&out.stdout);
        assert_eq!(e["state"], "corrupt", "{name}");
        assert!(
            e["reason"].as_str().unwrap().contains(reason),
            "{name}: {e}"
        );

        let out = sb
            .cmd()
            .args(["claim", "--json", "--pid", &holder.pid().to_string()])
            .arg(&w)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(entry(&out.stdout)["action"], "replaced-corrupt");
        let aside = moved_aside(&w);
        assert_eq!(aside.len(), 1, "{name}");
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            *bytes,
            "{name}: moved aside intact, not deleted"
        );
    }
}

#[test]
fn oversized_lock_is_corrupt_and_not_read_whole() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    // 1 GiB sparse file: reading it whole would take seconds and a gigabyte.
    let f = std::fs::File::create(lock_path(&w)).unwrap();
    f.set_len(1 << 30).unwrap();
    let start = std::time::Instant::now();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "corrupt");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("over the 65536-byte limit"),
        "{e}"
    );
    sb.cmd()
        .args(["release", "--pid", "1"])
        .arg(&w)
        .assert()
        .code(1)
        .stderr(contains("corrupt"));
    sb.cmd()
        .args(["release", "--force"])
        .arg(&w)
        .assert()
        .code(0)
        .stdout(contains("moved corrupt lock aside"));
    assert!(!lock_path(&w).exists());
    assert_eq!(
        std::fs::metadata(&moved_aside(&w)[0]).unwrap().len(),
        1 << 30
    );
}

#[test]
fn directory_and_fifo_named_agent_lock() {
    let sb = Sandbox::new();
    let holder = sleeper();
    // A directory, with something inside that must survive.
    let w = sb.worker("dir");
    std::fs::create_dir_all(lock_path(&w)).unwrap();
    std::fs::write(lock_path(&w).join("keep"), "precious").unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(
        entry(&out.get_output().stdout)["reason"],
        "agent.lock is a directory"
    );
    sb.claim(&w, holder.pid(), &["-q"]).code(0);
    let aside = moved_aside(&w);
    assert_eq!(
        std::fs::read_to_string(aside[0].join("keep")).unwrap(),
        "precious"
    );
    assert!(lock_path(&w).is_file());

    // A FIFO: opening it must not block.
    let w = sb.worker("fifo");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    nix::unistd::mkfifo(
        &lock_path(&w),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(
        entry(&out.get_output().stdout)["reason"],
        "agent.lock is a FIFO"
    );
    sb.claim(&w, holder.pid(), &["-q"]).code(0);
    assert!(lock_path(&w).is_file());

    // A socket.
    let w = sb.worker("sock");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(lock_path(&w)).unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(
        entry(&out.get_output().stdout)["reason"],
        "agent.lock is a socket"
    );
}

#[test]
fn symlinks_are_never_followed() {
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let outside_lock = outside.path().join("agent.lock");
    std::fs::write(&outside_lock, go_lock(std::process::id() as i32, None)).unwrap();
    let holder = sleeper();
    let pid = holder.pid().to_string();
    let before = tree_digest(outside.path());

    // agent.lock -> a file outside the tree.
    let w = sb.worker("lock-link");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    std::os::unix::fs::symlink(&outside_lock, lock_path(&w)).unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "corrupt");
    assert!(
        e["reason"].as_str().unwrap().contains("is a symlink to"),
        "{e}"
    );
    let out = sb
        .cmd()
        .args(["claim", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not followed"), "{err}");
    sb.cmd()
        .args(["release", "--force"])
        .arg(&w)
        .assert()
        .code(2);
    assert!(
        std::fs::symlink_metadata(lock_path(&w))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // .runtime -> a directory outside the tree.
    let w = sb.worker("runtime-link");
    std::os::unix::fs::symlink(outside.path(), w.join(".runtime")).unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "corrupt");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .starts_with(".runtime is a symlink to"),
        "{e}"
    );
    sb.cmd()
        .args(["claim", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(2)
        .stderr(contains("refusing to follow or replace it"));
    sb.cmd()
        .args(["release", "--force"])
        .arg(&w)
        .assert()
        .code(2);
    sb.cmd()
        .arg("run")
        .arg(&w)
        .args(["--", "true"])
        .assert()
        .code(2);

    // Dangling symlink.
    let w = sb.worker("dangling");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/agent.lock", lock_path(&w)).unwrap();
    assert_eq!(state_of(&sb, &w, &[]), "corrupt");

    // .runtime is a plain file.
    let w = sb.worker("runtime-file");
    std::fs::write(w.join(".runtime"), "x").unwrap();
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    assert_eq!(
        entry(&out.get_output().stdout)["reason"],
        ".runtime is a regular file, not a directory"
    );
    sb.cmd()
        .args(["claim", "--pid", &pid])
        .arg(&w)
        .assert()
        .code(2);

    assert_eq!(
        tree_digest(outside.path()),
        before,
        "nothing outside the tree changed"
    );
}

#[test]
fn a_guard_file_symlink_is_refused() {
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::write(&target, "keep").unwrap();
    let w = sb.worker("w");
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    std::os::unix::fs::symlink(&target, w.join(".runtime/agent.lock.flock")).unwrap();
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &[])
        .code(2)
        .stderr(contains("guard file is a symlink"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(!lock_path(&w).exists());
}

/// Item 12: a reader that goes away (`| head -1`) ends the output quietly.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let sb = Sandbox::new();
    let root = sb.worker("town");
    // Far more than a pipe buffer of rows.
    for i in 0..3000 {
        write_lock(
            &root.join(format!("worker-with-a-longish-name-{i:05}")),
            &go_lock(dead_pid_cached(), None),
        );
    }
    for args in [
        &["list"][..],
        &["doctor", "--json"][..],
        &["list", "--json"][..],
    ] {
        let mut child = sb
            .std_cmd()
            .args(args)
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert_ne!(out.status.code(), Some(101), "{args:?}");
        assert!(out.status.code().is_some(), "{args:?}: ended by a signal");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// A PID that has exited, made once (3000 locks need not fork 3000 times).
fn dead_pid_cached() -> i32 {
    static PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID.get_or_init(dead_pid)
}

/// Item 12: a full disk after a mutation: exit 2 and one line saying what was done.
#[test]
fn output_that_cannot_be_written_says_what_was_already_done() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = sb
        .std_cmd()
        .args(["claim", "--json", "--pid", &holder.pid().to_string()])
        .arg(&w)
        .stdout(full())
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write output"), "{err}");
    assert!(err.contains("already done: claimed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(record_at(&w).pid, holder.pid(), "the claim stands");
    let out = sb
        .std_cmd()
        .args(["release", "--pid", &holder.pid().to_string()])
        .arg(&w)
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already done: released"));
    assert!(!lock_path(&w).exists());
}

/// Item 13: worker paths that are not UTF-8 are written lossily and flagged.
#[test]
fn non_utf8_paths_in_json_are_lossy_and_flagged() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let root = sb.worker("town");
    let w = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir_all(&w).unwrap();
    write_lock(&w, &go_lock(dead_pid(), None));
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["paths_lossy"], true, "{e}");
    assert!(
        e["worker_dir"].as_str().unwrap().ends_with("caf\u{fffd}"),
        "{e}"
    );
    for args in [&["list", "--json"][..], &["doctor", "--json", "--fix"][..]] {
        let out = sb.cmd().args(args).arg(&root).output().unwrap();
        assert_no_panic(&out);
        let report = json(&out.stdout);
        assert_eq!(report["paths_lossy"], true, "{report}");
    }
    assert!(
        !lock_path(&w).exists(),
        "--fix applied its fix and then printed it"
    );
}

/// Item 14: with --json, stdout is one JSON document, errors included.
#[test]
fn json_errors_are_json() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let missing = sb.path().join("missing");
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .arg(&w)
        .arg(&missing)
        .assert()
        .code(2);
    let v = json(&out.get_output().stdout);
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{v}");
    assert_eq!(workers[0]["state"], "free");
    assert_eq!(workers[1]["worker_dir"], missing.to_str().unwrap());
    assert_eq!(workers[1]["error"]["kind"], "no-such-worker", "{v}");
    let out = sb
        .cmd()
        .args(["claim", "--json", "--pid", "1"])
        .arg(&missing)
        .assert()
        .code(2);
    assert_eq!(
        json(&out.get_output().stdout)["error"]["kind"],
        "no-such-worker"
    );
    let out = sb
        .cmd()
        .args(["list", "--json"])
        .arg(&missing)
        .assert()
        .code(2);
    assert_eq!(json(&out.get_output().stdout)["error"]["kind"], "io");
    let out = sb
        .cmd()
        .args(["claim", "--json", "--bogus"])
        .arg(&w)
        .assert()
        .code(2);
    assert_eq!(json(&out.get_output().stdout)["error"]["kind"], "usage");
    let out = sb
        .cmd()
        .args(["claim", "--json", "--pid", "0"])
        .arg(&w)
        .assert()
        .code(2);
    assert_eq!(json(&out.get_output().stdout)["error"]["kind"], "usage");
}

/// Completions and the man page work with a fleet store exported (it may
/// be unreachable, or the build may lack the etcd feature): they never use it.
#[test]
fn completions_and_man_ignore_an_exported_store() {
    let sb = Sandbox::new();
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let out = sb
            .cmd()
            .env("AGENTLOCK_STORE", "etcd://127.0.0.1:1/nowhere")
            .args(args)
            .assert()
            .code(0);
        assert!(out.get_output().stdout.len() > 1000, "{args:?}");
    }
}
