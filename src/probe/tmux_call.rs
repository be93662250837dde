//! One tmux client call: a client against a vetted server (see
//! [`super::tmux_peer`]) spawned with its output read on its own threads
//! (bounded), its answer sent on a channel, and a handle to kill it through
//! its pidfd when it does not answer in time.

use super::tmux::ServerState;
use super::tmux_peer::{Refusal, Vetted, vet};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
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

/// A failed tmux call: "no server running" (or a refused connection) proves
/// there are no sessions; anything else is an error.
pub fn classify_failure(stderr: &str) -> (ServerState, String) {
    let first = stderr.lines().next().unwrap_or("").to_string();
    let no_server = stderr.contains("no server running")
        || (stderr.contains("error connecting to") && stderr.contains("Connection refused"));
    if no_server {
        (ServerState::NoServer, first)
    } else if first.is_empty() {
        (ServerState::Error, "tmux failed without a message".into())
    } else {
        (ServerState::Error, first)
    }
}

/// A started client: killed through its pidfd, never by a PID that may
/// have been reaped and reused.
pub(super) struct Running {
    pidfd: Option<OwnedFd>,
}

impl Running {
    /// SIGKILLs the client, if it still runs.
    pub(super) fn kill(&self) {
        if let Some(fd) = &self.pidfd {
            // SAFETY: pidfd_send_signal on a pidfd we own; no memory is passed.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    nix::libc::SIGKILL,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}

/// The most a client may print: a real server's answer is far smaller, and
/// a forged one must not exhaust memory.
const MAX_ANSWER: u64 = 64 << 20;

/// Starts a tmux client against a vetted server; its answer arrives on `tx`
/// tagged with `tag`.
pub(super) fn start(
    bin: &Path,
    server: &Vetted,
    args: &[&str],
    tag: usize,
    tx: mpsc::Sender<(usize, Answer)>,
) -> std::io::Result<Running> {
    let mut child = server
        .command(bin, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Opened before the reader thread exists, so before anyone can reap it.
    let pidfd = super::process::pidfd_open(child.id() as i32);
    std::thread::spawn(move || {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let err_pipe = child.stderr.take();
        // stderr on its own thread, so a chatty stderr cannot block stdout.
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = err_pipe {
                let _ = e.take(64 << 10).read_to_end(&mut buf);
            }
            buf
        });
        let read = child
            .stdout
            .take()
            .map(|o| o.take(MAX_ANSWER + 1).read_to_end(&mut stdout))
            .transpose();
        if stdout.len() as u64 > MAX_ANSWER {
            let _ = child.kill();
        }
        stderr.extend(err_reader.join().unwrap_or_default());
        let answer = match (read, child.wait()) {
            _ if stdout.len() as u64 > MAX_ANSWER => {
                Answer::Failed(format!("answer larger than {MAX_ANSWER} bytes"))
            }
            (Ok(_), Ok(status)) => Answer::Output {
                success: status.success(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            },
            (Err(e), _) | (_, Err(e)) => Answer::Failed(format!("reading tmux output: {e}")),
        };
        let _ = tx.send((tag, answer));
    });
    Ok(Running { pidfd })
}

/// How many tmux clients run at once: a town whose locks name thousands of
/// servers (a hostile writer can) never costs thousands of processes.
pub(super) const PARALLEL: usize = 16;

/// What asking one server came to, and its owner when it was vetted.
pub(super) struct Call {
    /// The listener's user, when it was vetted.
    pub owner: Option<u32>,
    /// The client's answer, or why no client was run.
    pub result: Result<Answer, Refusal>,
}

/// Asks every server in `sockets` with `tmux ARGS`: each is vetted first
/// ([`super::tmux_peer::vet`]), at most [`PARALLEL`] clients run at once,
/// and all within one `timeout`; a client still running then is killed, a
/// server not reached by then is an error.
pub(super) fn call_all(
    bin: &Path,
    sockets: &[PathBuf],
    args: &[&str],
    timeout: Duration,
) -> Vec<Call> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut out: Vec<Option<Call>> = sockets.iter().map(|_| None).collect();
    let mut owners: Vec<Option<u32>> = vec![None; sockets.len()];
    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut next = 0;
    loop {
        while running.len() < PARALLEL && next < sockets.len() && Instant::now() < deadline {
            let i = next;
            next += 1;
            let server = match vet(&sockets[i], bin) {
                Ok(server) => server,
                Err(refusal) => {
                    out[i] = Some(Call {
                        owner: None,
                        result: Err(refusal),
                    });
                    continue;
                }
            };
            owners[i] = Some(server.uid);
            let result = match server.askable() {
                Err(refusal) => Err(refusal),
                Ok(()) => match start(bin, &server, args, i, tx.clone()) {
                    Ok(run) => {
                        running.insert(i, run);
                        continue;
                    }
                    Err(e) => Ok(Answer::Failed(format!("cannot run tmux: {e}"))),
                },
            };
            out[i] = Some(Call {
                owner: owners[i],
                result,
            });
        }
        if running.is_empty() {
            break;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, answer)) => {
                running.remove(&i);
                out[i] = Some(Call {
                    owner: owners[i],
                    result: Ok(answer),
                });
            }
            Err(_) => {
                for (i, run) in running.drain() {
                    run.kill();
                    out[i] = Some(Call {
                        owner: owners[i],
                        result: Ok(Answer::Failed(format!(
                            "no answer within {} ms",
                            timeout.as_millis()
                        ))),
                    });
                }
                break;
            }
        }
    }
    out.into_iter()
        .map(|c| {
            c.unwrap_or(Call {
                owner: None,
                result: Err((
                    ServerState::Error,
                    format!(
                        "not asked: {} ms were spent on other tmux servers",
                        timeout.as_millis()
                    ),
                )),
            })
        })
        .collect()
}
