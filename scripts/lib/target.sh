# Sourced by the scripts: target_dir prints cargo's target directory
# (CARGO_TARGET_DIR, a .cargo/config.toml setting, or ./target), so that what
# `cargo build` made is found wherever cargo put it.
target_dir() {
  local meta
  meta=$(cargo metadata --format-version 1 --no-deps)
  if command -v jq >/dev/null; then
    jq -r .target_directory <<<"$meta"
  else
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta"
  fi
}
