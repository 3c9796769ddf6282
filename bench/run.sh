#!/usr/bin/env bash
# What kiln's bridge network costs, against baselines measured in the same run:
#
#  1. per container: `kiln run --rm busybox true` on the default bridge against the same run
#     with `--network none` (the difference is the network's set-up and tear-down), and the
#     floor of that work done by iproute2 (a named network namespace, a veth pair on the
#     bridge, an address, a default route, and their removal);
#  2. time from `kiln run -p` (in the background) to the first successful HTTP response from
#     busybox httpd through the published port, median of RUNS tries;
#  3. per build step: a 30-step RUN chain built cold on the default network against
#     `--network=none` (the steps share pooled namespaces).
#
#   bash bench/run.sh            (as root, with the test registry of scripts/test-env.sh)
#   RUNS=20 PROFILE=debug bash bench/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
runs=${RUNS:-10}
flag=(); [ "$profile" = release ] && flag=(--release)
(cd "$here" && cargo build -q "${flag[@]}" -p kiln)
kiln=${CARGO_TARGET_DIR:-$here/target}/$profile/kiln
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-run.XXXXXX")
cleanup() {
  ip netns del kiln-bench 2>/dev/null || true
  ip link del kvbench0 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
"$kiln" load "$here/testdata/images/busybox" >/dev/null
"$kiln" run --rm busybox true # makes the bridge once

echo "== 1. network set-up per container (hyperfine, $runs runs)"
floor() {
  ip netns add kiln-bench
  ip link add kvbench0 type veth peer name eth0 netns kiln-bench
  ip link set kvbench0 master kiln0 up
  ip -n kiln-bench addr add 10.89.255.250/16 dev eth0
  ip -n kiln-bench link set eth0 up
  ip -n kiln-bench link set lo up
  ip -n kiln-bench route add default via 10.89.0.1
  ip link del kvbench0
  ip netns del kiln-bench
}
export -f floor
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/containers.json" \
  -n none "$kiln run --rm --network none busybox true" \
  -n bridge "$kiln run --rm busybox true" \
  -n iproute2-floor "bash -c floor" >/dev/null
python3 - "$work/containers.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
none, bridge, floor = (r[k]["median"] * 1000 for k in ("none", "bridge", "iproute2-floor"))
print(f"kiln run --network none: {none:7.1f} ms")
print(f"kiln run (bridge):       {bridge:7.1f} ms")
print(f"network set-up + tear-down in kiln: {bridge - none:5.1f} ms (target < 20 ms)")
print(f"the same with iproute2 commands:    {floor:5.1f} ms (kiln / iproute2 = {(bridge - none) / floor:.2f})")
PY

echo "== 2. kiln run -p to the first HTTP response (median of $runs)"
mkdir -p "$work/www" && echo hi >"$work/www/index.html"
port=18379
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$kiln" run --rm -p "127.0.0.1:$port:80" -v "$work/www:/www:ro" busybox httpd -f -p 80 -h /www &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.002; done
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000 )))
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "first response after %.1f ms (median)\n", a[int((NR+1)/2)]/1000}'

echo "== 3. a 30-step RUN chain, default network against none"
mkdir -p "$work/chain"
{ echo "FROM busybox"; for i in $(seq 1 30); do echo "RUN echo $i > /f$i"; done; } >"$work/chain/Dockerfile"
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/chain.json" \
  -n none "$kiln build --no-cache --network=none $work/chain" \
  -n default "$kiln build --no-cache $work/chain" >/dev/null
python3 - "$work/chain.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
none, default = r["none"]["median"], r["default"]["median"]
print(f"--network=none: {none:.3f} s   default (bridge): {default:.3f} s   "
      f"ratio {default / none:.2f}, {(default - none) * 1000 / 30:.2f} ms per step")
PY
