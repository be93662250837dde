//! The reliability harness, shared by `tests/stress.rs` (short) and
//! `examples/reliability.rs` (long runs, driven by scripts/reliability.sh).
//!
//! Real `agentlock` processes race on a few worker directories: holders
//! (`claim` / `release`), `claim --first-free` pickers, `run` wrappers, `doctor
//! --fix` loops and plain readers, while a crasher SIGKILLs claimers and `run`
//! wrappers at random moments. Holders and `run` wrappers that all share one
//! tmux pane race too (a shared pane never makes two processes one holder),
//! and spawner scripts pick slots with `slot=$(agentlock claim --first-free
//! ...)` (the lock must name the script, not the `$(...)` subshell). Invariants are checked all the time:
//! - at most one holder per worker: each holder keeps a marker file while it
//!   believes it holds the worker; two markers at once is an overlap;
//! - no live lock is removed: a holder still finds its own lock right before
//!   it releases, and the release finds it;
//! - every read of a lock file parses (nothing torn or empty);
//! - after each SIGKILL the lock is absent or a complete valid record, and a
//!   lock left by a dead holder (no session) is `stale`, i.e. claimable;
//! - leftover temp files of killed writers are found by `doctor` and removed by
//!   `doctor --fix`;
//! - nothing outside the tree changes, and no invocation panics.
#![allow(dead_code)]

use agentlock::record::LockRecord;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "shells.rs"]
mod shells;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub bin: PathBuf,
    /// Where the tree and the harness's files live (must be empty or absent).
    pub dir: PathBuf,
    pub workers: usize,
    pub holders: usize,
    pub pickers: usize,
    pub runners: usize,
    /// Holders that all claim with the same `--session %0`.
    pub pane_holders: usize,
    /// `run` wrappers that all run with `TMUX_PANE=%0`.
    pub pane_runners: usize,
    /// bash scripts doing `slot=$(agentlock claim --first-free ...)`.
    pub spawners: usize,
    /// perl processes claiming through `sh -c` (as `system(3)` does).
    pub shell_spawners: usize,
    /// Agents in their own mount + network namespace, claiming for a pane
    /// of a private tmux server.
    pub sandboxed: usize,
    pub doctors: usize,
    pub readers: usize,
    /// Stop once this many racing rounds (claim attempts) and `kills` SIGKILLs
    /// are done, or at `limit`, whichever comes first.
    pub rounds: usize,
    pub kills: usize,
    pub limit: Duration,
}

impl Config {
    pub fn new(bin: &Path, dir: &Path) -> Config {
        Config {
            bin: bin.into(),
            dir: dir.into(),
            workers: 4,
            holders: 4,
            pickers: 2,
            runners: 2,
            pane_holders: 2,
            pane_runners: 2,
            spawners: 2,
            shell_spawners: 1,
            sandboxed: 1,
            doctors: 1,
            readers: 1,
            rounds: 1000,
            kills: 100,
            limit: Duration::from_secs(60),
        }
    }

    /// Actors racing at once (each drives its own processes).
    pub fn actors(&self) -> usize {
        self.holders
            + self.pickers
            + self.runners
            + self.pane_holders
            + self.pane_runners
            + self.spawners
            + self.shell_spawners
            + self.sandboxed
            + self.doctors
            + self.readers
            + 1
    }
}

