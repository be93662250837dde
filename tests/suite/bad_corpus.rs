//! The bad-input corpus (testdata/bad/cases.tsv): every case through `status`,
//! `list`, `doctor`, `doctor --fix` and `claim`. Each gives its documented
//! state, reason and exit code, never panics or hangs, and changes nothing
//! outside the tree.

use crate::common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    setup: String,
    state: String,
    claim_exit: i32,
    fix_exit: i32,
    reason: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bad")
}

fn cases() -> Vec<Case> {
    std::fs::read_to_string(corpus_dir().join("cases.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "bad line {l:?}");
            Case {
                name: f[0].into(),
                setup: f[1].into(),
                state: f[2].into(),
                claim_exit: f[3].parse().unwrap(),
                fix_exit: f[4].parse().unwrap(),
                reason: f[5].into(),
            }
        })
        .collect()
}

/// Builds the case's worker `<root>/w`; returns the original lock bytes for file cases.
fn build(case: &Case, root: &Path, outside: &Path) -> (PathBuf, Option<Vec<u8>>) {
    let w = root.join("w");
    let rt = w.join(".runtime");
    std::fs::create_dir_all(&w).unwrap();
    let lock = rt.join("agent.lock");
    let mut original = None;
    match case.setup.as_str() {
        "file" => {
            let bytes = std::fs::read(corpus_dir().join(format!("{}.lock", case.name))).unwrap();
            std::fs::create_dir_all(&rt).unwrap();
            std::fs::write(&lock, &bytes).unwrap();
            original = Some(bytes);
        }
        "big-10mb" => {
            std::fs::create_dir_all(&rt).unwrap();
            std::fs::write(&lock, vec![b' '; 10 << 20]).unwrap();
        }
        "sparse-1gb" => {
            std::fs::create_dir_all(&rt).unwrap();
            std::fs::File::create(&lock)
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
        }
        "directory" => std::fs::create_dir_all(lock.join("sub")).unwrap(),
        "fifo" => {
            std::fs::create_dir_all(&rt).unwrap();
            nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        }
        "socket" => {
            std::fs::create_dir_all(&rt).unwrap();
            // Bound, then the listener dropped: the socket file stays.
            drop(std::os::unix::net::UnixListener::bind(&lock).unwrap());
        }
        "dangling-symlink" => {
            std::fs::create_dir_all(&rt).unwrap();
            std::os::unix::fs::symlink("/nonexistent/agent.lock", &lock).unwrap();
        }
        "lock-symlink-out" => {
            std::fs::create_dir_all(&rt).unwrap();
            std::os::unix::fs::symlink(outside.join("target.lock"), &lock).unwrap();
        }
        "runtime-file" => std::fs::write(&rt, "not a dir").unwrap(),
        "runtime-symlink-out" => std::os::unix::fs::symlink(outside.join("runtime"), &rt).unwrap(),
        "unreadable-lock" => {
            write_lock(&w, &go_lock(1, None));
            std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        "unreadable-worker" => {
            write_lock(&w, &go_lock(dead_pid(), None));
            std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        "symlink-loop" => {
            write_lock(&w, &go_lock(dead_pid(), None));
            std::os::unix::fs::symlink("..", w.join("up")).unwrap();
            std::os::unix::fs::symlink(".", w.join("self")).unwrap();
            std::os::unix::fs::symlink(&w, w.join(".runtime/loop")).unwrap();
        }
        other => panic!("unknown setup {other}"),
    }
    (w, original)
}

/// A fresh sandbox with the tree `town/` and an outside dir the case may point at.
fn world() -> (Sandbox, PathBuf, tempfile::TempDir) {
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = sb.worker("town");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("target.lock"), go_lock(1, None)).unwrap();
    std::fs::create_dir_all(outside.path().join("runtime")).unwrap();
    std::fs::write(outside.path().join("runtime/agent.lock"), go_lock(1, None)).unwrap();
    (sb, root, outside)
}

fn check_output(case: &Case, what: &str, out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{} {what}: {err}", case.name);
    if out.status.code() == Some(2) && what != "list" {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{} {what}: one clear line: {err}",
            case.name
        );
    }
}

