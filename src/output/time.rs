//! Times in human output: this machine's local time, or UTC with `--utc`
//! (JSON keeps them as recorded), and ages ("3h 12m").

use chrono::{DateTime, FixedOffset, Local, Utc};
use std::sync::atomic::{AtomicBool, Ordering};

/// `--utc`: times in human output in UTC rather than local time.
static UTC: AtomicBool = AtomicBool::new(false);

/// Shows times in UTC (`--utc`) instead of this machine's local time.
pub fn use_utc(on: bool) {
    UTC.store(on, Ordering::Relaxed);
}

/// A recorded time as humans read it: local time (or UTC with `--utc`),
/// to the second, with its offset. JSON keeps the time as recorded.
pub fn when(t: &DateTime<FixedOffset>) -> String {
    if UTC.load(Ordering::Relaxed) {
        t.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    } else if agentlock::record::tz_names_no_regular_file() {
        // Read as chrono reads a zone it does not know: UTC.
        t.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    } else {
        t.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

/// "3h 12m", "42s", "2d 4h": the age of a lock.
pub fn age(since: &DateTime<FixedOffset>, now: DateTime<Utc>) -> String {
    let secs = (now - since.with_timezone(&Utc)).num_seconds();
    if secs < 0 {
        return "in the future".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now = Utc::now();
        let t = |secs: i64| (now - chrono::Duration::seconds(secs)).fixed_offset();
        assert_eq!(age(&t(5), now), "5s");
        assert_eq!(age(&t(125), now), "2m 5s");
        assert_eq!(age(&t(3 * 3600 + 12 * 60), now), "3h 12m");
        assert_eq!(age(&t(2 * 86_400 + 4 * 3600), now), "2d 4h");
        assert_eq!(age(&t(-60), now), "in the future");
    }
}
