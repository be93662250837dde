//! Builds a synthetic "town" of agent workers for the scan benchmark:
//! rigs → crew and polecats → worker checkouts with nested source dirs,
//! `.git/objects/..`, some `node_modules`, and ~60% of workers locked with
//! Go-format lock files (dead PIDs, some with tmux session names).
//!
//! Usage: cargo run --release --example mktown -- ROOT [--dirs N]
//! Prints: dirs, files, workers, locks.

use std::fs;
use std::path::Path;

const CREW: usize = 5;
const POLECATS: usize = 20;

struct Counts {
    dirs: usize,
    files: usize,
    workers: usize,
    locks: usize,
}

fn mkdir(p: &Path, c: &mut Counts) {
    fs::create_dir_all(p).unwrap();
    c.dirs += 1;
}

fn touch(p: &Path, body: &str, c: &mut Counts) {
    fs::write(p, body).unwrap();
    c.files += 1;
}

fn worker(w: &Path, n: usize, host: &str, c: &mut Counts) {
    mkdir(w, c);
    c.workers += 1;
    touch(&w.join("README.md"), "# worker\n", c);
    // Nested source tree: 3 modules x 3 packages x 2 levels + tests/docs.
    for m in 0..3 {
        for p in 0..3 {
            let d = w.join(format!("src/mod{m}/pkg{p}"));
            mkdir(&d, c);
            touch(&d.join("lib.rs"), "fn f() {}\n", c);
            let inner = d.join("inner");
            mkdir(&inner, c);
            touch(&inner.join("x.rs"), "\n", c);
        }
        mkdir(&w.join(format!("src/mod{m}")), c);
    }
    for d in ["src", "tests", "docs", "docs/design", "scripts"] {
        mkdir(&w.join(d), c);
        touch(&w.join(d).join("file.txt"), "x\n", c);
    }
    // .git with 64 object fan-out dirs.
    for d in [
        "refs/heads",
        "refs/tags",
        "hooks",
        "info",
        "logs/refs/heads",
    ] {
        mkdir(&w.join(".git").join(d), c);
    }
    for i in 0..64 {
        let d = w.join(format!(".git/objects/{i:02x}"));
        mkdir(&d, c);
        touch(&d.join("0123456789abcdef"), "blob", c);
    }
    touch(&w.join(".git/HEAD"), "ref: refs/heads/main\n", c);
    // Every fourth worker has node_modules.
    if n.is_multiple_of(4) {
        for p in 0..15 {
            for sub in ["lib", "dist"] {
                let d = w.join(format!("node_modules/pkg{p}/{sub}"));
                mkdir(&d, c);
                touch(&d.join("index.js"), "\n", c);
            }
        }
    }
    // ~60% of workers locked, as the Go tool writes it; PIDs above pid_max are dead.
    if n % 5 < 3 {
        let rt = w.join(".runtime");
        mkdir(&rt, c);
        let session = if n.is_multiple_of(2) {
            format!(",\n  \"session_id\": \"gt-worker-{n}\"")
        } else {
            String::new()
        };
        touch(
            &rt.join("agent.lock"),
            &format!(
                "{{\n  \"pid\": {},\n  \"acquired_at\": \"2026-01-05T10:00:00.123456789-08:00\"{session},\n  \"hostname\": \"{host}\"\n}}",
                5_000_000 + n
            ),
            c,
        );
        touch(&rt.join("agent.lock.flock"), "", c);
        c.locks += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(args.get(1).expect("usage: mktown ROOT [--dirs N]"));
    let target: usize = args
        .iter()
        .position(|a| a == "--dirs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--dirs N"))
        .unwrap_or(100_000);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let mut c = Counts {
        dirs: 0,
        files: 0,
        workers: 0,
        locks: 0,
    };
    let mut n = 0;
    let mut rig = 0;
    while c.dirs < target {
        let r = root.join(format!("rig{rig:03}"));
        for d in ["mayor", "refinery/rig", "witness"] {
            mkdir(&r.join(d), &mut c);
        }
        for i in 0..CREW + POLECATS {
            let kind = if i < CREW { "crew" } else { "polecats" };
            worker(&r.join(kind).join(format!("w{i:02}")), n, &host, &mut c);
            n += 1;
        }
        rig += 1;
    }
    println!(
        "dirs={} files={} workers={} locks={}",
        c.dirs, c.files, c.workers, c.locks
    );
}
