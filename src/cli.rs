//! Command-line interface: argument parsing (clap derive) and printing. Every
//! decision is made by the library; this module only maps outcomes to lines,
//! JSON and exit codes.

use agentlock::doctor::{self, FindingKind, Report};
use agentlock::exit_codes;
use agentlock::lock::{
    self, Asker, ClaimOptions, ClaimOutcome, Claimant, Inspection, ReleaseOutcome,
};
use agentlock::output::{self, LockEntry, Style};
use agentlock::probe::TmuxQuery;
use agentlock::run::RunOutcome;
use agentlock::scan::{self, Progress, ScanOptions};
use agentlock::verdict::State;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Stops two coding agents from claiming the same worker identity.
#[derive(Debug, Parser)]
#[command(name = "agentlock", version, about, max_term_width = 100)]
pub struct Cli {
    /// Ask only this tmux server (a socket name under $TMUX_TMPDIR/tmux-UID, or a path). Repeatable.
    #[arg(long = "tmux-socket", value_name = "NAME_OR_PATH", global = true)]
    pub tmux_socket: Vec<String>,
    /// Print only errors and refusals.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Claim a worker (or, with --first-free, the first claimable of several).
    Claim(ClaimArgs),
    /// Release a worker held by the given (or invoking) PID or session.
    Release(ReleaseArgs),
    /// Exit 0 if the workers are free or held by the asker, 1 if held by another. Read-only.
    Check(CheckArgs),
    /// Show the state of workers. Read-only.
    Status(StatusArgs),
    /// Hold a worker while a command runs; exit with the command's status.
    Run(RunArgs),
    /// List every lock under ROOT, one row per worker. Read-only.
    List(TreeArgs),
    /// Diagnose every lock under ROOT; with --fix, repair what is provably dead.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Root of the tree to scan [default: the current directory].
    #[arg(value_name = "ROOT")]
    pub root: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Look at worker directories at most N levels below ROOT (ROOT is level 0).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<usize>,
    /// Also skip directories with this name. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub skip: Vec<OsString>,
    /// Do not skip .git, .dolt-data, .dolt-backup and node_modules.
    #[arg(long)]
    pub no_default_skips: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Remove stale locks, move corrupt ones aside, remove dead writers' temp files
    /// (each re-checked under its guard first).
    #[arg(long)]
    pub fix: bool,
}

#[derive(Debug, Args)]
pub struct Holder {
    /// Holder PID [default: the invoking process, i.e. agentlock's parent].
    #[arg(long, allow_hyphen_values = true, value_name = "PID")]
    pub pid: Option<i64>,
    /// Holder tmux session name, $N session id or %N pane id [default: $TMUX_PANE].
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// Worker directory (several with --first-free).
    #[arg(required = true, value_name = "WORKER")]
    pub workers: Vec<PathBuf>,
    /// Claim the first worker that is free, stale or corrupt, in the order given.
    #[arg(long, conflicts_with = "force")]
    pub first_free: bool,
    #[command(flatten)]
    pub holder: Holder,
    /// Take over a lock held by someone else.
    #[arg(long)]
    pub force: bool,
    /// With --force: SIGTERM the previous holder first, when provably safe.
    #[arg(long, requires = "force")]
    pub signal_other: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Who asks (`release`, `check`): a PID or a session; by default the invoking
/// process, or `$TMUX_PANE` when set.
#[derive(Debug, Args)]
pub struct AskerArgs {
    /// As this PID [default: the invoking process].
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "PID",
        conflicts_with = "session"
    )]
    pub pid: Option<i64>,
    /// As this session/pane [default: $TMUX_PANE].
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

