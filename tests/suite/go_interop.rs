//! Interop with a real Go client (tests/go, standard library only, gt's
//! LockInfo struct and flock protocol): Go reads what agentlock writes,
//! agentlock reads what Go writes, and the two racing to claim one worker
//! produce exactly one winner per round. Needs `go` (Debian: golang-go;
//! `.ci/run` installs it).

use crate::common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn go_client() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let go = which::which("go")
            .expect("the Go toolchain is needed: apt-get install golang-go (.ci/run does)");
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let bin = out_dir.join("agentlock-go");
        let status = Command::new(go)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go"))
            .env("GOCACHE", out_dir.join("go-cache"))
            .env("GOPATH", out_dir.join("go-path"))
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "on")
            .status()
            .unwrap();
        assert!(status.success(), "go build failed");
        bin
    })
}

fn go(args: &[&str]) -> std::process::Output {
    Command::new(go_client()).args(args).output().unwrap()
}

#[test]
fn go_reads_what_agentlock_wrote() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &["-q", "--session", "%4"])
        .code(0);
    let out = go(&["read", w.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["pid"], holder.pid());
    assert_eq!(v["session_id"], "%4");
    assert_eq!(v["hostname"], hostname());
    let ours =
        agentlock::record::LockRecord::parse(&std::fs::read(lock_path(&w)).unwrap()).unwrap();
    let go_time = chrono::DateTime::parse_from_rfc3339(v["acquired_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        Some(go_time),
        ours.acquired_at,
        "same instant to the nanosecond"
    );
}

#[test]
fn agentlock_reads_what_go_wrote() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let agent = sleeper();
    let tmux = sb.tmux("go", "agent");
    let pane = tmux.pane_id("agent");
    let out = go(&[
        "acquire",
        w.to_str().unwrap(),
        &agent.pid().to_string(),
        &pane,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(lock_path(&w)).unwrap();
    assert!(
        text.starts_with("{\n  \"pid\": "),
        "Go's MarshalIndent layout: {text}"
    );
    let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
    let e = entry(&out.get_output().stdout);
    assert_eq!(e["state"], "held");
    assert_eq!(e["pid"], agent.pid());
    assert_eq!(e["session_id"], pane.as_str());
    assert_eq!(e["session_alive"], true);
    // Held by Go's holder: agentlock refuses; the holder's PID releases it.
    let me = sleeper();
    sb.claim(&w, me.pid(), &[])
        .code(1)
        .stderr(predicates::str::contains(format!(
            "holder: pid {}",
            agent.pid()
        )));
    sb.cmd()
        .args(["release", "--pid", &agent.pid().to_string()])
        .arg(&w)
        .assert()
        .code(0);
    // And Go refuses what agentlock holds.
    sb.claim(&w, me.pid(), &["-q"]).code(0);
    let out = go(&["acquire", w.to_str().unwrap(), &agent.pid().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("locked by PID {}", me.pid())));
}

#[test]
fn go_and_agentlock_race_with_one_winner_per_round() {
    const ROUNDS: usize = 100;
    const EACH: usize = 6;
    let sb = Sandbox::new();
    let w = sb.worker("contested");
    let holders: Vec<Proc> = (0..2 * EACH).map(|_| sleeper()).collect();
    let go_bin = go_client();
    let mut go_wins = 0;
    for round in 0..ROUNDS {
        let mut kids = Vec::new();
        for (i, h) in holders.iter().enumerate() {
            let pid = h.pid().to_string();
            let child = if i % 2 == 0 {
                sb.std_cmd()
                    .args(["claim", "-q", "--pid", &pid])
                    .arg(&w)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            } else {
                Command::new(go_bin)
                    .args(["acquire", w.to_str().unwrap(), &pid])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            };
            kids.push((i % 2 == 1, h.pid(), child.unwrap()));
        }
        let results: Vec<_> = kids
            .into_iter()
            .map(|(is_go, pid, c)| (is_go, pid, c.wait_with_output().unwrap()))
            .collect();
        let winners: Vec<_> = results
            .iter()
            .filter(|r| r.2.status.code() == Some(0))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let (winner_is_go, winner, _) = winners[0];
        go_wins += usize::from(*winner_is_go);
        for (is_go, pid, out) in &results {
            if pid != winner {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "round {round} go={is_go}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let rec =
            agentlock::record::LockRecord::parse(&std::fs::read(lock_path(&w)).unwrap()).unwrap();
        assert_eq!(rec.pid, *winner, "round {round}");
        sb.cmd()
            .args(["release", "-q", "--pid", &winner.to_string()])
            .arg(&w)
            .assert()
            .code(0);
    }
    eprintln!(
        "go race: {ROUNDS} rounds, {EACH} agentlock + {EACH} Go claimants, one winner each round, Go won {go_wins}"
    );
}
