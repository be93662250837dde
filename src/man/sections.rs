//! The man pages' own sections: what clap does not know. A page is named
//! by its command (`claim`), agentlock(1) by `""`; each table row says
//! which pages it belongs on.

use super::{file_item, item};
use clap_mangen::roff::{Roff, bold};

/// The pages a row is on.
#[derive(Clone, Copy)]
enum On {
    /// Every page.
    All,
    /// agentlock(1) and these commands' pages.
    Only(&'static [&'static str]),
    /// No page (in this build).
    Nowhere,
}

impl On {
    fn has(self, page: &str) -> bool {
        match self {
            On::All => true,
            On::Only(pages) => page.is_empty() || pages.contains(&page),
            On::Nowhere => false,
        }
    }
}

/// The commands that judge or change workers (and so read locks and ask
/// tmux, and may use the fleet store).
const WORKERS: On = On::Only(&[
    "claim", "release", "check", "status", "run", "list", "doctor", "keeper",
]);
/// The fleet store's settings: hidden, like its options, in a build without
/// the etcd feature.
const FLEET: On = if cfg!(feature = "etcd") {
    WORKERS
} else {
    On::Nowhere
};
/// The commands that may wait for a worker.
const CLAIMS: On = On::Only(&["claim", "run"]);
/// Who the holder or asker is by default.
const HOLDERS: On = On::Only(&["claim", "release", "check", "run"]);

/// Said under OPTIONS on a command's page.
pub const GLOBAL_OPTIONS: &str = if cfg!(feature = "etcd") {
    "The global options (--tmux-socket, --quiet, --color, --utc) and the fleet store options \
     (--store, --fleet-root, --store-timeout, --lease-ttl) are accepted here too; \
     see agentlock(1)."
} else {
    "The global options (--tmux-socket, --quiet, --color, --utc) are accepted here too; \
     see agentlock(1)."
};

/// More DESCRIPTION than the one-line summary, for agentlock(1).
pub fn description(page: &str) -> &'static str {
    match page {
        "" => {
            "agentlock keeps one lock per worker directory, WORKER/.runtime/agent.lock, \
             naming the process (and tmux session or pane) that holds it; the Go tool \
             reads and writes the same file. A lock whose holder is gone is stale and \
             can be claimed; one held by a live process or session is refused, naming \
             the holder.\n\n\
             Each command has its own page: agentlock-claim(1), agentlock-run(1), and so on."
        }
        _ => "",
    }
}

/// The environment: (variable, meaning, pages).
const ENV: &[(&str, &str, On)] = &[
    (
        "AGENTLOCK_STORE",
        "The fleet store, as --store gives it: etcd://HOST:PORT[,HOST:PORT...][/PREFIX].",
        FLEET,
    ),
    (
        "AGENTLOCK_FLEET_ROOT",
        "The fleet root, as --fleet-root gives it.",
        FLEET,
    ),
    (
        "AGENTLOCK_STORE_TIMEOUT",
        "How long a fleet store call may take, as --store-timeout gives it.",
        FLEET,
    ),
    (
        "AGENTLOCK_LEASE_TTL",
        "The TTL of this host's lease, as --lease-ttl gives it.",
        FLEET,
    ),
    (
        "AGENTLOCK_KEEPER_PERIOD",
        "How often the keeper sweeps, as --period gives it.",
        On::Only(&["keeper"]),
    ),
    (
        "AGENTLOCK_TMUX_SERVERS",
        "dir: ask only the tmux servers of the socket directory, \
      $TMUX and the ones recorded in locks, not every server of the caller found by its \
      process.",
        WORKERS,
    ),
    (
        "AGENTLOCK_WORKER",
        "Set by run for its command: the worker directory.",
        On::Only(&["run"]),
    ),
    (
        "AGENTLOCK_FENCE",
        "Set by run for its command, with a fleet store: the fence, a \
      number that grows with every new holder.",
        On::Only(&["run"]),
    ),
    (
        "AGENTLOCK_LOG",
        "Which diagnostics go to stderr: a log filter such as debug or \
      agentlock=debug. By default only warnings (the keeper: also info).",
        On::All,
    ),
    (
        "TMUX",
        "The caller's tmux client: its server socket is recorded with the default \
      session.",
        HOLDERS,
    ),
    (
        "TMUX_PANE",
        "The default session (a %N pane id) to record or act as, when \
      --session is not given.",
        HOLDERS,
    ),
    (
        "TMUX_TMPDIR",
        "Where tmux keeps its sockets: $TMUX_TMPDIR/tmux-UID (default \
      /tmp/tmux-UID).",
        WORKERS,
    ),
    (
        "XDG_RUNTIME_DIR",
        "The keeper's state directory is $XDG_RUNTIME_DIR/agentlock \
      (default /tmp/agentlock-UID).",
        On::Only(&["claim", "run", "keeper"]),
    ),
    (
        "TZ",
        "The time zone human output shows times in (as recorded in JSON; --utc for UTC).",
        On::All,
    ),
    (
        "NO_COLOR",
        "Set and not empty: no colour, unless --color always.",
        On::All,
    ),
    (
        "CLICOLOR_FORCE",
        "Set and not empty: colour even when not on a terminal, unless \
      --color never or NO_COLOR.",
        On::All,
    ),
    (
        "CLICOLOR",
        "0: no colour on a terminal either, unless --color always.",
        On::All,
    ),
];

