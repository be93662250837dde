//! Lock files are untrusted input: what a hostile local user who can write a
//! worker (uid 65534 here) can make root's agentlock do. Nothing of theirs
//! runs as root, nobody else's process is signalled, no live lock is
//! removed, no control character reaches the terminal, and paths that
//! cannot be workers are refused with nothing created.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NOBODY: u32 = 65534;

/// A fake tmux server: answers every client with `MSG_SHELL <payload>`
/// (tmux protocol 8), which a tmux client obeys by exec'ing the payload.
const FAKE_SERVER: &str = r#"
use strict; use IO::Socket::UNIX; use Socket;
$SIG{PIPE} = 'IGNORE';
my ($path, $payload) = @ARGV;
my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => 16) or die "bind: $!";
chmod 0777, $path;
open(my $r, '>', "$path.ready") or die; close $r;
while (my $c = $l->accept) {
  my $msg = $payload . "\0";
  print $c pack("LSSLL", 209, 16 + length($msg), 0, 8, 0) . $msg;
  close $c;
}
"#;

fn root_only() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A sandbox user 65534 can enter, with a drop box it can write to.
struct World {
    sb: Sandbox,
    drop_box: PathBuf,
    payload: PathBuf,
}

impl World {
    fn new() -> World {
        let sb = Sandbox::new();
        open_to_all(sb.path());
        let drop_box = sb.worker("drop");
        std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let payload = sb.path().join("payload.sh");
        std::fs::write(
            &payload,
            format!(
                "#!/bin/sh\nid -u > {d}/ran-as\ncut -d' ' -f7 /proc/self/stat > {d}/tty\n",
                d = drop_box.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755)).unwrap();
        World {
            sb,
            drop_box,
            payload,
        }
    }