/// What a run measured. Every count named as a failure must be zero.
#[derive(Debug, Default)]
pub struct Figures {
    pub actors: usize,
    pub rounds: AtomicUsize,
    pub wins: AtomicUsize,
    /// Rounds won by holders and `run` wrappers sharing one pane.
    pub pane_wins: AtomicUsize,
    /// Slots won by `$(...)` spawner scripts.
    pub spawner_wins: AtomicUsize,
    /// Slots won by `sh -c` spawners.
    pub shell_wins: AtomicUsize,
    /// Rounds won by sandboxed agents.
    pub sandbox_wins: AtomicUsize,
    pub operations: AtomicUsize,
    pub reads: AtomicUsize,
    pub sigkills: AtomicUsize,
    pub temps_left_by_kills: AtomicUsize,
    pub leftovers_found: AtomicUsize,
    pub leftovers_fixed: AtomicUsize,
    pub stale_fixed: AtomicUsize,
    // Failures:
    pub overlaps: AtomicUsize,
    pub live_removed: AtomicUsize,
    pub torn_reads: AtomicUsize,
    pub invalid_after_kill: AtomicUsize,
    pub dead_not_claimable: AtomicUsize,
    pub leftovers_after_fix: AtomicUsize,
    pub panics: AtomicUsize,
    pub unexpected_exits: AtomicUsize,
    pub outside_changed: AtomicUsize,
    pub seconds: Mutex<f64>,
    pub notes: Mutex<Vec<String>>,
}

impl Figures {
    fn fail(&self, counter: &AtomicUsize, note: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 50 {
            notes.push(note);
        }
    }

