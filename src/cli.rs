//! Command-line arguments: the clap structs only. How they are shown is
//! set in `parse.rs`; what they mean is decided in `commands` (and, below
//! it, the library).

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use std::ffi::OsString;
use std::path::PathBuf;

/// Stops two coding agents from claiming the same worker identity.
#[derive(Debug, Parser)]
#[command(
    name = "agentlock",
    version,
    about,
    max_term_width = 100,
    after_help = r#"Examples:
  agentlock claim workers/max                     # hold it for the invoking shell
  agentlock run workers/max -- claude             # hold it while claude runs
  agentlock list ~/town                           # every lock under ~/town

Each command has its own help (agentlock COMMAND --help) and man page (agentlock man --dir DIR)."#
)]
pub struct Cli {
    /// Ask only this tmux server (a socket name under $TMUX_TMPDIR/tmux-UID, or a path). Repeatable.
    #[arg(
        long = "tmux-socket",
        value_name = "NAME_OR_PATH",
        global = true,
        help_heading = "Global options"
    )]
    pub tmux_socket: Vec<String>,
    /// Print only errors and refusals.
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// When to colour output.
    #[arg(
        long,
        value_enum,
        default_value_t = ColorWhen::Auto,
        global = true,
        help_heading = "Global options"
    )]
    pub color: ColorWhen,
    /// Show times in UTC instead of local time (JSON keeps them as recorded).
    #[arg(long, global = true, help_heading = "Global options")]
    pub utc: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The fleet store; without `--store`, the lock files are the store.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Keep identities in etcd: etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (needs the `etcd` build
    /// feature).
    #[arg(
        long,
        env = "AGENTLOCK_STORE",
        value_name = "ADDR",
        global = true,
        hide = !cfg!(feature = "etcd"),
        help_heading = "Fleet store"
    )]
    pub store: Option<String>,
    /// Workers are named by their path relative to this directory (needed with --store).
    #[arg(
        long,
        env = "AGENTLOCK_FLEET_ROOT",
        value_name = "DIR",
        value_hint = ValueHint::DirPath,
        global = true,
        hide = !cfg!(feature = "etcd"),
        help_heading = "Fleet store"
    )]
    pub fleet_root: Option<PathBuf>,
    /// How long a fleet store call may take (500ms, 5s, or seconds) [default: 5s, at most the
    /// lease TTL].
    #[arg(
        long,
        env = "AGENTLOCK_STORE_TIMEOUT",
        value_name = "DURATION",
        value_parser = agentlock::duration::parse,
        global = true,
        hide = !cfg!(feature = "etcd"),
        help_heading = "Fleet store"
    )]
    pub store_timeout: Option<std::time::Duration>,
    /// TTL of this host's lease (whole seconds, 2s to 1d): its workers become free that long after
    /// the host dies [default: 15s].
    #[arg(
        long,
        env = "AGENTLOCK_LEASE_TTL",
        value_name = "DURATION",
        value_parser = agentlock::duration::parse,
        global = true,
        hide = !cfg!(feature = "etcd"),
        help_heading = "Fleet store"
    )]
    pub lease_ttl: Option<std::time::Duration>,
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
    #[command(after_help = r#"Examples:
  agentlock claim workers/max                     # for the invoking shell (and its tmux pane)
  agentlock claim workers/max --pid "$AGENT_PID" --session agent-max
  slot=$(agentlock claim --first-free pool/*)     # the first claimable worker, printed alone
  agentlock claim workers/max --wait=30s          # wait up to 30 s for it; exit 1 if still held
  agentlock claim --first-free pool/* --wait      # wait for whichever frees first
  agentlock claim workers/max --force --signal-other --json"#)]
    Claim(ClaimArgs),
    /// Release a worker held by the given (or invoking) PID or session.
    #[command(after_help = r#"Examples:
  agentlock release workers/max                   # as the invoking process (or $TMUX_PANE)
  agentlock release workers/max --session agent-max
  agentlock release workers/max --force           # whoever holds it; a corrupt file is moved aside
  agentlock release --all --session agent-max ~/town   # every worker agent-max holds under ~/town
  # in ~/.tmux.conf: when a session closes, release what it held on this server
  # (a session of the same name on another server is not the one that closed)
  set-hook -g session-closed {
    run 'agentlock --tmux-socket #{q:socket_path} release --all \
      --session #{q:hook_session_name} ~/town'
  }"#)]
    Release(ReleaseArgs),
    /// Exit 0 if the workers are free or held by the asker, 1 if held by another. Read-only.
    #[command(after_help = r#"Examples:
  agentlock check workers/max && echo "free or mine"
  agentlock check workers/* --pid "$AGENT_PID" --json"#)]
    Check(CheckArgs),
    /// Show the state of workers. Read-only.
    #[command(after_help = r#"Examples:
  agentlock status workers/max
  agentlock status workers/* --json | jq -r '.workers[] | "\(.worker_dir) \(.state)"'"#)]
    Status(StatusArgs),
    /// Hold a worker while a command runs; exit with the command's status.
    #[command(
        after_help = r#"The command finds the worker in $AGENTLOCK_WORKER and, with --store, its fence in
$AGENTLOCK_FENCE.

Examples:
  agentlock run workers/max -- claude             # held while claude runs; exit 75 if held
  agentlock run workers/max --session agent-max -- codex --full-auto
  agentlock run workers/max --wait=5m --conflict-exit-code 3 -- claude
  agentlock --store etcd://10.0.0.5:2379 --fleet-root ~/town run workers/max -- claude"#
    )]
    Run(RunArgs),
    /// List every lock under ROOT, one row per worker. Read-only.
    #[command(after_help = r#"Examples:
  agentlock list ~/town
  agentlock list ~/town --max-depth 3 --skip target --json"#)]
    List(TreeArgs),
    /// Diagnose every lock under ROOT; with --fix, repair what is provably dead.
    #[command(after_help = r#"Examples:
  agentlock doctor ~/town                         # exit 1 when anything is found
  agentlock doctor ~/town --fix                   # remove only what is provably dead
  agentlock doctor ~/town --json > audit.json     # for cron / CI"#)]
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = r#"Examples:
  mkdir -p ~/.local/share/bash-completion/completions
  agentlock completions bash > ~/.local/share/bash-completion/completions/agentlock
  mkdir -p ~/.zfunc               # then add fpath+=(~/.zfunc) to ~/.zshrc, before compinit
  agentlock completions zsh > ~/.zfunc/_agentlock
  mkdir -p ~/.config/fish/completions
  agentlock completions fish > ~/.config/fish/completions/agentlock.fish"#)]
    Completions(CompletionsArgs),
    /// Keep this host's lease on the fleet store alive and sweep its stale records.
    #[command(after_help = r#"Examples:
  agentlock keeper --store etcd://10.0.0.1:2379 --foreground   # under systemd
  agentlock keeper --store etcd://10.0.0.1:2379                # start one in the background
  AGENTLOCK_LOG=debug agentlock keeper --foreground            # log every renewal and sweep too

It logs on stderr at the level AGENTLOCK_LOG sets (default: info; every other command: warn)."#)]
    Keeper(KeeperArgs),
    /// Print the man page (roff); with --dir, write every page to DIR.
    #[command(after_help = r#"Examples:
  agentlock man | man -l -                        # read agentlock(1) now
  agentlock man --dir ~/.local/share/man/man1     # install every page, then: man agentlock-claim"#)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct KeeperArgs {
    /// Run in the foreground until killed (for systemd); otherwise start one in the background
    /// unless one runs, and print its lease.
    #[arg(long)]
    pub foreground: bool,
    /// How often to sweep this host's stale records (500ms, 5s, or seconds).
    #[arg(
        long,
        env = "AGENTLOCK_KEEPER_PERIOD",
        value_name = "DURATION",
        value_parser = agentlock::duration::parse,
        default_value = "5s"
    )]
    pub period: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write agentlock.1 and one page per command (agentlock-claim.1, ...) to DIR, creating it;
    /// print one line per file written.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Root of the tree to scan [default: the current directory].
    #[arg(value_name = "ROOT", value_hint = ValueHint::DirPath)]
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
    #[arg(required = true, value_name = "WORKER", value_hint = ValueHint::DirPath)]
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
    /// Wait until the worker (with --first-free: any of them) can be claimed instead of refusing;
    /// at most DURATION (500ms, 30s, 5m, 1h, or seconds) when given. Woken by what frees it;
    /// waiters are served in arrival order.
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        value_parser = agentlock::duration::parse,
        conflicts_with = "force"
    )]
    pub wait: Option<Option<std::time::Duration>>,
    /// Exit with N instead of 1 when the worker is held by someone else (also after --wait
    /// timed out), like flock's -E.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub conflict_exit_code: Option<u8>,
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

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Worker directory (with --all: the root to release under).
    #[arg(value_name = "WORKER", value_hint = ValueHint::DirPath)]
    pub worker: PathBuf,
    #[command(flatten)]
    pub asker: AskerArgs,
    /// Release every worker under the given root that the asker holds (others' locks are never
    /// touched).
    #[arg(long, conflicts_with = "force")]
    pub all: bool,
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
    #[arg(required = true, value_name = "WORKER", value_hint = ValueHint::DirPath)]
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
    #[arg(required = true, value_name = "WORKER", value_hint = ValueHint::DirPath)]
    pub workers: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker directory.
    #[arg(value_name = "WORKER", value_hint = ValueHint::DirPath)]
    pub worker: PathBuf,
    /// Session/pane to record [default: none: the lock names the command and ends with it, even
    /// in a pane].
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// If the worker is lost while the command runs (its fleet lease expired, or another holder's
    /// lock replaced its own): term = SIGTERM it (SIGKILL 10 s later), warn = only say so. Either
    /// way run then exits 76
    #[arg(long, value_enum, default_value_t = OnLost::Term, value_name = "WHAT")]
    pub on_lost: OnLost,
    /// Wait until the worker can be claimed instead of refusing;
    /// at most DURATION (500ms, 30s, 5m, 1h, or seconds) when given. Woken by what frees it;
    /// waiters are served in arrival order.
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        value_parser = agentlock::duration::parse
    )]
    pub wait: Option<Option<std::time::Duration>>,
    /// Exit with N instead of 75 when the worker is held by someone else (also after --wait
    /// timed out), like flock's -E.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub conflict_exit_code: Option<u8>,

    /// The command and its arguments.
    #[arg(
        last = true,
        required = true,
        value_name = "COMMAND",
        value_hint = ValueHint::CommandWithArguments
    )]
    pub command: Vec<OsString>,
}

/// `run --on-lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnLost {
    // SIGTERM the command (no doc comment: clap would print a long help).
    Term,
    // Only warn.
    Warn,
}
