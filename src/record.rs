//! The lock record: the JSON object in `<worker>/.runtime/agent.lock`.
//!
//! The first four keys (`pid`, `acquired_at`, `session_id`, `hostname`) are the
//! Go tool's (`gt`, gastown `internal/lock.LockInfo`) and keep its meaning;
//! `pid_start`, `boot_id`, `uid`, `tmux_socket`, `pid_ns`, `mnt_ns` and, for a
//! claim on the fleet store, `fleet_key`, `fleet_lease` and `fleet_dir` are
//! ours, and the Go tool ignores them.
//!
//! ```
//! use agentlock::record::LockRecord;
//!
//! // A lock exactly as the Go tool writes it (json.MarshalIndent, two spaces).
//! let go = br#"{
//!   "pid": 4242,
//!   "acquired_at": "2026-01-05T10:00:00.123456789-08:00",
//!   "session_id": "%3",
//!   "hostname": "build-1"
//! }"#;
//! let rec = LockRecord::parse(go).unwrap();
//! assert_eq!(rec.pid, 4242);
//! assert_eq!(rec.session_id.as_deref(), Some("%3"));
//!
//! // A PID of zero is not a valid holder.
//! let err = LockRecord::parse(br#"{"pid":0}"#).unwrap_err();
//! assert_eq!(err.to_string(), "pid 0 is not a positive process id");
//! ```

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// Largest lock file that is read; anything bigger is `corrupt` and is never
/// read whole.
pub const MAX_LOCK_BYTES: u64 = 64 * 1024;

/// One lock record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockRecord {
    /// The holding process.
    pub pid: i32,
    /// When it was claimed (any UTC offset). Absent only in hand-written files.
    #[serde(serialize_with = "ser_time")]
    pub acquired_at: Option<DateTime<FixedOffset>>,
    /// tmux session name, `$N` session id or `%N` pane id.
    #[serde(skip_serializing_if = "is_blank")]
    pub session_id: Option<String>,
    /// Host that wrote the lock.
    #[serde(skip_serializing_if = "is_blank")]
    pub hostname: Option<String>,
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the lock was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// User id of the holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Path of the tmux server socket the session/pane lives on: pane and
    /// session ids only mean something on their own server.
    #[serde(skip_serializing_if = "is_blank")]
    pub tmux_socket: Option<String>,
    /// Inode of the claimer's PID namespace (`/proc/self/ns/pid`): a PID means
    /// nothing outside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// Inode of the claimer's mount namespace (`/proc/self/ns/mnt`): a socket
    /// path means nothing outside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u64>,
    /// The fleet store key this lock file mirrors (written by a claim on the
    /// store): on a filesystem several hosts share, another host judges the
    /// file by the store, not as a foreign lock it cannot verify.
    #[serde(skip_serializing_if = "is_blank")]
    pub fleet_key: Option<String>,
    /// The lease of the claiming host's keeper that the store record hangs
    /// on: once it is gone, no claim of that host can still land.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_lease: Option<u64>,
    /// The worker directory on the claiming host: its keeper removes this
    /// file when it sweeps the store record.
    #[serde(skip_serializing_if = "is_blank")]
    pub fleet_dir: Option<String>,
}

fn is_blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

fn ser_time<S: serde::Serializer>(
    t: &Option<DateTime<FixedOffset>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(t)),
        // Go's zero time: what `gt` itself writes for an unset time.Time.
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

