//! Collisions: one tmux pane or session holding live locks on several
//! workers, and a pane working inside a worker whose live lock names another.
//! Pane ids are per server, so everything is keyed by (server, id).

use super::{Finding, FindingKind, finding};
use crate::lock::Judgement;
use crate::probe::tmux::{SessionKind, TmuxSnapshot, pane_matches};
use crate::record::LockRecord;
use crate::verdict::{State, describe_session};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A key under which two locks name the same pane or session: its server
/// and its id. `None` when the server cannot be told (the session is on
/// several servers, or on none that answered): no collision is claimed then.
fn session_key(rec: &LockRecord, tmux: &TmuxSnapshot) -> Option<(PathBuf, String)> {
    let id = rec.session_id.as_deref()?;
    let socket = rec.tmux_socket.as_deref().map(Path::new);
    let mut on = tmux.matching(id, socket);
    let first = on.next()?;
    if on.any(|p| p.socket != first.socket) {
        return None;
    }
    let key = match SessionKind::of(id) {
        SessionKind::Pane | SessionKind::SessionId => id.to_string(),
        SessionKind::Name => first.session_id.clone(),
    };
    Some((first.socket.clone(), key))
}

fn is_live(ins: &Judgement) -> bool {
    matches!(ins.state, State::Held | State::HeldBySession)
}

pub(super) fn collisions(locks: &[Judgement], tmux: &TmuxSnapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    // One session/pane holding live locks on two or more workers.
    let mut by_session: BTreeMap<(PathBuf, String), Vec<(&Judgement, &str)>> = BTreeMap::new();
    for ins in locks
        .iter()
        .filter(|i| is_live(i) && i.session_alive == Some(true))
    {
        let Some(rec) = ins.record.as_ref() else {
            continue;
        };
        if let (Some(key), Some(s)) = (session_key(rec, tmux), rec.session_id.as_deref()) {
            by_session.entry(key).or_default().push((ins, s));
        }
    }
    for group in by_session.values().filter(|g| g.len() > 1) {
        let names: Vec<String> = group
            .iter()
            .map(|(i, _)| i.worker_dir.display().to_string())
            .collect();
        out.push(finding(
            FindingKind::Collision,
            &group[0].0.worker_dir,
            format!(
                "{} holds live locks on {} workers: {}; not fixed: decide which worker it keeps",
                describe_session(group[0].1),
                group.len(),
                names.join(", ")
            ),
            None,
        ));
    }
    // A pane working inside a worker whose live lock names another pane/session.
    let held: Vec<(&Judgement, &LockRecord, &str)> = locks
        .iter()
        .filter(|i| is_live(i))
        .filter_map(|i| {
            let rec = i.record.as_ref()?;
            Some((i, rec, rec.session_id.as_deref()?))
        })
        .collect();
    for pane in &tmux.panes {
        let inside = held
            .iter()
            .filter(|(i, ..)| pane.current_path.starts_with(&i.worker_dir))
            .max_by_key(|(i, ..)| i.worker_dir.as_os_str().len());
        let Some((ins, rec, recorded)) = inside else {
            continue;
        };
        let same_server = rec
            .tmux_socket
            .as_deref()
            .is_none_or(|s| pane.socket == Path::new(s));
        if !(same_server && pane_matches(pane, recorded)) {
            out.push(finding(
                FindingKind::Collision,
                &ins.worker_dir,
                format!(
                    "pane {} (session {}) is working inside this worker (tmux server {}), whose lock names {}; not fixed: two agents share one worker",
                    pane.pane_id,
                    pane.session_name,
                    pane.socket.display(),
                    describe_session(recorded)
                ),
                None,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tmux::parse_list_panes;
    use crate::verdict::State;

    fn ins(dir: &str, state: State, session: &str) -> Judgement {
        Judgement {
            record: Some(LockRecord {
                pid: 1,
                session_id: Some(session.into()),
                ..LockRecord::default()
            }),
            session_alive: Some(true),
            ..Judgement::at(
                Path::new(dir),
                &Path::new(dir).join(".runtime/agent.lock"),
                state,
                String::new(),
            )
        }
    }

    fn tmux(panes: &str) -> TmuxSnapshot {
        TmuxSnapshot {
            servers: Vec::new(),
            panes: parse_list_panes(Path::new("/s/a"), panes),
        }
    }

    #[test]
    fn one_pane_holding_two_workers() {
        let t = tmux("9\t$1\t%3\t10\t/dev/pts/9\tmain\t/elsewhere\n");
        let f = collisions(
            &[
                ins("/t/a", State::Held, "%3"),
                ins("/t/b", State::HeldBySession, "%3"),
            ],
            &t,
        );
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("pane %3 holds live locks on 2 workers"),
            "{}",
            f[0].message
        );
        // A session name and its $N id are the same session.
        let f = collisions(
            &[
                ins("/t/a", State::Held, "main"),
                ins("/t/b", State::Held, "$1"),
            ],
            &t,
        );
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_foreign_pane_inside_a_held_worker() {
        let t = tmux(
            "9\t$1\t%3\t10\t/dev/pts/9\tmain\t/t/a/src\n9\t$2\t%4\t11\t/dev/pts/9\tother\t/t/a\n9\t$2\t%5\t12\t/dev/pts/9\tother\t/t/ab\n",
        );
        let f = collisions(&[ins("/t/a", State::Held, "%3")], &t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].message.starts_with(
                "pane %4 (session other) is working inside this worker (tmux server /s/a)"
            ),
            "{}",
            f[0].message
        );
        // Stale or orphaned locks are not live: no collision.
        let f = collisions(&[ins("/t/a", State::Stale, "%3")], &t);
        assert!(f.is_empty());
    }

    #[test]
    fn the_same_pane_id_on_two_servers_is_no_collision() {
        let mut t = tmux("9\t$0\t%0\t10\t/dev/pts/9\tmain\t/t/a\n");
        t.panes.extend(parse_list_panes(
            Path::new("/s/b"),
            "8\t$0\t%0\t20\t/dev/pts/9\tmain\t/t/b\n",
        ));
        let on = |dir: &str, socket: &str| {
            let mut i = ins(dir, State::Held, "%0");
            i.record.as_mut().unwrap().tmux_socket = Some(socket.into());
            i
        };
        let f = collisions(&[on("/t/a", "/s/a"), on("/t/b", "/s/b")], &t);
        assert!(f.is_empty(), "{f:?}");
        // Both on one server: a collision.
        let f = collisions(&[on("/t/a", "/s/a"), on("/t/b", "/s/a")], &t);
        assert_eq!(f.len(), 2, "{f:?}"); // two workers on one pane, and pane %0 of /s/b inside /t/b
    }
}