#[test]
fn every_bad_input_gives_its_documented_outcome() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let holder = sleeper();
    let mut tried = 0;
    for case in &cases {
        // status, list, doctor, doctor --fix on one copy of the case.
        let (sb, root, outside) = world();
        let (w, _) = build(case, &root, outside.path());
        let outside_before = tree_digest(outside.path());

        let out = sb
            .cmd_no_dac()
            .args(["status", "--json"])
            .arg(&w)
            .output()
            .unwrap();
        check_output(case, "status", &out);
        if case.state == "-" {
            assert_eq!(out.status.code(), Some(2), "{}", case.name);
        } else {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let e = entry(&out.stdout);
            assert_eq!(e["state"], case.state.as_str(), "{}: {e}", case.name);
            assert!(
                e["reason"].as_str().unwrap().contains(&case.reason),
                "{}: {e}",
                case.name
            );
        }

        let out = sb
            .cmd_no_dac()
            .args(["list", "--json"])
            .arg(&root)
            .output()
            .unwrap();
        check_output(case, "list", &out);
        let report = json(&out.stdout);
        if case.state == "-" {
            assert_eq!(out.status.code(), Some(2), "{}", case.name);
            assert_eq!(report["findings"][0]["kind"], "scan-error", "{}", case.name);
        } else {
            assert_eq!(out.status.code(), Some(0), "{}", case.name);
            assert_eq!(
                report["locks"][0]["state"],
                case.state.as_str(),
                "{}: {report}",
                case.name
            );
        }

        let out = sb
            .cmd_no_dac()
            .args(["doctor", "--json"])
            .arg(&root)
            .output()
            .unwrap();
        check_output(case, "doctor", &out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: every case is a finding",
            case.name
        );

        let out = sb
            .cmd_no_dac()
            .args(["doctor", "--fix", "--json"])
            .arg(&root)
            .output()
            .unwrap();
        check_output(case, "doctor --fix", &out);
        assert_eq!(
            out.status.code(),
            Some(case.fix_exit),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            tree_digest(outside.path()),
            outside_before,
            "{}: outside untouched",
            case.name
        );

        // claim on a fresh copy.
        let (sb, root, outside) = world();
        let (w, original) = build(case, &root, outside.path());
        let outside_before = tree_digest(outside.path());
        let out = sb
            .cmd_no_dac()
            .args(["claim", "--json", "--pid", &holder.pid().to_string()])
            .arg(&w)
            .output()
            .unwrap();
        check_output(case, "claim", &out);
        assert_eq!(
            out.status.code(),
            Some(case.claim_exit),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        if case.claim_exit == 0 && case.state == "corrupt" {
            let aside: Vec<PathBuf> = std::fs::read_dir(w.join(".runtime"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains("agent.lock.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "{}: moved aside, not deleted", case.name);
            if let Some(bytes) = original {
                assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes, "{}", case.name);
            }
        }
        assert_eq!(
            tree_digest(outside.path()),
            outside_before,
            "{}: outside untouched",
            case.name
        );
        if case.setup == "unreadable-worker" {
            std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        tried += 1;
    }
    eprintln!("bad inputs tried: {tried}, panics: 0, files outside the tree changed: 0");
}

#[test]
fn odd_tmux_session_names_match_exactly() {
    let sb = Sandbox::new();
    let tmux = sb.tmux("odd", "keeper");
    let names = [
        "my session",
        "ünïcödé-ß",
        "with.dot",
        "a:b",
        "tab\there",
        "$notanid",
        "%notapane",
        "back\\slash",
        "bell\u{7}x",
    ];
    for (i, name) in names.iter().enumerate() {
        let w = sb.worker(&format!("w{i}"));
        // tmux may rewrite a name (":" and "." become "_"): record the name it kept.
        let kept = tmux.run(&[
            "new-session",
            "-d",
            "-P",
            "-F",
            "#{session_name}",
            "-s",
            name,
            "-c",
            w.to_str().unwrap(),
        ]);
        assert!(!kept.is_empty());
        write_lock(&w, &go_lock(dead_pid(), Some(&kept)));
        // In the C locale too (cron): tmux would print `café` as `caf_`.
        let out = sb
            .cmd()
            .env("LC_ALL", "C")
            .args(["status", "--json"])
            .arg(&w)
            .assert()
            .code(0);
        let e = entry(&out.get_output().stdout);
        assert_eq!(
            e["state"], "held-by-session",
            "{name:?} kept as {kept:?}: {e}"
        );
        // The name as requested (before tmux rewrote it) names the same session.
        write_lock(&w, &go_lock(dead_pid(), Some(name)));
        assert_eq!(
            state_of(&sb, &w, &[]),
            "held-by-session",
            "{name:?} as requested"
        );
        // The same name with one character more is another session.
        write_lock(&w, &go_lock(dead_pid(), Some(&format!("{kept}x"))));
        assert_eq!(state_of(&sb, &w, &[]), "stale", "{name:?}");
    }
}