/// ENVIRONMENT.
pub fn environment(roff: &mut Roff, page: &str) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, text, on) in ENV {
        if on.has(page) {
            item(roff, bold(*var), text);
        }
    }
}

/// The lock files and the keeper's.
const LOCK_FILES: On = On::Only(&[
    "claim", "release", "check", "status", "run", "list", "doctor",
]);
const FILES: &[(&str, &str, On)] = &[
    (
        "WORKER/.runtime/agent.lock",
        "The lock: a JSON record of the holder (pid, \
      acquired_at, session_id, hostname, and more), the Go tool's format.",
        LOCK_FILES,
    ),
    (
        "WORKER/.runtime/agent.lock.flock",
        "The guard every change holds (an exclusive \
      flock), shared with the Go tool; never deleted.",
        On::Only(&["claim", "release", "run", "doctor"]),
    ),
    (
        "WORKER/.runtime/agent.lock.tmp.PID.RANDOM",
        "A lock being written, renamed over \
      agent.lock when complete (agent.lock.tmp is the Go tool's). One left by a dead \
      writer is removed by doctor --fix.",
        On::Only(&["claim", "release", "run", "doctor"]),
    ),
    (
        "WORKER/.runtime/agent.lock.wait.NUMBER",
        "A waiter's ticket (--wait), held with \
      flock while it waits; waiters are served in ticket order.",
        CLAIMS,
    ),
    (
        "WORKER/.runtime/agent.lock.corrupt-TIMESTAMP",
        "A corrupt lock moved aside (UTC \
      time) by claim, release --force or doctor --fix; never deleted.",
        On::Only(&["claim", "release", "doctor"]),
    ),
    (
        "$TMUX_TMPDIR/tmux-UID/",
        "The tmux sockets asked about sessions and panes \
      (TMUX_TMPDIR defaults to /tmp).",
        WORKERS,
    ),
    (
        "$XDG_RUNTIME_DIR/agentlock/",
        "The keeper's state (or /tmp/agentlock-UID/): \
      keeper-STORE.lock (held while it runs), keeper-STORE.lease (its lease, renewed) \
      and keeper-STORE.log.",
        On::Only(&["claim", "run", "keeper"]),
    ),
    (
        "~/.local/share/bash-completion/completions/agentlock",
        "Where bash-completion \
      finds the bash script.",
        On::Only(&["completions"]),
    ),
    (
        "~/.zfunc/_agentlock",
        "A zsh script, in a directory on fpath.",
        On::Only(&["completions"]),
    ),
    (
        "~/.config/fish/completions/agentlock.fish",
        "Where fish finds the fish script.",
        On::Only(&["completions"]),
    ),
    (
        "~/.local/share/man/man1/",
        "Where man --dir installs the pages for man(1) \
      to find (with ~/.local/bin on PATH, else add ~/.local/share/man to MANPATH).",
        On::Only(&["man"]),
    ),
];

/// FILES.
pub fn files(roff: &mut Roff, page: &str) {
    roff.control("SH", ["FILES"]);
    for (path, text, on) in FILES {
        if on.has(page) {
            file_item(roff, path, text);
        }
    }
}

/// The commands whose pages a command's SEE ALSO names (besides
/// agentlock(1)).
pub fn related(page: &str) -> &'static [&'static str] {
    match page {
        "claim" => &["release", "check", "status", "run"],
        "release" => &["claim", "status"],
        "check" => &["status", "claim"],
        "status" => &["check", "list"],
        "run" => &["claim", "release", "keeper"],
        "list" => &["status", "doctor"],
        "doctor" => &["list", "status"],
        "keeper" => &["claim", "run"],
        "completions" => &["man"],
        "man" => &["completions"],
        _ => &[],
    }
}
