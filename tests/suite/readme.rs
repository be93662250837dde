//! Every shell block of README.md runs as a reader would paste it, or says
//! why it cannot: a block is preceded by `<!-- test: ID -->` (run by the
//! test of that id below, which then checks its effect) or by
//! `<!-- not run: REASON -->`.
//!
//! Each block runs with `bash -euo pipefail -c BLOCK` in a town of its own:
//! `HOME` is a temp dir, the current directory is `~/town` (with
//! `workers/max`, `workers/joe`, `pool/1`..`pool/3`), `PATH` has stand-in
//! agents first, then the built `agentlock`; `TMUX_TMPDIR` is private and
//! `TMUX` unset, so the recipes' `tmux` commands start a server of the town's
//! own, which is ended by its socket at the end. The stand-in agents
//! (`claude`) note their PID and directory, then run until signalled and
//! exit 0 (or, with `AGENT_MODE=exit`, exit 0 at once).
//!
//! The fleet recipe runs only with the `etcd` feature, against a private
//! etcd member on loopback that replaces the recipe's example addresses.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");
const LIMIT: Duration = Duration::from_secs(30);

/// The ids of the blocks this module runs, each by a test below.
const RUN: &[&str] = &[
    "man-and-completions",
    "run-in-tmux",
    "run-taken",
    "claim-for-session",
    "session-closed-hook",
    "pool",
    "doctor-audit",
    "doctor-fix",
    // Run with the `etcd` feature only, against a private etcd member put in
    // place of the recipe's addresses (never contacted).
    "fleet",
];

#[derive(Debug, PartialEq)]
enum Mark {
    Test(String),
    NotRun(String),
    Unmarked,
}

#[derive(Debug)]
struct Block {
    /// Line of the opening fence in the markdown (1-based).
    line: usize,
    mark: Mark,
    text: String,
}

/// The shell blocks (```sh, ```bash, ```shell, ```console) of `md`, each
/// with the mark on the last non-blank line before it.
fn shell_blocks(md: &str) -> Vec<Block> {
    let lines: Vec<&str> = md.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("README.md:{}: unclosed code block", i + 1));
        if matches!(lang.trim(), "sh" | "bash" | "shell" | "console") {
            let before = lines[..i]
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !l.is_empty())
                .unwrap_or("");
            let comment = |prefix: &str| {
                before
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("-->"))
                    .map(|r| r.trim().to_string())
            };
            let mark = if let Some(id) = comment("<!-- test:") {
                Mark::Test(id)
            } else if let Some(reason) = comment("<!-- not run:") {
                Mark::NotRun(reason)
            } else {
                Mark::Unmarked
            };
            out.push(Block {
                line: i + 1,
                mark,
                text: lines[i + 1..end].join("\n") + "\n",
            });
        }
        i = end + 1;
    }
    out
}

/// The README block marked `<!-- test: ID -->`.
fn recipe(id: &str) -> String {
    shell_blocks(README)
        .into_iter()
        .find(|b| b.mark == Mark::Test(id.into()))
        .unwrap_or_else(|| panic!("README.md has no block marked `<!-- test: {id} -->`"))
        .text
}

#[test]
fn every_shell_block_of_the_readme_is_run_or_says_why_not() {
    let blocks = shell_blocks(README);
    let mut seen: Vec<String> = Vec::new();
    for b in &blocks {
        match &b.mark {
            Mark::Test(id) => {
                assert!(
                    RUN.contains(&id.as_str()),
                    "README.md:{}: `<!-- test: {id} -->` names no test in tests/suite/readme.rs",
                    b.line
                );
                assert!(
                    !seen.contains(id),
                    "README.md:{}: two blocks are marked `test: {id}`",
                    b.line
                );
                seen.push(id.clone());
            }
            Mark::NotRun(reason) => assert!(
                reason.split_whitespace().count() >= 3,
                "README.md:{}: `<!-- not run: ... -->` must say why ({reason:?})",
                b.line
            ),
            Mark::Unmarked => panic!(
                "README.md:{}: a shell block needs `<!-- test: ID -->` (and a test here) \
                 or `<!-- not run: REASON -->` on the line before it:\n{}",
                b.line, b.text
            ),
        }
    }
    for id in RUN {
        assert!(
            seen.iter().any(|s| s == id),
            "the README no longer has the block `test: {id}`: its test here checks nothing"
        );
    }
}

