//! Watching store keys for a waiter: a thread of its own, with its own
//! connection, follows an etcd watch and writes a byte to a pipe on every
//! change, so the waiter sleeps on the pipe with its other events in one
//! `poll`. Watches start at a given revision, so nothing that happened
//! after the waiter's last read is missed; a broken watch is opened again
//! (from where it got to) on the next member. If the thread cannot go on,
//! the pipe closes and the waiter falls back to judging periodically.

use super::StoreSpec;
use super::etcd::Fleet;
use etcd_client::{WatchOptions, WatchStream};
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;
use tokio::sync::oneshot;

/// A running watch; stopped on drop.
/// What to watch (each key, `true`: as a prefix) and from which revision.
type Watched = (Vec<(String, bool)>, i64);

pub(crate) struct KeyWatch {
    read: OwnedFd,
    stop: Option<oneshot::Sender<()>>,
    begin: Option<std::sync::mpsc::Sender<Watched>>,
}

impl KeyWatch {
    /// Starts connecting (its own connection, on its own thread), so the
    /// watch is ready by the time the waiter knows what to watch from
    /// where ([`KeyWatch::begin`]).
    pub(crate) fn connect(spec: &StoreSpec, timeout: Duration) -> std::io::Result<KeyWatch> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = oneshot::channel();
        let (begin, what) = std::sync::mpsc::channel::<Watched>();
        let spec = spec.clone();
        std::thread::Builder::new()
            .name("agentlock-watch".into())
            .spawn(move || {
                // The write end lives in this thread: when it ends, the
                // waiter sees the pipe close.
                let fleet = Fleet::connect(&spec, timeout);
                if let (Ok(fleet), Ok((keys, from))) = (fleet, what.recv()) {
                    follow(&fleet, &keys, from, timeout, &write, rx);
                }
            })?;
        Ok(KeyWatch {
            read,
            stop: Some(tx),
            begin: Some(begin),
        })
    }

    /// Watches `keys` (`true`: as a prefix) from revision `from` on.
    pub(crate) fn begin(&mut self, keys: Vec<(String, bool)>, from: i64) {
        if let Some(b) = self.begin.take() {
            let _ = b.send((keys, from));
        }
    }

    /// Readable after each change.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn options(prefix: bool, from: i64) -> WatchOptions {
    let o = WatchOptions::new().with_start_revision(from);
    if prefix { o.with_prefix() } else { o }
}

/// Follows the watch until told to stop, moving on to the next member
/// whenever one fails.
fn follow(
    fleet: &Fleet,
    keys: &[(String, bool)],
    mut from: i64,
    timeout: Duration,
    write: &OwnedFd,
    mut stop: oneshot::Receiver<()>,
) {
    let wake = || {
        let _ = nix::unistd::write(write, b"w");
    };
    let members = fleet.members().to_vec();
    fleet.block_on(async move {
        for attempt in 0usize.. {
            let mut client = members[attempt % members.len()].clone();
            let open = async {
                let mut keys = keys.iter();
                let (k, p) = keys.next()?;
                let mut s: WatchStream = client
                    .watch(k.as_str(), Some(options(*p, from)))
                    .await
                    .ok()?;
                for (k, p) in keys {
                    s.watch(k.as_str(), Some(options(*p, from))).await.ok()?;
                }
                Some(s)
            };
            let opened = tokio::select! {
                s = tokio::time::timeout(timeout, open) => s.ok().flatten(),
                _ = &mut stop => return,
            };
            if let Some(mut s) = opened {
                loop {
                    let msg = tokio::select! {
                        m = s.message() => m,
                        _ = &mut stop => return,
                    };
                    let Ok(Some(resp)) = msg else { break };
                    if resp.canceled() {
                        // Compacted past `from`: start from now; judging
                        // again covers what was missed.
                        from = 0;
                        break;
                    }
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            from = from.max(kv.mod_revision() + 1);
                        }
                    }
                    if !resp.events().is_empty() {
                        wake();
                    }
                }
            }
            // Something may have changed while no watch ran: judge again.
            wake();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = &mut stop => return,
            }
        }
    });
}