    /// Who the payload ran as, if it ran.
    fn payload_ran_as(&self) -> Option<String> {
        std::fs::read_to_string(self.drop_box.join("ran-as"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Starts the fake server as user 65534 at `socket`, running `interpreter`
    /// (perl, or a copy of perl named `tmux`); waits until it listens.
    fn fake_server(&self, socket: &Path, interpreter: &Path) -> Proc {
        let script = self.sb.path().join("fake-tmux.pl");
        std::fs::write(&script, FAKE_SERVER).unwrap();
        let dir = socket.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        let p = Proc(
            self.sb
                .as_user(
                    NOBODY,
                    &[
                        interpreter.to_str().unwrap(),
                        script.to_str().unwrap(),
                        socket.to_str().unwrap(),
                        self.payload.to_str().unwrap(),
                    ],
                )
                .spawn()
                .unwrap(),
        );
        let ready = PathBuf::from(format!("{}.ready", socket.display()));
        wait_for("the fake tmux server", Duration::from_secs(20), || {
            ready.exists()
        });
        p
    }

    /// A worker owned by 65534 whose lock, written "by" 65534, is `json`.
    fn nobody_lock(&self, name: &str, json: &str) -> PathBuf {
        let w = self.sb.worker(name);
        write_lock(&w, json);
        for p in [w.clone(), w.join(".runtime"), lock_path(&w)] {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        w
    }
}

/// `status --json` of `worker` as root: the payload never ran, and the
/// worker is unverified for a reason that says `why`.
fn assert_unverified(w: &World, worker: &Path, why: &str) {
    let out =
        w.sb.cmd()
            .args(["status", "--json"])
            .arg(worker)
            .output()
            .unwrap();
    let e = entry(&out.stdout);
    assert_eq!(w.payload_ran_as(), None, "a payload ran");
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(e["reason"].as_str().unwrap().contains(why), "{e}");
}

fn lock_json(fields: &[(&str, serde_json::Value)]) -> String {
    let mut m = serde_json::Map::new();
    m.insert("acquired_at".into(), go_time().into());
    m.insert("hostname".into(), hostname().into());
    for (k, v) in fields {
        m.insert((*k).into(), v.clone());
    }
    serde_json::to_string_pretty(&m).unwrap()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

fn ns(kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .ino()
}

/// Every command root runs over a town, in turn (none may run the payload),
/// with its exit code and the code it must have: a "no" for every question
/// whose answer needs the lock's session.
fn every_command(w: &World, worker: &Path) -> Vec<(String, i32, i32)> {
    let root = worker.parent().unwrap();
    let claimer = sleeper();
    let runs: Vec<(Vec<String>, i32)> = vec![
        (vec!["list".into(), root.display().to_string()], 0),
        (vec!["status".into(), worker.display().to_string()], 0),
        (vec!["check".into(), worker.display().to_string()], 1),
        (vec!["doctor".into(), root.display().to_string()], 1),
        (
            vec!["doctor".into(), "--fix".into(), root.display().to_string()],
            1,
        ),
        (
            vec![
                "claim".into(),
                worker.display().to_string(),
                "--pid".into(),
                claimer.pid().to_string(),
            ],
            1,
        ),
        (
            vec![
                "claim".into(),
                "--first-free".into(),
                worker.display().to_string(),
                "--pid".into(),
                claimer.pid().to_string(),
            ],
            1,
        ),
    ];
    runs.into_iter()
        .map(|(args, want)| {
            let out = w.sb.cmd().args(&args).output().unwrap();
            (args.join(" "), out.status.code().unwrap_or(-1), want)
        })
        .collect()
}

#[test]
fn a_fake_tmux_server_never_runs_its_payload_as_root() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let socket = w.sb.path().join("evil/sock");
    let _fake = w.fake_server(&socket, Path::new("/usr/bin/perl"));
    let sock = socket.to_str().unwrap();
    // The attacker's own lock, and a root-owned lock whose recorded server
    // path the attacker now listens on.
    let theirs = w.nobody_lock(
        "town/theirs",
        &lock_json(&[
            ("pid", dead_pid().into()),
            ("session_id", "%0".into()),
            ("tmux_socket", sock.into()),
            ("uid", NOBODY.into()),
        ]),
    );
    let roots = w.sb.worker("town/roots");
    write_lock(
        &roots,
        &lock_json(&[
            ("pid", dead_pid().into()),
            ("session_id", "agent".into()),
            ("tmux_socket", sock.into()),
            ("uid", 0.into()),
        ]),
    );
    for worker in [&theirs, &roots] {
        for (cmd, code, want) in every_command(&w, worker) {
            assert_eq!(
                w.payload_ran_as(),
                None,
                "`agentlock {cmd}` ran the payload"
            );
            assert_eq!(code, want, "`agentlock {cmd}`");
        }
        // Not a tmux server: unknown, never stale, never removed.
        let e = entry(
            &w.sb
                .cmd()
                .args(["status", "--json"])
                .arg(worker)
                .output()
                .unwrap()
                .stdout,
        );
        assert_eq!(e["state"], "unverified", "{e}");
        assert!(
            e["reason"].as_str().unwrap().contains("not a tmux server"),
            "{e}"
        );
        assert!(lock_path(worker).exists());
    }
}

#[test]
fn a_server_that_passes_for_tmux_is_asked_only_as_its_owner() {
    if !root_only() {
        return;
    }
    let w = World::new();
    // perl copied under the name tmux: it passes for a tmux install.
    let fake_bin = w.sb.worker("evilbin").join("tmux");
    program_as("perl", &fake_bin);
    let socket = w.sb.path().join("evil/sock");
    let _fake = w.fake_server(&socket, &fake_bin);
    let worker = w.nobody_lock(
        "town/w",
        &lock_json(&[
            ("pid", dead_pid().into()),
            ("session_id", "%0".into()),
            ("tmux_socket", socket.to_str().unwrap().into()),
            ("uid", NOBODY.into()),
        ]),
    );
    // Root runs it from a terminal (`script` gives it one).
    let status = format!("'{BIN}' status '{}'", worker.display());
    let out =
        w.sb.command("script")
            .args(["-qec", &status, "/dev/null"])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The client obeyed its server, as tmux does, but as the server's owner
    // and without root's terminal: the attacker ran a program as itself,
    // which it could anyway, and cannot type into root's shell.
    assert_eq!(w.payload_ran_as().as_deref(), Some("65534"));
    let tty = std::fs::read_to_string(w.drop_box.join("tty")).unwrap();
    assert_eq!(tty.trim(), "0", "the payload had a controlling terminal");
}

#[test]
fn a_forged_lock_never_gets_a_root_daemon_signalled() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let daemon = sleeper();
    let forged = lock_json(&[
        ("pid", daemon.pid().into()),
        ("pid_start", start_of(daemon.pid()).into()),
        ("uid", 0.into()),
        ("boot_id", boot_id().into()),
        ("pid_ns", ns("pid").into()),
        ("mnt_ns", ns("mnt").into()),
    ]);
    let worker = w.nobody_lock("town/w", &forged);
    // Unverified: it names a root process from a file of uid 65534.
    let e = entry(
        &w.sb
            .cmd()
            .args(["status", "--json"])
            .arg(&worker)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(e["state"], "unverified", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("speaks only for its file's owner"),
        "{e}"
    );
    // The daemon itself is not told it holds it, nor may it release it.
    w.sb.cmd()
        .args(["check", "--pid", &daemon.pid().to_string()])
        .arg(&worker)
        .assert()
        .code(1);
    w.sb.cmd()
        .args(["release", "--pid", &daemon.pid().to_string()])
        .arg(&worker)
        .assert()
        .code(1);
    let taker = sleeper();
    let out =
        w.sb.cmd()
            .args(["claim", "--force", "--signal-other", "--pid"])
            .arg(taker.pid().to_string())
            .arg(&worker)
            .output()
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "did not signal pid {}: the lock file belongs to uid 65534",
            daemon.pid()
        )),
        "{stderr}"
    );
    assert!(pid_alive(daemon.pid()));
}

/// Locks owned by 65534 forging every field, judged and fixed by root: no
/// process of root (this test, a daemon, a tmux server, PID 1) is called
/// the attacker's, signalled or made a reason to delete; nothing runs.
#[test]
fn a_hostile_corpus_changes_nothing_that_is_not_its_own() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let fake_socket = w.sb.path().join("evil/sock");
    let _fake = w.fake_server(&fake_socket, Path::new("/usr/bin/perl"));
    let tmux = w.sb.tmux("default", "rootsess");
    let pane = tmux.pane_id("rootsess");
    let daemon = sleeper();
    let me = std::process::id() as i32;
    let real = |pid: i32| -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("pid", pid.into()),
            ("pid_start", start_of(pid).into()),
            ("boot_id", boot_id().into()),
            ("pid_ns", ns("pid").into()),
        ]
    };
    let with = |mut base: Vec<(&'static str, serde_json::Value)>,
                more: &[(&'static str, serde_json::Value)]| {
        base.extend(more.iter().cloned());
        lock_json(&base)
    };
    let root_socket = tmux.socket.to_str().unwrap().to_string();
    let live: Vec<(&str, String)> = vec![
        (
            "daemon-as-root",
            with(real(daemon.pid()), &[("uid", 0.into())]),
        ),
        (
            "daemon-go-style",
            lock_json(&[("pid", daemon.pid().into())]),
        ),
        (
            "daemon-as-nobody",
            with(real(daemon.pid()), &[("uid", NOBODY.into())]),
        ),
        ("pid-1", lock_json(&[("pid", 1.into()), ("uid", 0.into())])),
        ("this-test", with(real(me), &[("uid", 0.into())])),
        (
            "tmux-server",
            with(real(tmux.server_pid), &[("uid", 0.into())]),
        ),
        (
            "root-pane",
            lock_json(&[
                ("pid", daemon.pid().into()),
                ("session_id", pane.clone().into()),
                ("tmux_socket", root_socket.clone().into()),
            ]),
        ),
    ];
    let dead: Vec<(&str, String)> = vec![
        (
            "root-pane-dead-pid",
            lock_json(&[
                ("pid", dead_pid().into()),
                ("session_id", "%99".into()),
                ("tmux_socket", root_socket.clone().into()),
            ]),
        ),
        (
            "fake-server",
            lock_json(&[
                ("pid", dead_pid().into()),
                ("session_id", "%0".into()),
                ("tmux_socket", fake_socket.to_str().unwrap().into()),
            ]),
        ),
        (
            "relative-socket",
            lock_json(&[
                ("pid", dead_pid().into()),
                ("session_id", "%0".into()),
                ("tmux_socket", "evil/sock".into()),
            ]),
        ),
        (
            "proc-fd-socket",
            lock_json(&[
                ("pid", dead_pid().into()),
                ("session_id", "%0".into()),
                ("tmux_socket", "/proc/self/fd/0".into()),
            ]),
        ),
        (
            // A sandboxed agent's server, invisible from this mount namespace.
            "other-mount-ns",
            lock_json(&[
                ("pid", dead_pid().into()),
                ("session_id", "%0".into()),
                ("uid", NOBODY.into()),
                ("mnt_ns", 1.into()),
                (
                    "tmux_socket",
                    w.sb.path().join("evil/gone").to_str().unwrap().into(),
                ),
            ]),
        ),
    ];
    let mut workers = Vec::new();
    for (name, json) in live.iter().chain(&dead) {
        workers.push((*name, w.nobody_lock(&format!("town/{name}"), json)));
    }
    let town = w.sb.path().join("town");
    let before: Vec<_> = workers
        .iter()
        .map(|(n, wk)| (*n, std::fs::read(lock_path(wk)).unwrap()))
        .collect();
    let out =
        w.sb.cmd()
            .args(["doctor", "--fix", "--json"])
            .arg(&town)
            .output()
            .unwrap();
    let report = json(&out.stdout);
    assert_eq!(w.payload_ran_as(), None);
    for (pid, what) in [
        (daemon.pid(), "the daemon"),
        (tmux.server_pid, "root's tmux server"),
        (1, "PID 1"),
    ] {
        assert!(pid_alive(pid), "{what} was signalled");
    }
    // Each names a live process of root, or a session that cannot be proven
    // gone from here: every one stays, unverified.
    for (name, bytes) in &before {
        let wk = &workers.iter().find(|(n, _)| n == name).unwrap().1;
        let state = report["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| {
                l["worker_dir"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/{name}"))
            })
            .map(|l| l["state"].as_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(
            std::fs::read(lock_path(wk)).ok().as_ref(),
            Some(bytes),
            "{name} ({state}) was changed"
        );
        assert_eq!(state, "unverified", "{name}");
        // Nobody's forged lock is ever root's: check and release refuse.
        for pid in [daemon.pid(), me, 1] {
            w.sb.cmd()
                .args(["check", "--pid", &pid.to_string()])
                .arg(wk)
                .assert()
                .code(1);
        }
    }
}

/// Every field a line prints, and the worker's own name, full of escape
/// sequences: no control character reaches the terminal, no line is forged,
/// and the suggested command pastes as one worker.
#[test]
fn escape_sequences_never_reach_the_terminal() {
    let sb = Sandbox::new();
    let nasty = "\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}";
    let town = sb.worker("town");
    let worker = sb.worker(&format!("town/my worker;{nasty}\nholder: pid 4242 FORGED"));
    let holder = sleeper();
    write_lock(
        &worker,
        &lock_json(&[
            ("pid", holder.pid().into()),
            (
                "session_id",
                format!("s{nasty}\nholder: pid 4242 FORGED").into(),
            ),
            ("hostname", hostname().into()),
            ("boot_id", format!("b{nasty}").into()),
        ]),
    );
    let other = sb.worker(&format!("town/h{nasty}"));
    write_lock(
        &other,
        &lock_json(&[
            ("pid", holder.pid().into()),
            (
                "hostname",
                format!("host{nasty}\n  holder: pid 4242 FORGED").into(),
            ),
        ]),
    );
    let corrupt = sb.worker(&format!("town/c{nasty}"));
    write_lock(&corrupt, &format!("{{\"pid\": \"{nasty}\"}}"));
    let claimer = sleeper();
    let pid = claimer.pid().to_string();
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["list".into(), town.clone().into()],
        vec!["doctor".into(), town.clone().into()],
        vec![
            "status".into(),
            worker.clone().into(),
            other.clone().into(),
            corrupt.clone().into(),
        ],
        vec!["check".into(), worker.clone().into(), other.clone().into()],
        vec![
            "claim".into(),
            worker.clone().into(),
            "--pid".into(),
            pid.clone().into(),
        ],
        vec![
            "claim".into(),
            other.clone().into(),
            "--pid".into(),
            pid.clone().into(),
        ],
        vec![
            "release".into(),
            worker.clone().into(),
            "--pid".into(),
            pid.clone().into(),
        ],
        vec![
            "claim".into(),
            "--first-free".into(),
            worker.clone().into(),
            other.clone().into(),
            "--pid".into(),
            pid.clone().into(),
        ],
        vec![
            "run".into(),
            worker.clone().into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "status".into(),
            sb.path().join(format!("missing{nasty}")).into(),
        ],
    ];
    for args in &runs {
        let out = sb.cmd().args(args).output().unwrap();
        for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(stream);
            let bad: Vec<char> = text
                .chars()
                .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
                .collect();
            assert!(bad.is_empty(), "{args:?} {name} wrote {bad:?}:\n{text}");
            for line in text.lines() {
                assert!(
                    !line.trim_start().starts_with("holder: pid 4242 FORGED"),
                    "{args:?} {name} forged a line: {text}"
                );
            }
        }
    }
    // The way out names exactly one worker when pasted.
    let dir = sb.worker("town/my worker; rm -rf ~");
    write_lock(&dir, &go_lock(holder.pid(), None));
    let out = sb
        .cmd()
        .args(["claim", "--pid", &pid])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hint = stderr
        .lines()
        .find_map(|l| {
            l.split_once(": agentlock ")
                .map(|(_, h)| format!("agentlock {h}"))
        })
        .map(|h| h.split(" (add").next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no suggested command in {stderr}"));
    let words = shlex::split(&hint).unwrap();
    assert_eq!(
        words,
        ["agentlock", "claim", dir.to_str().unwrap(), "--force"],
        "{hint}"
    );
}

#[test]
fn paths_that_cannot_be_workers_are_refused_and_nothing_is_created() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    let pid = holder.pid().to_string();
    sb.claim(&w, holder.pid(), &[]).code(0);
    let before = tree_digest(sb.path());
    let runtime = w.join(".runtime");
    let lock = lock_path(&w);
    let cases: Vec<(PathBuf, Option<PathBuf>)> = vec![
        (PathBuf::from("/"), None),
        (runtime.clone(), Some(w.clone())),
        (lock.clone(), Some(w.clone())),
        (runtime.join("missing"), Some(w.clone())),
    ];
    let root_runtime_existed = Path::new("/.runtime").exists();
    for (path, meant) in &cases {
        for cmd in [
            vec!["claim", "--pid", &pid],
            vec!["release", "--force"],
            vec!["status"],
            vec!["check"],
            vec!["run"],
        ] {
            let mut c = sb.cmd();
            c.args(&cmd).arg(path);
            if cmd == ["run"] {
                c.args(["--", "true"]);
            }
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            assert_eq!(code, Some(2), "{cmd:?} {}: {stderr}", path.display());
            assert!(stderr.contains("not a worker directory"), "{stderr}");
            if let Some(m) = meant {
                assert!(
                    stderr.contains(&format!("did you mean {}?", m.display())),
                    "{stderr}"
                );
            }
        }
    }
    assert_eq!(tree_digest(sb.path()), before, "nothing created or changed");
    assert_eq!(Path::new("/.runtime").exists(), root_runtime_existed);
}