#[test]
fn the_block_parser_sees_marks_and_only_shell_blocks() {
    let md = "text\n<!-- test: a -->\n```sh\necho a\n```\n\n<!-- not run: needs a real etcd -->\n\n```bash\nb\n```\n```rust\nlet x = 1;\n```\n```console\nc\n```\n";
    let b = shell_blocks(md);
    assert_eq!(b.len(), 3, "{b:?}");
    assert_eq!(b[0].mark, Mark::Test("a".into()));
    assert_eq!(b[0].text, "echo a\n");
    assert_eq!(b[0].line, 3);
    assert_eq!(b[1].mark, Mark::NotRun("needs a real etcd".into()));
    assert_eq!(b[2].mark, Mark::Unmarked);
}

/// A reader's town: `~/town` with its workers, stand-in agents on `PATH`,
/// a private tmux socket directory.
struct Town {
    sb: Sandbox,
    home: PathBuf,
    root: PathBuf,
    /// Where the stand-in agents note `PID DIR`, one line each.
    log: PathBuf,
}

impl Town {
    fn new() -> Town {
        let sb = Sandbox::new();
        let home = sb.path().join("home");
        let root = home.join("town");
        for w in ["workers/max", "workers/joe", "pool/1", "pool/2", "pool/3"] {
            std::fs::create_dir_all(root.join(w)).unwrap();
        }
        let log = sb.path().join("agents.log");
        let agent = sb.bin_dir.join("claude");
        std::fs::write(
            &agent,
            "#!/bin/bash\n\
             # a stand-in agent: notes its PID and directory, then runs until\n\
             # signalled (and then exits 0, as an agent told to stop would)\n\
             echo \"$$ $PWD\" >> \"$AGENT_LOG\"\n\
             [ \"${AGENT_MODE:-}\" = exit ] && exit 0\n\
             exec -a claude perl -e '$SIG{$_} = sub { exit 0 } for qw(TERM INT HUP); sleep'\n",
        )
        .unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        Town {
            sb,
            home,
            root,
            log,
        }
    }

    fn worker(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `bash -euo pipefail -c SCRIPT` in the town, as the reader.
    fn shell(&self, script: &str) -> std::process::Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let mut path = self.sb.bin_dir.clone().into_os_string();
        path.push(":");
        path.push(bin_dir);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = self.sb.command("bash");
        c.args(["-euo", "pipefail", "-c", script])
            .current_dir(&self.root)
            .env("HOME", &self.home)
            .env("PATH", path)
            .env("AGENT_LOG", &self.log)
            .stdin(Stdio::null());
        c
    }

    /// Runs `script` to its end (60 s at most).
    fn output(&self, script: &str) -> Output {
        let mut c = assert_cmd::Command::from_std(self.shell(script));
        c.timeout(Duration::from_secs(60));
        c.output().unwrap()
    }

    /// Runs the README block `id` to its end.
    fn recipe(&self, id: &str) -> Output {
        self.output(&recipe(id))
    }

