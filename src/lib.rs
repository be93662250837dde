//! agentlock: stops two coding agents from claiming the same worker identity.
//!
//! A worker is held through `<worker>/.runtime/agent.lock`, a small JSON file
//! compatible with the Go tool `gt` (gastown). A lock is `stale` only when both
//! its process and its tmux session are gone; when the tool cannot tell, the
//! answer is `unverified` and nothing is deleted.
//!
//! Modules, by what they hold:
//! - [`record`]: the lock file format.
//! - [`probe`]: processes, tmux servers, this host.
//! - [`verdict`]: the seven states and their reasons.
//! - [`trust`]: whom a lock speaks for, and outside strings made safe to print.
//! - [`holder`]: holder identity, the one "is this lock mine?" predicate.
//! - [`lock`]: guarded, atomic claim / release / inspect on one worker.
//! - [`run`]: holding a worker for a command's lifetime.
//! - [`forward`]: which signals `run` passes on to its command.
//! - [`wait`]: waiting for a worker, woken by what frees it, in arrival order.
//! - [`scan`]: finding every lock under a root, in parallel.
//! - [`doctor`]: findings of a scanned tree, and the guarded `--fix` repairs.
//! - [`json`]: the `--json` documents, as types (one contract, `"schema": 1`).
//! - [`paths`]: how paths are written in JSON (lossily, never a panic).
//!
//! The binary (`src/main.rs`) adds what only a command line needs: `cli`
//! (the clap structs), `commands` (one handler per subcommand), `output`
//! (human lines, and the [`json`] documents printed), `out` (writing them
//! without ever panicking), `exit_codes` and `logging` (the `tracing`
//! subscriber the library's diagnostics go to, filtered by `AGENTLOCK_LOG`).

#![warn(missing_docs)]

pub mod doctor;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod forward;
mod handle;
mod held;
pub mod holder;
pub mod json;
pub mod lock;
pub mod paths;
pub mod probe;
pub mod record;
pub mod run;
pub mod scan;
pub mod trust;
pub mod verdict;
pub mod wait;

pub use error::{Error, Result};
pub use handle::Agentlock;
pub use held::ClaimGuard;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The examples of `docs/library.md` (using agentlock as a library), run as
/// doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryDocDoctests;
