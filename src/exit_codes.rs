//! Exit codes of the `agentlock` binary. Stable: scripts rely on them.

/// How a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: claimed, released, free or held by the asker, healthy.
    Success,
    /// 1: a clear "no": held by another, `check` found it held, `doctor` left
    /// findings.
    No,
    /// 2: bad usage, an I/O or permission failure, output that could not be
    /// written.
    Error,
    /// 75 (EX_TEMPFAIL): `run`'s claim was refused; the command was not started.
    RunRefused,
    /// 76: `run` on the fleet store lost the worker while the command ran
    /// (its lease expired, or another holder took it over).
    Lost,
    /// 126: `run`'s command exists but cannot be executed.
    CannotExecute,
    /// 127: `run`'s command was not found.
    NotFound,
    /// 128 + N: a signal (number N) ended `run` before its command started.
    Signal(i32),
    /// `run`: the command's own exit status (128 + N when a signal killed it).
    Command(i32),
    /// `--conflict-exit-code N`: the worker is held by someone else.
    Conflict(u8),
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::No => 1,
            ExitCode::Error => 2,
            ExitCode::RunRefused => 75,
            ExitCode::Lost => 76,
            ExitCode::CannotExecute => 126,
            ExitCode::NotFound => 127,
            ExitCode::Signal(n) => u8::try_from(128 + n).unwrap_or(2),
            ExitCode::Command(c) => u8::try_from(c).unwrap_or(1),
            ExitCode::Conflict(n) => n,
        }
    }

    /// The outcome of a command over several workers: an error anywhere wins,
    /// then a "no", then success.
    pub fn merge(self, other: ExitCode) -> ExitCode {
        let rank = |c: ExitCode| match c {
            ExitCode::Success => 0,
            ExitCode::No => 1,
            _ => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// A refusal (exit 1, `run`'s 75) as `--conflict-exit-code` asks.
    pub fn on_conflict(self, code: Option<u8>) -> ExitCode {
        match (self, code) {
            (ExitCode::No | ExitCode::RunRefused, Some(n)) => ExitCode::Conflict(n),
            (c, _) => c,
        }
    }

    /// [`ExitCode::merge`] over many.
    pub fn merge_all(codes: impl IntoIterator<Item = ExitCode>) -> ExitCode {
        codes.into_iter().fold(ExitCode::Success, ExitCode::merge)
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode::{self, *};

    #[test]
    fn codes_are_the_documented_numbers() {
        let table = [
            (Success, 0),
            (No, 1),
            (Error, 2),
            (RunRefused, 75),
            (Lost, 76),
            (CannotExecute, 126),
            (NotFound, 127),
            (Signal(2), 130),
            (Signal(15), 143),
            (Command(0), 0),
            (Command(3), 3),
            (Command(137), 137),
        ];
        for (c, n) in table {
            assert_eq!(c.code(), n, "{c:?}");
        }
    }

    #[test]
    fn merge_error_beats_no_beats_success() {
        assert_eq!(merge_all([]), Success);
        assert_eq!(merge_all([Success, Success]), Success);
        assert_eq!(merge_all([Success, No, Success]), No);
        assert_eq!(merge_all([No, Error, Success]), Error);
        assert_eq!(merge_all([Error, No]), Error);
        assert_eq!(Success.merge(No), No);
        assert_eq!(No.merge(Success), No);
    }

    fn merge_all(c: impl IntoIterator<Item = ExitCode>) -> ExitCode {
        ExitCode::merge_all(c)
    }
}
