//! Shared helpers for the behaviour tests: a private sandbox per test (its own
//! temp dir and its own `TMUX_TMPDIR`), private tmux servers that are ended
//! by their own socket and PID, and child processes that are killed on drop.

use assert_cmd::Command;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentlock");

/// A test's own world: a temp dir for workers and a private tmux socket dir.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub tmux_tmpdir: PathBuf,
    /// Prepended to PATH for agentlock (fake tools go here).
    pub bin_dir: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("al")
            .tempdir_in("/tmp")
            .unwrap();
        let tmux_tmpdir = dir.path().join("tmux");
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&tmux_tmpdir).unwrap();
        std::fs::create_dir_all(&bin_dir).unwrap();
        Sandbox {
            dir,
            tmux_tmpdir,
            bin_dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a worker directory.
    pub fn worker(&self, name: &str) -> PathBuf {
        let w = self.dir.path().join(name);
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    /// Creates the socket directory as tmux does (0700).
    pub fn make_socket_dir(&self) -> PathBuf {
        let d = self.socket_dir();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// The socket directory tmux and agentlock use under this sandbox.
    pub fn socket_dir(&self) -> PathBuf {
        self.tmux_tmpdir
            .join(format!("tmux-{}", nix::unistd::getuid().as_raw()))
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut p = self.bin_dir.clone().into_os_string();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_default());
        p
    }

    /// `program` in this sandbox's environment: the one place it is set up
    /// (private TMUX_TMPDIR, no TMUX, no TMUX_PANE, fake tools first on PATH).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = isolated(program, &self.tmux_tmpdir);
        c.env("PATH", self.path_env());
        c
    }

    /// The tmux servers this sandbox's agentlock would ask, for in-process
    /// library calls.
    pub fn tmux_query(&self) -> agentlock::probe::TmuxQuery {
        agentlock::probe::TmuxQuery {
            tmpdir: Some(self.tmux_tmpdir.clone()),
            discover: false,
            ..Default::default()
        }
    }

    /// `agentlock ARGS` in this sandbox, with a 60 s limit.
    pub fn cmd(&self) -> Command {
        let mut c = Command::from_std(self.std_cmd());
        c.timeout(Duration::from_secs(60));
        c
    }

    /// `agentlock` without the power to read what file modes forbid: as root,
    /// run through `setpriv` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    /// dropped, so that a mode-000 directory really is unreadable.
    pub fn cmd_no_dac(&self) -> Command {
        if !nix::unistd::geteuid().is_root() {
            return self.cmd();
        }
        let mut c = self.command("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", "--", BIN]);
        let mut c = Command::from_std(c);
        c.timeout(Duration::from_secs(60));
        c
    }

    /// `agentlock claim EXTRA... --pid PID WORKER`, run to completion.
    pub fn claim(&self, worker: &Path, pid: i32, extra: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd()
            .arg("claim")
            .args(extra)
            .args(["--pid", &pid.to_string()])
            .arg(worker)
            .assert()
    }

    /// The same, as a std Command (for spawning without waiting).
    pub fn std_cmd(&self) -> std::process::Command {
        self.command(BIN)
    }

    /// Puts an executable script named `name` first on agentlock's PATH.
    pub fn fake_tool(&self, name: &str, script: &str) {
        let p = self.bin_dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Starts a private tmux server with one session.
    pub fn tmux(&self, socket: &str, session: &str) -> Tmux {
        self.tmux_at(&self.socket_dir().join(socket), session, self.path(), None)
    }

    /// `ARGS` run as user `uid` (through setpriv) in this sandbox's environment.
    pub fn as_user(&self, uid: u32, args: &[&str]) -> std::process::Command {
        let mut c = isolated("setpriv", &self.tmux_tmpdir);
        c.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
        .args(args);
        c
    }

    /// Runs `script` with `shell -c` in this sandbox's environment (private
    /// TMUX_TMPDIR, no TMUX), in its own process group.
    pub fn script(&self, shell: &str, script: &str) -> Group {
        let mut c = self.command(shell);
        c.args(["-c", script]);
        Group::spawn(c)
    }
}

