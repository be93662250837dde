//! The commands: resolve the parsed arguments, call the library, print what
//! it found. Every decision is the library's; this module only maps outcomes
//! to lines, JSON and exit codes.

use crate::cli::{
    AskerArgs, CheckArgs, ClaimArgs, Cli, ColorWhen, Command, DoctorArgs, ReleaseArgs, RunArgs,
    StatusArgs, TreeArgs,
};
use crate::out::Out;
use agentlock::doctor::{self, FindingKind, Report};
use agentlock::exit_codes;
use agentlock::holder::Scope;
use agentlock::lock::{
    self, Asker, ClaimOptions, ClaimOutcome, Claimant, Judgement, ReleaseOutcome,
};
use agentlock::output::{self, ErrorJson, LockEntry, Style, WorkerJson};
use agentlock::probe::process::invoking_process;
use agentlock::probe::tmux::env_socket;
use agentlock::probe::{LiveProbes, TmuxQuery};
use agentlock::run::RunOutcome;
use agentlock::scan::{self, Progress, ScanOptions};
use clap::CommandFactory;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

struct Ctx {
    quiet: bool,
    style: Style,
    probes: LiveProbes,
}

/// Runs a parsed command line; returns the exit code.
pub fn execute(cli: Cli) -> i32 {
    let color = match cli.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let ctx = Ctx {
        quiet: cli.quiet,
        style: Style { color },
        probes: LiveProbes::new(TmuxQuery {
            sockets: cli.tmux_socket,
            ..TmuxQuery::default()
        }),
    };
    let mut out = Out::default();
    let code = match cli.command {
        Command::Claim(a) => claim(&ctx, a, &mut out),
        Command::Release(a) => release(&ctx, a, &mut out),
        Command::Check(a) => check(&ctx, a, &mut out),
        Command::Status(a) => status(&ctx, a, &mut out),
        Command::Run(a) => run(&ctx, a, &mut out),
        Command::List(a) => list(&ctx, a, &mut out),
        Command::Doctor(a) => doctor(&ctx, a, &mut out),
        Command::Completions(a) => {
            let mut buf = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "agentlock", &mut buf);
            out.raw(String::from_utf8_lossy(&buf));
            exit_codes::SUCCESS
        }
        Command::Man => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut buf) {
                Ok(()) => {
                    out.raw(String::from_utf8_lossy(&buf));
                    exit_codes::SUCCESS
                }
                Err(e) => {
                    out.error_line(format_args!("cannot render the man page: {e}"));
                    exit_codes::ERROR
                }
            }
        }
    };
    out.finish(code)
}

/// A PID from the command line: positive and within the range of pid_t.
fn parse_pid(pid: i64) -> Result<i32, String> {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "--pid {pid}: not a valid process id (must be 1..={})",
            i32::MAX
        )),
    }
}

/// The session to record and its server: `--session` resolved through tmux
/// (with a warning when it does not exist now), else `$TMUX_PANE` on the
/// server of `$TMUX`.
fn session_of(
    ctx: &Ctx,
    given: Option<String>,
    warnings: &mut Vec<String>,
) -> (Option<String>, Option<PathBuf>) {
    match given {
        Some(s) => {
            let r = ctx.probes.tmux.resolve(&s);
            warnings.extend(r.warning);
            (Some(r.session), r.socket)
        }
        None => match std::env::var("TMUX_PANE").ok().filter(|s| !s.is_empty()) {
            Some(pane) => (Some(pane), env_socket()),
            None => (None, None),
        },
    }
}

/// Who asks `release` / `check`.
fn asker_of(ctx: &Ctx, a: AskerArgs, warnings: &mut Vec<String>) -> Result<Asker, String> {
    Ok(match (a.pid.map(parse_pid).transpose()?, a.session) {
        (Some(p), _) => Asker::new(Some(p), None, None),
        (None, Some(s)) => {
            let (session, socket) = session_of(ctx, Some(s), warnings);
            Asker::new(None, session, socket)
        }
        (None, None) => {
            let (session, socket) = session_of(ctx, None, warnings);
            Asker::new(Some(invoking_process()), session, socket)
        }
    })
}

/// Prints a failure: one line on stderr, and the JSON document on stdout.
fn fail(out: &mut Out, json: bool, e: &ErrorJson) -> i32 {
    out.error_line(&e.message);
    if json {
        out.line(output::workers_json(&[], Some(e)));
    }
    exit_codes::ERROR
}

