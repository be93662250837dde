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
