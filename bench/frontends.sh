#!/usr/bin/env bash
# What a frontend image costs: the same small Dockerfile built with kiln's built-in frontend,
# through BuildKit's stock Dockerfile frontend image (`# syntax=docker/dockerfile:1`, run by
# kiln's gateway) and through kiln's own frontend image (`kiln gateway-frontend`, made by
# scripts/frontend-image.sh), with the same binary in the same run:
#   1. warm no-op rebuild (every step cached, no export), hyperfine medians;
#   2. a cold build of the same file (fresh store, base image already pulled).
#
#   bash bench/frontends.sh          (as root, with the test registry of scripts/test-env.sh)
#   RUNS=5 PROFILE=debug bash bench/frontends.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
runs=${RUNS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
flag=(); [ "$profile" = release ] && flag=(--release)
(cd "$here" && cargo build -q "${flag[@]}" -p kiln)
kiln=$CARGO_TARGET_DIR/$profile/kiln
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-frontends-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
printf '[registry."docker.io"]\nmirrors = ["127.0.0.1:5000"]\n' >"$work/kiln.toml"
own=127.0.0.1:5000/kiln-bench/kiln-frontend:$$
bash "$here/scripts/frontend-image.sh" "$kiln" "$own" --root "$work/publish" --config "$work/kiln.toml" >/dev/null

# context NAME SYNTAX: a three-step build whose Dockerfile names SYNTAX (none: no line).
context() {
  mkdir -p "$work/$1"
  { [ -n "$2" ] && echo "# syntax=$2"
    printf 'FROM busybox\nCOPY app.txt /app.txt\nRUN sha256sum /app.txt > /sum\nRUN cat /sum > /all\n'
  } >"$work/$1/Dockerfile"
  echo "app" >"$work/$1/app.txt"
}
context builtin ""
context stock docker/dockerfile:1
context own "$own"
build() { # ROOT CONTEXT
  "$kiln" --root "$1" --config "$work/kiln.toml" build -q "$work/$2" >/dev/null
}
export -f build
export kiln work
for c in builtin stock own; do build "$work/warm" "$c"; done

echo "== warm no-op rebuild"
hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/warm.json" \
  -n built-in "bash -c 'build $work/warm builtin'" \
  -n stock-image "bash -c 'build $work/warm stock'" \
  -n kiln-image "bash -c 'build $work/warm own'" >/dev/null
echo "== cold build (fresh store each run, base image and frontend images pulled first)"
hyperfine -N --runs "$((runs / 2 > 2 ? runs / 2 : 3))" --export-json "$work/cold.json" \
  --prepare "bash -c 'rm -rf $work/cold && for i in busybox docker/dockerfile:1 $own; do $kiln --root $work/cold --config $work/kiln.toml pull \$i >/dev/null; done'" \
  -n built-in "bash -c 'build $work/cold builtin'" \
  -n stock-image "bash -c 'build $work/cold stock'" \
  -n kiln-image "bash -c 'build $work/cold own'" >/dev/null
python3 - "$work/warm.json" "$work/cold.json" <<'PY'
import json, sys
for path, title in zip(sys.argv[1:], ["warm no-op rebuild", "cold build"]):
    results = {r["command"]: r["median"] for r in json.load(open(path))["results"]}
    base = results["built-in"]
    print(f"{title}: " + ", ".join(
        f"{name} {median * 1000:.1f} ms ({median / base:.2f}x)" for name, median in results.items()))
PY