    /// Runs the README block `id` and asserts it exited 0.
    fn recipe_ok(&self, id: &str) -> Output {
        let out = self.recipe(id);
        assert_eq!(
            out.status.code(),
            Some(0),
            "recipe {id}: stdout {}\nstderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The stand-in agents started so far: PID and directory.
    fn agents(&self) -> Vec<(i32, PathBuf)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, dir) = l.split_once(' ')?;
                Some((pid.parse().ok()?, PathBuf::from(dir)))
            })
            .collect()
    }

    /// Waits until `n` agents have started; returns them.
    fn started(&self, n: usize) -> Vec<(i32, PathBuf)> {
        wait_for(&format!("{n} agents to start"), LIMIT, || {
            self.agents().len() >= n
        });
        self.agents()
    }

    /// Ends a stand-in agent as its user would (SIGTERM), once it is ready
    /// to exit 0 on it (its handler installed).
    fn stop(&self, pid: i32) {
        wait_catches(pid, nix::sys::signal::Signal::SIGTERM as i32);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// The socket of the town's default tmux server (the one the recipes'
    /// `tmux` commands use).
    fn socket(&self) -> PathBuf {
        self.sb.socket_dir().join("default")
    }

    fn tmux(&self, args: &[&str]) -> Output {
        self.sb
            .command("tmux")
            .arg("-S")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn session_alive(&self, name: &str) -> bool {
        self.tmux(&["has-session", "-t", &format!("={name}")])
            .status
            .success()
    }

    fn state(&self, rel: &str) -> String {
        state_of(&self.sb, &self.worker(rel), &[])
    }

    /// `rel` held by a process of its own (no session), for a recipe to
    /// find taken.
    fn hold(&self, rel: &str) -> Proc {
        let p = sleeper();
        self.sb.claim(&self.worker(rel), p.pid(), &[]).success();
        p
    }
}

impl Drop for Town {
    /// Ends what the recipes started: the town's tmux server, by its
    /// socket, then any stand-in agent still running (checked by name).
    fn drop(&mut self) {
        if self.socket().exists() {
            let pid =
                String::from_utf8_lossy(&self.tmux(&["display-message", "-p", "#{pid}"]).stdout)
                    .trim()
                    .parse::<i32>()
                    .ok();
            let _ = self.tmux(&["kill-server"]);
            if let Some(pid) = pid {
                wait_gone(pid, Duration::from_secs(5));
            }
        }
        for (pid, _) in self.agents() {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"claude\0"));
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn readme_man_pages_and_completions_install_under_home() {
    let t = Town::new();
    t.recipe_ok("man-and-completions");
    let man = t.home.join(".local/share/man/man1/agentlock.1");
    let page = std::fs::read_to_string(&man).unwrap_or_else(|e| panic!("{}: {e}", man.display()));
    assert!(page.contains(".TH"), "not a man page: {man:?}");
    for (file, says) in [
        (
            ".local/share/bash-completion/completions/agentlock",
            "agentlock",
        ),
        (".zfunc/_agentlock", "#compdef agentlock"),
        (
            ".config/fish/completions/agentlock.fish",
            "complete -c agentlock",
        ),
    ] {
        let text = std::fs::read_to_string(t.home.join(file)).unwrap();
        assert!(text.contains(says), "{file} does not contain {says:?}");
    }
}

#[test]
fn readme_run_in_tmux_holds_the_worker_for_the_agents_life() {
    let t = Town::new();
    t.recipe_ok("run-in-tmux");
    let w = t.worker("workers/max");
    let (agent, dir) = t.started(1)[0].clone();
    assert_eq!(dir, w, "claude runs in the worker");
    wait_for("the lock to name claude", LIMIT, || {
        lock_path(&w).exists() && record_at(&w).pid == agent
    });
    assert_eq!(t.state("workers/max"), "held");
    assert_eq!(
        comm(parent_of(agent)),
        "agentlock",
        "run stays claude's parent"
    );

    // Taken: a second run exits 75 and its claude never starts.
    let second = t.output("agentlock run workers/max -- claude");
    assert_eq!(second.status.code(), Some(75), "{second:?}");
    assert_eq!(t.agents().len(), 1, "the second claude started");
    assert_eq!(record_at(&w).pid, agent);

    // claude exits: the worker is released and the session ends.
    t.stop(agent);
    wait_for("run to release the worker", LIMIT, || {
        !lock_path(&w).exists()
    });
    wait_for("the session to end", LIMIT, || {
        !t.session_alive("agent-max")
    });
    assert_eq!(t.state("workers/max"), "free");
}

#[test]
fn readme_run_from_a_script_tells_taken_from_the_agents_own_exit() {
    // Taken: 75, reported, and claude never started; the holder keeps it.
    let t = Town::new();
    let holder = t.hold("workers/max");
    let out = t.recipe_ok("run-taken");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers/max is taken: claude did not start"),
        "{err}"
    );
    assert!(t.agents().is_empty(), "claude started: {:?}", t.agents());
    assert_eq!(record_at(&t.worker("workers/max")).pid, holder.pid());

    // Free: claude runs (and exits 0 here), and the worker is free after.
    let t = Town::new();
    let out = t
        .shell(&recipe("run-taken"))
        .env("AGENT_MODE", "exit")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("taken"),
        "{out:?}"
    );
    let agents = t.agents();
    assert_eq!(agents.len(), 1, "claude ran once");
    assert_eq!(
        agents[0].1,
        t.worker("workers/max"),
        "claude runs in its worker"
    );
    assert!(
        !lock_path(&t.worker("workers/max")).exists(),
        "released after claude"
    );
}

#[test]
fn readme_claim_for_a_session_is_held_by_it_and_released_when_the_agent_ends() {
    let t = Town::new();
    t.recipe_ok("claim-for-session");
    let w = t.worker("workers/joe");
    let rec = record_at(&w);
    assert_eq!(rec.session_id.as_deref(), Some("agent-joe"));
    assert!(t.session_alive("agent-joe"));
    // The spawner (the recipe's shell) has exited; the session holds it.
    assert_eq!(t.state("workers/joe"), "held-by-session");
    let (agent, dir) = t.started(1)[0].clone();
    assert_eq!(dir, w);
    let other = t.sb.cmd().arg("claim").arg(&w).output().unwrap();
    assert_eq!(other.status.code(), Some(1), "another claim is refused");

    t.stop(agent);
    wait_for("the pane's release", LIMIT, || !lock_path(&w).exists());
    wait_for("the session to end", LIMIT, || {
        !t.session_alive("agent-joe")
    });
}

