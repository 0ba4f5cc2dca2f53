#!/usr/bin/env bash
# Size of the arm64 release bootstrap and zip at other opt-levels than the profile's (3), for comparison.
# Not part of `make bench` (each level is a full release build: minutes). Run after `make build`:
#     PATH=.tools/bench/bin:$PATH bench/opt-levels.sh [s z ...]
# Builds go to target/opt-levels/<level> (the profile in Cargo.toml is not changed).
set -euo pipefail
cd "$(dirname "$0")/.."
levels=("${@:-s z}")
printf '%-10s %12s %12s\n' opt-level bootstrap zip
for level in ${levels[@]}; do
  dir="target/opt-levels/$level"
  CARGO_PROFILE_RELEASE_OPT_LEVEL="$level" CARGO_TARGET_DIR="$dir" \
    cargo lambda build --quiet --release --arm64 --locked --bin ecs-rerun --output-format zip \
    --lambda-dir "$dir/lambda" >&2
  printf '%-10s %12d %12d\n' "$level" "$(stat -c %s "$dir/aarch64-unknown-linux-gnu/release/ecs-rerun")" \
    "$(stat -c %s "$dir/lambda/ecs-rerun/bootstrap.zip")"
done
