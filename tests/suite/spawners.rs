//! Everyday spawners and the default holder: `system(3)` and other `sh -c`
//! spawners, pipelines inside `$(...)`, and a claimer whose parent dies
//! first. The lock names the process that goes on living, or nothing.

use crate::common::*;
use std::time::Duration;

/// `system(3)` (as Python's `shell=True` and make recipes do): `sh -c STRING`
/// whose last command is agentlock; the spawner then lives on.
const SPAWNER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int rc = system(argv[1]);
  FILE *f = fopen(argv[2], "w");
  fprintf(f, "%d\n", WEXITSTATUS(rc));
  fclose(f);
  sleep(600);
  return 0;
}
"#;

#[test]
fn a_system_spawner_is_the_holder_not_its_shell() {
    let sb = Sandbox::new();
    let spawner = compile_c(&sb, "spawner", SPAWNER);
    let w = sb.worker("pool/a");
    let run = |n: usize| {
        let rc = sb.path().join(format!("rc{n}"));
        let mut c = sb.command(&spawner);
        c.arg(format!("'{BIN}' claim -q '{}'", w.display()))
            .arg(&rc);
        let p = Proc(c.spawn().unwrap());
        wait_for("the spawner's claim", Duration::from_secs(30), || {
            std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n'))
        });
        let code: i32 = std::fs::read_to_string(&rc)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (p, code)
    };
    let (first, code) = run(1);
    assert_eq!(code, 0);
    assert_eq!(record_at(&w).pid, first.pid(), "the spawner, not its sh -c");
    assert_eq!(state_of(&sb, &w, &[]), "held");
    // A second spawner finds it held by the first, which lives on.
    let (_second, code) = run(2);
    assert_eq!(code, 1);
    assert_eq!(record_at(&w).pid, first.pid());
}

/// The shapes `system(3)` strings take: redirections, `|| exit 1`, a
/// trailing `echo`, wrappers with options. Each names the spawner.
#[test]
fn everyday_shell_strings_name_the_spawner() {
    let sb = Sandbox::new();
    let spawner = compile_c(&sb, "spawner", SPAWNER);
    let shapes = [
        "'{bin}' claim -q '{w}' >/dev/null 2>&1",
        "'{bin}' claim -q '{w}' < /dev/null || exit 1",
        "cd / && '{bin}' claim -q '{w}'; echo claimed",
        "nice -n 5 timeout -s KILL 30 '{bin}' claim -q '{w}'",
        "X=1 env -u NOPE '{bin}' claim -q '{w}' >/dev/null",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let w = sb.worker(&format!("pool/w{i}"));
        let rc = sb.path().join(format!("rc{i}"));
        let line = shape
            .replace("{bin}", BIN)
            .replace("{w}", w.to_str().unwrap());
        let mut c = sb.command(&spawner);
        c.arg(&line).arg(&rc);
        let p = Proc(c.spawn().unwrap());
        wait_for("the spawner's claim", Duration::from_secs(30), || {
            std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n'))
        });
        assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0", "{line}");
        assert_eq!(record_at(&w).pid, p.pid(), "{line}");
    }
}

#[test]
fn pipelines_inside_command_substitution_name_the_script() {
    let sb = Sandbox::new();
    let (a, b) = (sb.worker("pool/a"), sb.worker("pool/b"));
    let out = sb.path().join("slot");
    let script = format!(
        "get_slot() {{ '{BIN}' claim --first-free \"$@\"; }}
         slot=$(get_slot '{a}' | tail -n1)
         other=$( ('{BIN}' claim -q '{b}' && echo ok || echo none) | tail -1 )
         echo \"$slot $other\" > '{out}.tmp' && mv '{out}.tmp' '{out}'
         exec sleep 600",
        a = a.display(),
        b = b.display(),
        out = out.display()
    );
    let shell = sb.script("bash", &script);
    wait_for("the script's claims", Duration::from_secs(30), || {
        out.exists()
    });
    let said = std::fs::read_to_string(&out).unwrap();
    assert_eq!(said.trim(), format!("{} ok", a.display()));
    assert_eq!(record_at(&a).pid, shell.pid());
    assert_eq!(record_at(&b).pid, shell.pid());
    assert_eq!(state_of(&sb, &a, &[]), "held");
    assert_eq!(state_of(&sb, &b, &[]), "held");
}

/// A claimer whose invoker has exited before it could be named (reparented
/// to init): the claim fails and nothing is held, never a lock naming PID 1.
#[test]
fn a_claimer_whose_parent_died_holds_nothing() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let out = sb.path().join("out.json");
    // The inner sh waits for its parent (the subshell) to be gone, then
    // execs agentlock: an orphan from its first instruction.
    let script = format!(
        "( sh -c 'while [ $(cut -d\" \" -f4 /proc/$$/stat) != 1 ]; do sleep 0.01; done; exec \"$0\" claim --json \"$1\" > \"$2\"' '{BIN}' '{}' '{}' & )",
        w.display(),
        out.display()
    );
    let _s = sb.script("sh", &script);
    wait_for("the orphan's answer", Duration::from_secs(30), || {
        std::fs::read(&out).is_ok_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok())
    });
    let doc = json(&std::fs::read(&out).unwrap());
    assert_eq!(doc["error"]["kind"], "bad-pid", "{doc:#}");
    assert!(!lock_path(&w).exists(), "nothing is held");
    // And with it, no process is "the holder" of anything.
    let stranger = sleeper();
    sb.cmd()
        .args(["check", "--pid", &stranger.pid().to_string()])
        .arg(&w)
        .assert()
        .code(0)
        .stdout(predicates::str::contains("free"));
}