/// RFC 3339 with nanoseconds, `Z` for UTC: the form Go's `time.Time` parses.
pub fn format_time(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Why a lock file is not a valid record. Each reason is one precise line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptReason {
    /// Zero bytes.
    Empty,
    /// Bigger than [`MAX_LOCK_BYTES`].
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// Not JSON at all, or broken JSON.
    BadJson {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// The parser's message.
        msg: String,
    },
    /// Valid JSON, but not an object.
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// No `pid` key (or `null`).
    MissingPid,
    /// `pid` of the wrong JSON type.
    PidNotInteger {
        /// What was found instead.
        found: String,
    },
    /// `pid` ≤ 0.
    PidNotPositive {
        /// The value.
        pid: i64,
    },
    /// `pid` beyond what a process id can be.
    PidOutOfRange {
        /// The value, as written.
        pid: String,
    },
    /// `acquired_at` is not an RFC 3339 time.
    BadTime {
        /// The value, as written.
        value: String,
        /// The parser's message.
        why: String,
    },
    /// A known key has the wrong type.
    BadField {
        /// The key.
        key: &'static str,
        /// The JSON type it should have.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// `agent.lock` (or `.runtime`) is not a regular file / directory.
    NotRegular {
        /// What it is, in words.
        what: String,
    },
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::Empty => write!(f, "empty file"),
            CorruptReason::TooLarge { size } => write!(
                f,
                "file is {size} bytes, over the {MAX_LOCK_BYTES}-byte limit"
            ),
            CorruptReason::BadJson { line, column, msg } => {
                write!(f, "invalid JSON at line {line} column {column}: {msg}")
            }
            CorruptReason::NotAnObject { found } => {
                write!(f, "expected a JSON object, found {found}")
            }
            CorruptReason::MissingPid => write!(f, "no \"pid\" key"),
            CorruptReason::PidNotInteger { found } => {
                write!(f, "\"pid\" must be an integer, found {found}")
            }
            CorruptReason::PidNotPositive { pid } => {
                write!(f, "pid {pid} is not a positive process id")
            }
            CorruptReason::PidOutOfRange { pid } => {
                write!(f, "pid {pid} is out of range for a process id")
            }
            CorruptReason::BadTime { value, why } => {
                write!(
                    f,
                    "\"acquired_at\" {value:?} is not an RFC 3339 time: {why}"
                )
            }
            CorruptReason::BadField {
                key,
                expected,
                found,
            } => write!(f, "\"{key}\" must be {expected}, found {found}"),
            CorruptReason::NotRegular { what } => write!(f, "{what}"),
        }
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            format!("string {short:?}")
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn opt_string(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, CorruptReason> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(CorruptReason::BadField {
            key,
            expected: "a string",
            found: kind_of(v),
        }),
    }
}

fn opt_uint<T: TryFrom<u64>>(
    obj: &Map<String, Value>,
    key: &'static str,
    expected: &'static str,
) -> Result<Option<T>, CorruptReason> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| CorruptReason::BadField {
                key,
                expected,
                found: kind_of(v),
            }),
    }
}

impl LockRecord {
    /// Whether `other` names the same process as this record: the same PID
    /// with the same (known) start time, on the same host and boot, in the
    /// same PID namespace. A refresh by the holder keeps all of these.
    pub fn same_process(&self, other: &LockRecord) -> bool {
        self.pid == other.pid
            && self.pid_start.is_some()
            && self.pid_start == other.pid_start
            && self.hostname == other.hostname
            && self.boot_id == other.boot_id
            && self.pid_ns == other.pid_ns
    }

    /// Whether `other` is the same claim: the same process
    /// ([`LockRecord::same_process`]) for the same session on the same tmux
    /// server. A holder that refreshed its own lock keeps it; one that handed
    /// it to a tmux session (`claim --session S`) made a claim that outlives
    /// it, which is not the original claimant's to release.
    pub fn same_claim(&self, other: &LockRecord) -> bool {
        self.same_process(other)
            && self.session_id == other.session_id
            && self.tmux_socket == other.tmux_socket
    }