fn warn_all(out: &mut Out, warnings: &[String]) {
    for w in warnings {
        out.error_line(format_args!("warning: {w}"));
    }
}

fn claim(ctx: &Ctx, a: ClaimArgs, out: &mut Out) -> i32 {
    let pid = match a.holder.pid.map(parse_pid).transpose() {
        Ok(p) => p.unwrap_or_else(invoking_process),
        Err(e) => return fail(out, a.json, &ErrorJson::new("usage", e)),
    };
    let mut warnings = Vec::new();
    let (session, tmux_socket) = session_of(ctx, a.holder.session, &mut warnings);
    warn_all(out, &warnings);
    let me = Claimant {
        pid,
        session,
        tmux_socket,
    };
    if a.first_free {
        return first_free(ctx, &a.workers, &me, a.json, &warnings, out);
    }
    if a.workers.len() != 1 {
        let e = ErrorJson::new(
            "usage",
            "claim takes one WORKER (use --first-free to pick among several)",
        );
        return fail(out, a.json, &e);
    }
    let opts = ClaimOptions {
        force: a.force,
        signal_other: a.signal_other,
        ..ClaimOptions::default()
    };
    let probes = ctx.probes.probes();
    match lock::claim(&a.workers[0], &me, opts, &probes) {
        Err(e) => fail(out, a.json, &ErrorJson::of(&e)),
        Ok(ClaimOutcome::Refused(ins)) => {
            if a.json {
                let e = LockEntry::of(&ins).with_action("refused");
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
            }
            out.err(output::refusal(&ins, "claim"));
            exit_codes::NO
        }
        Ok(ClaimOutcome::Done(c)) => {
            out.done = Some(format!(
                "{} {} (the lock stays held)",
                c.action.as_str(),
                c.after.worker_dir.display()
            ));
            // The --signal-other outcome is always printed: it says what happened to another process.
            if let Some(s) = &c.signal {
                out.error_line(s);
            }
            if a.json {
                let mut e = LockEntry::of(&c.after).with_action(c.action.as_str());
                e.moved_aside = c.moved_aside.as_deref();
                e.signal = c.signal.as_deref();
                e.warnings = &warnings;
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
            } else if !ctx.quiet {
                out.raw(output::claimed_lines(&c));
            }
            exit_codes::SUCCESS
        }
    }
}

fn first_free(
    ctx: &Ctx,
    workers: &[PathBuf],
    me: &Claimant,
    json: bool,
    warnings: &[String],
    out: &mut Out,
) -> i32 {
    let probes = ctx.probes.probes();
    let ff = match lock::claim_first_free(workers, me, &probes) {
        Ok(ff) => ff,
        Err(e) => return fail(out, json, &ErrorJson::of(&e)),
    };
    let mut entries: Vec<WorkerJson> = Vec::new();
    let mut errors = 0;
    for (path, r) in &ff.tried {
        match r {
            Ok(ins) => entries.push(WorkerJson::Entry(LockEntry::of(ins).with_action("refused"))),
            Err(e) => {
                errors += 1;
                out.error_line(format_args!("skipped {}: {e}", path.display()));
                entries.push(WorkerJson::failed(path, e));
            }
        }
    }
    if let Some((_, c)) = &ff.claimed {
        out.done = Some(format!(
            "claimed {} (the lock stays held)",
            c.after.worker_dir.display()
        ));
        let mut e = LockEntry::of(&c.after).with_action(c.action.as_str());
        e.warnings = warnings;
        entries.push(WorkerJson::Entry(e));
    }
    if json {
        out.line(output::workers_json(&entries, None));
    }
    match &ff.claimed {
        Some((_, c)) => {
            if !json {
                // The claimed worker alone on stdout: slot=$(agentlock claim --first-free a b c)
                out.line(c.after.worker_dir.display());
            }
            exit_codes::SUCCESS
        }
        None => {
            for (_, r) in &ff.tried {
                if let Ok(ins) = r {
                    out.error_line(format_args!(
                        "{} is {} ({})",
                        ins.worker_dir.display(),
                        ins.state,
                        ins.reason
                    ));
                }
            }
            if errors == workers.len() {
                exit_codes::ERROR
            } else {
                out.error_line("no free worker");
                exit_codes::NO
            }
        }
    }
}

