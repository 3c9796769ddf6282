#!/usr/bin/env bash
# `kiln daemon` driven by BuildKit's buildctl, against in-process `kiln build` of the same
# Dockerfiles with the same binary, in the same run:
#   1. warm no-op rebuild (every step cached, no export): buildctl through the daemon vs
#      `kiln build` (hyperfine, medians); the daemon's target is 50 ms end to end;
#   2. 8 clients at once building 8 different small Dockerfiles through the daemon vs the same
#      8 built one after another in-process (fresh steps each round: a round marker);
#   3. the daemon's resident memory before and after 100 warm builds.
#
#   bash bench/daemon.sh          (as root, with the test registry of scripts/test-env.sh)
#   ROUNDS=3 PROFILE=debug bash bench/daemon.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
rounds=${ROUNDS:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
flag=(); [ "$profile" = release ] && flag=(--release)
(cd "$here" && cargo build -q "${flag[@]}" -p kiln)
kiln=$CARGO_TARGET_DIR/$profile/kiln
buildctl=${KILN_BUILDCTL:-$here/../shared/tools/buildctl}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-daemon-bench.XXXXXX")
sock=$work/kiln.sock
"$kiln" --root "$work/daemon-root" daemon --addr "unix://$sock" 2>"$work/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

# dockerfile DIR N MARKER: a small three-step build.
dockerfile() {
  mkdir -p "$1"
  printf 'FROM 127.0.0.1:5000/library/busybox:latest\nCOPY app.txt /app.txt\nRUN echo %s-%s > /n && sha256sum /app.txt /n > /sums\nRUN cat /sums /n > /all\n' "$2" "$3" >"$1/Dockerfile"
  echo "app $2" >"$1/app.txt"
}
via_daemon() { # DIR
  "$buildctl" --addr "unix://$sock" build --frontend dockerfile.v0 \
    --local "context=$1" --local "dockerfile=$1" >/dev/null 2>&1
}
in_process() { # ROOT DIR
  "$kiln" --root "$1" build -q "$2" >/dev/null
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

echo "== 1. warm no-op rebuild"
dockerfile "$work/warm" 0 warm
via_daemon "$work/warm"
in_process "$work/cli-root" "$work/warm"
hyperfine -N --warmup 3 --runs $((rounds * 4)) --export-json "$work/warm.json" \
  -n daemon "$buildctl --addr unix://$sock build --frontend dockerfile.v0 --local context=$work/warm --local dockerfile=$work/warm" \
  -n in-process "$kiln --root $work/cli-root build -q $work/warm" >/dev/null
python3 - "$work/warm.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
d, c = r["daemon"]["median"], r["in-process"]["median"]
print(f"daemon      {d*1000:7.1f} ms (median)   target 50 ms")
print(f"in-process  {c*1000:7.1f} ms (median)   daemon / in-process = {d/c:.2f}")
PY

echo "== 2. 8 clients at once vs 8 builds one after another (cold steps, $rounds rounds)"
for round in $(seq "$rounds"); do
  for n in $(seq 8); do dockerfile "$work/c$round-$n" "$n" "r$round"; done
  start=$(date +%s.%N)
  clients=()
  for n in $(seq 8); do via_daemon "$work/c$round-$n" & clients+=($!); done
  for client in "${clients[@]}"; do wait "$client"; done
  mid=$(date +%s.%N)
  for n in $(seq 8); do in_process "$work/seq-root" "$work/c$round-$n"; done
  end=$(date +%s.%N)
  python3 -c "c=$mid-$start; s=$end-$mid; print(f'round $round: 8 concurrent via daemon {c:.2f} s, 8 sequential in-process {s:.2f} s, ratio {c/s:.2f}')"
done

echo "== 3. daemon memory over 100 warm builds"
before=$(rss_kb)
for _ in $(seq 100); do via_daemon "$work/warm"; done
after=$(rss_kb)
echo "daemon RSS: $before kB before, $after kB after 100 builds"
