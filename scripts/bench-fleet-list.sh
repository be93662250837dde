#!/usr/bin/env bash
# Listing the fleet store at 1,000, 10,000 and 100,000 workers (one private
# etcd member on this machine, in one run): `agentlock list --json` on the
# store (paged reads, every record judged and printed) against what a user
# would otherwise run, `etcdctl get --prefix --keys-only` (keys only, no
# judging): hyperfine medians and their ratio, and the peak memory of each
# (GNU time, max RSS). Records are written by examples/fleet_fill.rs:
# another host's, as in a real fleet.
#
#   scripts/bench-fleet-list.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
[ "${1:-}" = "--runs" ] && runs=$2
cargo build --release --quiet --features etcd --bin agentlock --example fleet_fill
. scripts/lib/target.sh; target=$(target_dir)
bin=$target/release/agentlock
fill=$target/release/examples/fleet_fill
dir=$(mktemp -d /tmp/agentlock-bench-list.XXXXXX)
. scripts/lib/etcd.sh
start_etcd "$dir"
trap 'set +e; kill $etcd_pid; wait $etcd_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
export ETCDCTL_API=3 XDG_RUNTIME_DIR=$dir/xdg TMUX_TMPDIR=$dir/tmux
mkdir -p "$XDG_RUNTIME_DIR" "$TMUX_TMPDIR" "$dir/town"; unset TMUX TMUX_PANE
printf '%-8s %-34s %10s %10s %8s\n' workers command median peak-RSS ratio
for n in 1000 10000 100000; do
  "$fill" "http://$ep" "/l$n" "$n"
  list="$bin --store etcd://$ep/l$n --fleet-root $dir/town list --json"
  get="etcdctl --endpoints $ep get --prefix --keys-only /l$n/workers/"
  [ "$($list | grep -c '"worker_dir"')" = "$n" ] || { echo "list did not show $n workers" >&2; exit 1; }
  json=$(mktemp)
  hyperfine -N --warmup 1 --runs "$runs" --export-json "$json" -n etcdctl "$get" -n agentlock "$list" >/dev/null
  rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
  python3 - "$json" "$n" "$(rss $get)" "$(rss $list)" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
n, rss = sys.argv[2], {"etcdctl": sys.argv[3], "agentlock": sys.argv[4]}
for k in ("etcdctl", "agentlock"):
    label = "etcdctl get --prefix --keys-only" if k == "etcdctl" else "agentlock list --json (store)"
    print(f"{n:8} {label:34} {r[k]*1000:8.1f}ms {int(rss[k])/1024:8.1f}MB  x{r[k]/r['etcdctl']:.2f}")
PY
  rm -f "$json"
done
