//! Whole-output snapshots (insta): the exact stdout, stderr and exit code of
//! the help texts, `status`, the refusals, `list` and `doctor`, stored under
//! `tests/suite/snapshots/`. Only what differs between machines and runs is
//! replaced, each by a filter built from the real value: the sandbox path
//! (`[SANDBOX]`), each PID the test started or killed (`[HOLDER_PID]`, ...),
//! the host name (`[HOST]`), the uid (`[UID]`), times (`[TIME]`) and ages
//! (`[AGE]`).
//!
//! Update with `INSTA_UPDATE=always cargo test --test suite snapshots`, then
//! review the `.snap` files by eye.

use crate::common::*;

use std::path::Path;
use std::process::Output;

/// Exit code, stdout and stderr as one text. A stream that does not end in a
/// newline says so, so that a lost final newline shows in the snapshot.
fn render(out: &Output) -> String {
    fn stream(name: &str, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        if text.is_empty() {
            return format!("--- {name} (empty)\n");
        }
        let end = if text.ends_with('\n') {
            ""
        } else {
            "\n[no newline at end]\n"
        };
        format!("--- {name}\n{text}{end}")
    }
    let code = out
        .status
        .code()
        .map_or_else(|| format!("{:?}", out.status), |c| c.to_string());
    format!(
        "exit: {code}\n{}{}",
        stream("stdout", &out.stdout),
        stream("stderr", &out.stderr)
    )
}

/// `s` as a regex that matches it literally.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The insta filters of one test, built from the actual values. Order
/// matters: times and paths go first, so that a PID filter can never hit
/// digits inside a timestamp or the sandbox's random name.
struct Redact {
    filters: Vec<(String, String)>,
    /// Table cells replaced whole before a table is re-aligned.
    cells: Vec<(String, String)>,
}