/// Listeners that pass for tmux and never answer, one per lock: at most a
/// bounded number of tmux clients run at once, all within one time limit;
/// the servers not reached by then are errors (unverified), not a process
/// each.
#[test]
fn many_hanging_servers_cost_a_bounded_number_of_clients() {
    const N: usize = 40;
    const PARALLEL: usize = 16;
    let sb = Sandbox::new();
    let fake_bin = sb.worker("bin2").join("tmux");
    program_as("perl", &fake_bin);
    let dir = sb.worker("socks");
    let script = sb.path().join("hang.pl");
    std::fs::write(
        &script,
        r#"use IO::Socket::UNIX; use Socket; my ($dir, $n) = @ARGV; my @l;
for my $i (1..$n) { push @l, IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => "$dir/s$i", Listen => 16) or die "bind: $!"; }
open(my $r, '>', "$dir/ready") or die; close $r; sleep 600;"#,
    )
    .unwrap();
    let _hang = Proc(
        std::process::Command::new(&fake_bin)
            .arg(&script)
            .arg(&dir)
            .arg(N.to_string())
            .spawn()
            .unwrap(),
    );
    wait_for("the hanging listeners", Duration::from_secs(20), || {
        dir.join("ready").exists()
    });
    let workers: Vec<PathBuf> = (1..=N)
        .map(|i| {
            let w = sb.worker(&format!("town/w{i:02}"));
            write_lock(
                &w,
                &lock_json(&[
                    ("pid", dead_pid().into()),
                    ("session_id", "%0".into()),
                    (
                        "tmux_socket",
                        dir.join(format!("s{i}")).to_str().unwrap().into(),
                    ),
                ]),
            );
            w
        })
        .collect();
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .args(&workers)
        .output()
        .unwrap();
    let doc = json(&out.stdout);
    let reasons: Vec<String> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["state"], "unverified", "{e}");
            e["reason"].as_str().unwrap().to_string()
        })
        .collect();
    let timed_out = reasons
        .iter()
        .filter(|r| r.contains("no answer within"))
        .count();
    let not_asked = reasons.iter().filter(|r| r.contains("not asked")).count();
    assert_eq!(
        (timed_out, not_asked),
        (PARALLEL, N - PARALLEL),
        "{reasons:#?}"
    );
}

