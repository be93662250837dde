#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian
# machine (tmux, perl, jq, util-linux's setpriv/unshare/flock, a C compiler,
# Go, etcd and etcdctl for the fleet store, protoc to build its client,
# man-db and groff to check the man pages, systemd-analyze to verify the
# units in contrib/systemd) when missing, then runs the whole suite with the
# `etcd` feature on. `.ci/run` calls this.
#
#   scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v perl >/dev/null 2>&1 || need+=(perl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v go >/dev/null 2>&1 || need+=(golang-go)
for t in setpriv unshare flock; do
  command -v "$t" >/dev/null 2>&1 || { need+=(util-linux); break; }
done
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler libprotobuf-dev)
command -v man >/dev/null 2>&1 || need+=(man-db groff-base)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${need[@]}"
fi
tmux -V
go version
etcd --version | head -1

cargo test --features etcd "$@"