fn release(ctx: &Ctx, a: ReleaseArgs, out: &mut Out) -> i32 {
    let mut warnings = Vec::new();
    let who = match asker_of(ctx, a.asker, &mut warnings) {
        Ok(who) => who,
        Err(e) => return fail(out, a.json, &ErrorJson::new("usage", e)),
    };
    warn_all(out, &warnings);
    let probes = ctx.probes.probes();
    match lock::release(&a.worker, &who, a.force, &probes) {
        Err(e) => fail(out, a.json, &ErrorJson::of(&e)),
        Ok(ReleaseOutcome::Refused(ins)) => {
            if a.json {
                let e = LockEntry::of(&ins).with_action("refused");
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
            }
            out.err(output::refusal(&ins, "release"));
            exit_codes::NO
        }
        Ok(ReleaseOutcome::Done {
            action,
            before,
            moved_to,
        }) => {
            out.done = Some(format!(
                "{} {}",
                action.as_str(),
                before.worker_dir.display()
            ));
            if a.json {
                let mut e = LockEntry::of(&before).with_action(action.as_str());
                e.moved_aside = moved_to.as_deref();
                out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
            } else if !ctx.quiet {
                match &moved_to {
                    Some(to) => {
                        out.line(format_args!("moved corrupt lock aside to {}", to.display()))
                    }
                    None => out.line(format_args!(
                        "{} {}",
                        action.as_str(),
                        before.worker_dir.display()
                    )),
                }
            }
            exit_codes::SUCCESS
        }
    }
}

/// Inspects each worker, asking every tmux server the locks record at once.
fn judge_all(ctx: &Ctx, workers: &[PathBuf]) -> Vec<(PathBuf, agentlock::Result<Judgement>)> {
    let probes = ctx.probes.probes();
    lock::judge_many(workers, &ctx.probes.tmux, &probes)
}

/// The JSON entries of inspected workers, failures included.
fn entries<'a>(found: &'a [(PathBuf, agentlock::Result<Judgement>)]) -> Vec<WorkerJson<'a>> {
    found
        .iter()
        .map(|(path, r)| match r {
            Ok(ins) => WorkerJson::Entry(LockEntry::of(ins)),
            Err(e) => WorkerJson::failed(path, e),
        })
        .collect()
}

fn status(ctx: &Ctx, a: StatusArgs, out: &mut Out) -> i32 {
    let found = judge_all(ctx, &a.workers);
    let mut errors = 0;
    for (_, r) in &found {
        match r {
            Ok(ins) if !a.json && !ctx.quiet => out.line(output::status_lines(ins, ctx.style)),
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                out.error_line(e);
            }
        }
    }
    if a.json {
        out.line(output::workers_json(&entries(&found), None));
    }
    if errors > 0 {
        exit_codes::ERROR
    } else {
        exit_codes::SUCCESS
    }
}

fn check(ctx: &Ctx, a: CheckArgs, out: &mut Out) -> i32 {
    let mut warnings = Vec::new();
    let asker = match asker_of(ctx, a.asker, &mut warnings) {
        Ok(asker) => asker,
        Err(e) => return fail(out, a.json, &ErrorJson::new("usage", e)),
    };
    warn_all(out, &warnings);
    let found = judge_all(ctx, &a.workers);
    let probes = ctx.probes.probes();
    let (mut errors, mut held_by_other) = (0, 0);
    for (_, r) in &found {
        let ins = match r {
            Ok(ins) => ins,
            Err(e) => {
                errors += 1;
                out.error_line(e);
                continue;
            }
        };
        let mine = ins
            .record
            .as_ref()
            .is_some_and(|r| agentlock::holder::holds(r, &asker, Scope::ActFor, &probes));
        if !(mine || ins.state.claimable()) {
            held_by_other += 1;
        }
        if !a.json && !ctx.quiet {
            let verdict = if mine {
                "held by you".to_string()
            } else {
                ctx.style.state(ins.state)
            };
            out.line(format_args!(
                "{}: {verdict} ({})",
                ins.worker_dir.display(),
                ins.reason
            ));
        }
    }
    if a.json {
        out.line(output::workers_json(&entries(&found), None));
    }
    if errors > 0 {
        exit_codes::ERROR
    } else if held_by_other > 0 {
        exit_codes::NO
    } else {
        exit_codes::SUCCESS
    }
}

