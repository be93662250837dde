//! Process liveness and identity: `kill(pid, 0)` plus `/proc/<pid>/stat`.

use super::Existence;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Questions asked of the process table.
#[cfg_attr(test, mockall::automock)]
pub trait ProcessProbe {
    /// Does `pid` name a live (non-zombie) process?
    fn existence(&self, pid: i32) -> Existence;
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Real user id owning `pid`.
    fn owner_uid(&self, pid: i32) -> Option<u32>;
}

/// The real process table of this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveProcesses;

impl ProcessProbe for LiveProcesses {
    fn existence(&self, pid: i32) -> Existence {
        if pid <= 0 {
            return Existence::Gone;
        }
        match kill(Pid::from_raw(pid), None) {
            // A process that exits between kill() and the read of /proc is
            // reported alive: the safe side, since alive never leads to removal.
            Ok(()) | Err(Errno::EPERM) => match proc_state(pid) {
                Some('Z') | Some('X') => Existence::Zombie,
                _ => Existence::Alive,
            },
            Err(Errno::ESRCH) => Existence::Gone,
            Err(e) => Existence::Unknown(format!("kill({pid}, 0) failed: {}", e.desc())),
        }
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat).map(|s| s.start_time)
    }

    fn owner_uid(&self, pid: i32) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|uid| uid.parse().ok())
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| s.state)
}

/// The fields of `/proc/<pid>/stat` this tool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `Z`, …
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Parent of `pid`, from `/proc`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| s.ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_with_a_start_time() {
        let me = std::process::id() as i32;
        assert_eq!(LiveProcesses.existence(me), Existence::Alive);
        assert!(LiveProcesses.start_time(me).is_some());
        assert_eq!(
            LiveProcesses.owner_uid(me),
            Some(nix::unistd::getuid().as_raw())
        );
    }

    #[test]
    fn reaped_child_is_gone_and_unreaped_child_is_zombie() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Wait for it to exit without reaping it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_state(pid) != Some('Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(LiveProcesses.existence(pid), Existence::Zombie);
        child.wait().unwrap();
        assert_eq!(LiveProcesses.existence(pid), Existence::Gone);
    }
}