    /// Parses a lock file's bytes, with a precise reason when they are not a
    /// valid record. Unknown keys are ignored, as the Go tool does.
    pub fn parse(bytes: &[u8]) -> Result<LockRecord, CorruptReason> {
        if bytes.len() as u64 > MAX_LOCK_BYTES {
            return Err(CorruptReason::TooLarge {
                size: bytes.len() as u64,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CorruptReason::Empty);
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| CorruptReason::BadJson {
            line: e.line(),
            column: e.column(),
            msg: strip_position(&e.to_string()),
        })?;
        let obj = match value {
            Value::Object(o) => o,
            Value::Array(_) => return Err(CorruptReason::NotAnObject { found: "an array" }),
            Value::String(_) => return Err(CorruptReason::NotAnObject { found: "a string" }),
            Value::Number(_) => return Err(CorruptReason::NotAnObject { found: "a number" }),
            Value::Bool(_) => return Err(CorruptReason::NotAnObject { found: "a boolean" }),
            Value::Null => return Err(CorruptReason::NotAnObject { found: "null" }),
        };
        let pid = match obj.get("pid") {
            None | Some(Value::Null) => return Err(CorruptReason::MissingPid),
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    if i <= 0 {
                        return Err(CorruptReason::PidNotPositive { pid: i });
                    }
                    i32::try_from(i)
                        .map_err(|_| CorruptReason::PidOutOfRange { pid: n.to_string() })?
                } else if n.is_u64() {
                    return Err(CorruptReason::PidOutOfRange { pid: n.to_string() });
                } else {
                    return Err(CorruptReason::PidNotInteger {
                        found: kind_of(&Value::Number(n.clone())),
                    });
                }
            }
            Some(v) => return Err(CorruptReason::PidNotInteger { found: kind_of(v) }),
        };
        let acquired_at = match obj.get("acquired_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(
                    DateTime::parse_from_rfc3339(s).map_err(|e| CorruptReason::BadTime {
                        value: s.chars().take(64).collect(),
                        why: e.to_string(),
                    })?,
                )
            }
            Some(v) => {
                return Err(CorruptReason::BadField {
                    key: "acquired_at",
                    expected: "an RFC 3339 time string",
                    found: kind_of(v),
                });
            }
        };
        Ok(LockRecord {
            pid,
            acquired_at,
            session_id: opt_string(&obj, "session_id")?.filter(|s| !s.is_empty()),
            hostname: opt_string(&obj, "hostname")?.filter(|s| !s.is_empty()),
            pid_start: opt_uint(&obj, "pid_start", "a non-negative integer")?,
            boot_id: opt_string(&obj, "boot_id")?.filter(|s| !s.is_empty()),
            uid: opt_uint(&obj, "uid", "a 32-bit user id")?,
            tmux_socket: opt_string(&obj, "tmux_socket")?.filter(|s| !s.is_empty()),
            pid_ns: opt_uint(&obj, "pid_ns", "a non-negative integer")?,
            mnt_ns: opt_uint(&obj, "mnt_ns", "a non-negative integer")?,
            fleet_key: opt_string(&obj, "fleet_key")?.filter(|s| !s.is_empty()),
            fleet_lease: opt_uint(&obj, "fleet_lease", "a lease id")?,
            fleet_dir: opt_string(&obj, "fleet_dir")?.filter(|s| !s.is_empty()),
        })
    }

    /// Serializes the way the Go tool does (`json.MarshalIndent(info, "", "  ")`),
    /// with our optional keys after the Go ones.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a LockRecord always serializes")
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;

/// Now, in local time; in UTC when `$TZ` names a file that never ends
/// ([`tz_names_no_regular_file`]), as for a zone chrono does not know.
pub fn local_now() -> chrono::DateTime<chrono::FixedOffset> {
    if tz_names_no_regular_file() {
        chrono::Utc::now().fixed_offset()
    } else {
        chrono::Local::now().fixed_offset()
    }
}

/// Whether `$TZ` names a file (as a path, or under the zoneinfo directories
/// chrono looks in) that is not a regular file: `/dev/zero`, a FIFO, a
/// terminal. chrono reads such a file to its end, which never comes.
pub fn tz_names_no_regular_file() -> bool {
    let Some(tz) = std::env::var_os("TZ") else {
        return false;
    };
    let tz = tz.to_string_lossy();
    let name = tz.strip_prefix(':').unwrap_or(&tz);
    if name.is_empty() {
        return false;
    }
    let p = std::path::Path::new(name);
    let dirs = [
        "/usr/share/zoneinfo",
        "/share/zoneinfo",
        "/etc/zoneinfo",
        "/usr/share/lib/zoneinfo",
    ];
    let candidates: Vec<std::path::PathBuf> = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        dirs.iter()
            .map(|d| std::path::Path::new(d).join(p))
            .collect()
    };
    candidates
        .iter()
        .find_map(|c| std::fs::metadata(c).ok())
        .is_some_and(|m| !m.is_file())
}