    /// The failure counts, all of which must be zero.
    pub fn failures(&self) -> usize {
        [
            &self.overlaps,
            &self.live_removed,
            &self.torn_reads,
            &self.invalid_after_kill,
            &self.dead_not_claimable,
            &self.leftovers_after_fix,
            &self.panics,
            &self.unexpected_exits,
            &self.outside_changed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// The table scripts/reliability.sh prints.
    pub fn table(&self) -> String {
        let g = |c: &AtomicUsize| c.load(Ordering::Relaxed).to_string();
        let rows: Vec<(&str, String)> = vec![
            ("processes racing at once", self.actors.to_string()),
            ("racing rounds (claim attempts)", g(&self.rounds)),
            ("rounds won", g(&self.wins)),
            (
                "  of which by shared-pane holders and runs",
                g(&self.pane_wins),
            ),
            (
                "  of which by `$(...)` spawner scripts",
                g(&self.spawner_wins),
            ),
            ("  of which by `sh -c` spawners", g(&self.shell_wins)),
            (
                "  of which by sandboxed agents (own mount + net namespace)",
                g(&self.sandbox_wins),
            ),
            ("operations (all invocations)", g(&self.operations)),
            ("lock reads", g(&self.reads)),
            ("SIGKILLs injected", g(&self.sigkills)),
            (
                "temp files seen right after a kill",
                g(&self.temps_left_by_kills),
            ),
            ("leftover temps found by doctor", g(&self.leftovers_found)),
            ("leftover temps removed by --fix", g(&self.leftovers_fixed)),
            ("stale locks removed by --fix", g(&self.stale_fixed)),
            ("overlaps found", g(&self.overlaps)),
            ("live locks removed", g(&self.live_removed)),
            ("torn reads", g(&self.torn_reads)),
            (
                "invalid lock files after a kill",
                g(&self.invalid_after_kill),
            ),
            (
                "dead holders' locks not claimable",
                g(&self.dead_not_claimable),
            ),
            (
                "leftover temps after final --fix",
                g(&self.leftovers_after_fix),
            ),
            ("unexpected exit codes", g(&self.unexpected_exits)),
            ("panics", g(&self.panics)),
            ("files outside the tree changed", g(&self.outside_changed)),
            ("seconds", format!("{:.1}", *self.seconds.lock().unwrap())),
        ];
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }
}

struct Ctx {
    cfg: Config,
    root: PathBuf,
    markers: PathBuf,
    workers: Vec<PathBuf>,
    figures: Arc<Figures>,
    deadline: Instant,
    done: AtomicBool,
}

impl Ctx {
    fn finished(&self) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return true;
        }
        let f = &self.figures;
        let enough = f.rounds.load(Ordering::Relaxed) >= self.cfg.rounds
            && f.sigkills.load(Ordering::Relaxed) >= self.cfg.kills;
        if enough || Instant::now() >= self.deadline {
            self.done.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn cmd(&self) -> Command {
        self.cmd_named(&self.cfg.bin)
    }

    /// A program in this harness's environment (private TMUX_TMPDIR, no tmux).
    fn cmd_named(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("TMUX_TMPDIR", self.cfg.dir.join("tmux"))
            // Only the harness's own tmux servers, never the machine's.
            .env("AGENTLOCK_TMUX_SERVERS", "dir")
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .stdin(Stdio::null());
        c
    }

    /// Runs agentlock to completion; counts it; checks for panics and exit codes.
    fn agentlock(&self, args: &[&str], worker: Option<&Path>, ok: &[i32]) -> std::process::Output {
        self.agentlock_env(args, worker, ok, None)
    }

    /// [`Ctx::agentlock`] with one more environment variable.
    fn agentlock_env(
        &self,
        args: &[&str],
        worker: Option<&Path>,
        ok: &[i32],
        env: Option<(&str, &str)>,
    ) -> std::process::Output {
        let mut c = self.cmd();
        c.args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        if let Some(w) = worker {
            c.arg(w);
        }
        let out = c.output().expect("agentlock runs");
        self.figures.operations.fetch_add(1, Ordering::Relaxed);
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("panicked") {
            self.figures
                .fail(&self.figures.panics, format!("{args:?}: {err}"));
        }
        if !out.status.code().is_some_and(|c| ok.contains(&c)) {
            self.figures.fail(
                &self.figures.unexpected_exits,
                format!("{args:?} {worker:?} exit {:?}: {err}", out.status.code()),
            );
        }
        out
    }

    fn marker_dir(&self, w: &Path) -> PathBuf {
        self.markers.join(w.file_name().unwrap())
    }

    /// Marks "I hold w"; records an overlap if anyone else does too.
    fn mark(&self, w: &Path, me: &str) -> PathBuf {
        let m = self.marker_dir(w).join(me);
        std::fs::write(&m, "").unwrap();
        let others: Vec<String> = std::fs::read_dir(self.marker_dir(w))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != me)
            .collect();
        if !others.is_empty() {
            self.figures.fail(
                &self.figures.overlaps,
                format!("{me} and {others:?} both hold {}", w.display()),
            );
        }
        m
    }

    fn lock_of(&self, w: &Path) -> Option<Result<LockRecord, String>> {
        match std::fs::read(w.join(".runtime/agent.lock")) {
            Ok(b) => Some(
                LockRecord::parse(&b)
                    .map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&b))),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("100000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill_reap(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// claim → hold (check twice) → release, over and over. With `pane`, every
/// such holder claims from the same pane `%0`.
fn holder(ctx: &Ctx, id: usize, pane: bool) {
    let mut me = sleeper();
    let pid = me.id().to_string();
    let name = format!("{}holder-{id}", if pane { "pane-" } else { "" });
    let mut claim = vec!["claim", "-q", "--pid", &pid];
    if pane {
        claim.extend(["--session", "%0"]);
    }
    let mut i = id;
    while !ctx.finished() {
        let w = &ctx.workers[i % ctx.workers.len()];
        i += 1;
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let out = ctx.agentlock(&claim, Some(w), &[0, 1]);
        if out.status.code() != Some(0) {
            continue;
        }
        ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
        if pane {
            ctx.figures.pane_wins.fetch_add(1, Ordering::Relaxed);
        }
        let marker = ctx.mark(w, &name);
        for _ in 0..2 {
            match ctx.lock_of(w) {
                Some(Ok(r)) if r.pid == me.id() as i32 => {}
                other => ctx.figures.fail(
                    &ctx.figures.live_removed,
                    format!("{name} lost {}: {other:?}", w.display()),
                ),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::remove_file(marker).unwrap();
        let out = ctx.agentlock(&["release", "--json", "--pid", &pid], Some(w), &[0]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["workers"][0]["action"] != "released" {
            ctx.figures.fail(
                &ctx.figures.live_removed,
                format!("{name} release of {} found {v}", w.display()),
            );
        }
    }
    kill_reap(&mut me);
}

/// claim --first-free over all workers → hold → release.
fn picker(ctx: &Ctx, id: usize) {
    let mut me = sleeper();
    let pid = me.id().to_string();
    let name = format!("picker-{id}");
    let mut args: Vec<String> = vec![
        "claim".into(),
        "--first-free".into(),
        "--pid".into(),
        pid.clone(),
    ];
    args.extend(ctx.workers.iter().map(|w| w.to_string_lossy().into_owned()));
    while !ctx.finished() {
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ctx.agentlock(&a, None, &[0, 1]);
        if out.status.code() != Some(0) {
            continue;
        }
        ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
        let w = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let marker = ctx.mark(&w, &name);
        std::thread::sleep(Duration::from_millis(2));
        match ctx.lock_of(&w) {
            Some(Ok(r)) if r.pid == me.id() as i32 => {}
            other => ctx.figures.fail(
                &ctx.figures.live_removed,
                format!("{name} lost {}: {other:?}", w.display()),
            ),
        }
        std::fs::remove_file(marker).unwrap();
        ctx.agentlock(&["release", "-q", "--pid", &pid], Some(&w), &[0]);
    }
    kill_reap(&mut me);
}

/// run W -- sh: the command itself keeps the marker while it runs. With
/// `pane`, every such wrapper runs in the same pane (`TMUX_PANE=%0`).
fn runner(ctx: &Ctx, id: usize, pane: bool) {
    let tag = if pane { "pane-run" } else { "run" };
    let overlaps = ctx.cfg.dir.join(format!("overlaps-{tag}-{id}"));
    let mut i = id;
    while !ctx.finished() {
        let w = &ctx.workers[i % ctx.workers.len()];
        i += 1;
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let dir = ctx.marker_dir(w);
        let script = format!(
            "m='{d}/{tag}-{id}-'$$; : > \"$m\"; n=$(ls '{d}' | wc -l); [ \"$n\" -gt 1 ] && echo \"$(ls '{d}')\" >> '{o}'; sleep 0.003; rm -f \"$m\"",
            d = dir.display(),
            o = overlaps.display()
        );
        let out = ctx.agentlock_env(
            &["run", &w.to_string_lossy(), "--", "sh", "-c", &script],
            None,
            &[0, 75],
            pane.then_some(("TMUX_PANE", "%0")),
        );
        if out.status.code() == Some(0) {
            ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
            if pane {
                ctx.figures.pane_wins.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string(&overlaps) {
        for l in s.lines() {
            ctx.figures
                .fail(&ctx.figures.overlaps, format!("{tag}-{id} saw markers {l}"));
        }
    }
}

/// A spawner script: `slot=$(agentlock claim --first-free ...)`, hold the slot
/// (marker kept by the script itself), then `agentlock release "$slot"` as the
/// script. The lock must name the script, so nobody else gets the slot.
fn spawner(ctx: &Ctx, id: usize) {
    let overlaps = ctx.cfg.dir.join(format!("overlaps-spawner-{id}"));
    let lost = ctx.cfg.dir.join(format!("lost-spawner-{id}"));
    let workers: Vec<String> = ctx
        .workers
        .iter()
        .map(|w| format!("'{}'", w.display()))
        .collect();
    let script = format!(
        "slot=$('{bin}' claim -q --first-free {ws} 2>/dev/null) || exit 1
d='{markers}'/$(basename \"$slot\"); m=\"$d/spawner-{id}-$$\"; : > \"$m\"
n=$(ls \"$d\" | wc -l); [ \"$n\" -gt 1 ] && echo \"$(ls \"$d\")\" >> '{o}'
sleep 0.003
grep -q \"\\\"pid\\\": $$,\" \"$slot/.runtime/agent.lock\" || echo \"$slot\" >> '{lost}'
rm -f \"$m\"
'{bin}' release -q \"$slot\" || exit 3",
        bin = ctx.cfg.bin.display(),
        ws = workers.join(" "),
        markers = ctx.markers.display(),
        o = overlaps.display(),
        lost = lost.display(),
    );
    while !ctx.finished() {
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let out = ctx
            .cmd_named("bash")
            .args(["-c", &script])
            .output()
            .expect("bash runs");
        ctx.figures.operations.fetch_add(1, Ordering::Relaxed);
        match out.status.code() {
            Some(0) => {
                ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
                ctx.figures.spawner_wins.fetch_add(1, Ordering::Relaxed);
            }
            Some(1) => {}
            other => ctx.figures.fail(
                &ctx.figures.unexpected_exits,
                format!(
                    "spawner-{id} exit {other:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
        }
    }
    mark_shell(ctx, &format!("spawner-{id}"), &overlaps, &lost);
}

/// Counts what a shell-driven actor wrote to its `overlaps` and `lost`
/// files as failures.
fn mark_shell(ctx: &Ctx, who: &str, overlaps: &Path, lost: &Path) {
    for (file, counter, what) in [
        (overlaps, &ctx.figures.overlaps, "saw markers"),
        (lost, &ctx.figures.live_removed, "lost its slot"),
    ] {
        if let Ok(s) = std::fs::read_to_string(file) {
            for l in s.lines() {
                ctx.figures.fail(counter, format!("{who} {what} {l}"));
            }
        }
    }
}

fn doctor(ctx: &Ctx) {
    while !ctx.finished() {
        let out = ctx.agentlock(
            &["doctor", "--fix", "--json", &ctx.root.to_string_lossy()],
            None,
            &[0, 1],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for f in v["fixed"].as_array().into_iter().flatten() {
            match f["kind"].as_str() {
                Some("leftover-temp") => {
                    ctx.figures.leftovers_fixed.fetch_add(1, Ordering::Relaxed)
                }
                Some("stale") => ctx.figures.stale_fixed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        let found = v["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["kind"] == "leftover-temp")
            .count()
            + v["fixed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["kind"] == "leftover-temp")
                .count();
        ctx.figures
            .leftovers_found
            .fetch_add(found, Ordering::Relaxed);
    }
}

fn reader(ctx: &Ctx) {
    while !ctx.finished() {
        for w in &ctx.workers {
            if let Some(r) = ctx.lock_of(w) {
                ctx.figures.reads.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    ctx.figures
                        .fail(&ctx.figures.torn_reads, format!("{}: {e}", w.display()));
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// SIGKILLs claimers and run wrappers at random moments, then checks the lock.
fn crasher(ctx: &Ctx) {
    let mut n = 0usize;
    let mut seen_temps = std::collections::HashSet::new();
    while !ctx.finished() {
        let w = &ctx.workers[n % ctx.workers.len()];
        n += 1;
        // A short-lived holder, so a lock it gets becomes a dead holder's lock.
        let mut short = Command::new("sleep").arg("0.01").spawn().unwrap();
        let short_pid = short.id() as i32;
        let mut c = ctx.cmd();
        if n.is_multiple_of(2) {
            c.args(["claim", "-q", "--pid", &short_pid.to_string()])
                .arg(w);
        } else {
            c.arg("run").arg(w).args(["--", "sleep", "0.01"]);
        }
        let mut victim = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ctx.figures.operations.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..4000)));
        let _ = victim.kill();
        let _ = victim.wait();
        ctx.figures.sigkills.fetch_add(1, Ordering::Relaxed);
        let _ = short.wait();
        match ctx.lock_of(w) {
            Some(Err(e)) => ctx.figures.fail(
                &ctx.figures.invalid_after_kill,
                format!("{}: {e}", w.display()),
            ),
            Some(Ok(r)) if r.pid == short_pid => {
                // The dead holder's lock must be stale (claimable) — unless it was
                // replaced meanwhile, which the verdict then describes.
                let out = ctx.agentlock(&["status", "--json"], Some(w), &[0]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let e = &v["workers"][0];
                if e["pid"] == short_pid && e["state"] != "stale" {
                    ctx.figures.fail(
                        &ctx.figures.dead_not_claimable,
                        format!("{}: {e}", w.display()),
                    );
                }
            }
            _ => {}
        }
        if let Ok(d) = std::fs::read_dir(w.join(".runtime")) {
            for e in d.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("agent.lock.tmp.") && seen_temps.insert(name) {
                    ctx.figures
                        .temps_left_by_kills
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Runs the harness and returns the figures.
pub fn run(cfg: Config) -> Arc<Figures> {
    let root = cfg.dir.join("tree");
    let markers = cfg.dir.join("markers");
    let outside = cfg.dir.join("outside");
    std::fs::create_dir_all(cfg.dir.join("tmux")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), "do not touch").unwrap();
    std::fs::write(outside.join("agent.lock"), "{\"pid\": 1}").unwrap();
    let workers: Vec<PathBuf> = (0..cfg.workers)
        .map(|i| root.join(format!("rig/w{i}")))
        .collect();
    for w in &workers {
        std::fs::create_dir_all(w).unwrap();
        std::fs::create_dir_all(markers.join(w.file_name().unwrap())).unwrap();
        // A way out of the tree that must never be followed.
        std::os::unix::fs::symlink(&outside, w.join("outside-link")).unwrap();
    }
    let before = digest(&outside);
    let figures = Arc::new(Figures {
        actors: cfg.actors(),
        ..Figures::default()
    });
    let ctx = Ctx {
        deadline: Instant::now() + cfg.limit,
        cfg: cfg.clone(),
        root,
        markers,
        workers,
        figures: figures.clone(),
        done: AtomicBool::new(false),
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        let ctx = &ctx;
        for i in 0..cfg.holders {
            s.spawn(move || holder(ctx, i, false));
        }
        for i in 0..cfg.pane_holders {
            s.spawn(move || holder(ctx, i, true));
        }
        for i in 0..cfg.spawners {
            s.spawn(move || spawner(ctx, i));
        }
        for i in 0..cfg.shell_spawners {
            s.spawn(move || shells::shell_spawner(ctx, i));
        }
        for i in 0..cfg.sandboxed {
            s.spawn(move || shells::sandboxed(ctx, i));
        }
        for i in 0..cfg.pickers {
            s.spawn(move || picker(ctx, i));
        }
        for i in 0..cfg.runners {
            s.spawn(move || runner(ctx, i, false));
        }
        for i in 0..cfg.pane_runners {
            s.spawn(move || runner(ctx, i, true));
        }
        for _ in 0..cfg.doctors {
            s.spawn(move || doctor(ctx));
        }
        for _ in 0..cfg.readers {
            s.spawn(move || reader(ctx));
        }
        s.spawn(move || crasher(ctx));
    });
    *figures.seconds.lock().unwrap() = start.elapsed().as_secs_f64();
    // Let killed runs' commands (sleep 0.01) finish, then one final fix: every
    // leftover temp file is removed and nothing stale remains.
    std::thread::sleep(Duration::from_millis(100));
    let out = ctx.agentlock(
        &["doctor", "--fix", "--json", &ctx.root.to_string_lossy()],
        None,
        &[0, 1],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for f in v["fixed"].as_array().into_iter().flatten() {
        if f["kind"] == "leftover-temp" {
            figures.leftovers_fixed.fetch_add(1, Ordering::Relaxed);
            figures.leftovers_found.fetch_add(1, Ordering::Relaxed);
        }
    }
    let out = ctx.agentlock(
        &["doctor", "--json", &ctx.root.to_string_lossy()],
        None,
        &[0, 1],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for f in v["findings"].as_array().into_iter().flatten() {
        if f["kind"] == "leftover-temp" || f["kind"] == "stale" {
            figures.fail(
                &figures.leftovers_after_fix,
                format!("after the final fix: {f}"),
            );
        }
    }
    if digest(&outside) != before {
        figures.fail(&figures.outside_changed, "outside dir changed".into());
    }
    figures
}
