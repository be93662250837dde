//! The systemd units in `contrib/systemd/`: `systemd-analyze verify` has
//! nothing to say about them, they give the keeper no mount namespace of its
//! own, and the system unit's own `ExecStart=` line, run the way systemd
//! runs it (the environment file's variables set, stderr the journal's
//! stream), logs its lease at info level for the journal, makes a second
//! copy exit 2 naming the first, serves the claims of the same user, and
//! waits for a store that does not answer yet instead of exiting.

use crate::common::*;
use std::path::Path;

/// The units, and whether each is a user unit.
const UNITS: [(&str, bool); 2] = [
    ("contrib/systemd/agentlock-keeper.service", false),
    ("contrib/systemd/user/agentlock-keeper.service", true),
];

/// Where the units install the binary.
const INSTALLED: &str = "/usr/local/bin/agentlock";

fn unit_text(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// The `KEY=value` lines of a unit, comments and section headers left out.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting(text: &str, key: &str) -> Option<String> {
    settings(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    for (rel, user) in UNITS {
        let dir = tempfile::tempdir().unwrap();
        // The unit as installed, with the binary where this build put it
        // (verify checks that ExecStart's program exists).
        let unit = dir.path().join(Path::new(rel).file_name().unwrap());
        std::fs::write(&unit, unit_text(rel).replace(INSTALLED, BIN)).unwrap();
        let mut c = std::process::Command::new("systemd-analyze");
        if user {
            // A user manager's paths start from XDG_RUNTIME_DIR.
            c.arg("--user").env("XDG_RUNTIME_DIR", dir.path());
        }
        let out = match c.arg("verify").arg(&unit).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "systemd-analyze is not installed: {rel} NOT verified (apt-get install systemd)"
                );
                return;
            }
            Err(e) => panic!("systemd-analyze: {e}"),
        };
        assert!(
            out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
            "{rel}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What every unit must say, and must not: a keeper in a mount namespace
/// of its own never proves a tmux session gone (a socket path means
/// something only in the namespace that recorded it), so none of the
/// settings that make one.
#[test]
fn the_units_restart_on_failure_but_not_on_exit_2_and_have_no_namespace() {
    const NAMESPACING: &[&str] = &[
        "PrivateTmp",
        "ProtectSystem",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "PrivateMounts",
        "PrivateUsers",
        "PrivateNetwork",
        "PrivateIPC",
        "PrivatePIDs",
        "ProtectHostname",
        "DynamicUser",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "NetworkNamespacePath",
    ];
    for (rel, _) in UNITS {
        let text = unit_text(rel);
        for (k, _) in settings(&text) {
            assert!(!NAMESPACING.contains(&k.as_str()), "{rel}: {k}=");
        }
        assert_eq!(
            setting(&text, "ExecStart").as_deref(),
            Some("/usr/local/bin/agentlock keeper --foreground"),
            "{rel}"
        );
        assert_eq!(setting(&text, "Restart").as_deref(), Some("on-failure"));
        assert_eq!(
            setting(&text, "RestartPreventExitStatus").as_deref(),
            Some("2")
        );
        assert!(!text.contains("/run/user/1"), "{rel}: a hard-coded uid");
    }
    let system = unit_text(UNITS[0].0);
    assert_eq!(
        setting(&system, "After").as_deref(),
        Some("network-online.target")
    );
    assert_eq!(
        setting(&system, "Wants").as_deref(),
        Some("network-online.target")
    );
}

#[cfg(feature = "etcd")]
mod exec_start {
    use super::*;
    use std::time::Duration;

    /// The system unit's `ExecStart=` words, its program the one built.
    fn exec_start() -> Vec<String> {
        let line = setting(&unit_text(UNITS[0].0), "ExecStart").unwrap();
        let mut words = shlex::split(&line).unwrap();
        assert_eq!(words[0], INSTALLED);
        words[0] = BIN.to_string();
        words
    }

    /// A host's settings, as `/etc/default/agentlock` would give them.
    struct Env {
        store: String,
        root: std::path::PathBuf,
        xdg: std::path::PathBuf,
    }

    impl Env {
        fn new(sb: &Sandbox, etcd: &Etcd, prefix: &str) -> Env {
            let xdg = sb.path().join("xdg");
            std::fs::create_dir_all(&xdg).unwrap();
            Env {
                store: etcd.store(prefix),
                root: sb.worker("town"),
                xdg,
            }
        }

        fn cmd(&self, sb: &Sandbox, program: &str) -> std::process::Command {
            let mut c = sb.command(program);
            c.env("AGENTLOCK_STORE", &self.store)
                .env("AGENTLOCK_FLEET_ROOT", &self.root)
                .env("XDG_RUNTIME_DIR", &self.xdg)
                .stdin(std::process::Stdio::null());
            c
        }

        /// The unit's command line with stderr the "journal": a file whose
        /// device and inode `JOURNAL_STREAM` names, as systemd sets it.
        fn keeper(&self, sb: &Sandbox, journal: &Path) -> Proc {
            use std::os::unix::fs::MetadataExt;
            let words = exec_start();
            let file = std::fs::File::create(journal).unwrap();
            let md = file.metadata().unwrap();
            let mut c = self.cmd(sb, &words[0]);
            c.args(&words[1..])
                .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
                .stdout(std::process::Stdio::null())
                .stderr(file);
            Proc(c.spawn().unwrap())
        }

        /// The PID in the lease the keeper published.
        fn lease_pid(&self) -> Option<i32> {
            let dir = self.xdg.join("agentlock");
            std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path()).ok()?;
                name.ends_with(".lease")
                    .then(|| text.split_whitespace().nth(1)?.parse().ok())?
            })
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn the_units_command_logs_its_lease_for_the_journal_and_a_second_copy_exits_2() {
        let etcd = Etcd::start();
        let sb = Sandbox::new();
        let env = Env::new(&sb, &etcd, "unit");
        let journal = sb.path().join("journal");
        let keeper = env.keeper(&sb, &journal);
        let pid = keeper.pid();
        wait_for(
            "the keeper to log its lease",
            Duration::from_secs(30),
            || read(&journal).contains("keeping lease"),
        );
        let text = read(&journal);
        let line = text.lines().find(|l| l.contains("keeping lease")).unwrap();
        // No time (the journal adds it); the priority journald reads.
        assert!(
            line.starts_with(&format!("<6>agentlock keeper[{pid}]: INFO keeping lease ")),
            "{text}"
        );
        // A second copy: exit 2, one line naming the first and its lock.
        let words = exec_start();
        let second = env.cmd(&sb, &words[0]).args(&words[1..]).output().unwrap();
        let err = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("pid {pid}")) && err.contains("already keeps"),
            "{err}"
        );
        let lock = env.xdg.join("agentlock");
        assert!(
            err.contains(&format!("(lock {}/keeper-", lock.display())),
            "{err}"
        );
        // The same user's claim rides this keeper's lease: none other starts.
        let holder = sleeper();
        let w = sb.worker("town/max");
        let claim = env
            .cmd(&sb, BIN)
            .args(["claim", "--pid", &holder.pid().to_string()])
            .arg(&w)
            .output()
            .unwrap();
        assert_eq!(claim.status.code(), Some(0), "{claim:?}");
        assert_eq!(env.lease_pid(), Some(pid));
        assert!(pid_alive(pid), "{}", read(&journal));
    }

    /// Started while the store does not answer (a member stopped), the
    /// keeper says so and waits; once the store answers, it keeps a lease.
    /// Exiting instead would leave it stopped under the unit's
    /// `RestartPreventExitStatus=2`.
    #[test]
    fn the_units_command_waits_for_a_store_that_does_not_answer_yet() {
        let etcd = Etcd::start();
        let sb = Sandbox::new();
        let env = Env::new(&sb, &etcd, "later");
        etcd.signal(nix::sys::signal::Signal::SIGSTOP);
        let journal = sb.path().join("journal");
        let keeper = env.keeper(&sb, &journal);
        // (A failure here leaves the member stopped: dropped, it is killed.)
        wait_for(
            "the keeper to say it waits",
            Duration::from_secs(60),
            || {
                let t = read(&journal);
                t.contains("cannot reach the store yet") || t.contains("granting a lease failed")
            },
        );
        assert!(pid_alive(keeper.pid()), "{}", read(&journal));
        etcd.signal(nix::sys::signal::Signal::SIGCONT);
        wait_for(
            "the keeper to keep a lease",
            Duration::from_secs(60),
            || read(&journal).contains("keeping lease"),
        );
        assert_eq!(env.lease_pid(), Some(keeper.pid()));
    }

    /// A keeper whose log cannot be written (its stderr `/dev/full`: a full
    /// disk under its log file) keeps its lease: it renews it, where a
    /// panic on its first `info` line used to end it, and with it every
    /// claim of this host once the lease expired.
    #[test]
    fn a_keeper_whose_log_cannot_be_written_keeps_its_lease() {
        let etcd = Etcd::start();
        let sb = Sandbox::new();
        let env = Env::new(&sb, &etcd, "full");
        let words = exec_start();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let keeper = Proc(
            env.cmd(&sb, &words[0])
                .args(&words[1..])
                .env("AGENTLOCK_LOG", "debug")
                .env("AGENTLOCK_LEASE_TTL", "3s")
                .stdout(std::process::Stdio::null())
                .stderr(full)
                .spawn()
                .unwrap(),
        );
        let lease = || {
            let dir = env.xdg.join("agentlock");
            std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".lease")
                    .then(|| std::fs::read_to_string(e.path()).ok())?
            })
        };
        let mut first = None;
        wait_for(
            "the keeper to publish its lease",
            Duration::from_secs(30),
            || {
                first = lease();
                first.is_some() || !pid_alive(keeper.pid())
            },
        );
        assert!(pid_alive(keeper.pid()), "the keeper died before its lease");
        // A renewal comes after the lines logged when the lease was taken.
        wait_for(
            "the keeper to renew its lease",
            Duration::from_secs(30),
            || lease().is_some_and(|now| Some(&now) != first.as_ref()) || !pid_alive(keeper.pid()),
        );
        assert!(pid_alive(keeper.pid()), "the keeper died");
        assert_eq!(env.lease_pid(), Some(keeper.pid()));
    }
}
