#!/usr/bin/env bash
# How build time grows with the number of steps: Dockerfiles of N `RUN` steps, each adding a
# layer (N = 10 50 100 200 300 by default), built cold on a store that already holds busybox.
# Prints seconds and milliseconds per step for each N, and the ratio of the per-step cost at
# the largest N to that at the smallest (flat = 1.0). Past ~80 layers the overlays are mounted
# layer by layer (see kiln_fsutil::mount_layers), so this also measures that path.
#
#   bash bench/steps.sh          (as root, with the test registry of scripts/test-env.sh)
#   STEPS="10 100" PROFILE=debug bash bench/steps.sh
#   BASELINE_KILN=/path/to/kiln bash bench/steps.sh   (also that binary, for a ratio)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
steps=${STEPS:-10 50 100 200 300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
flag=(); [ "$profile" = release ] && flag=(--release)
(cd "$here" && cargo build -q "${flag[@]}" -p kiln)
kiln=$CARGO_TARGET_DIR/$profile/kiln
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-steps.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat >"$work/kiln.toml" <<'TOML'
[registry."docker.io"]
mirrors = ["127.0.0.1:5000"]
TOML
mkdir -p "$work/warm"
printf 'FROM busybox\nRUN true\n' >"$work/warm/Dockerfile"
for n in $steps; do
  mkdir -p "$work/s$n"
  { echo "FROM busybox"; for i in $(seq 1 "$n"); do echo "RUN echo $i > /f$i"; done; } >"$work/s$n/Dockerfile"
done

# steps_of NAME KILN: the table for one binary, each on its own store.
steps_of() {
  local name=$1 bin=$2 store=$work/store-$1 first="" last="" n secs per
  "$bin" --root "$store" --config "$work/kiln.toml" build --progress=plain "$work/warm" >/dev/null
  echo "$name ($bin):"
  printf '%6s %10s %12s\n' steps seconds "ms/step"
  for n in $steps; do
    /usr/bin/time -f '%e' -o "$work/time" \
      "$bin" --root "$store" --config "$work/kiln.toml" build --progress=plain "$work/s$n" >"$work/log" 2>&1 \
      || { cat "$work/log"; exit 1; }
    secs=$(cat "$work/time")
    per=$(python3 -c "print('%.1f' % (float('$secs') * 1000 / $n))")
    printf '%6s %10s %12s\n' "$n" "$secs" "$per"
    [ -z "$first" ] && first=$per
    last=$per
  done
  python3 -c "print('per-step cost, largest / smallest N: %.2f (flat = 1.0)' % (float('$last') / float('$first')))"
}
steps_of this "$kiln"
# BASELINE_KILN=PATH: the same builds with another kiln binary, in the same run.
if [ -n "${BASELINE_KILN:-}" ]; then
  steps_of baseline "$BASELINE_KILN"
fi
