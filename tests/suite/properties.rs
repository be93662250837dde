//! Property tests: the record round-trips, parsers never panic on any input,
//! and the verdict never says `stale` unless both probes proved death.

use agentlock::probe::SessionStatus;
use agentlock::probe::tmux::parse_list_panes;
use agentlock::record::LockRecord;
use agentlock::verdict::{PidStatus, State, judge_statuses};
use chrono::{DateTime, FixedOffset, TimeZone};
use proptest::prelude::*;

fn time() -> impl Strategy<Value = Option<DateTime<FixedOffset>>> {
    proptest::option::of(
        (
            0i64..4_000_000_000,
            0u32..1_000_000_000,
            -14 * 60..=14 * 60i32,
        )
            .prop_map(|(secs, nanos, off_min)| {
                FixedOffset::east_opt(off_min * 60)
                    .unwrap()
                    .timestamp_opt(secs, nanos)
                    .unwrap()
            }),
    )
}

fn text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{1,40}")
}

fn record() -> impl Strategy<Value = LockRecord> {
    (
        1..=i32::MAX,
        time(),
        text(),
        text(),
        proptest::option::of(any::<u64>()),
        text(),
        proptest::option::of(any::<u32>()),
        text(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        (text(), proptest::option::of(any::<u64>()), text()),
    )
        .prop_map(
            |(
                pid,
                acquired_at,
                session_id,
                hostname,
                pid_start,
                boot_id,
                uid,
                tmux_socket,
                pid_ns,
                mnt_ns,
                (fleet_key, fleet_lease, fleet_dir),
            )| {
                LockRecord {
                    pid,
                    acquired_at,
                    session_id,
                    hostname,
                    pid_start,
                    boot_id,
                    uid,
                    tmux_socket,
                    pid_ns,
                    mnt_ns,
                    fleet_key,
                    fleet_lease,
                    fleet_dir,
                }
            },
        )
}

fn pid_status() -> impl Strategy<Value = PidStatus> {
    prop_oneof![
        Just(PidStatus::Alive),
        "[a-z ]{0,20}".prop_map(PidStatus::Dead),
        "[a-z ]{0,20}".prop_map(PidStatus::Unknown),
    ]
}

fn session_status() -> impl Strategy<Value = Option<(String, SessionStatus)>> {
    proptest::option::of((
        "[%$a-z0-9]{1,8}",
        prop_oneof![
            Just(SessionStatus::Alive),
            Just(SessionStatus::Gone),
            "[a-z ]{0,20}".prop_map(SessionStatus::Unknown),
        ],
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn record_round_trips(rec in record()) {
        let parsed = LockRecord::parse(rec.to_json().as_bytes()).unwrap();
        // Empty strings are written as absent (Go's omitempty) and read back as absent.
        let norm = |s: Option<String>| s.filter(|s| !s.is_empty());
        prop_assert_eq!(parsed.pid, rec.pid);
        prop_assert_eq!(parsed.acquired_at, rec.acquired_at.or_else(|| DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").ok()));
        prop_assert_eq!(parsed.session_id, norm(rec.session_id));
        prop_assert_eq!(parsed.hostname, norm(rec.hostname));
        prop_assert_eq!(parsed.pid_start, rec.pid_start);
        prop_assert_eq!(parsed.boot_id, norm(rec.boot_id));
        prop_assert_eq!(parsed.uid, rec.uid);
    }

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = LockRecord::parse(&bytes);
    }

    #[test]
    fn parser_never_panics_on_json_like_text(s in "[{}\\[\\]\":,0-9a-z_ .eE+-]{0,200}") {
        let _ = LockRecord::parse(s.as_bytes());
    }

    #[test]
    fn parser_handles_any_value_in_known_keys(
        pid in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), any::<f64>().prop_map(|f| format!("{f:?}")), Just("\"7\"".to_string()), Just("null".into()), Just("[]".into())],
        when in prop_oneof![Just("\"2026-01-05T10:00:00Z\"".to_string()), "\\PC{0,30}".prop_map(|s| serde_json::to_string(&s).unwrap()), Just("5".into())],
    ) {
        let json = format!("{{\"pid\": {pid}, \"acquired_at\": {when}}}");
        if let Ok(r) = LockRecord::parse(json.as_bytes()) {
            prop_assert!(r.pid > 0);
        }
    }

    #[test]
    fn tmux_output_parsing_never_panics(s in "\\PC{0,300}", tabs in "[\\t\\n$%0-9a-z]{0,100}") {
        let _ = parse_list_panes(std::path::Path::new("/s"), &s);
        for p in parse_list_panes(std::path::Path::new("/s"), &tabs) {
            prop_assert!(p.pane_id.starts_with('%') && p.session_id.starts_with('$'));
        }
    }

    #[test]
    fn stale_only_when_both_probes_proved_death(pid in pid_status(), session in session_status()) {
        let v = judge_statuses(42, pid.clone(), session.clone());
        if v.state == State::Stale {
            prop_assert!(matches!(pid, PidStatus::Dead(_)), "{pid:?}");
            prop_assert!(matches!(session, None | Some((_, SessionStatus::Gone))), "{session:?}");
        }
        // And an unknown anywhere relevant never yields stale.
        if matches!(pid, PidStatus::Unknown(_)) || matches!(session, Some((_, SessionStatus::Unknown(_)))) {
            prop_assert_ne!(v.state, State::Stale);
        }
    }
}
