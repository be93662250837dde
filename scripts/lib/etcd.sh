# Sourced by the fleet benchmarks: starts a private etcd member with its data
# in $1, on a random loopback port; sets etcd_pid and ep (HOST:PORT) and
# waits until it answers. The caller kills $etcd_pid (its own member only).
start_etcd() {
  local data=$1 port=$((20000 + RANDOM % 20000))
  local peer=$((port + 1))
  etcd --name b1 --data-dir "$data/etcd" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "b1=http://127.0.0.1:$peer" \
    >"$data/etcd.log" 2>&1 &
  etcd_pid=$!
  ep=127.0.0.1:$port
  for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$ep" get x >/dev/null 2>&1 && return; sleep 0.1; done
  echo "etcd did not answer on $ep" >&2
  return 1
}
