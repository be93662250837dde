//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `1m30s`
//! (humantime's syntax), or a plain number of seconds (`2`, `0.5`), as
//! `etcdctl` and `flock -w` users write them.
//!
//! ```
//! use agentlock::duration::parse;
//! use std::time::Duration;
//!
//! assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
//! assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
//! assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
//! assert!(parse("soon").is_err());
//! assert!(parse("-1").is_err());
//! ```

use std::time::Duration;

/// The longest duration accepted: a year (far past any useful time limit,
/// and every computation with it stays in range).
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Parses a duration; an error says what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| bad(s))?,
        Err(_) => humantime::parse_duration(t).map_err(|_| bad(s))?,
    };
    if d > MAX {
        return Err(format!("{s:?}: longer than a year"));
    }
    Ok(d)
}

fn bad(s: &str) -> String {
    format!("{s:?} is not a duration: write 500ms, 30s, 5m, 1h or a number of seconds")
}