/// A root listener inside another mount namespace (a container's root, a
/// sandbox), reached through `/proc/PID/root/...`: root would run its client
/// as root, so it is never asked from here.
#[test]
fn a_server_in_another_mount_namespace_is_never_asked() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let fake_bin = w.sb.worker("bin3").join("tmux");
    program_as("perl", &fake_bin);
    let script = w.sb.path().join("fake-tmux.pl");
    std::fs::write(&script, FAKE_SERVER).unwrap();
    let hidden = w.sb.worker("hidden");
    let inner = format!(
        "mount -t tmpfs none '{h}' && exec '{}' '{}' '{h}/sock' '{}'",
        fake_bin.display(),
        script.display(),
        w.payload.display(),
        h = hidden.display()
    );
    let fake = Proc(
        w.sb.command("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &inner])
            .spawn()
            .unwrap(),
    );
    let through = PathBuf::from(format!(
        "/proc/{}/root{}/sock",
        fake.pid(),
        hidden.display()
    ));
    let ready = PathBuf::from(format!("{}.ready", through.display()));
    wait_for("the hidden fake server", Duration::from_secs(20), || {
        ready.exists()
    });
    let worker = w.nobody_lock(
        "town/w",
        &lock_json(&[
            ("pid", dead_pid().into()),
            ("session_id", "%0".into()),
            ("tmux_socket", through.to_str().unwrap().into()),
        ]),
    );
    assert_unverified(&w, &worker, "another mount namespace");
}

