//! Unit tests of `record`.
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
        mnt_ns: None,
        fleet_key: None,
        fleet_lease: None,
        fleet_dir: None,
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
        mnt_ns: Some(4026531841),
        fleet_key: Some("/town/workers/rig/max".into()),
        fleet_lease: Some(0x7a3b_0000_1234),
        fleet_dir: Some("/srv/town/rig/max".into()),
        ..r
    };
    assert_eq!(LockRecord::parse(full.to_json().as_bytes()).unwrap(), full);
}

#[test]
fn utc_is_written_with_z() {
    let t = DateTime::parse_from_rfc3339("2026-01-05T10:00:00+00:00").unwrap();
    assert_eq!(format_time(&t), "2026-01-05T10:00:00.000000000Z");
}

#[test]
fn same_process_needs_a_known_start_and_the_same_host_boot_and_namespace() {
    let a = LockRecord {
        pid: 7,
        pid_start: Some(100),
        hostname: Some("h".into()),
        boot_id: Some("b".into()),
        pid_ns: Some(4),
        ..LockRecord::default()
    };
    let refreshed = LockRecord {
        session_id: Some("%3".into()),
        ..a.clone()
    };
    assert!(a.same_process(&refreshed));
    for other in [
        LockRecord {
            pid_start: Some(101),
            ..a.clone()
        },
        LockRecord {
            boot_id: Some("c".into()),
            ..a.clone()
        },
        LockRecord {
            pid_ns: None,
            ..a.clone()
        },
        LockRecord {
            hostname: None,
            ..a.clone()
        },
        LockRecord {
            pid: 8,
            ..a.clone()
        },
    ] {
        assert!(!a.same_process(&other), "{other:?}");
    }
    let unknown = LockRecord {
        pid_start: None,
        ..a.clone()
    };
    assert!(!unknown.same_process(&unknown.clone()));
    // The same claim: also the same session on the same server.
    let plain = LockRecord {
        session_id: None,
        ..a.clone()
    };
    assert!(plain.same_claim(&plain.clone()));
    assert!(!plain.same_claim(&refreshed), "handed to a session");
    let moved = LockRecord {
        tmux_socket: Some("/s".into()),
        ..plain.clone()
    };
    assert!(!plain.same_claim(&moved));
}
