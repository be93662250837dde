#!/usr/bin/env bash
# Fleet claim latency: one `agentlock --store etcd://... claim` + `release`
# cycle against what a user would otherwise run on etcd, `etcdctl` creating
# the same key in one transaction and deleting it, in one hyperfine run
# against a private etcd member (warm, medians), as ratios. Needs the etcd
# feature (protoc), etcd, etcdctl and hyperfine.
#
#   scripts/bench-fleet.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=100
[ "${1:-}" = "--runs" ] && runs=$2
cargo build --release --quiet --features etcd --bin agentlock
bin=$PWD/target/release/agentlock
dir=$(mktemp -d /tmp/agentlock-bench-fleet.XXXXXX)
port=$((20000 + RANDOM % 20000)); peer=$((port + 1))
etcd --name b1 --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$port" \
  --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "b1=http://127.0.0.1:$peer" \
  >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
sleep 10000 & holder=$!
keeper_pid() { awk '{print $2}' "$dir"/xdg/agentlock/*.lease 2>/dev/null || true; }
trap 'k=$(keeper_pid); [ -n "$k" ] && kill "$k"; kill $holder $etcd_pid; wait $etcd_pid 2>/dev/null; rm -rf "$dir"' EXIT
export ETCDCTL_API=3 XDG_RUNTIME_DIR=$dir/xdg TMUX_TMPDIR=$dir/tmux
mkdir -p "$XDG_RUNTIME_DIR" "$TMUX_TMPDIR" "$dir/town/w"; unset TMUX TMUX_PANE
ep=127.0.0.1:$port
for _ in $(seq 100); do etcdctl --endpoints "$ep" get x >/dev/null 2>&1 && break; sleep 0.1; done
export AGENTLOCK_STORE=etcd://$ep/bench AGENTLOCK_FLEET_ROOT=$dir/town
"$bin" claim -q --pid $holder "$dir/town/w" && "$bin" release -q --pid $holder "$dir/town/w"  # starts the keeper
json=$(mktemp)
printf 'create("/raw/w") = "0"\n\nput /raw/w {"pid":%s}\n\nget /raw/w\n\n' $holder > "$dir/txn"
hyperfine -N --warmup 10 --runs "$runs" --export-json "$json" \
  -n "etcdctl txn + del" "sh -c 'etcdctl --endpoints $ep txn < $dir/txn >/dev/null && etcdctl --endpoints $ep del /raw/w >/dev/null'" \
  -n "agentlock claim + release (store)" "sh -c '$bin claim -q --pid $holder $dir/town/w && $bin release -q --pid $holder $dir/town/w'" \
  -n "agentlock status (store)" "$bin status $dir/town/w" >/dev/null
python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["etcdctl txn + del"]["median"]
for k, v in r.items():
    print(f"{k:36} median {v['median']*1000:7.2f} ms   x{v['median']/base:5.2f} of etcdctl")
PY
rm -f "$json"