/// Another user's lock, naming only a session: root asking from a pane of
/// that name is not its holder (a session names no user).
#[test]
fn a_session_never_makes_another_users_lock_yours() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let worker = w.nobody_lock(
        "town/w",
        &lock_json(&[("pid", dead_pid().into()), ("session_id", "%0".into())]),
    );
    let before = std::fs::read(lock_path(&worker)).unwrap();
    w.sb.cmd()
        .args(["check", "--session", "%0"])
        .arg(&worker)
        .assert()
        .code(1);
    w.sb.cmd()
        .env("TMUX_PANE", "%0")
        .args(["check"])
        .arg(&worker)
        .assert()
        .code(1);
    w.sb.cmd()
        .args(["release", "--session", "%0"])
        .arg(&worker)
        .assert()
        .code(1);
    assert_eq!(std::fs::read(lock_path(&worker)).unwrap(), before);
    // Its own user, asking from that pane, may.
    let out =
        w.sb.as_user(
            NOBODY,
            &[BIN, "check", "--session", "%0", worker.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EXCHANGER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/fs.h>
int main(int argc, char **argv) {
  FILE *f = fopen(argv[3], "w"); fclose(f);
  for (;;) syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE);
}
"#;

/// A worker path swapped for another user's symlink between its check and
/// its use (a directory and a symlink exchanged in a loop, `renameat2`):
/// root's claims never create anything where the symlink points.
#[test]
fn a_worker_swapped_for_a_symlink_is_never_followed() {
    let sb = Sandbox::new();
    let exchanger = compile_c(&sb, "exchange", EXCHANGER);
    let target = sb.worker("rootonly");
    let race = sb.worker("race");
    let w = sb.worker("race/w");
    let link = race.join("l");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // The attacker's symlink, in the attacker's directory.
    if root_only() {
        std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&race, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let started = sb.path().join("exchanging");
    let _swap = Proc(
        std::process::Command::new(&exchanger)
            .arg(&w)
            .arg(&link)
            .arg(&started)
            .spawn()
            .unwrap(),
    );
    wait_for("the exchanger", Duration::from_secs(20), || {
        started.exists()
    });
    let holder = sleeper();
    let pid = holder.pid().to_string();
    for _ in 0..200 {
        let _ = sb
            .cmd()
            .args(["claim", "--pid", &pid])
            .arg(&w)
            .output()
            .unwrap();
        let _ = sb
            .cmd()
            .args(["release", "--force"])
            .arg(&w)
            .output()
            .unwrap();
        assert!(
            !target.join(".runtime").exists(),
            "a claim through the swapped-in symlink created {}",
            target.join(".runtime").display()
        );
    }
}

/// `/tmp/tmux-0` made by another user before root's first tmux: tmux would
/// refuse it, and so does agentlock (never asked, never proof).
#[test]
fn a_socket_directory_made_by_another_user_is_not_trusted() {
    if !root_only() {
        return;
    }
    let w = World::new();
    open_to_all(&w.sb.tmux_tmpdir);
    let socket = w.sb.socket_dir().join("default");
    let _fake = w.fake_server(&socket, Path::new("/usr/bin/perl"));
    let worker = w.sb.worker("town/w");
    write_lock(&worker, &go_lock(dead_pid(), Some("agent")));
    assert_unverified(&w, &worker, "belongs to uid 65534");
}

/// Root's own lock, moved by the owner of two workers from one to the other:
/// it names root's holder of the first, so `--signal-other` on the second
/// must not SIGTERM it.
#[test]
fn a_lock_moved_between_workers_gets_nobody_signalled() {
    if !root_only() {
        return;
    }
    let w = World::new();
    let (w1, w2) = (w.sb.worker("town/w1"), w.sb.worker("town/w2"));
    for d in [&w1, &w2] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let holder = sleeper();
    w.sb.claim(&w1, holder.pid(), &[]).code(0);
    std::fs::create_dir_all(w2.join(".runtime")).unwrap();
    std::os::unix::fs::chown(w2.join(".runtime"), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::rename(lock_path(&w1), lock_path(&w2)).unwrap();
    let taker = sleeper();
    let out =
        w.sb.cmd()
            .args(["claim", "--force", "--signal-other", "--pid"])
            .arg(taker.pid().to_string())
            .arg(&w2)
            .output()
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("its .runtime directory belongs to uid 65534"),
        "{stderr}"
    );
    assert!(pid_alive(holder.pid()));
}

/// Forges a line of `/proc/net/unix` inside socket paths (a path may hold a
/// newline): "the victim's tmux server listens on qN", a leftover socket
/// nobody listens on. Binds 40 of them (table order is the kernel's: some
/// come before the real line), then waits to be killed.
const FORGER: &str = r#"
use strict; use IO::Socket::UNIX; use Socket; use File::Path qw(make_path); use File::Basename;
my ($victim, $dir) = @ARGV;
my $ino;
open(my $t, '<', '/proc/net/unix') or die;
while (<$t>) { my @f = split; $ino = $f[6] if defined $f[7] && $f[7] eq $victim; }
close $t;
die "no inode for $victim" unless $ino;
my @keep;
for my $i (1..40) {
  # A leftover socket nobody listens on, named by the forged line (its
  # slashes make directories of the real path's first part).
  my $q = "$dir/q$i";
  { my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $q, Listen => 1) or die; close $s; }
  my $p = "$dir/$i\n0000000000000000: 00000002 00000000 00010000 0001 01 $ino $q";
  make_path(dirname($p));
  my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $p, Listen => 1) or die "bind: $!";
  push @keep, $s;
}
open(my $r, '>', "$dir/ready") or die; close $r;
sleep 600;
"#;

/// A forged `/proc/net/unix` line never makes a live session look gone:
/// a path read from the table counts only once the kernel says the server
/// answers on it. In a PID namespace of its own (only its own processes).
#[test]
fn a_forged_socket_table_line_never_hides_a_live_server() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let v = sb.worker("v");
    let b = sb.worker("b");
    let forger = sb.path().join("forger.pl");
    std::fs::write(&forger, FORGER).unwrap();
    let setup = format!(
        "tmux -f /dev/null -S '{v}/sock' new-session -d -s victim-7 'sleep 600'
         perl '{forger}' '{v}/sock' '{b}' &
         while [ ! -e '{b}/ready' ]; do sleep 0.01; done",
        v = v.display(),
        b = b.display(),
        forger = forger.display(),
    );
    let e = &status_in_own_pid_ns(&sb, &setup, &w, "victim-7", &["all"])[0];
    assert_eq!(e["state"], "held-by-session", "{e}");
}
