#!/usr/bin/env bash
# Reliability figures: racing claimers / first-free pickers / run wrappers /
# doctor --fix / readers on a few workers with SIGKILLs injected, then the
# bad-input corpus. Prints one table; exits 1 if any failure count is non-zero.
#
#   scripts/reliability.sh                                # default: 30,000 rounds, 3,000 SIGKILLs (about a minute)
#   scripts/reliability.sh --rounds 200000 --kills 20000  # the long run in the README
#   options: --rounds N  --kills N  --minutes M (time limit, default 14)  --workers N  --holders N
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=30000 kills=3000 minutes=14 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --kills) kills=$2; shift ;;
    --minutes) minutes=$2; shift ;;
    --workers|--holders) extra+=("$1" "$2"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

cargo build --release --quiet --bin agentlock --example reliability
. scripts/lib/target.sh; target=$(target_dir)
start=$(date +%s)
status=0
"$target"/release/examples/reliability --bin "$target/release/agentlock" \
  --rounds "$rounds" --kills "$kills" --minutes "$minutes" "${extra[@]}" > /tmp/agentlock-reliability.$$ || status=1
corpus=$(cargo test --release --quiet --test suite bad_corpus -- --nocapture 2>&1 | grep 'bad inputs tried' || true)
[ -n "$corpus" ] || { corpus="bad inputs tried: FAILED"; status=1; }
bad=$(echo "$corpus" | sed -n 's/.*bad inputs tried: \([0-9A-Z]*\).*/\1/p')
panics=$(echo "$corpus" | sed -n 's/.*panics: \([0-9]*\).*/\1/p')
outside=$(echo "$corpus" | sed -n 's/.*outside the tree changed: \([0-9]*\).*/\1/p')

cat /tmp/agentlock-reliability.$$
rm -f /tmp/agentlock-reliability.$$
echo "| bad inputs tried (status, list, doctor, --fix, claim each) | $bad |"
echo "| panics on bad input | ${panics:-?} |"
echo "| files outside the tree changed by bad input | ${outside:-?} |"
echo "| wall time, whole script (s) | $(( $(date +%s) - start )) |"
exit $status
