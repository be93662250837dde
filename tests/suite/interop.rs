//! Interop with the Go tool `gt`: its lock files (testdata/go) are read, and
//! the locks agentlock writes keep their meaning for a strict reader of the Go
//! struct `{PID int; AcquiredAt time.Time; SessionID, Hostname string}`.

use crate::common::*;

use agentlock::record::LockRecord;
use chrono::{DateTime, Datelike};
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/go")
            .join(name),
    )
    .unwrap()
}

#[test]
fn go_fixtures_parse_with_their_meaning() {
    let r = LockRecord::parse(&fixture("indented-pane.lock")).unwrap();
    assert_eq!(r.pid, 48213);
    assert_eq!(r.session_id.as_deref(), Some("%12"));
    assert_eq!(r.hostname.as_deref(), Some("gastown-dev"));
    let t = r.acquired_at.unwrap();
    assert_eq!(t.offset().local_minus_utc(), -8 * 3600);
    assert_eq!(t.timestamp_subsec_nanos(), 123_456_789);
    assert_eq!(
        (r.pid_start, r.boot_id.as_deref(), r.uid),
        (None, None, None)
    );

    let r = LockRecord::parse(&fixture("indented-utc-session-name.lock")).unwrap();
    assert_eq!(r.session_id.as_deref(), Some("gt-gastown-crew-max"));
    assert_eq!(r.acquired_at.unwrap().timestamp_subsec_millis(), 500);

    let r = LockRecord::parse(&fixture("compact-old.lock")).unwrap();
    assert_eq!(r.pid, 1234);
    assert_eq!(r.session_id.as_deref(), Some("$3"));
    assert_eq!(
        r.acquired_at.unwrap().offset().local_minus_utc(),
        5 * 3600 + 1800
    );

    let r = LockRecord::parse(&fixture("no-session.lock")).unwrap();
    assert_eq!(r.session_id, None);
    assert_eq!(r.acquired_at.unwrap().year(), 2026);
}

#[test]
fn go_fixtures_are_reported_by_the_binary() {
    let sb = Sandbox::new();
    for name in [
        "indented-pane.lock",
        "indented-utc-session-name.lock",
        "compact-old.lock",
        "no-session.lock",
    ] {
        let w = sb.worker(name);
        write_lock(&w, std::str::from_utf8(&fixture(name)).unwrap());
        let out = sb.cmd().args(["status", "--json"]).arg(&w).assert().code(0);
        let e = entry(&out.get_output().stdout);
        // Written on host "gastown-dev": not this host, so it cannot be verified here.
        assert_eq!(e["state"], "unverified", "{name}: {e}");
        assert_eq!(e["hostname"], "gastown-dev");
        let when = e["acquired_at"].as_str().unwrap();
        let want = LockRecord::parse(&fixture(name))
            .unwrap()
            .acquired_at
            .unwrap();
        assert_eq!(DateTime::parse_from_rfc3339(when).unwrap(), want, "{name}");
    }
}

/// Go's `time.Time.UnmarshalJSON`: a quoted RFC 3339 time, `T` separator,
/// optional fraction, `Z` or `±hh:mm`.
fn go_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|x| x.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
    {
        return false;
    }
    if !(b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 {
            return false;
        }
    }
    match &b[i..] {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] => {
            (*sign == b'+' || *sign == b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// A strict reader of the Go struct: what `json.Unmarshal` into `LockInfo`
/// accepts, and the values it yields. Unknown keys are ignored, as in Go.
fn go_unmarshal(bytes: &[u8]) -> Result<(i64, String, String, String), String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let o = v.as_object().ok_or("not an object")?;
    let pid = match o.get("pid") {
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or("pid is not a Go int")?,
        None => 0,
        Some(other) => return Err(format!("pid: cannot unmarshal {other} into int")),
    };
    let acquired = match o.get("acquired_at") {
        Some(serde_json::Value::String(s)) if go_rfc3339(s) => s.clone(),
        Some(other) => return Err(format!("acquired_at: {other} is not RFC 3339")),
        None => String::new(),
    };
    let string = |k: &str| match o.get(k) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        None => Ok(String::new()),
        Some(other) => Err(format!("{k}: cannot unmarshal {other} into string")),
    };
    Ok((pid, acquired, string("session_id")?, string("hostname")?))
}

#[test]
fn strict_go_reader_accepts_what_we_accept_from_go() {
    for name in [
        "indented-pane.lock",
        "indented-utc-session-name.lock",
        "compact-old.lock",
        "no-session.lock",
    ] {
        go_unmarshal(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(!go_rfc3339("2026-01-05 10:00:00Z"));
    assert!(!go_rfc3339("2026-01-05T10:00:00"));
}

#[test]
fn locks_we_write_keep_their_meaning_for_the_go_struct() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let holder = sleeper();
    sb.claim(&w, holder.pid(), &["-q", "--session", "%4"])
        .code(0);
    let bytes = std::fs::read(lock_path(&w)).unwrap();
    let (pid, acquired, session, host) = go_unmarshal(&bytes).unwrap();
    assert_eq!(pid, holder.pid() as i64);
    assert_eq!(session, "%4");
    assert_eq!(host, hostname());
    let t = DateTime::parse_from_rfc3339(&acquired).unwrap();
    let age = chrono::Utc::now().signed_duration_since(t);
    assert!(
        age.num_seconds().abs() < 60,
        "acquired_at {acquired} is now"
    );
    // The Go layout: two-space indent, Go keys first, no trailing newline.
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(&format!(
            "{{\n  \"pid\": {},\n  \"acquired_at\": \"",
            holder.pid()
        )),
        "{text}"
    );
    assert!(text.ends_with("\n}"));
}

#[test]
fn a_lock_written_by_go_for_a_live_local_process_is_honoured() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let agent = sleeper();
    // What gt's Acquire writes on this host: pid, time, pane, hostname.
    write_lock(&w, &go_lock(agent.pid(), None));
    std::fs::write(w.join(".runtime/agent.lock.flock"), "").unwrap();
    assert_eq!(state_of(&sb, &w, &[]), "held");
    let me = sleeper();
    sb.claim(&w, me.pid(), &[]).code(1);
    // The holder releases by PID, as gt would have written it.
    sb.cmd()
        .args(["release", "--pid", &agent.pid().to_string()])
        .arg(&w)
        .assert()
        .code(0);
    assert!(!lock_path(&w).exists());
}
