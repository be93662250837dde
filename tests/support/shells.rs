//! Reliability actors for where agents really run: `sh -c` spawners (a
//! long-lived perl process running `agentlock claim` through a shell, as
//! Python's `shell=True` and `system(3)` do) and sandboxed agents (their own
//! mount and network namespaces, a private tmux directory on a tmpfs, a
//! claim whose process exits at once and whose pane lives on).

use super::{Ctx, mark_shell};
use std::sync::atomic::Ordering;

/// The perl spawner: claims through `sh -c`, marks its slot, checks the lock
/// names itself (not its shell), unmarks, releases through `sh -c`.
const SPAWNER: &str = r#"
use strict;
my ($bin, $markers, $id, $overlaps, $lost, @ws) = @ARGV;
my $cmd = join(" ", map { "'$_'" } ($bin, "claim", "-q", "--first-free", @ws));
my $slot = qx{$cmd};
exit 1 if $? != 0;
chomp $slot;
my ($base) = $slot =~ m{([^/]+)$};
my $d = "$markers/$base";
my $m = "$d/shell-$id-$$";
open(my $f, '>', $m) or die; close $f;
opendir(my $dh, $d) or die; my @n = grep { !/^\./ } readdir($dh); closedir $dh;
if (@n > 1) { open(my $o, '>>', $overlaps); print $o "@n\n"; close $o; }
select(undef, undef, undef, 0.003);
open(my $l, '<', "$slot/.runtime/agent.lock") or die; local $/; my $j = <$l>; close $l;
if ($j !~ /"pid": $$,/) { open(my $o, '>>', $lost); print $o "$slot\n"; close $o; }
unlink $m;
system("sh", "-c", "'$bin' release -q '$slot'") == 0 or exit 3;
exit 0;
"#;

/// `sh -c` spawners: each round a new perl process claims a slot through a
/// shell; the lock must name the perl process, so nobody else gets it.
pub(super) fn shell_spawner(ctx: &Ctx, id: usize) {
    let overlaps = ctx.cfg.dir.join(format!("overlaps-shell-{id}"));
    let lost = ctx.cfg.dir.join(format!("lost-shell-{id}"));
    while !ctx.finished() {
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let out = ctx
            .cmd_named("perl")
            .args(["-e", SPAWNER])
            .arg(&ctx.cfg.bin)
            .arg(&ctx.markers)
            .arg(id.to_string())
            .arg(&overlaps)
            .arg(&lost)
            .args(&ctx.workers)
            .output()
            .expect("perl runs");
        ctx.figures.operations.fetch_add(1, Ordering::Relaxed);
        match out.status.code() {
            Some(0) => {
                ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
                ctx.figures.shell_wins.fetch_add(1, Ordering::Relaxed);
            }
            Some(1) => {}
            other => ctx.figures.fail(
                &ctx.figures.unexpected_exits,
                format!(
                    "shell-{id} exit {other:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
        }
    }
    mark_shell(ctx, &format!("shell-{id}"), &overlaps, &lost);
}

/// A sandboxed agent: in its own mount and network namespaces, a tmux
/// server on a private tmpfs; it claims with its pane and a process that
/// exits at once (the spawner pattern), holds, and releases by its session.
/// From outside, the lock can never be proven stale: nobody else may get
/// the worker and `doctor --fix` must leave it.
pub(super) fn sandboxed(ctx: &Ctx, id: usize) {
    let overlaps = ctx.cfg.dir.join(format!("overlaps-sandbox-{id}"));
    let lost = ctx.cfg.dir.join(format!("lost-sandbox-{id}"));
    let tmux_dir = ctx.cfg.dir.join(format!("sandbox-tmux-{id}"));
    std::fs::create_dir_all(&tmux_dir).unwrap();
    let mut i = id;
    while !ctx.finished() {
        let w = &ctx.workers[i % ctx.workers.len()];
        i += 1;
        ctx.figures.rounds.fetch_add(1, Ordering::Relaxed);
        let d = ctx.marker_dir(w);
        let script = format!(
            "mount -t tmpfs none '{t}' || exit 4
export TMUX_TMPDIR='{t}'
tmux -f /dev/null new-session -d -s agent 'sleep 100000' || exit 5
# The spawner pattern: a shell claims for the pane and exits at once.
if sh -c 'echo $$ > \"$0\"; \"$1\" claim -q --session agent \"$2\" && :' '{t}.pid' '{bin}' '{w}'; then
  gone=$(cat '{t}.pid')
  m='{d}/sandbox-{id}-'$$; : > \"$m\"
  n=$(ls '{d}' | wc -l); [ \"$n\" -gt 1 ] && echo \"$(ls '{d}')\" >> '{o}'
  sleep 0.01
  grep -q \"\\\"pid\\\": $gone,\" '{w}/.runtime/agent.lock' || echo '{w}' >> '{lost}'
  rm -f \"$m\"
  '{bin}' release -q --session agent '{w}' || r=3
  r=${{r:-0}}
else
  r=1
fi
tmux kill-server
exit $r",
            t = tmux_dir.display(),
            bin = ctx.cfg.bin.display(),
            w = w.display(),
            d = d.display(),
            o = overlaps.display(),
            lost = lost.display(),
        );
        let out = ctx
            .cmd_named("unshare")
            .args(["--mount", "--net", "--fork", "sh", "-c", &script])
            .output()
            .expect("unshare runs");
        ctx.figures.operations.fetch_add(1, Ordering::Relaxed);
        match out.status.code() {
            Some(0) => {
                ctx.figures.wins.fetch_add(1, Ordering::Relaxed);
                ctx.figures.sandbox_wins.fetch_add(1, Ordering::Relaxed);
            }
            Some(1) => {}
            other => ctx.figures.fail(
                &ctx.figures.unexpected_exits,
                format!(
                    "sandbox-{id} exit {other:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
        }
    }
    mark_shell(ctx, &format!("sandbox-{id}"), &overlaps, &lost);
}