impl Redact {
    fn new(sb: &Sandbox) -> Redact {
        let mut r = Redact {
            filters: Vec::new(),
            cells: Vec::new(),
        };
        // RFC 3339 with any fraction and offset (JSON `acquired_at`; Go's layout too).
        r.filter(
            r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})",
            "[TIME]",
        );
        // The human "since 2026-01-05 10:00:00 -08:00".
        r.filter(
            r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}",
            "[TIME]",
        );
        // The UTC stamp of a corrupt file moved aside.
        r.filter(
            r"agent\.lock\.corrupt-\d{8}T\d{6}(?:\.\d+)?Z",
            "agent.lock.corrupt-[TIME]",
        );
        // "(3h 12m ago)" and the AGE column (the last one) of `list`.
        r.filter(r"\(\d+[dhms](?: \d+[hms])? ago\)", "([AGE] ago)");
        r.filter(r"(?m)(  )\d+[dhms](?: \d+[hms])?$", "${1}[AGE]");
        let dir = sb.path().to_str().unwrap().to_string();
        if let Ok(canon) = sb.path().canonicalize() {
            let canon = canon.to_str().unwrap().to_string();
            if canon != dir {
                r.filter(&literal(&canon), "[SANDBOX]");
            }
        }
        r.filter(&literal(&dir), "[SANDBOX]");
        let uid = nix::unistd::getuid().as_raw();
        r.filter(&format!(r"\btmux-{uid}\b"), "tmux-[UID]");
        r.filter(&format!(r"\buid {uid}\b"), "uid [UID]");
        let host = hostname();
        r.filter(&format!(r"\bhost {}\b", literal(&host)), "host [HOST]");
        r.filter(
            &format!(r#""hostname": "{}""#, literal(&host)),
            r#""hostname": "[HOST]""#,
        );
        r.cells.push((host, "[HOST]".into()));
        r
    }

    fn filter(&mut self, regex: &str, replacement: &str) {
        self.filters.push((regex.into(), replacement.into()));
    }

    /// A PID the test knows, shown as `[LABEL]`.
    fn pid(mut self, pid: i32, label: &str) -> Redact {
        let to = format!("[{label}]");
        self.filter(&format!(r"\b{pid}\b"), &to);
        self.cells.push((pid.to_string(), to));
        self
    }

    fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.set_prepend_module_to_snapshot(true);
        s.set_omit_expression(true);
        for (re, to) in &self.filters {
            s.add_filter(re, to.as_str());
        }
        s
    }

    /// Snapshots `text` under `name`, filtered.
    fn snap(&self, name: &str, text: &str) {
        self.settings().bind(|| insta::assert_snapshot!(name, text));
    }

    /// A `list` table with its machine-specific cells replaced and the
    /// columns re-aligned the way `list` aligns them (left, two spaces apart,
    /// no trailing blanks), so that the width of a PID or host name does not
    /// move the columns. The table as printed must be aligned that way.
    fn table(&self, stdout: &str) -> String {
        assert_aligned(stdout);
        let rows: Vec<Vec<String>> = stdout
            .lines()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        self.cells
                            .iter()
                            .find(|(from, _)| from == c)
                            .map_or_else(|| c.to_string(), |(_, to)| to.clone())
                    })
                    .collect()
            })
            .collect();
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|i| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (c, w) in r.iter().zip(&width) {
                line.push_str(&format!("{c:<w$}  "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Every row of a table starts its cells where the header starts its columns.
fn assert_aligned(table: &str) {
    let starts = |l: &str| -> Vec<usize> {
        let b = l.as_bytes();
        (0..b.len())
            .filter(|&i| b[i] != b' ' && (i == 0 || (i >= 2 && &b[i - 2..i] == b"  ")))
            .collect()
    };
    let mut lines = table.lines();
    let header = starts(lines.next().expect("a header"));
    for l in lines {
        assert_eq!(
            starts(l),
            header,
            "row not aligned with the header:\n{table}"
        );
    }
}

/// Runs `agentlock ARGS` in the sandbox and returns its output.
fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.cmd()
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------- help

/// `--help` needs no sandbox values: snapshots without filters.
fn help(name: &str, args: &[&str]) {
    let sb = Sandbox::new();
    let out = run(&sb, args);
    assert_eq!(out.status.code(), Some(0), "{}", render(&out));
    let mut settings = insta::Settings::clone_current();
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, render(&out)));
}

/// The snapshot name of a text that shows the fleet store's options: a
/// build without the etcd feature hides them.
fn fleet_shown(name: &str) -> String {
    if cfg!(feature = "etcd") {
        name.to_string()
    } else {
        format!("{name}_without_etcd")
    }
}

#[test]
fn help_top() {
    help(&fleet_shown("help_top"), &["--help"]);
}

#[test]
fn help_claim() {
    help("help_claim", &["claim", "--help"]);
}

#[test]
fn help_release() {
    help("help_release", &["release", "--help"]);
}

#[test]
fn help_check() {
    help("help_check", &["check", "--help"]);
}

#[test]
fn help_status() {
    help("help_status", &["status", "--help"]);
}

#[test]
fn help_run() {
    help("help_run", &["run", "--help"]);
}

#[test]
fn help_list() {
    help("help_list", &["list", "--help"]);
}

#[test]
fn help_doctor() {
    help("help_doctor", &["doctor", "--help"]);
}

#[test]
fn help_completions() {
    help("help_completions", &["completions", "--help"]);
}

#[test]
fn help_man() {
    help("help_man", &["man", "--help"]);
}

#[test]
fn help_keeper() {
    help("help_keeper", &["keeper", "--help"]);
}

#[test]
fn usage_error_without_a_command() {
    let sb = Sandbox::new();
    Redact::new(&sb).snap(&fleet_shown("usage_no_command"), &render(&run(&sb, &[])));
}

// ---------------------------------------------------------------- status

/// Four workers: free, held by a live process, stale (its claimer was
/// killed), corrupt (garbage in the lock file).
struct Workers {
    sb: Sandbox,
    free: std::path::PathBuf,
    held: std::path::PathBuf,
    stale: std::path::PathBuf,
    corrupt: std::path::PathBuf,
    holder: Proc,
    dead: i32,
}

impl Workers {
    fn new() -> Workers {
        let sb = Sandbox::new();
        let free = sb.worker("free");
        let held = sb.worker("held");
        let holder = sleeper();
        sb.claim(&held, holder.pid(), &["-q"]).code(0);
        let stale = sb.worker("stale");
        let gone = sleeper();
        let dead = gone.pid();
        sb.claim(&stale, dead, &["-q"]).code(0);
        drop(gone);
        let corrupt = sb.worker("corrupt");
        write_lock(&corrupt, "this is not JSON\n");
        Workers {
            sb,
            free,
            held,
            stale,
            corrupt,
            holder,
            dead,
        }
    }

    fn redact(&self) -> Redact {
        Redact::new(&self.sb)
            .pid(self.holder.pid(), "HOLDER_PID")
            .pid(self.dead, "DEAD_PID")
    }

    fn status(&self, name: &str, args: &[&str]) {
        let mut a = vec!["status"];
        a.extend_from_slice(args);
        self.redact().snap(name, &render(&run(&self.sb, &a)));
    }
}

#[test]
fn status_free() {
    let t = Workers::new();
    t.status("status_free", &[s(&t.free)]);
}

#[test]
fn status_held() {
    let t = Workers::new();
    t.status("status_held", &[s(&t.held)]);
}

#[test]
fn status_stale() {
    let t = Workers::new();
    t.status("status_stale", &[s(&t.stale)]);
}

#[test]
fn status_corrupt() {
    let t = Workers::new();
    t.status("status_corrupt", &[s(&t.corrupt)]);
}

#[test]
fn status_all_four() {
    let t = Workers::new();
    t.status(
        "status_all_four",
        &[s(&t.free), s(&t.held), s(&t.stale), s(&t.corrupt)],
    );
}

#[test]
fn status_json_all_four() {
    let t = Workers::new();
    t.status(
        "status_json_all_four",
        &["--json", s(&t.free), s(&t.held), s(&t.stale), s(&t.corrupt)],
    );
}

#[test]
fn status_missing_worker() {
    let t = Workers::new();
    let missing = t.sb.path().join("missing");
    t.status("status_missing_worker", &[s(&missing)]);
    t.status("status_json_missing_worker", &["--json", s(&missing)]);
}

// ---------------------------------------------------------------- claim and refusals

#[test]
fn claim_free_worker() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let p = sleeper();
    let r = Redact::new(&sb).pid(p.pid(), "HOLDER_PID");
    let out = run(&sb, &["claim", "--pid", &p.pid().to_string(), s(&w)]);
    r.snap("claim_free", &render(&out));
    let out = run(&sb, &["claim", "--pid", &p.pid().to_string(), s(&w)]);
    r.snap("claim_refresh_own", &render(&out));
}

