#!/usr/bin/env bash
# Waiting for a worker, in one run (scripts/bench_wait.py does the work):
# how soon a waiter holds a freed worker (released, holder SIGKILLed, tmux
# session killed) with `agentlock claim --wait`, a `sleep 0.1` polling loop
# around `agentlock claim`, and `flock -w` on a plain file; on the fleet
# store, a waiter on host B after host A's holder ends against `etcdctl
# lock` handing over; arrival order of 20 waiters (one host, two hosts);
# the CPU of 100 idle waiters over 10 s. Medians of TRIALS (default 25).
# Needs the etcd feature (protoc), etcd, etcdctl, tmux, flock and unshare.
#
#   scripts/bench-wait.sh [--trials N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--trials" ] && export TRIALS=$2
cargo build --release --quiet --features etcd --bin agentlock
. scripts/lib/target.sh; target=$(target_dir)
export AGENTLOCK_BIN=$target/release/agentlock
dir=$(mktemp -d /tmp/agentlock-bench-wait.XXXXXX)
. scripts/lib/etcd.sh
start_etcd "$dir"
# The keepers this run's hosts started (their lease files are under $dir),
# each killed only while it still runs agentlock's keeper.
keeper_pids() { cat "$dir"/work/host-*/agentlock/*.lease 2>/dev/null | awk '{print $2}'; }
cleanup() {
  set +e
  for k in $(keeper_pids); do
    grep -qa keeper "/proc/$k/cmdline" 2>/dev/null && kill "$k"
  done
  kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir "$dir/work"
BENCH_DIR=$dir/work ETCD_ENDPOINT=http://$ep python3 scripts/bench_wait.py
