//! The `--json` documents printed: the library's [`agentlock::json`] types,
//! plus the stderr line that goes with an error. Nothing here decides
//! anything.

use agentlock::doctor::Report;
pub use agentlock::json::{ErrorDoc, ErrorJson, TreeDoc, WorkerEntry, WorkersDoc, to_string};
use agentlock::probe::tmux::TmuxSnapshot;
use std::path::Path;

/// An error as printed: its JSON object and its line for stderr (escaped,
/// hints shell-quoted).
#[derive(Debug, Clone)]
pub struct Printed {
    /// The JSON object.
    pub json: ErrorJson,
    /// The stderr line.
    pub human: String,
}

impl Printed {
    /// A library error.
    pub fn of(e: &agentlock::Error) -> Printed {
        Printed {
            json: ErrorJson::of(e),
            human: super::text::error_text(e),
        }
    }

    /// An error that is not a library error (usage, output).
    pub fn new(kind: &str, message: impl Into<String>) -> Printed {
        let json = ErrorJson::new(kind, message);
        Printed {
            human: super::text::esc(&json.message),
            json,
        }
    }
}

/// `{"schema", "workers", "waited", "error"}`.
pub fn workers_json(
    entries: Vec<WorkerEntry>,
    error: Option<&ErrorJson>,
    waited: Option<std::time::Duration>,
) -> String {
    to_string(
        &WorkersDoc::new(entries)
            .waited(waited)
            .error(error.cloned()),
    )
}

/// `{"schema", "root", "error"}` (without `root` for a usage error): a
/// command that failed before it had any result.
pub fn error_json(root: Option<&Path>, error: &ErrorJson) -> String {
    to_string(&ErrorDoc::new(root, error.clone()))
}

/// The `"error"` of `doctor --fix --json` when fixes failed: the first
/// failure, and how many there were.
pub fn fix_errors_json(errors: &[agentlock::Error]) -> Option<ErrorJson> {
    let first = errors.first()?;
    let mut e = ErrorJson::of(first);
    if errors.len() > 1 {
        e.message = format!("{} (and {} more fixes failed)", e.message, errors.len() - 1);
    }
    Some(e)
}

/// The one object `list --json` and `doctor --json` print; `error` beside
/// the results when something failed (a `--fix` that could not be applied).
pub fn report_json(
    report: &Report,
    tmux: &TmuxSnapshot,
    locks: Vec<WorkerEntry>,
    error: Option<ErrorJson>,
) -> String {
    let mut doc = TreeDoc::of(report, tmux, locks);
    doc.error = error;
    to_string(&doc)
}