impl Sandbox {
    /// Starts a private tmux server on the socket `path` (`tmux -S`),
    /// anywhere, as `user` (a uid, through setpriv) or as this user.
    pub fn tmux_at(&self, path: &Path, session: &str, cwd: &Path, user: Option<u32>) -> Tmux {
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        if let Some(uid) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = match user {
            Some(uid) => self.as_user(uid, &["tmux"]),
            None => isolated("tmux", &self.tmux_tmpdir),
        };
        let out = c
            .args(["-u", "-S"])
            .arg(path)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "80",
                "-y",
                "24",
                "-c",
            ])
            .arg(cwd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut t = Tmux {
            socket: path.to_path_buf(),
            tmux_tmpdir: self.tmux_tmpdir.clone(),
            server_pid: 0,
        };
        t.server_pid = t.query(session, "#{pid}").parse().unwrap();
        t
    }
}

/// `program` with a private TMUX_TMPDIR and no TMUX, TMUX_PANE or COLUMNS.
fn isolated(program: impl AsRef<std::ffi::OsStr>, tmux_tmpdir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.env("TMUX_TMPDIR", tmux_tmpdir)
        .env_remove("TMUX")
        .env_remove("TMUX_PANE")
        // Help is wrapped to $COLUMNS when set: the same width everywhere.
        .env_remove("COLUMNS")
        // Only this sandbox's tmux servers: never another test's (or the
        // machine's), found by their processes.
        .env("AGENTLOCK_TMUX_SERVERS", "dir")
        // tmux runs $SHELL in a new pane, else the user's login shell:
        // nobody's is nologin, which exits at once and ends the server
        // (CI runs without $SHELL).
        .env("SHELL", "/bin/sh");
    // The fleet store is asked for explicitly, never inherited; so are
    // diagnostics (the journal's stream, too).
    for v in [
        "AGENTLOCK_STORE",
        "AGENTLOCK_FLEET_ROOT",
        "AGENTLOCK_LEASE_TTL",
        "AGENTLOCK_KEEPER_PERIOD",
        "AGENTLOCK_LOG",
        "JOURNAL_STREAM",
    ] {
        c.env_remove(v);
    }
    c
}

/// A private tmux server, killed (by its socket, then by its PID) on drop.
pub struct Tmux {
    pub socket: PathBuf,
    tmux_tmpdir: PathBuf,
    pub server_pid: i32,
}

impl Tmux {
    pub fn command(&self) -> std::process::Command {
        let mut c = isolated("tmux", &self.tmux_tmpdir);
        // -u: names as they are in any locale (agentlock asks with -u too).
        c.args(["-u", "-S"]).arg(&self.socket).stdin(Stdio::null());
        c
    }

    /// Runs a tmux command; panics with its stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `display -p -t TARGET FORMAT`.
    pub fn query(&self, target: &str, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", target, format])
    }

    pub fn new_session(&self, name: &str, cwd: &Path) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-c",
            cwd.to_str().unwrap(),
            "-x",
            "80",
            "-y",
            "24",
        ]);
    }

    pub fn pane_id(&self, session: &str) -> String {
        self.query(session, "#{pane_id}")
    }

    pub fn kill_session(&self, session: &str) {
        self.run(&["kill-session", "-t", session]);
    }

    /// Ends this server and waits for its PID to go.
    pub fn kill_server(&self) {
        let _ = self.command().arg("kill-server").output();
        wait_gone(self.server_pid, Duration::from_secs(5));
        if pid_alive(self.server_pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.server_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.server_pid > 0 && pid_alive(self.server_pid) {
            self.kill_server();
        }
    }
}

