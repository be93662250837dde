//! Signals that end a wait instead of the process: a flag for loops that
//! look now and then (the wait for the guard), and a pipe that makes a
//! sleeping waiter's `poll` return at once.

use nix::fcntl::OFlag;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Flags the first of some signals sets when it arrives, instead of ending
/// the process: a wait for the guard gives up (see
/// [`crate::lock::ClaimOptions::cancel`]), a waiter wakes (see
/// [`crate::wait::WaitOptions`]), and the caller says which signal ended it.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// Set once any of the signals arrived.
    pub cancel: Arc<AtomicBool>,
    /// The first signal that arrived (0: none yet).
    pub signal: Arc<AtomicI32>,
    /// Readable once any of the signals arrived (a byte per signal).
    pipe: Arc<OwnedFd>,
}

impl Interrupt {
    /// Handles `signals` from now on by setting the flags and writing to
    /// the pipe.
    pub fn on(signals: &[i32]) -> std::io::Result<Interrupt> {
        let cancel = Arc::new(AtomicBool::new(false));
        let first = Arc::new(AtomicI32::new(0));
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        for &s in signals {
            let (cancel, first) = (cancel.clone(), first.clone());
            // SAFETY: the action only stores into atomics (async-signal-safe).
            unsafe {
                signal_hook::low_level::register(s, move || {
                    let _ = first.compare_exchange(0, s, Ordering::SeqCst, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
                })
            }?;
            // Registered after the flag: a waiter woken by the pipe finds it set.
            signal_hook::low_level::pipe::register(s, write.try_clone()?)?;
        }
        Ok(Interrupt {
            cancel,
            signal: first,
            pipe: Arc::new(read),
        })
    }

    /// The first signal that arrived, if any.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }

    /// Whether it was set.
    pub fn is_set(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The read end of the wake-up pipe.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }
}
