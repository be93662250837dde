//! The man pages: `agentlock man --dir DIR` writes agentlock(1) and one
//! page per command; each renders without a warning from man-db and groff,
//! has the sections a reader looks for, names only pages that exist, and
//! is found by `man` once installed under a `man1` directory.

use crate::common::*;

use std::path::{Path, PathBuf};

/// Every page `man --dir` writes.
const PAGES: [&str; 11] = [
    "agentlock",
    "agentlock-claim",
    "agentlock-release",
    "agentlock-check",
    "agentlock-status",
    "agentlock-run",
    "agentlock-list",
    "agentlock-doctor",
    "agentlock-completions",
    "agentlock-keeper",
    "agentlock-man",
];

/// `agentlock man --dir DIR`: its stdout.
fn write_pages(sb: &Sandbox, dir: &Path, extra: &[&str]) -> String {
    let out = sb
        .cmd()
        .args(["man", "--dir"])
        .arg(dir)
        .args(extra)
        .assert()
        .code(0);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err, "", "stderr");
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn page_path(dir: &Path, page: &str) -> PathBuf {
    dir.join(format!("{page}.1"))
}

/// `MANWIDTH=80 man -l --warnings=all PAGE`: (stdout, stderr).
fn man_l(sb: &Sandbox, page: &Path) -> (String, String) {
    let out = sb
        .command("man")
        .env("MANWIDTH", "80")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .args(["-l", "--warnings=all"])
        .arg(page)
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {}", page.display());
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn man_dir_writes_every_page_creating_the_dir() {
    let sb = Sandbox::new();
    let dir = sb.path().join("share/man/man1");
    let said = write_pages(&sb, &dir, &[]);
    let expected: String = PAGES
        .iter()
        .map(|p| format!("{}\n", page_path(&dir, p).display()))
        .collect();
    assert_eq!(said, expected, "one line per file written");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    let mut want: Vec<String> = PAGES.iter().map(|p| format!("{p}.1")).collect();
    want.sort();
    assert_eq!(found, want);
    // Again, into the existing dir, quietly: nothing said, same pages.
    assert_eq!(write_pages(&sb, &dir, &["--quiet"]), "");
    // `agentlock man` prints agentlock.1 as written.
    let out = sb.cmd().arg("man").assert().code(0);
    let top = std::fs::read(page_path(&dir, "agentlock")).unwrap();
    assert_eq!(out.get_output().stdout, top);
}

#[test]
fn man_dir_errors_name_the_path() {
    let sb = Sandbox::new();
    let file = sb.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = sb
        .cmd()
        .args(["man", "--dir"])
        .arg(file.join("man1"))
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("agentlock: {}", file.join("man1").display())),
        "{err}"
    );
    assert!(out.get_output().stdout.is_empty());
}

#[test]
fn every_page_renders_without_warnings_and_has_its_sections() {
    let sb = Sandbox::new();
    let dir = sb.path().join("man1");
    write_pages(&sb, &dir, &[]);
    for page in PAGES {
        let path = page_path(&dir, page);
        let (text, warnings) = man_l(&sb, &path);
        assert_eq!(warnings, "", "man -l --warnings=all {page}.1");
        let groff = sb
            .command("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(groff.status.success(), "{page}");
        assert_eq!(
            String::from_utf8_lossy(&groff.stderr),
            "",
            "groff -ww {page}.1"
        );
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                text.lines().any(|l| l == section),
                "{page}.1 has no {section} section:\n{text}"
            );
        }
        // Every page named in SEE ALSO (and anywhere else) was written.
        for named in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '(' || c == ')'))
            .filter_map(|w| w.strip_suffix("(1)"))
            .filter(|w| w.starts_with("agentlock"))
        {
            assert!(
                page_path(&dir, named).exists(),
                "{page}.1 names {named}(1), which does not exist"
            );
        }
        let see_also = text.split("\nSEE ALSO\n").nth(1).unwrap();
        assert!(see_also.contains("agentlock"), "{page}: {see_also}");
    }
}

