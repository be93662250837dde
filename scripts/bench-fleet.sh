#!/usr/bin/env bash
# The fleet store against a private etcd member, in one run:
# 1. latency: one `agentlock --store etcd://... claim` + `release` cycle as
#    processes against what a user would otherwise run, `etcdctl` creating the
#    same key in one transaction and deleting it (hyperfine, warm, medians,
#    ratios);
# 2. claims per second from one host through the library (ops::claim +
#    ops::release, local file included) against the bare etcd transactions
#    (examples/fleet_rate.rs);
# 3. failover: host A (own hostname, own keeper, TTL $ttl s) claims, its
#    keeper is SIGKILLed (the host died), host B retries until it claims:
#    the time from the kill to B's claim (target: TTL + at most 2 s);
# 4. partition: host A's `run` holds a worker, etcd is SIGSTOPped (no
#    answers): the time until A's command gets SIGTERM, against the earliest
#    the lease could expire (TTL - TTL/3 after the stop: renewed every TTL/3).
# Needs the etcd feature (protoc), etcd, etcdctl, hyperfine and unshare.
#
#   scripts/bench-fleet.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=100
[ "${1:-}" = "--runs" ] && runs=$2
cargo build --release --quiet --features etcd --bin agentlock
. scripts/lib/target.sh; target=$(target_dir)
bin=$target/release/agentlock
dir=$(mktemp -d /tmp/agentlock-bench-fleet.XXXXXX)
. scripts/lib/etcd.sh
start_etcd "$dir"
sleep 10000 & holder=$!
keeper_pids() { cat "$dir"/xdg/agentlock/*.lease "$dir"/*/xdg/agentlock/*.lease 2>/dev/null | awk '{print $2}'; }
trap 'set +e; for k in $(keeper_pids); do kill "$k" 2>/dev/null; done; kill -CONT $etcd_pid; kill $holder $etcd_pid; wait $etcd_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
export ETCDCTL_API=3 XDG_RUNTIME_DIR=$dir/xdg TMUX_TMPDIR=$dir/tmux
mkdir -p "$XDG_RUNTIME_DIR" "$TMUX_TMPDIR" "$dir/town/w"; unset TMUX TMUX_PANE
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

echo
mkdir -p "$dir/rate"
cargo build --release --quiet --features etcd --example fleet_rate
"$target"/release/examples/fleet_rate "etcd://$ep/rate" "$dir/rate" 300

echo
ttl=5
host() { # host NAME ARGS...: agentlock as host NAME (own hostname, keeper and checkout)
  local name=$1; shift
  mkdir -p "$dir/$name/xdg" "$dir/$name/town/w"
  XDG_RUNTIME_DIR=$dir/$name/xdg AGENTLOCK_LEASE_TTL=$ttl AGENTLOCK_STORE=etcd://$ep/failover \
    AGENTLOCK_FLEET_ROOT=$dir/$name/town unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" "$bin" "$@"
}
for i in 1 2 3; do
  host a claim -q --pid $holder "$dir/a/town/w"
  kpid=$(awk '{print $2}' "$dir"/a/xdg/agentlock/*.lease)
  start=$(date +%s.%N)
  kill -9 "$kpid"
  until host b claim -q --pid $holder "$dir/b/town/w" 2>/dev/null; do sleep 0.05; done
  end=$(date +%s.%N)
  awk -v i="$i" -v s="$start" -v e="$end" -v t="$ttl" \
    'BEGIN { printf "failover %d: keeper SIGKILLed -> claimed on another host after %.2f s (TTL %d s)\n", i, e - s, t }'
  host b release -q --pid $holder "$dir/b/town/w"
  bk=$(awk '{print $2}' "$dir"/b/xdg/agentlock/*.lease 2>/dev/null || true)
  [ -n "$bk" ] && kill "$bk"
  rm -f "$dir"/a/xdg/agentlock/*.lease "$dir"/b/xdg/agentlock/*.lease
done

echo
for i in 1 2 3; do
  rm -f "$dir/term" "$dir/started"
  mkdir -p "$dir/a/town/p"
  host a --store-timeout 2 run "$dir/a/town/p" -- perl -e '
    $SIG{TERM} = sub { open my $f, ">", "'"$dir"'/term"; print $f `date +%s.%N`; exit 0 };
    open my $f, ">", "'"$dir"'/started"; close $f; sleep 1 while 1' 2>/dev/null &
  run_pid=$!
  until [ -e "$dir/started" ]; do sleep 0.05; done
  sleep 1
  start=$(date +%s.%N)
  kill -STOP $etcd_pid
  wait $run_pid || true
  kill -CONT $etcd_pid
  awk -v i="$i" -v s="$start" -v e="$(cat "$dir/term")" -v t="$ttl" \
    'BEGIN { printf "partition %d: etcd stopped -> command SIGTERMed after %.2f s (lease expires >= %.2f s after)\n", i, e - s, t - t / 3 }'
  for _ in $(seq 100); do etcdctl --endpoints "$ep" get x >/dev/null 2>&1 && break; sleep 0.1; done
done