#[test]
fn claim_free_worker_json() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let p = sleeper();
    let out = run(
        &sb,
        &["claim", "--json", "--pid", &p.pid().to_string(), s(&w)],
    );
    Redact::new(&sb)
        .pid(p.pid(), "HOLDER_PID")
        .snap("claim_free_json", &render(&out));
}

#[test]
fn claim_with_a_session_that_does_not_exist() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let p = sleeper();
    let out = run(
        &sb,
        &[
            "claim",
            "--session",
            "ghost",
            "--pid",
            &p.pid().to_string(),
            s(&w),
        ],
    );
    Redact::new(&sb)
        .pid(p.pid(), "HOLDER_PID")
        .snap("claim_missing_session", &render(&out));
}

#[test]
fn claim_stale_and_corrupt_workers() {
    let t = Workers::new();
    let me = sleeper();
    let r = t.redact().pid(me.pid(), "ASKER_PID");
    let pid = me.pid().to_string();
    r.snap(
        "claim_stale",
        &render(&run(&t.sb, &["claim", "--pid", &pid, s(&t.stale)])),
    );
    r.snap(
        "claim_corrupt",
        &render(&run(&t.sb, &["claim", "--pid", &pid, s(&t.corrupt)])),
    );
}

/// A worker held by one live process, and another live process asking.
struct Contest {
    sb: Sandbox,
    w: std::path::PathBuf,
    holder: Proc,
    other: Proc,
}

impl Contest {
    fn new() -> Contest {
        let sb = Sandbox::new();
        let w = sb.worker("w");
        let holder = sleeper();
        sb.claim(&w, holder.pid(), &["-q"]).code(0);
        Contest {
            sb,
            w,
            holder,
            other: sleeper(),
        }
    }

    /// Runs `agentlock VERB EXTRA... --pid OTHER W` and snapshots it.
    fn snap(&self, name: &str, verb: &str, extra: &[&str]) {
        let pid = self.other.pid().to_string();
        let mut a = vec![verb];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--pid", &pid, s(&self.w)]);
        let before = std::fs::read(lock_path(&self.w)).unwrap();
        let out = run(&self.sb, &a);
        assert_eq!(
            std::fs::read(lock_path(&self.w)).unwrap(),
            before,
            "a refusal changed the lock"
        );
        Redact::new(&self.sb)
            .pid(self.holder.pid(), "HOLDER_PID")
            .pid(self.other.pid(), "OTHER_PID")
            .snap(name, &render(&out));
    }
}

#[test]
fn refusal_claim_held_by_another() {
    let c = Contest::new();
    c.snap("refusal_claim", "claim", &[]);
    c.snap("refusal_claim_json", "claim", &["--json"]);
}