/// Sends `1` (SIGTERM, SIGCONT, ...) to PID `0` on drop: for a process a
/// test started that is not its child (a daemonized tmux server in another
/// namespace, a stopped server to resume).
pub struct SignalOnDrop(pub i32, pub nix::sys::signal::Signal);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), self.1);
    }
}

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child in its own process group; on drop the whole group is killed and the
/// child reaped, so a failing test leaves no command running behind it.
pub struct Group(pub Child);

impl Group {
    pub fn spawn(mut cmd: std::process::Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(cmd.process_group(0).spawn().unwrap())
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// A long-lived process to name as a lock holder.
pub fn sleeper() -> Proc {
    Proc(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The PID of a process that has exited and been reaped.
pub fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn wait_gone(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `cond` holds (or panics after `limit`).
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

pub fn lock_path(worker: &Path) -> PathBuf {
    worker.join(".runtime").join("agent.lock")
}

/// Writes a lock file by hand (as another tool would), creating `.runtime`.
pub fn write_lock(worker: &Path, json: &str) {
    std::fs::create_dir_all(worker.join(".runtime")).unwrap();
    std::fs::write(lock_path(worker), json).unwrap();
}

/// Now, in the Go tool's layout (nanoseconds, a -08:00 offset): after any
/// holder the test started before writing the lock, and after this boot.
pub fn go_time() -> String {
    let t = chrono::Utc::now();
    let offset = chrono::FixedOffset::west_opt(8 * 3600).unwrap();
    t.with_timezone(&offset)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

/// A lock in the Go tool's exact layout, on this host, acquired now.
pub fn go_lock(pid: i32, session: Option<&str>) -> String {
    let session = session
        .map(|s| format!(",\n  \"session_id\": {}", serde_json::to_string(s).unwrap()))
        .unwrap_or_default();
    format!(
        "{{\n  \"pid\": {pid},\n  \"acquired_at\": \"{}\"{session},\n  \"hostname\": \"{}\"\n}}",
        go_time(),
        hostname()
    )
}

/// Parses stdout of a `--json` command.
pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// The one worker entry of `{ "workers": [ ... ] }`.
pub fn entry(out: &[u8]) -> serde_json::Value {
    let v = json(out);
    let w = v["workers"].as_array().expect("workers array");
    assert_eq!(w.len(), 1, "{v}");
    w[0].clone()
}

/// The state reported by `agentlock status --json WORKER`.
pub fn state_of(sb: &Sandbox, worker: &Path, extra: &[&str]) -> String {
    let out = sb
        .cmd()
        .args(["status", "--json"])
        .args(extra)
        .arg(worker)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    entry(&out.stdout)["state"].as_str().unwrap().to_string()
}

/// A checksum of every file, directory and symlink under `root`.
pub fn tree_digest(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<(PathBuf, String)>) {
        let md = std::fs::symlink_metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        let desc = if md.file_type().is_symlink() {
            format!("link:{}", std::fs::read_link(p).unwrap().display())
        } else if md.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for n in &names {
                walk(n, out);
            }
            format!("dir:{:o}", md.mode())
        } else if md.is_file() {
            let bytes = std::fs::read(p).unwrap();
            format!("file:{:o}:{}:{:x}", md.mode(), bytes.len(), fnv(&bytes))
        } else {
            format!("other:{:o}", md.mode())
        };
        out.push((p.to_path_buf(), desc));
    }
    walk(root, &mut out);
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Waits until `pid` has exec'd a program whose name (`/proc/PID/comm`) is `comm`.
pub fn wait_exec(pid: i32, comm: &str) {
    wait_for(
        &format!("pid {pid} to exec {comm}"),
        Duration::from_secs(20),
        || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm),
    );
}

/// Waits until `pid` has a handler installed for signal `sig` (SigCgt).
pub fn wait_catches(pid: i32, sig: i32) {
    wait_for(
        &format!("pid {pid} to catch signal {sig}"),
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let hex = s
                        .lines()
                        .find_map(|l| l.strip_prefix("SigCgt:"))?
                        .trim()
                        .to_string();
                    u64::from_str_radix(&hex, 16).ok()
                })
                .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
        },
    );
}

/// Children of `pid`, forked by any of its threads.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The lock record at `worker`, parsed.
pub fn record_at(worker: &Path) -> agentlock::record::LockRecord {
    agentlock::record::LockRecord::parse(&std::fs::read(lock_path(worker)).unwrap()).unwrap()
}

/// Start time of `pid` in clock ticks.
pub fn start_of(pid: i32) -> u64 {
    agentlock::probe::ProcessProbe::start_time(&agentlock::probe::LiveProcesses, pid).unwrap()
}

/// A program under another name (`perl` as `tmux`): a hard link where it
/// can be (nothing written, so no "text file busy" when another test
/// thread forks while the copy is open for writing), else a copy.
pub fn program_as(program: &str, to: &Path) {
    let real = std::fs::canonicalize(which::which(program).unwrap()).unwrap();
    if std::fs::hard_link(&real, to).is_err() {
        std::fs::copy(&real, to).unwrap();
    }
}

/// Runs the shell `setup` in a PID namespace of its own (only its own
/// processes are seen there, and all of them end with it), then writes a
/// Go-style lock into `w` naming a dead PID, `session` and that namespace,
/// and judges it with `status --json` once per `AGENTLOCK_TMUX_SERVERS`
/// value in `servers`: the entries, in that order.
pub fn status_in_own_pid_ns(
    sb: &Sandbox,
    setup: &str,
    w: &Path,
    session: &str,
    servers: &[&str],
) -> Vec<serde_json::Value> {
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    let outs: Vec<PathBuf> = servers
        .iter()
        .map(|s| sb.path().join(format!("status-{s}.json")))
        .collect();
    let judge: String = servers
        .iter()
        .zip(&outs)
        .map(|(s, o)| {
            format!(
                "AGENTLOCK_TMUX_SERVERS={s} '{BIN}' status --json '{}' > '{}'\n",
                w.display(),
                o.display()
            )
        })
        .collect();
    let script = format!(
        "{setup}\nns=$(stat -L -c %i /proc/self/ns/pid)
printf '{{\"pid\":999999,\"acquired_at\":\"{at}\",\"session_id\":\"{session}\",\"hostname\":\"{host}\",\"pid_ns\":%s}}' \"$ns\" > '{lock}'
{judge}",
        at = go_time(),
        host = hostname(),
        lock = lock_path(w).display(),
    );
    let out = sb
        .command("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-ec", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    outs.iter()
        .map(|o| entry(&std::fs::read(o).unwrap()))
        .collect()
}

/// Lets user 65534 into the sandbox (tempdirs are 0700).
pub fn open_to_all(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Compiles a C program into the sandbox with `cc`.
pub fn compile_c(sb: &Sandbox, name: &str, source: &str) -> PathBuf {
    let src = sb.path().join(format!("{name}.c"));
    let bin = sb.path().join(name);
    std::fs::write(&src, source).unwrap();
    let out = std::process::Command::new("cc")
        .args(["-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Holds `w`'s guard with flock(1) until dropped; returns once it is held.
pub fn hold_guard(w: &Path) -> Group {
    std::fs::create_dir_all(w.join(".runtime")).unwrap();
    let guard = w.join(".runtime/agent.lock.flock");
    let taken = w.join("taken");
    let mut c = std::process::Command::new("flock");
    c.arg(&guard)
        .args(["sh", "-c", "touch \"$1\"; exec sleep 600", "sh"])
        .arg(&taken);
    let g = Group::spawn(c);
    wait_for("flock to hold the guard", Duration::from_secs(20), || {
        taken.exists()
    });
    g
}

/// A private etcd member on free loopback ports with a temp data dir,
/// killed by its PID on drop.
/// `etcdctl --endpoints ENDPOINT ARGS` (v3 API, 2 s per command): its
/// stdout if it succeeded.
#[cfg(feature = "etcd")]
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Option<Vec<u8>> {
    let out = std::process::Command::new("etcdctl")
        .args(["--endpoints", endpoint, "--command-timeout=2s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[cfg(feature = "etcd")]
pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _data: tempfile::TempDir,
}

/// A free loopback port, never one handed out before in this test process:
/// a killed member's port must not be picked up by another test's etcd,
/// which would then answer in its place.
#[cfg(feature = "etcd")]
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

#[cfg(feature = "etcd")]
impl Etcd {
    /// Starts one member and waits until it answers.
    pub fn start() -> Etcd {
        let data = tempfile::Builder::new()
            .prefix("al-etcd")
            .tempdir_in("/tmp")
            .unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "m1", "--data-dir"])
            .arg(data.path().join("m1"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        let e = Etcd {
            child,
            endpoint,
            _data: data,
        };
        wait_for("etcd to answer", Duration::from_secs(60), || {
            etcdctl(&e.endpoint, &["get", "x"]).is_some()
        });
        e
    }

    /// `etcd://127.0.0.1:PORT/PREFIX`.
    pub fn store(&self, prefix: &str) -> String {
        format!("{}/{prefix}", self.endpoint.replace("http://", "etcd://"))
    }

    /// Sends `sig` to the member.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Stops the member (SIGKILL), leaving its data dir.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "etcd")]
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        self.kill();
    }
}

/// A private etcd cluster of `n` members on loopback, each killed by its PID
/// on drop.
#[cfg(feature = "etcd")]
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    /// `http://127.0.0.1:PORT` of each member.
    pub endpoints: Vec<String>,
    _data: tempfile::TempDir,
}

#[cfg(feature = "etcd")]
impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> EtcdCluster {
        let data = tempfile::Builder::new()
            .prefix("al-etcd")
            .tempdir_in("/tmp")
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| {
                let client = format!("http://127.0.0.1:{c}");
                let peer = format!("http://127.0.0.1:{p}");
                Some(
                    std::process::Command::new("etcd")
                        .args(["--name", &format!("m{i}"), "--data-dir"])
                        .arg(data.path().join(format!("m{i}")))
                        .args([
                            "--listen-client-urls",
                            &client,
                            "--advertise-client-urls",
                            &client,
                        ])
                        .args([
                            "--listen-peer-urls",
                            &peer,
                            "--initial-advertise-peer-urls",
                            &peer,
                        ])
                        .args(["--initial-cluster", &initial.join(",")])
                        .args(["--initial-cluster-state", "new"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        let c = EtcdCluster {
            members,
            endpoints,
            _data: data,
        };
        wait_for("the cluster to answer", Duration::from_secs(60), || {
            c.endpoints
                .iter()
                .all(|e| etcdctl(e, &["put", "ready", "1"]).is_some())
        });
        c
    }

    /// `etcd://HOST:PORT,...,HOST:PORT/PREFIX`.
    pub fn store(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.replace("http://", ""))
            .collect();
        format!("etcd://{}/{prefix}", hosts.join(","))
    }

    /// Sends `sig` to member `i`.
    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(child) = &self.members[i] {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        }
    }

    /// The member that leads now, as the members themselves say
    /// (`etcdctl endpoint status`: a member's id equal to the leader id it
    /// reports); waits for an election to end.
    pub fn leader(&self) -> usize {
        let mut found = None;
        wait_for("a leader", Duration::from_secs(60), || {
            found = self.endpoints.iter().enumerate().find_map(|(i, e)| {
                self.members[i].as_ref()?;
                let out = etcdctl(e, &["endpoint", "status", "-w", "json"])?;
                let v: serde_json::Value = serde_json::from_slice(&out).ok()?;
                let status = &v.get(0)?["Status"];
                let me = status["header"]["member_id"].as_u64()?;
                (me == status["leader"].as_u64()?).then_some(i)
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "etcd")]
impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.signal(i, nix::sys::signal::Signal::SIGCONT);
            self.kill(i);
        }
    }
}