/// The pages tell what the code does: every `AGENTLOCK_*` variable in the
/// source is in agentlock(1)'s ENVIRONMENT, and a command's page shows its
/// own options, not the global ones (those are in agentlock(1)).
#[test]
fn pages_cover_the_environment_and_show_global_options_once() {
    let sb = Sandbox::new();
    let dir = sb.path().join("man1");
    write_pages(&sb, &dir, &[]);
    let (top, _) = man_l(&sb, &page_path(&dir, "agentlock"));
    let env = top
        .split("\nENVIRONMENT\n")
        .nth(1)
        .and_then(|s| s.split("\nFILES\n").next())
        .unwrap();
    let mut vars = std::collections::BTreeSet::new();
    for entry in walkdir::WalkDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")) {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            for (i, _) in text.match_indices("AGENTLOCK_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                vars.insert(name);
            }
        }
    }
    assert!(vars.len() >= 8, "{vars:?}");
    // A tag is alone on its line, or (when short) followed by its text.
    let tagged = |text: &str, tag: &str| {
        text.lines()
            .any(|l| l.split_whitespace().next() == Some(tag))
    };
    // The fleet store's settings are hidden with its options without etcd.
    let fleet = [
        "AGENTLOCK_STORE",
        "AGENTLOCK_FLEET_ROOT",
        "AGENTLOCK_STORE_TIMEOUT",
        "AGENTLOCK_LEASE_TTL",
    ];
    for var in vars.iter().chain(&["AGENTLOCK_LOG".to_string()]) {
        if fleet.contains(&var.as_str()) {
            assert_eq!(tagged(env, var), cfg!(feature = "etcd"), "{var}");
            continue;
        }
        assert!(
            tagged(env, var),
            "agentlock(1) ENVIRONMENT lacks {var}:\n{env}"
        );
    }
    for var in [
        "NO_COLOR",
        "TMUX",
        "TMUX_PANE",
        "TMUX_TMPDIR",
        "XDG_RUNTIME_DIR",
    ] {
        assert!(tagged(env, var), "{var}:\n{env}");
    }
    for file in [
        "WORKER/.runtime/agent.lock",
        "WORKER/.runtime/agent.lock.flock",
        "WORKER/.runtime/agent.lock.wait.NUMBER",
        "WORKER/.runtime/agent.lock.corrupt-TIMESTAMP",
    ] {
        assert!(tagged(&top, file), "{file}");
    }
    assert!(top.contains("--tmux-socket"));
    let (claim, _) = man_l(&sb, &page_path(&dir, "agentlock-claim"));
    let options = claim.split("\nOPTIONS\n").nth(1).unwrap();
    assert!(options.contains("--first-free"));
    assert!(
        !options
            .lines()
            .any(|l| l.trim().starts_with("--tmux-socket") || l.trim().starts_with("--store")),
        "{options}"
    );
    let (run, _) = man_l(&sb, &page_path(&dir, "agentlock-run"));
    assert!(
        run.contains("agentlock run [OPTIONS] <WORKER> -- <COMMAND>..."),
        "{run}"
    );
}

/// Installed as the man page documents it (`man --dir .../man1`), `man`
/// finds each page by name through `-M` and `MANPATH`.
#[test]
fn installed_pages_are_found_by_name() {
    let sb = Sandbox::new();
    let root = sb.path().join("share/man");
    write_pages(&sb, &root.join("man1"), &["-q"]);
    for page in ["agentlock-claim", "agentlock"] {
        let out = sb
            .command("man")
            .env("MANWIDTH", "80")
            .env_remove("MANPAGER")
            .env_remove("PAGER")
            .arg("-M")
            .arg(&root)
            .arg(page)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man -M {page}: {out:?}");
        assert!(text.starts_with(&format!("{page}(1)")), "{text}");
        let out = sb
            .command("man")
            .env("MANWIDTH", "80")
            .env("MANPATH", &root)
            .env_remove("MANPAGER")
            .env_remove("PAGER")
            .arg(page)
            .output()
            .unwrap();
        assert!(out.status.success(), "MANPATH man {page}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{page}(1)")));
    }
}

/// A page already in DIR is replaced, never written through: a symlink
/// planted there (by whoever can write DIR, before root runs `man --dir`)
/// is replaced by the page, its target left alone; a hard link's other
/// name keeps its bytes; a page owned by another user becomes the writer's.
#[test]
fn man_dir_replaces_existing_pages_never_writes_through_them() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let dir = sb.path().join("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = sb.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, page_path(&dir, "agentlock-claim")).unwrap();
    let linked = sb.path().join("linked");
    std::fs::write(&linked, "mine too\n").unwrap();
    std::fs::hard_link(&linked, page_path(&dir, "agentlock-run")).unwrap();
    // A dangling symlink: the page is not created at its target either.
    let nowhere = sb.path().join("nowhere");
    std::os::unix::fs::symlink(&nowhere, page_path(&dir, "agentlock-list")).unwrap();
    write_pages(&sb, &dir, &["--quiet"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read_to_string(&linked).unwrap(), "mine too\n");
    assert!(!nowhere.exists(), "a page written at a symlink's target");
    for page in PAGES {
        let path = page_path(&dir, page);
        let md = std::fs::symlink_metadata(&path).unwrap();
        assert!(md.file_type().is_file(), "{page}: {md:?}");
        assert_eq!(md.nlink(), 1, "{page}");
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(".ie"));
    }
    // Nothing else left in DIR (no temp files).
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), PAGES.len());
}