#[test]
fn readme_session_closed_hook_releases_what_the_closed_session_held() {
    let t = Town::new();
    let out = t.output(
        "tmux new-session -d -s agent-a -c workers/max\n\
         tmux new-session -d -s agent-b -c pool/1\n",
    );
    assert!(out.status.success(), "{out:?}");
    // agent-a holds two workers, agent-b one; their spawners have exited.
    for (rel, session) in [
        ("workers/max", "agent-a"),
        ("workers/joe", "agent-a"),
        ("pool/1", "agent-b"),
    ] {
        let spawner = sleeper();
        t.sb.claim(&t.worker(rel), spawner.pid(), &["--session", session])
            .success();
        drop(spawner);
        assert_eq!(t.state(rel), "held-by-session", "{rel}");
    }

    t.recipe_ok("session-closed-hook");
    assert_eq!(
        t.tmux(&["kill-session", "-t", "=agent-a"]).status.code(),
        Some(0)
    );
    wait_for("the hook to release agent-a's workers", LIMIT, || {
        !lock_path(&t.worker("workers/max")).exists()
            && !lock_path(&t.worker("workers/joe")).exists()
    });
    assert_eq!(
        t.state("pool/1"),
        "held-by-session",
        "agent-b keeps its worker"
    );
}

#[test]
fn readme_pool_takes_the_first_free_slot_or_waits_for_one() {
    // Free slots: the first is taken for the session that runs claude in it.
    let t = Town::new();
    let out = t.recipe_ok("pool");
    let slot = t.worker("pool/1");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("agent-7 works in {}", slot.display())
    );
    assert_eq!(record_at(&slot).session_id.as_deref(), Some("agent-7"));
    assert_eq!(t.state("pool/1"), "held-by-session");
    let (agent, dir) = t.started(1)[0].clone();
    assert_eq!(dir, slot);
    t.stop(agent);
    wait_for("the pane's release", LIMIT, || !lock_path(&slot).exists());

    // Every slot taken: the recipe waits, and takes the first one freed.
    let t = Town::new();
    let holders: Vec<Proc> = ["pool/1", "pool/2", "pool/3"]
        .iter()
        .map(|rel| t.hold(rel))
        .collect();
    let mut spawner = t.shell(&recipe("pool"));
    spawner.stdout(Stdio::piped()).stderr(Stdio::piped());
    let spawner = Group::spawn(spawner);
    wait_for("the recipe to queue for every slot", LIMIT, || {
        ["pool/1", "pool/2", "pool/3"].iter().all(|rel| {
            std::fs::read_dir(t.worker(rel).join(".runtime")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(agentlock::wait::queue::TICKET_PREFIX)
                })
            })
        })
    });
    assert!(
        t.agents().is_empty(),
        "claude started while every slot was taken"
    );
    let mut holders = holders.into_iter();
    let _h1 = holders.next();
    drop(holders.next()); // pool/2's holder exits
    let _h3 = holders.next();
    let deadline = Instant::now() + LIMIT;
    let mut spawner = spawner;
    let status = loop {
        if let Some(s) = spawner.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting recipe did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    let slot = t.worker("pool/2");
    assert_eq!(record_at(&slot).session_id.as_deref(), Some("agent-7"));
    let (_, dir) = t.started(1)[0].clone();
    assert_eq!(dir, slot);
}

/// A town with one worker in each of three states: held (by a live
/// process), stale (a Go lock of a dead process) and corrupt.
fn town_with_findings(t: &Town) -> Proc {
    let holder = t.hold("workers/max");
    write_lock(&t.worker("workers/joe"), &go_lock(dead_pid(), None));
    write_lock(&t.worker("pool/1"), "{\"pid\": 0");
    holder
}

#[test]
fn readme_cron_audit_lists_the_findings_and_nothing_when_healthy() {
    let t = Town::new();
    let _holder = town_with_findings(&t);
    let out = t.recipe_ok("doctor-audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut kinds: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "kind, worker, message: {l:?}");
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("corrupt".into(), t.worker("pool/1").display().to_string()),
            (
                "stale".into(),
                t.worker("workers/joe").display().to_string()
            ),
        ]
    );
    let audit = json(&std::fs::read(t.root.join("audit.json")).unwrap());
    assert_eq!(audit["locks"].as_array().unwrap().len(), 3, "{audit}");
    assert!(
        lock_path(&t.worker("workers/joe")).exists(),
        "the audit changed nothing"
    );

    let t = Town::new();
    let _holder = t.hold("workers/max");
    let out = t.recipe_ok("doctor-audit");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "healthy: nothing to report"
    );
}

