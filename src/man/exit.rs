//! A man page's EXIT STATUS: each command's codes (see `exit_codes.rs`),
//! and on agentlock(1) every command's.

use super::item;
use clap_mangen::roff::{Roff, bold, roman};

/// Bad usage, I/O: every command.
const ERROR: (&str, &str) = (
    "2",
    "An error: bad usage, an I/O or permission failure, output that could not be written.",
);
/// `--conflict-exit-code`.
const CONFLICT: (&str, &str) = (
    "N",
    "With --conflict-exit-code N: held by someone else (also after --wait timed out).",
);
/// A signal while waiting.
const SIGNALLED: (&str, &str) = (
    "128+N",
    "Signal N (SIGINT, SIGTERM, SIGHUP) ended the wait (--wait) or the claim; nothing is held.",
);

/// How `run` exits once its command ran.
const RUN_STATUS: &str = "Once its command ran, run exits with the command's own exit status \
     (128+N when signal N killed it), or 76 when the worker was lost meanwhile. Otherwise:";

/// The same, among every command's codes.
const RUN_STATUS_TOP: &str = "Once its command ran: the command's own exit status \
     (128+N when signal N killed it), or 76 when the worker was lost meanwhile.";

/// The exit codes of one page.
fn exit_codes(page: &str) -> Vec<(&'static str, &'static str)> {
    let run = [
        (
            "75",
            "The claim was refused (also after --wait timed out); the command was not started.",
        ),
        CONFLICT,
        (
            "76",
            "The worker was lost while the command ran (its fleet lease expired, or another holder's lock replaced its own).",
        ),
        ("126", "The command exists but cannot be executed."),
        ("127", "The command was not found."),
        (
            "128+N",
            "Signal N (SIGINT, SIGTERM, SIGHUP) ended run before its command started (while waiting, with --wait); nothing is held.",
        ),
        (
            "2",
            "An error before the command started (bad usage, an I/O or permission failure).",
        ),
    ];
    match page {
        "" => vec![
            (
                "0",
                "Success: claimed, released, free or held by the asker, healthy.",
            ),
            (
                "1",
                "A clear no: held by someone else (claim and release refused, check found it), or doctor left findings.",
            ),
            ERROR,
            (
                "75",
                "run: the claim was refused; the command was not started.",
            ),
            ("76", "run: the worker was lost while the command ran."),
            (
                "126, 127",
                "run: the command cannot be executed, or was not found.",
            ),
            (
                "128+N",
                "Signal N ended a wait (--wait of claim and run); nothing is held.",
            ),
            (
                "N",
                "claim and run with --conflict-exit-code N: held by someone else (instead of 1 and 75).",
            ),
        ],
        "claim" => vec![
            (
                "0",
                "Claimed (or the holder's own claim refreshed); with --first-free, the worker printed.",
            ),
            (
                "1",
                "Held by someone else: refused (also after --wait timed out).",
            ),
            CONFLICT,
            SIGNALLED,
            ERROR,
        ],
        "release" => vec![
            ("0", "Released, or the worker was free."),
            ("1", "Held by someone else: refused."),
            ERROR,
        ],
        "check" => vec![
            ("0", "Every worker is free or held by the asker."),
            ("1", "A worker is held by someone else."),
            ERROR,
        ],
        "status" => vec![("0", "Every worker was judged, whatever its state."), ERROR],
        "run" => run.to_vec(),
        "list" => vec![("0", "Every lock under ROOT was listed."), ERROR],
        "doctor" => vec![
            ("0", "Nothing found (with --fix: nothing left)."),
            ("1", "Findings are left."),
            (
                "2",
                "A fix failed, or another error: bad usage, an I/O or permission failure, output that could not be written.",
            ),
        ],
        "keeper" => vec![
            (
                "0",
                "A keeper runs (started, or one already ran); its lease is printed.",
            ),
            ERROR,
        ],
        _ => vec![("0", "Success."), ERROR],
    }
}

/// EXIT STATUS.
pub fn exit_status(roff: &mut Roff, page: &str) {
    roff.control("SH", ["EXIT STATUS"]);
    match page {
        "run" => {
            roff.control("PP", []);
            roff.text([roman(RUN_STATUS)]);
        }
        "" => item(roff, bold("run"), RUN_STATUS_TOP),
        _ => {}
    }
    for (code, text) in exit_codes(page) {
        item(roff, bold(code), text);
    }
}
