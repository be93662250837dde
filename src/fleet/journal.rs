//! The keeper's claims file, `keeper-<store>.claims` in its state dir: one
//! line per claim acknowledged on this host (`{"key":…,"record":…}`),
//! appended by the claim under a shared `flock`. The keeper reads it on from
//! where it last stopped, so that a claim made just before a stall, or on a
//! predecessor keeper's lease, is claimed again should the lease be lost;
//! past 1 MiB it rewrites the file with what it still remembers, under an
//! exclusive `flock`.

use super::StoreSpec;
use super::keeper::files;
use super::ops::this_host;
use super::sweep::Remembered;
use crate::probe::{LiveProbes, Probes, TmuxQuery};
use crate::record::LockRecord;
use nix::fcntl::{Flock, FlockArg};
use std::os::unix::fs::OpenOptionsExt;

/// Tells this host's keeper for `spec` of an acknowledged claim (one line
/// appended to its claims file), so that it can claim it again should its
/// lease be lost before its next sweep. Best effort: the sweep finds the
/// claim too.
pub(crate) fn note_claim(spec: &StoreSpec, key: &str, record: &LockRecord) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = files(spec) else { return };
    let line = entry(key, record);
    // The keeper rewrites the file under an exclusive lock: append under a
    // shared one, to the file that is there once the lock is had.
    for _ in 0..3 {
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&f.claims)
        else {
            return;
        };
        let Ok(mut locked) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared) else {
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let same = match (locked.metadata(), std::fs::metadata(&f.claims)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            let _ = locked.write_all(line.as_bytes());
            return;
        }
    }
}

/// One line of the claims file: `{"key":…,"record":…}` and a newline.
fn entry(key: &str, record: &LockRecord) -> String {
    format!("{}\n", serde_json::json!({ "key": key, "record": record }))
}

/// The claims file ([`note_claim`]), read on from where the last
/// read stopped.
pub(crate) struct Journal {
    pub(crate) path: std::path::PathBuf,
    pub(crate) offset: usize,
}

impl Journal {
    /// Adds the claims appended since the last read (this host's only) to
    /// `remembered`; a file rewritten shorter is read from its start.
    pub(crate) fn catch_up(&mut self, remembered: &mut Remembered, probes: &Probes) {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        if bytes.len() < self.offset {
            self.offset = 0;
        }
        let new = &bytes[self.offset..];
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in new[..end].split(|&b| b == b'\n') {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(key), Some(rec)) = (v["key"].as_str(), v.get("record")) else {
                continue;
            };
            if let Ok(rec) = LockRecord::parse(rec.to_string().as_bytes())
                && rec.fleet_key.as_deref() == Some(key)
                && this_host(&rec, probes)
            {
                remembered.insert(key.to_string(), rec);
            }
        }
        self.offset += end + 1;
    }

    /// Past 1 MiB read, the file is rewritten with what is remembered.
    pub(crate) fn compact(&mut self, remembered: &mut Remembered) {
        if self.offset < 1 << 20 {
            return;
        }
        // Under the file's lock, so no claim appends to the file being
        // replaced (an appender re-opens the file if it was replaced
        // while it waited: see [`note_claim`]).
        let Ok(file) = std::fs::File::open(&self.path) else {
            return;
        };
        let Ok(_locked) = Flock::lock(file, FlockArg::LockExclusive) else {
            return;
        };
        let live = LiveProbes::new(TmuxQuery::default());
        self.catch_up(remembered, &live.probes());
        let text: String = remembered.iter().map(|(k, r)| entry(k, r)).collect();
        let tmp = self.path.with_extension("claims.tmp");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if written.is_ok() && std::fs::rename(&tmp, &self.path).is_ok() {
            self.offset = text.len();
        }
    }
}
