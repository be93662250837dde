//! Unit tests of `tmux_query`.
use super::*;

#[test]
fn failure_classification() {
    assert_eq!(
        classify_failure("no server running on /tmp/tmux-0/x").0,
        ServerState::NoServer
    );
    assert_eq!(
        classify_failure("error connecting to /tmp/x (Connection refused)").0,
        ServerState::NoServer
    );
    assert_eq!(
        classify_failure("error connecting to /tmp/x (Permission denied)").0,
        ServerState::Error
    );
    assert_eq!(classify_failure("").0, ServerState::Error);
}

#[test]
fn targets_are_made_exact() {
    assert_eq!(exact_target("main:0.0"), "=main:0.0");
    assert_eq!(exact_target("agent:editor"), "=agent:=editor");
    assert_eq!(exact_target("=main:1"), "=main:1");
    assert_eq!(exact_target("$3:0.1"), "$3:0.1");
    assert_eq!(exact_target("main:@2.%5"), "=main:@2.%5");
    assert_eq!(exact_target("main."), "=main.");
}

#[test]
fn a_run_that_spent_its_time_on_tmux_asks_no_more() {
    let t = Tmux::new(TmuxQuery {
        timeout: Duration::from_millis(100),
        ..TmuxQuery::default()
    });
    *t.spent.lock().unwrap() = Duration::from_millis(100) * BUDGET;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let _l = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    t.ensure([socket.as_path()]);
    let snap = t.lock().1.clone();
    let r = snap.server(&socket).unwrap();
    assert_eq!(r.state, ServerState::Error);
    assert!(
        r.detail.contains("not asked: this run spent"),
        "{}",
        r.detail
    );
    // A refresh (before acting on a verdict) starts a new allowance.
    t.refresh();
    t.ensure([socket.as_path()]);
    let snap = t.lock().1.clone();
    assert!(
        snap.server(&socket)
            .unwrap()
            .detail
            .contains("not a tmux server")
    );
}
