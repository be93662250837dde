#!/usr/bin/env bash
# Scan benchmark: agentlock list / doctor against find and fd on a synthetic town,
# in one run, warm cache, medians of several runs (hyperfine), as ratios.
#
#   scripts/bench-scan.sh            # ~100,000 directories
#   scripts/bench-scan.sh --large    # ~400,000 directories
#   options: --runs N (default 10), --keep (keep the town for the next run)
#
# Needs hyperfine and fd (Debian: fd-find); installs them with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=100000 runs=10 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --large) dirs=400000 ;;
    --runs) runs=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v fdfind >/dev/null || missing+=(fd-find)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else echo "please install: ${missing[*]}" >&2; exit 2; fi
fi

cargo build --release --quiet --bin agentlock --example mktown
. scripts/lib/target.sh; target=$(target_dir)
bin=$target/release/agentlock
town=${AGENTLOCK_BENCH_DIR:-/tmp/agentlock-bench-$dirs}
if [ ! -f "$town/.built" ]; then
  rm -rf "$town"
  echo "building a town of ~$dirs directories in $town ..."
  "$target"/release/examples/mktown "$town/town" --dirs "$dirs" > "$town.counts"
  touch "$town/.built"
fi
[ "$keep" = 1 ] || trap 'rm -rf "$town" "$town.counts"' EXIT
root=$town/town

# Private tmux dir: the benchmark never sees the user's tmux servers.
export TMUX_TMPDIR=$town/tmux
mkdir -p "$TMUX_TMPDIR"
unset TMUX TMUX_PANE

prune="'(' -name .git -o -name node_modules -o -name .dolt-data -o -name .dolt-backup ')' -prune -o"
find_pruned="find $root $prune -path '*/.runtime/agent.lock' -type f -print"
find_all="find $root -path '*/.runtime/agent.lock' -type f"
fd="fdfind -HI --no-ignore -j 2 -t f -p '/\.runtime/agent\.lock\$' -E .git -E node_modules -E .dolt-data -E .dolt-backup . $root"
list="$bin list $root"
doctor="$bin doctor $root"

# Same locks from every tool.
sorted() { sort | sed 's|/\.runtime/agent\.lock$||'; }
a=$(eval "$find_pruned" | sorted)
b=$(eval "$find_all" | sorted)
c=$(eval "$fd" | sorted)
d=$("$bin" list --json "$root" | grep '"lock_path"' | sed 's/.*"lock_path": "\(.*\)",*/\1/' | sorted)
n=$(printf '%s\n' "$a" | grep -c .)
for other in "$b" "$c" "$d"; do
  if [ "$other" != "$a" ]; then echo "MISMATCH: the tools found different locks" >&2; exit 1; fi
done
total_dirs=$(find "$root" -type d | wc -l)
echo "town: $total_dirs directories, $n locks; all tools found the same $n locks"

json=$(mktemp)
hyperfine -N -i --warmup 3 --runs "$runs" --export-json "$json" \
  -n find-pruned "$find_pruned" -n find-all "$find_all" -n fd-j2 "$fd" \
  -n "agentlock-list" "$list" -n "agentlock-doctor" "$doctor" >/dev/null 2>&1 || \
hyperfine -i --warmup 3 --runs "$runs" --export-json "$json" \
  -n find-pruned "$find_pruned" -n find-all "$find_all" -n fd-j2 "$fd" \
  -n "agentlock-list" "$list" -n "agentlock-doctor" "$doctor" >/dev/null

rss() { /usr/bin/time -f %M sh -c "$1 >/dev/null" 2>&1 | tail -1; }

python3 - "$json" "$(rss "$list")" "$(rss "$doctor")" "$(rss "$fd")" "$(rss "$find_pruned")" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
med = {k: v["median"] * 1000 for k, v in res.items()}
rss = dict(zip(["agentlock-list", "agentlock-doctor", "fd-j2", "find-pruned"], sys.argv[2:6]))
print(f"{'command':18} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'peak RSS':>10}")
for k, v in res.items():
    r = rss.get(k)
    print(f"{k:18} {med[k]:10.1f} {v['min']*1000:8.1f} {v['max']*1000:8.1f} {(r + ' KiB') if r else '':>10}")
l, d, fd, fp = med["agentlock-list"], med["agentlock-doctor"], med["fd-j2"], med["find-pruned"]
print()
print(f"list / fd -j2        = {l/fd:.2f}   (target <= 1.10)")
print(f"list / pruned find   = {l/fp:.2f}")
print(f"list / unpruned find = {l/med['find-all']:.2f}")
print(f"doctor / list        = {d/l:.2f}   (target <= 1.20)")
EOF
rm -f "$json"

# tmux is asked once per server, whatever the number of locks.
if command -v tmux >/dev/null; then
  sockdir="$TMUX_TMPDIR/tmux-$(id -u)"; mkdir -p "$sockdir"; chmod 700 "$sockdir"
  tmux -S "$sockdir/a" -f /dev/null new-session -d -s bench-a
  tmux -S "$sockdir/b" -f /dev/null new-session -d -s bench-b
  wrap=$(mktemp -d); log=$wrap/calls
  printf '#!/bin/sh\necho "$@" >> %s\nexec %s "$@"\n' "$log" "$(command -v tmux)" > "$wrap/tmux"; chmod +x "$wrap/tmux"
  PATH="$wrap:$PATH" "$bin" doctor "$root" >/dev/null || true
  echo "tmux calls by one doctor run over $n locks with 2 servers: $(wc -l < "$log")"
  tmux -S "$sockdir/a" kill-server; tmux -S "$sockdir/b" kill-server; rm -rf "$wrap"
fi
