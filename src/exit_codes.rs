//! Exit codes of the `agentlock` binary (SPEC §5). Stable: scripts rely on them.

/// Success: claimed, released, free or held by the asker, healthy.
pub const SUCCESS: i32 = 0;
/// A clear "no": held by another, `check` found it held, `doctor` left findings.
pub const NO: i32 = 1;
/// Error: bad usage, I/O or permission failure.
pub const ERROR: i32 = 2;
/// `run`: the claim was refused, the command was not started (EX_TEMPFAIL).
pub const RUN_REFUSED: i32 = 75;
/// `run`: the command exists but cannot be executed.
pub const RUN_CANNOT_EXECUTE: i32 = 126;
/// `run`: the command was not found.
pub const RUN_NOT_FOUND: i32 = 127;