impl AskerArgs {
    fn asker(self) -> Result<Asker, String> {
        Ok(match (self.pid.map(parse_pid).transpose()?, self.session) {
            (Some(p), _) => Asker::Pid(p),
            (None, Some(s)) => Asker::Session(s),
            (None, None) => Asker::Either {
                pid: invoking_pid(),
                session: default_session(),
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Worker directory.
    #[arg(value_name = "WORKER")]
    pub worker: PathBuf,
    #[command(flatten)]
    pub asker: AskerArgs,
    /// Remove it whoever holds it (a corrupt file is moved aside, not deleted).
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Worker directories.
    #[arg(required = true, value_name = "WORKER")]
    pub workers: Vec<PathBuf>,
    #[command(flatten)]
    pub asker: AskerArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Worker directories.
    #[arg(required = true, value_name = "WORKER")]
    pub workers: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker directory.
    #[arg(value_name = "WORKER")]
    pub worker: PathBuf,
    /// Session/pane to record [default: $TMUX_PANE].
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// One clear line on stderr.
fn error_line(msg: impl std::fmt::Display) {
    eprintln!("agentlock: {msg}");
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

fn default_session() -> Option<String> {
    std::env::var("TMUX_PANE").ok().filter(|s| !s.is_empty())
}

fn invoking_pid() -> i32 {
    nix::unistd::getppid().as_raw()
}

struct Ctx {
    quiet: bool,
    style: Style,
    probes: lock::LiveProbes,
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
        probes: lock::LiveProbes::new(TmuxQuery {
            sockets: cli.tmux_socket,
            ..TmuxQuery::default()
        }),
    };
    match cli.command {
        Command::Claim(a) => claim(&ctx, a),
        Command::Release(a) => release(&ctx, a),
        Command::Check(a) => check(&ctx, a),
        Command::Status(a) => status(&ctx, a),
        Command::Run(a) => run(&ctx, a),
        Command::List(a) => list(&ctx, a),
        Command::Doctor(a) => doctor(&ctx, a),
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
            let mut shown = false;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                eprint!(
                    "\rscanning: {} dirs, {} locks",
                    progress.dirs.load(Ordering::Relaxed),
                    progress.locks.load(Ordering::Relaxed)
                );
                shown = true;
            }
            if shown {
                eprint!("\r\x1b[K");
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    })
}

/// Scans and judges a tree. tmux is asked once, in parallel with the walk.
fn examine_tree(ctx: &Ctx, a: &TreeArgs) -> Result<Report, agentlock::Error> {
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
        s.spawn(|| ctx.probes.tmux.snapshot());
        with_progress(show, &progress, || scan::scan(&root, &opts, &progress))
    })?;
    let probes = ctx.probes.probes();
    Ok(doctor::examine(
        &scanned,
        &probes,
        ctx.probes.tmux.snapshot(),
    ))
}

fn list(ctx: &Ctx, a: TreeArgs) -> i32 {
    let report = match examine_tree(ctx, &a) {
        Ok(r) => r,
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let scan_errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::ScanError)
        .collect();
    if a.json {
        println!(
            "{}",
            output::report_json(&report, ctx.probes.tmux.snapshot())
        );
    } else {
        if !ctx.quiet {
            print!("{}", output::list_table(&report, ctx.style));
        }
        for f in &scan_errors {
            error_line(&f.message);
        }
    }
    if scan_errors.is_empty() {
        exit_codes::SUCCESS
    } else {
        exit_codes::ERROR
    }
}

fn doctor(ctx: &Ctx, a: DoctorArgs) -> i32 {
    let mut report = match examine_tree(ctx, &a.tree) {
        Ok(r) => r,
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let errors = if a.fix {
        doctor::fix(&mut report, &ctx.probes.probes())
    } else {
        Vec::new()
    };
    if a.tree.json {
        println!(
            "{}",
            output::report_json(&report, ctx.probes.tmux.snapshot())
        );
    } else if !ctx.quiet || !report.findings.is_empty() {
        println!("{}", output::doctor_text(&report, a.fix));
    }
    for e in &errors {
        error_line(e);
    }
    if !errors.is_empty() {
        exit_codes::ERROR
    } else if !report.findings.is_empty() {
        exit_codes::NO
    } else {
        exit_codes::SUCCESS
    }
}

fn claim(ctx: &Ctx, a: ClaimArgs) -> i32 {
    let pid = match a.holder.pid.map(parse_pid).transpose() {
        Ok(p) => p.unwrap_or_else(invoking_pid),
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let me = Claimant {
        pid,
        session: a.holder.session.or_else(default_session),
    };
    let probes = ctx.probes.probes();
    if a.first_free {
        return first_free(ctx, &a.workers, &me, a.json);
    }
    if a.workers.len() != 1 {
        error_line("claim takes one WORKER (use --first-free to pick among several)");
        return exit_codes::ERROR;
    }
    let opts = ClaimOptions {
        force: a.force,
        signal_other: a.signal_other,
    };
    match lock::claim(&a.workers[0], &me, opts, &probes) {
        Err(e) => {
            error_line(e);
            exit_codes::ERROR
        }
        Ok(ClaimOutcome::Refused(ins)) => {
            if a.json {
                println!(
                    "{}",
                    output::workers_json(&[LockEntry::of(&ins).with_action("refused")])
                );
            }
            eprintln!("{}", output::refusal(&ins, "claim"));
            exit_codes::NO
        }
        Ok(ClaimOutcome::Done(c)) => {
            // The --signal-other outcome is always printed: it says what happened to another process.
            if let Some(s) = &c.signal {
                eprintln!("agentlock: {s}");
            }
            if a.json {
                let mut e = LockEntry::of(&c.after).with_action(c.action.as_str());
                e.moved_aside = c.moved_aside.as_deref();
                e.signal = c.signal.as_deref();
                println!("{}", output::workers_json(&[e]));
            } else if !ctx.quiet {
                if let Some(to) = &c.moved_aside {
                    println!(
                        "moved corrupt lock aside to {} ({})",
                        to.display(),
                        c.before.reason
                    );
                }
                let before = match c.before.state {
                    State::Free => String::new(),
                    _ => format!(", was {}: {}", c.before.state, c.before.reason),
                };
                println!(
                    "{} {} ({}{before})",
                    c.action.as_str(),
                    c.after.worker_dir.display(),
                    output::holder(&c.after).unwrap_or_default()
                );
            }
            exit_codes::SUCCESS
        }
    }
}

fn first_free(ctx: &Ctx, workers: &[PathBuf], me: &Claimant, json: bool) -> i32 {
    let probes = ctx.probes.probes();
    let ff = match lock::claim_first_free(workers, me, &probes) {
        Ok(ff) => ff,
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let mut entries: Vec<LockEntry> = Vec::new();
    let mut errors = 0;
    for (path, r) in &ff.tried {
        match r {
            Ok(ins) => entries.push(LockEntry::of(ins).with_action("refused")),
            Err(e) => {
                errors += 1;
                error_line(format!("skipped {}: {e}", path.display()));
            }
        }
    }
    if let Some((_, c)) = &ff.claimed {
        entries.push(LockEntry::of(&c.after).with_action(c.action.as_str()));
    }
    if json {
        println!("{}", output::workers_json(&entries));
    }
    match &ff.claimed {
        Some((_, c)) => {
            if !json {
                // The claimed worker alone on stdout: slot=$(agentlock claim --first-free a b c)
                println!("{}", c.after.worker_dir.display());
            }
            exit_codes::SUCCESS
        }
        None => {
            for (_, r) in &ff.tried {
                if let Ok(ins) = r {
                    eprintln!(
                        "agentlock: {} is {} ({})",
                        ins.worker_dir.display(),
                        ins.state,
                        ins.reason
                    );
                }
            }
            if errors == workers.len() {
                exit_codes::ERROR
            } else {
                error_line("no free worker");
                exit_codes::NO
            }
        }
    }
}

fn release(ctx: &Ctx, a: ReleaseArgs) -> i32 {
    let who = match a.asker.asker() {
        Ok(who) => who,
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let probes = ctx.probes.probes();
    match lock::release(&a.worker, &who, a.force, &probes) {
        Err(e) => {
            error_line(e);
            exit_codes::ERROR
        }
        Ok(ReleaseOutcome::Refused(ins)) => {
            if a.json {
                println!(
                    "{}",
                    output::workers_json(&[LockEntry::of(&ins).with_action("refused")])
                );
            }
            eprintln!("{}", output::refusal(&ins, "release"));
            exit_codes::NO
        }
        Ok(ReleaseOutcome::Done {
            action,
            before,
            moved_to,
        }) => {
            if a.json {
                let mut e = LockEntry::of(&before).with_action(action.as_str());
                e.moved_aside = moved_to.as_deref();
                println!("{}", output::workers_json(&[e]));
            } else if !ctx.quiet {
                match &moved_to {
                    Some(to) => println!("moved corrupt lock aside to {}", to.display()),
                    None => println!("{} {}", action.as_str(), before.worker_dir.display()),
                }
            }
            exit_codes::SUCCESS
        }
    }
}

/// Inspects each worker; errors are printed and counted.
fn inspect_all(ctx: &Ctx, workers: &[PathBuf]) -> (Vec<Inspection>, usize) {
    let probes = ctx.probes.probes();
    let mut out = Vec::new();
    let mut errors = 0;
    for w in workers {
        match lock::inspect(w, &probes) {
            Ok(ins) => out.push(ins),
            Err(e) => {
                errors += 1;
                error_line(e);
            }
        }
    }
    (out, errors)
}

fn status(ctx: &Ctx, a: StatusArgs) -> i32 {
    let (found, errors) = inspect_all(ctx, &a.workers);
    if a.json {
        let entries: Vec<_> = found.iter().map(LockEntry::of).collect();
        println!("{}", output::workers_json(&entries));
    } else if !ctx.quiet {
        for ins in &found {
            println!("{}", output::status_lines(ins, ctx.style));
        }
    }
    if errors > 0 {
        exit_codes::ERROR
    } else {
        exit_codes::SUCCESS
    }
}

fn check(ctx: &Ctx, a: CheckArgs) -> i32 {
    let asker = match a.asker.asker() {
        Ok(asker) => asker,
        Err(e) => {
            error_line(e);
            return exit_codes::ERROR;
        }
    };
    let (found, errors) = inspect_all(ctx, &a.workers);
    let mut held_by_other = 0;
    for ins in &found {
        let mine = ins.record.as_ref().is_some_and(|r| asker.holds(r));
        let ok = mine || ins.state.claimable();
        if !ok {
            held_by_other += 1;
        }
        if !a.json && !ctx.quiet {
            let verdict = if mine {
                "held by you".to_string()
            } else {
                ctx.style.state(ins.state)
            };
            println!("{}: {verdict} ({})", ins.worker_dir.display(), ins.reason);
        }
    }
    if a.json {
        let entries: Vec<_> = found.iter().map(LockEntry::of).collect();
        println!("{}", output::workers_json(&entries));
    }
    if errors > 0 {
        exit_codes::ERROR
    } else if held_by_other > 0 {
        exit_codes::NO
    } else {
        exit_codes::SUCCESS
    }
}

fn run(ctx: &Ctx, a: RunArgs) -> i32 {
    let probes = ctx.probes.probes();
    let session = a.session.or_else(default_session);
    match agentlock::run::run(&a.worker, session, &a.command, &probes) {
        Err(e) => {
            error_line(e);
            exit_codes::ERROR
        }
        Ok(RunOutcome::Refused(ins)) => {
            eprintln!("{}", output::refusal(&ins, "claim"));
            exit_codes::RUN_REFUSED
        }
        Ok(RunOutcome::CannotRun { code, why }) => {
            error_line(why);
            code
        }
        Ok(RunOutcome::Exited { code, released }) => {
            if let Err(why) = released {
                error_line(format!("{}: {why}", a.worker.display()));
            }
            code
        }
    }
}
