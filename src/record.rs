//! The lock record: the JSON object in `<worker>/.runtime/agent.lock`.
//!
//! The first four keys (`pid`, `acquired_at`, `session_id`, `hostname`) are the
//! Go tool's (`gt`, gastown `internal/lock.LockInfo`) and keep its meaning;
//! `pid_start`, `boot_id`, `uid`, `tmux_socket` and `pid_ns` are ours and the
//! Go tool ignores them.
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
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LockRecord, CorruptReason> {
        LockRecord::parse(s.as_bytes())
    }

    #[test]
    fn go_compact_and_indented_forms_parse_alike() {
        let compact = r#"{"pid":77,"acquired_at":"2026-01-05T18:00:00.5Z","session_id":"gt-crew-max","hostname":"h"}"#;
        let indented = "{\n  \"pid\": 77,\n  \"acquired_at\": \"2026-01-05T10:00:00.500000000-08:00\",\n  \"session_id\": \"gt-crew-max\",\n  \"hostname\": \"h\"\n}";
        let a = parse(compact).unwrap();
        let b = parse(indented).unwrap();
        assert_eq!(a.pid, 77);
        assert_eq!(a.acquired_at.unwrap(), b.acquired_at.unwrap());
        assert_eq!(b.acquired_at.unwrap().offset().local_minus_utc(), -8 * 3600);
        assert_eq!(a.session_id, b.session_id);
    }

    #[test]
    fn optional_keys_may_be_missing_and_unknown_keys_are_ignored() {
        let r = parse(r#"{"pid": 5, "extra": [1,2,{"x":null}], "session_id": ""}"#).unwrap();
        assert_eq!(r.pid, 5);
        assert_eq!(r.acquired_at, None);
        assert_eq!(r.session_id, None);
        assert_eq!(r.hostname, None);
    }

    #[test]
    fn precise_reasons() {
        let cases: &[(&str, &str)] = &[
            ("", "empty file"),
            ("  \n", "empty file"),
            ("[1]", "expected a JSON object, found an array"),
            ("42", "expected a JSON object, found a number"),
            ("\"x\"", "expected a JSON object, found a string"),
            ("{}", "no \"pid\" key"),
            (r#"{"pid":null}"#, "no \"pid\" key"),
            (
                r#"{"pid":"12"}"#,
                "\"pid\" must be an integer, found string \"12\"",
            ),
            (
                r#"{"pid":1.5}"#,
                "\"pid\" must be an integer, found number 1.5",
            ),
            (r#"{"pid":0}"#, "pid 0 is not a positive process id"),
            (r#"{"pid":-7}"#, "pid -7 is not a positive process id"),
            (
                r#"{"pid":2147483648}"#,
                "pid 2147483648 is out of range for a process id",
            ),
            (
                r#"{"pid":18446744073709551615}"#,
                "pid 18446744073709551615 is out of range for a process id",
            ),
            (
                r#"{"pid":1,"session_id":3}"#,
                "\"session_id\" must be a string, found number 3",
            ),
            (
                r#"{"pid":1,"uid":-1}"#,
                "\"uid\" must be a 32-bit user id, found number -1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).unwrap_err().to_string(),
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = parse("{\n  \"pid\": 12,\n  \"acquired_at\": \n").unwrap_err();
        match e {
            CorruptReason::BadJson { line, .. } => assert_eq!(line, 4),
            other => panic!("unexpected {other:?}"),
        }
        let e = parse("{\"pid\": 1, \"x\": \"\u{0}\"").unwrap_err();
        assert!(e.to_string().starts_with("invalid JSON at line 1"), "{e}");
    }

    #[test]
    fn bad_time_is_corrupt() {
        let e = parse(r#"{"pid":1,"acquired_at":"yesterday"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("\"acquired_at\" \"yesterday\" is not an RFC 3339 time"),
            "{e}"
        );
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let big = vec![b' '; MAX_LOCK_BYTES as usize + 1];
        assert_eq!(
            LockRecord::parse(&big).unwrap_err(),
            CorruptReason::TooLarge {
                size: MAX_LOCK_BYTES + 1
            }
        );
    }

    #[test]
    fn writes_go_layout_and_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-01-05T10:00:00.123456789-08:00").unwrap();
        let r = LockRecord {
            pid: 4242,
            acquired_at: Some(t),
            session_id: Some("%3".into()),
            hostname: Some("build-1".into()),
            pid_start: None,
            boot_id: None,
            uid: None,
            tmux_socket: None,
            pid_ns: None,
        };
        assert_eq!(
            r.to_json(),
            "{\n  \"pid\": 4242,\n  \"acquired_at\": \"2026-01-05T10:00:00.123456789-08:00\",\n  \"session_id\": \"%3\",\n  \"hostname\": \"build-1\"\n}"
        );
        let full = LockRecord {
            pid_start: Some(99),
            boot_id: Some("b".into()),
            uid: Some(1000),
            tmux_socket: Some("/tmp/tmux-1000/default".into()),
            pid_ns: Some(4026531836),
            ..r
        };
        assert_eq!(LockRecord::parse(full.to_json().as_bytes()).unwrap(), full);
    }

    #[test]
    fn utc_is_written_with_z() {
        let t = DateTime::parse_from_rfc3339("2026-01-05T10:00:00+00:00").unwrap();
        assert_eq!(format_time(&t), "2026-01-05T10:00:00.000000000Z");
    }
}
