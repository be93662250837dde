#!/usr/bin/env bash
# Builds agentlock, makes a small demo town of workers in a temp dir, and shows
# what the tool says and does there: status, claim (refused, stale replaced,
# --first-free), run, check, release, list, doctor and doctor --fix. Uses a
# private tmux server (its own TMUX_TMPDIR) when tmux is installed, and ends
# only that server. Works wherever cargo puts its target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin agentlock
. scripts/lib/target.sh
target=$(target_dir)
bin="$target/release/agentlock"
export PATH="$target/release:$PATH"   # for the commands `run` starts
al() { echo "\$ agentlock $*"; "$bin" "$@" || echo "(exit $?)"; echo; }

town=$(mktemp -d /tmp/agentlock-demo.XXXXXX)
export TMUX_TMPDIR="$town/tmux"
mkdir -p "$TMUX_TMPDIR"
unset TMUX TMUX_PANE
sleep 600 & agent=$!
cleanup() {
  kill "$agent" 2>/dev/null || true
  command -v tmux >/dev/null && tmux -S "$sock" kill-server 2>/dev/null || true
  rm -rf "$town"
}
sock="$TMUX_TMPDIR/tmux-$(id -u)/demo"
trap cleanup EXIT

mkdir -p "$town"/rig/{crew/max,crew/joe,polecats/alpha,polecats/beta,polecats/gamma}
host=$(hostname)
dead_pid() { sh -c 'echo $$'; }
golock() { # worker pid [session]: a lock exactly as the Go tool writes it
  mkdir -p "$1/.runtime"
  local s=""; [ -n "${3:-}" ] && s=",
  \"session_id\": \"$3\""
  printf '{\n  "pid": %s,\n  "acquired_at": "%s"%s,\n  "hostname": "%s"\n}' \
    "$2" "$(date +%Y-%m-%dT%H:%M:%S.%N%:z)" "$s" "$host" > "$1/.runtime/agent.lock"
}

"$bin" claim -q --pid "$agent" "$town/rig/crew/max"        # held by a live agent
golock "$town/rig/crew/joe" "$(dead_pid)"                                       # stale: dead, no session
mkdir -p "$town/rig/polecats/beta/.runtime"; echo '{"pid": 0' > "$town/rig/polecats/beta/.runtime/agent.lock"  # corrupt
if command -v tmux >/dev/null; then
  mkdir -p "$(dirname "$sock")"; chmod 700 "$(dirname "$sock")"
  tmux -S "$sock" -f /dev/null new-session -d -s gt-polecat-alpha -c "$town/rig/polecats/alpha"
  pane=$(tmux -S "$sock" display -p -t gt-polecat-alpha '#{pane_id}')
  golock "$town/rig/polecats/alpha" "$(dead_pid)" "$pane"                        # spawner gone, agent lives in tmux
fi

cd "$town/rig"
al status crew/max crew/joe polecats/alpha polecats/beta polecats/gamma
al claim crew/max                   # refused: held by a live agent
al claim crew/joe                   # stale: replaced
al claim polecats/alpha             # refused while its tmux pane lives
al claim --first-free polecats/alpha polecats/beta polecats/gamma
al status --json polecats/beta
# run: held while the command runs (a stand-in for an agent), released when it exits
mkdir -p "$town/bin"
cat > "$town/bin/claude" <<'EOF'
#!/bin/sh
echo "claude (a stand-in) runs; its worker $AGENTLOCK_WORKER is now:"
agentlock status "$AGENTLOCK_WORKER"
EOF
chmod +x "$town/bin/claude"
PATH="$town/bin:$PATH" al run polecats/gamma -- claude
al status polecats/gamma
al check crew/max                   # exit 1: held by the live agent
al check crew/joe                   # exit 0: this script claimed it above
al release crew/max                 # refused: this script is not its holder
al release crew/joe                 # released by its holder
al release --pid "$agent" crew/max  # released for the agent (as its exit hook would)
mkdir -p crew/old/.runtime && printf '{"pid": %s}' "$(dead_pid)" > crew/old/.runtime/agent.lock   # another stale one
al list
al doctor
al doctor --fix