#[test]
fn readme_doctor_fix_removes_only_what_is_provably_dead() {
    let t = Town::new();
    let holder = town_with_findings(&t);
    t.recipe_ok("doctor-fix");
    assert!(
        !lock_path(&t.worker("workers/joe")).exists(),
        "stale lock removed"
    );
    assert!(
        !lock_path(&t.worker("pool/1")).exists(),
        "corrupt lock moved"
    );
    let aside = std::fs::read_dir(t.worker("pool/1").join(".runtime"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("agent.lock.corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the corrupt lock is kept aside");
    assert_eq!(record_at(&t.worker("workers/max")).pid, holder.pid());
    assert_eq!(t.state("workers/max"), "held");
}

/// The example store of the README's fleet recipe.
#[cfg(feature = "etcd")]
const README_STORE: &str = "etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/town";

/// The keeper a recipe started, found by the lease it published in its
/// state dir; SIGKILLed on drop.
#[cfg(feature = "etcd")]
struct KeeperIn(PathBuf);

#[cfg(feature = "etcd")]
impl KeeperIn {
    fn pid(&self) -> Option<i32> {
        std::fs::read_dir(self.0.join("agentlock"))
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".lease"))
            .find_map(|e| {
                let s = std::fs::read_to_string(e.path()).ok()?;
                s.split_whitespace().nth(1)?.parse().ok()
            })
    }
}

#[cfg(feature = "etcd")]
impl Drop for KeeperIn {
    fn drop(&mut self) {
        if let Some(pid) = self.pid().filter(|&p| p > 1) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(feature = "etcd")]
#[test]
fn readme_fleet_holds_the_worker_on_the_store_while_the_agent_runs() {
    let etcd = Etcd::start();
    let t = Town::new();
    let store = etcd.store("town");
    let block = recipe("fleet");
    assert!(
        block.contains(README_STORE),
        "the fleet recipe's store is no longer {README_STORE}: update this test"
    );
    let block = block.replace(README_STORE, &store);
    assert!(
        !block.contains("10.0.0."),
        "only the private member is asked"
    );
    let xdg = t.sb.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let keeper = KeeperIn(xdg.clone());
    let mut c = t.shell(&block);
    c.env("XDG_RUNTIME_DIR", &xdg)
        .env("AGENTLOCK_KEEPER_PERIOD", "0.2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut recipe = Group::spawn(c);

    let (agent, dir) = t.started(1)[0].clone();
    let w = t.worker("workers/max");
    assert_eq!(dir, w);
    // Read its environment once the stand-in has become the agent (exec'd).
    wait_exec(agent, "perl");
    let env = std::fs::read(format!("/proc/{agent}/environ")).unwrap();
    let fence = env
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"AGENTLOCK_FENCE="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("claude gets AGENTLOCK_FENCE");
    assert!(fence.parse::<u64>().is_ok_and(|f| f > 0), "{fence}");
    assert!(
        keeper.pid().is_some(),
        "the recipe started this host's keeper"
    );
    let key = "/town/workers/workers/max";
    let record = etcdctl(&etcd.endpoint, &["get", "--print-value-only", key])
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    assert!(
        record.contains(&format!("\"pid\":{agent}"))
            || record.contains(&format!("\"pid\": {agent}")),
        "the store names claude: {record:?}"
    );
    // Another claim of the worker, from the store, is refused.
    let other =
        t.sb.cmd()
            .args(["--store", &store, "--fleet-root"])
            .arg(&t.root)
            .env("XDG_RUNTIME_DIR", &xdg)
            .args(["claim", "workers/max"])
            .current_dir(&t.root)
            .output()
            .unwrap();
    assert_eq!(other.status.code(), Some(1), "{other:?}");

    // claude exits: run releases the record, then the recipe lists the fleet.
    t.stop(agent);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = recipe.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the fleet recipe did not finish");
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = recipe.0.stdout.take().map(|mut o| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut o, &mut s).unwrap();
        s
    });
    assert_eq!(status.code(), Some(0), "{status:?}: {out:?}");
    let left = etcdctl(
        &etcd.endpoint,
        &["get", "--prefix", "--keys-only", "/town/workers/"],
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&left).trim().is_empty(),
        "released on the store"
    );
    assert!(!lock_path(&w).exists(), "and its local lock file");
}
