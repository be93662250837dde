#!/usr/bin/env bash
# Claim latency: one `agentlock claim` + `release` cycle against what a spawner
# would otherwise run, `flock(1)` on the same guard file around a plain write,
# in one hyperfine run (warm, medians), as ratios.
#
#   scripts/bench-claim.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=200
[ "${1:-}" = "--runs" ] && runs=$2
command -v hyperfine >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet --bin agentlock
. scripts/lib/target.sh; target=$(target_dir)
bin=$target/release/agentlock
dir=$(mktemp -d /tmp/agentlock-bench-claim.XXXXXX)
sleep 10000 & holder=$!
trap 'kill $holder; rm -rf "$dir"' EXIT
export TMUX_TMPDIR=$dir/tmux; mkdir -p "$TMUX_TMPDIR"; unset TMUX TMUX_PANE
w=$dir/w; mkdir -p "$w/.runtime"; : > "$w/.runtime/agent.lock.flock"
json=$(mktemp)
hyperfine -N --warmup 20 --runs "$runs" --export-json "$json" \
  -n "flock(1) + write" "flock $w/.runtime/agent.lock.flock sh -c 'echo {\\\"pid\\\":$holder} > $w/.runtime/x'" \
  -n "agentlock claim" "$bin claim -q --pid $holder $w" \
  -n "agentlock claim + release" "sh -c '$bin claim -q --pid $holder $w && $bin release -q --pid $holder $w'" \
  -n "agentlock status" "$bin status $w" >/dev/null
python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["flock(1) + write"]["median"]
for k, v in r.items():
    print(f"{k:28} median {v['median']*1000:7.2f} ms   x{v['median']/base:5.2f} of flock(1)")
PY
rm -f "$json"
