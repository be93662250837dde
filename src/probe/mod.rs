//! Probes of the outside world: processes, tmux servers, this host.
//!
//! The decision logic ([`crate::verdict`]) only sees these traits, so it is
//! unit-tested with `mockall`; the real implementations are proven against
//! real processes and real tmux servers in `tests/`.

pub mod process;
pub mod tmux;

pub use process::{LiveProcesses, ProcessProbe};
pub use tmux::{SessionProbe, TmuxQuery};

/// Whether a PID names a running process, as `kill(pid, 0)` and `/proc` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existence {
    /// `kill(pid, 0)` succeeded or failed with `EPERM`, and it is not a zombie.
    Alive,
    /// `ESRCH`: no such process.
    Gone,
    /// The process exists but is a zombie: it has exited.
    Zombie,
    /// The probe itself failed (any other error).
    Unknown(String),
}

/// What a tmux query says of one recorded session, pane or session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// Some server of the user has it.
    Alive,
    /// Every server answered (or provably none runs) and none has it.
    Gone,
    /// Not found, and at least one server could not be asked.
    Unknown(String),
}

/// Facts about the machine running the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `gethostname()`.
    pub hostname: String,
    /// Real user id.
    pub uid: u32,
    /// `/proc/sys/kernel/random/boot_id`, when readable.
    pub boot_id: Option<String>,
}

impl HostInfo {
    /// Reads this host's facts.
    pub fn current() -> HostInfo {
        HostInfo {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            uid: nix::unistd::getuid().as_raw(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        }
    }

    /// Whether a lock written on `recorded` was written here. A lock without a
    /// hostname is taken as local (old Go versions may omit it).
    pub fn is_local(&self, recorded: Option<&str>) -> bool {
        match recorded {
            None => true,
            Some(h) => h == self.hostname,
        }
    }
}
