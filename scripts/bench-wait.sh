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
export AGENTLOCK_BIN=$PWD/target/release/agentlock
dir=$(mktemp -d /tmp/agentlock-bench-wait.XXXXXX)
. scripts/lib/etcd.sh
start_etcd "$dir"
keeper_pids() { cat /tmp/agentlock-bench-wait.*/host-*/agentlock/*.lease 2>/dev/null | awk '{print $2}'; }
trap 'for k in $(keeper_pids); do kill "$k" 2>/dev/null; done; kill $etcd_pid; wait $etcd_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
ETCD_ENDPOINT=http://$ep python3 scripts/bench_wait.py