#[test]
fn refusal_release_of_another_holders_lock() {
    let c = Contest::new();
    c.snap("refusal_release", "release", &[]);
    c.snap("refusal_release_json", "release", &["--json"]);
}

#[test]
fn refusal_check_of_a_lock_not_yours() {
    let c = Contest::new();
    c.snap("refusal_check", "check", &[]);
    c.snap("refusal_check_json", "check", &["--json"]);
}

#[test]
fn release_and_check_by_the_holder() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let p = sleeper();
    sb.claim(&w, p.pid(), &["-q"]).code(0);
    let pid = p.pid().to_string();
    let r = Redact::new(&sb).pid(p.pid(), "HOLDER_PID");
    r.snap(
        "check_own",
        &render(&run(&sb, &["check", "--pid", &pid, s(&w)])),
    );
    r.snap(
        "release_own",
        &render(&run(&sb, &["release", "--pid", &pid, s(&w)])),
    );
    r.snap(
        "release_free",
        &render(&run(&sb, &["release", "--pid", &pid, s(&w)])),
    );
}

// ---------------------------------------------------------------- list and doctor

/// A small tree under `town/`: held, held by a tmux pane (its spawner
/// exited), stale (claimed by a process since killed), stale (a Go lock of a
/// dead PID), corrupt, and a worker without a lock.
struct Town {
    /// First, so that it is dropped (its server ended through its socket)
    /// before the sandbox and the socket in it are removed.
    _tmux: Tmux,
    sb: Sandbox,
    root: std::path::PathBuf,
    holder: Proc,
    dead: i32,
    go_dead: i32,
    spawner_dead: i32,
}

impl Town {
    fn new() -> Town {
        let sb = Sandbox::new();
        let root = sb.worker("town");
        let tmux = sb.tmux("snap", "keeper");

        let holder = sleeper();
        sb.claim(&sb.worker("town/rig/crew/alpha"), holder.pid(), &["-q"])
            .code(0);

        sb.worker("town/rig/crew/beta");

        let by_session = sb.worker("town/rig/polecats/agent");
        tmux.new_session("agent", &by_session);
        let spawner_dead = dead_pid();
        write_lock(
            &by_session,
            &go_lock(spawner_dead, Some(&tmux.pane_id("agent"))),
        );

        let gone = sleeper();
        let dead = gone.pid();
        sb.claim(&sb.worker("town/rig/polecats/gone"), dead, &["-q"])
            .code(0);
        drop(gone);

        let go_dead = dead_pid();
        write_lock(
            &sb.worker("town/rig/polecats/go-stale"),
            &go_lock(go_dead, None),
        );

        write_lock(&sb.worker("town/rig/polecats/broken"), "{\"pid\": 12,");

        Town {
            sb,
            root,
            holder,
            dead,
            go_dead,
            spawner_dead,
            _tmux: tmux,
        }
    }

    fn redact(&self) -> Redact {
        Redact::new(&self.sb)
            .pid(self.holder.pid(), "HOLDER_PID")
            .pid(self.dead, "DEAD_PID")
            .pid(self.go_dead, "GO_DEAD_PID")
            .pid(self.spawner_dead, "SPAWNER_DEAD_PID")
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        a.push(s(&self.root));
        run(&self.sb, &a)
    }
}

#[test]
fn list_human() {
    let t = Town::new();
    let mut out = t.run(&["list"]);
    let r = t.redact();
    out.stdout = r
        .table(&String::from_utf8(out.stdout).unwrap())
        .into_bytes();
    r.snap("list_human", &render(&out));
}

#[test]
fn list_json() {
    let t = Town::new();
    t.redact()
        .snap("list_json", &render(&t.run(&["list", "--json"])));
}

#[test]
fn doctor_human() {
    let t = Town::new();
    t.redact()
        .snap("doctor_human", &render(&t.run(&["doctor"])));
}

#[test]
fn doctor_json() {
    let t = Town::new();
    t.redact()
        .snap("doctor_json", &render(&t.run(&["doctor", "--json"])));
}

#[test]
fn doctor_fix_human() {
    let t = Town::new();
    let r = t.redact();
    r.snap("doctor_fix_human", &render(&t.run(&["doctor", "--fix"])));
    r.snap("doctor_fix_human_after", &render(&t.run(&["doctor"])));
}

#[test]
fn doctor_fix_json() {
    let t = Town::new();
    t.redact().snap(
        "doctor_fix_json",
        &render(&t.run(&["doctor", "--fix", "--json"])),
    );
}