fn run(ctx: &Ctx, a: RunArgs, out: &mut Out) -> i32 {
    let probes = ctx.probes.probes();
    let mut warnings = Vec::new();
    let (session, socket) = session_of(ctx, a.session, &mut warnings);
    warn_all(out, &warnings);
    match agentlock::run::run(&a.worker, session, socket, &a.command, &probes) {
        Err(e) => {
            out.error_line(e);
            exit_codes::ERROR
        }
        Ok(RunOutcome::Refused(ins)) => {
            out.err(output::refusal(&ins, "claim"));
            exit_codes::RUN_REFUSED
        }
        Ok(RunOutcome::Interrupted { signal }) => {
            out.error_line(format_args!(
                "{}: interrupted by signal {signal} before the command started; it was not started and nothing is held",
                a.worker.display()
            ));
            128 + signal
        }
        Ok(RunOutcome::CannotRun { code, why }) => {
            out.error_line(why);
            code
        }
        Ok(RunOutcome::Exited { code, released }) => {
            if let Err(why) = released {
                out.error_line(format_args!("{}: {why}", a.worker.display()));
            }
            code
        }
    }
}

/// A progress line on stderr while a scan runs, on a terminal only; cleared when done.
fn with_progress<T>(show: bool, progress: &Progress, work: impl FnOnce() -> T) -> T {
    if !show {
        return work();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::io::Write;
            let mut shown = false;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = write!(
                    std::io::stderr(),
                    "\rscanning: {} dirs, {} locks",
                    progress.dirs.load(Ordering::Relaxed),
                    progress.locks.load(Ordering::Relaxed)
                );
                shown = true;
            }
            if shown {
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    })
}

/// Scans and judges a tree. tmux's default servers are asked in parallel with
/// the walk; the servers the locks record, right after it.
fn judge_tree(ctx: &Ctx, a: &TreeArgs) -> Result<Report, agentlock::Error> {
    let root = a.root.clone().unwrap_or_else(|| PathBuf::from("."));
    let opts = ScanOptions {
        max_depth: a.max_depth,
        skip: a.skip.clone(),
        default_skips: !a.no_default_skips,
        threads: 0,
    };
    let progress = Progress::default();
    let show = !a.json && !ctx.quiet && std::io::stderr().is_terminal();
    let scanned = std::thread::scope(|s| {
        s.spawn(|| ctx.probes.tmux.ensure_default());
        with_progress(show, &progress, || scan::scan(&root, &opts, &progress))
    })?;
    Ok(doctor::judge_live(&scanned, &ctx.probes))
}

fn tree_failed(out: &mut Out, a: &TreeArgs, e: &agentlock::Error) -> i32 {
    out.error_line(e);
    if a.json {
        let root = a.root.clone().unwrap_or_else(|| PathBuf::from("."));
        let root = std::path::absolute(&root).unwrap_or(root);
        out.line(output::error_json(Some(&root), &ErrorJson::of(e)));
    }
    exit_codes::ERROR
}

fn list(ctx: &Ctx, a: TreeArgs, out: &mut Out) -> i32 {
    let report = match judge_tree(ctx, &a) {
        Ok(r) => r,
        Err(e) => return tree_failed(out, &a, &e),
    };
    let scan_errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::ScanError)
        .collect();
    if a.json {
        out.line(output::report_json(&report, &ctx.probes.tmux.snapshot()));
    } else {
        if !ctx.quiet {
            out.raw(output::list_table(&report, ctx.style));
        }
        for f in &scan_errors {
            out.error_line(&f.message);
        }
    }
    if scan_errors.is_empty() {
        exit_codes::SUCCESS
    } else {
        exit_codes::ERROR
    }
}

fn doctor(ctx: &Ctx, a: DoctorArgs, out: &mut Out) -> i32 {
    let mut report = match judge_tree(ctx, &a.tree) {
        Ok(r) => r,
        Err(e) => return tree_failed(out, &a.tree, &e),
    };
    let errors = if a.fix {
        doctor::fix(&mut report, &ctx.probes.probes())
    } else {
        Vec::new()
    };
    if !report.fixed.is_empty() {
        out.done = Some(format!("doctor --fix applied {} fixes", report.fixed.len()));
    }
    if a.tree.json {
        out.line(output::report_json(&report, &ctx.probes.tmux.snapshot()));
    } else if !ctx.quiet || !report.findings.is_empty() {
        out.line(output::doctor_text(&report, a.fix));
    }
    for e in &errors {
        out.error_line(e);
    }
    if !errors.is_empty() {
        exit_codes::ERROR
    } else if !report.findings.is_empty() {
        exit_codes::NO
    } else {
        exit_codes::SUCCESS
    }
}
