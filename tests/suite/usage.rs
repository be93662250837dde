//! The command line's surface: colour as `--color` and the environment say
//! (clap's help and errors included), the global options shown once and
//! accepted everywhere, directory hints in the completion scripts, and the
//! tip a `run` without `--` gets.

use crate::common::*;

const ESC: u8 = 0x1b;

/// `agentlock ARGS` with the colour variables unset, then `env` set.
fn agentlock(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = sb.std_cmd();
    for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied()).args(args).output().unwrap()
}

fn has_esc(bytes: &[u8]) -> bool {
    bytes.contains(&ESC)
}

#[test]
fn color_always_reaches_clap_errors_and_help() {
    let sb = Sandbox::new();
    let out = agentlock(&sb, &[], &["--color", "always", "claim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(has_esc(&out.stderr), "{out:?}");
    let out = agentlock(&sb, &[], &["claim", "--color=always"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(has_esc(&out.stderr), "{out:?}");
    // --color always wins over NO_COLOR.
    let out = agentlock(&sb, &[("NO_COLOR", "1")], &["--color", "always", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(has_esc(&out.stdout), "{out:?}");
}

#[test]
fn color_never_wins_over_clicolor_force() {
    let sb = Sandbox::new();
    let force = [("CLICOLOR_FORCE", "1")];
    let out = agentlock(&sb, &force, &["--color", "never", "claim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!has_esc(&out.stderr), "{out:?}");
    let out = agentlock(&sb, &force, &["--color=never", "--help"]);
    assert!(!has_esc(&out.stdout), "{out:?}");
    // Without --color, CLICOLOR_FORCE colours a pipe.
    let out = agentlock(&sb, &force, &["claim"]);
    assert!(has_esc(&out.stderr), "{out:?}");
}

#[test]
fn a_pipe_gets_no_colour_by_default() {
    let sb = Sandbox::new();
    let out = agentlock(&sb, &[], &["claim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!has_esc(&out.stderr), "{out:?}");
    let out = agentlock(&sb, &[], &["--help"]);
    assert!(!has_esc(&out.stdout), "{out:?}");
}

/// agentlock's own coloured words follow the same choice as clap's.
#[test]
fn states_are_coloured_by_the_same_choice() {
    let sb = Sandbox::new();
    let w = sb.worker("w");
    let w = w.to_str().unwrap();
    let status = |env: &[(&str, &str)], extra: &[&str]| {
        let out = agentlock(&sb, env, &[&["status", w][..], extra].concat());
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        out.stdout
    };
    assert!(!has_esc(&status(&[], &[])));
    let coloured = status(&[], &["--color", "always"]);
    assert!(has_esc(&coloured));
    assert!(
        String::from_utf8_lossy(&coloured).contains("\x1b[32mfree\x1b[0m"),
        "{}",
        String::from_utf8_lossy(&coloured)
    );
    assert!(has_esc(&status(&[("CLICOLOR_FORCE", "1")], &[])));
    assert!(!has_esc(&status(
        &[("CLICOLOR_FORCE", "1")],
        &["--color=never"]
    )));
    assert!(!has_esc(&status(&[("NO_COLOR", "1")], &[])));
    assert!(has_esc(&status(&[("NO_COLOR", "1")], &["--color=always"])));
}

#[test]
fn global_options_are_shown_once_and_accepted_after_a_command() {
    let sb = Sandbox::new();
    let top = agentlock(&sb, &[], &["--help"]);
    let top = String::from_utf8(top.stdout).unwrap();
    for opt in ["--tmux-socket", "--quiet", "--color"] {
        assert!(top.contains(opt), "{opt}: {top}");
    }
    assert_eq!(
        top.contains("--store <ADDR>"),
        cfg!(feature = "etcd"),
        "{top}"
    );
    for cmd in [
        "claim",
        "release",
        "check",
        "status",
        "run",
        "list",
        "doctor",
        "completions",
        "keeper",
        "man",
    ] {
        let out = agentlock(&sb, &[], &[cmd, "--help"]);
        let help = String::from_utf8(out.stdout).unwrap();
        for opt in [
            "--tmux-socket",
            "--quiet",
            "--color",
            "--store",
            "--fleet-root",
        ] {
            assert!(
                !help.lines().any(|l| l.trim_start().starts_with(opt)),
                "{cmd} --help shows {opt}:\n{help}"
            );
        }
        assert!(
            help.ends_with("\nGlobal options: see `agentlock --help`.\n"),
            "{cmd}:\n{help}"
        );
    }
    let w = sb.worker("w");
    let out = agentlock(
        &sb,
        &[],
        &["status", w.to_str().unwrap(), "--quiet", "--color", "never"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// zsh completes claim's WORKER (and every worker, root and --dir) with
/// directories. bash's generator gives positionals no hint (they fall back
/// to its default file and directory completion); its options get
/// `plusdirs`.
#[test]
fn completions_hint_directories() {
    let sb = Sandbox::new();
    let script = |shell: &str| {
        let out = agentlock(&sb, &[], &["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let zsh = script("zsh");
    let claim = zsh.split("(claim)\n").nth(1).unwrap();
    let claim = claim.split("\n;;\n").next().unwrap();
    assert!(
        claim.contains("'*::workers -- Worker directory (several with --first-free):_files -/'"),
        "{claim}"
    );
    assert!(zsh.contains(":worker -- Worker directory:_files -/'"));
    assert!(zsh.contains("::root -- Root of the tree to scan"));
    assert!(zsh.contains("'*::command -- The command and its arguments:_cmdambivalent'"));
    let bash = script("bash");
    let man = bash.split("agentlock__subcmd__man)").nth(1).unwrap();
    let dir = man.split("--dir)").nth(1).unwrap();
    let dir = dir.split(";;").next().unwrap();
    assert!(dir.contains("compopt -o plusdirs"), "{dir}");
    assert!(bash.contains("-o bashdefault -o default agentlock"));
    let fish = script("fish");
    assert!(fish.contains("__fish_complete_directories"));
}

#[test]
fn run_without_its_double_dash_gets_a_tip() {
    let sb = Sandbox::new();
    let out = agentlock(&sb, &[], &["run", "w", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: unexpected argument 'true' found

  tip: put the command after --: agentlock run w -- true

Usage: agentlock run [OPTIONS] <WORKER> -- <COMMAND>...

For more information, try '--help'.
"
    );
    // Words that need quoting are quoted, control characters included.
    let out = agentlock(&sb, &[], &["run", "--wait=5s", "my w", "it's", "$(x)\x1b"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let tip = err.lines().find(|l| l.contains("tip:")).unwrap();
    assert_eq!(
        tip,
        r#"  tip: put the command after --: agentlock run --wait=5s 'my w' -- "it's" $'$(x)\x1b'"#
    );
    assert!(!tip.contains('\x1b'));
    assert_eq!(out.stdout, b"");
}

/// `--wait 5s` (a space, not `=`): 5s would be a worker, and with
/// `--first-free` over held workers a wait without limit. Refused at once,
/// saying how to write it; nothing is claimed or queued.
#[test]
fn a_wait_duration_given_with_a_space_is_refused_with_the_fix() {
    let sb = Sandbox::new();
    let (a, b) = (sb.worker("pool/1"), sb.worker("pool/2"));
    let holder = sleeper();
    for w in [&a, &b] {
        sb.claim(w, holder.pid(), &[]).success();
    }
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = agentlock(&sb, &[], &["claim", "--first-free", a, b, "--wait", "5s"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: '--wait 5s': 5s was taken as a worker, not as the time to wait; give it with =: --wait=5s

Usage: agentlock [OPTIONS] <COMMAND>

For more information, try '--help'.
"
    );
    let out = agentlock(&sb, &[], &["run", a, "--wait", "5s", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("tip: give --wait its duration with =: --wait=5s"),
        "{err}"
    );
    // A worker really named 5s is a worker.
    let five = sb.worker("5s");
    sb.cmd()
        .current_dir(sb.path())
        .args(["claim", "--pid", &holder.pid().to_string(), "--wait", "5s"])
        .assert()
        .success();
    assert!(lock_path(&five).exists());
}
