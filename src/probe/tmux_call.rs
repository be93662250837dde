//! One tmux client call with a deadline: a client against a vetted server
//! (see [`super::tmux_peer`]) spawned with its output read on its own
//! threads, and killed (by its own PID, before it is reaped) when it does not
//! answer in time.

use super::tmux_peer::Vetted;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a tmux call came to.
pub(super) enum Answer {
    Output {
        success: bool,
        stdout: String,
        stderr: String,
    },
    Failed(String),
}

/// A started client: its PID and where its answer arrives.
pub(super) type Started = std::io::Result<(i32, mpsc::Receiver<Answer>)>;

/// Starts a tmux client against a vetted server, with its output read on a
/// thread.
pub(super) fn start(bin: &Path, server: &Vetted, args: &[&str]) -> Started {
    let mut child = server
        .command(bin, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut err_pipe = child.stderr.take();
        // stderr on its own thread, so a chatty stderr cannot block stdout.
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = err_pipe.as_mut() {
                let _ = e.read_to_end(&mut buf);
            }
            buf
        });
        let read_ok = child
            .stdout
            .take()
            .map(|mut o| o.read_to_end(&mut stdout))
            .transpose();
        stderr.extend(err_reader.join().unwrap_or_default());
        let answer = match (read_ok, child.wait()) {
            (Ok(_), Ok(status)) => Answer::Output {
                success: status.success(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            },
            (Err(e), _) | (_, Err(e)) => Answer::Failed(format!("reading tmux output: {e}")),
        };
        let _ = tx.send(answer);
    });
    Ok((pid, rx))
}

/// Waits for a started tmux until `deadline`; kills it past the deadline.
pub(super) fn finish(started: Started, deadline: Instant, timeout: Duration) -> Answer {
    match started {
        Err(e) => Answer::Failed(format!("cannot run tmux: {e}")),
        Ok((pid, rx)) => {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(a) => a,
                Err(_) => {
                    // The reader thread has not reaped the child yet, so the PID
                    // is still ours to kill.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    Answer::Failed(format!("no answer within {} ms", timeout.as_millis()))
                }
            }
        }
    }
}
