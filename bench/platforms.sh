#!/usr/bin/env bash
# What an emulated step costs beyond QEMU's own start: a chain of N `RUN` steps built for
# linux/amd64 (native) and for linux/arm64 (QEMU user emulation), each step running one short
# process, against the floor measured in the same run: the same process started natively and
# under QEMU in a plain chroot of each platform's busybox. Prints the per-step times, QEMU's own
# start cost (emulated floor - native floor) and what is left beyond it:
#   overhead = (arm64 ms/step - amd64 ms/step) - (arm64 floor - amd64 floor)
#
#   bash bench/platforms.sh      (as root, with the test registry of scripts/test-env.sh)
#   STEPS=20 RUNS=5 PROFILE=debug bash bench/platforms.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
steps=${STEPS:-20}
runs=${RUNS:-3}
flag=(); [ "$profile" = release ] && flag=(--release)
(cd "$here" && cargo build -q "${flag[@]}" -p kiln)
kiln=${CARGO_TARGET_DIR:-$here/target}/$profile/kiln
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-platforms.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat >"$work/kiln.toml" <<'TOML'
[registry."docker.io"]
mirrors = ["127.0.0.1:5000"]
TOML
k() { "$kiln" --root "$work/store" --config "$work/kiln.toml" "$@"; }

# Each platform's busybox as a plain directory, for the floor.
mkdir -p "$work/base"
printf 'FROM busybox:multi\n' >"$work/base/Dockerfile"
k build --platform linux/amd64,linux/arm64 -o "type=local,dest=$work/roots" "$work/base" 2>/dev/null

mkdir -p "$work/chain"
{ echo "FROM busybox:multi"; for i in $(seq 1 "$steps"); do echo "RUN echo $i > /f$i"; done; } >"$work/chain/Dockerfile"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
per_step() { # platform -> median ms per step over $runs cold builds of the chain
  for _ in $(seq 1 "$runs"); do
    /usr/bin/time -f '%e' -o "$work/time" "$kiln" --root "$work/store" --config "$work/kiln.toml" \
      build --no-cache --platform "$1" "$work/chain" >/dev/null 2>&1
    python3 -c "print(float(open('$work/time').read()) * 1000 / $steps)"
  done | median
}
floor() { # root -> median ms of one `echo > file` process in a chroot of it
  hyperfine -N --runs 50 --warmup 5 --export-json "$work/h.json" \
    "chroot $1 /bin/sh -c 'echo 1 > /tmp/f'" >/dev/null 2>&1
  python3 -c "import json; print(json.load(open('$work/h.json'))['results'][0]['median'] * 1000)"
}
k build --platform linux/amd64,linux/arm64 "$work/chain" >/dev/null 2>&1  # pull both bases
amd64=$(per_step linux/amd64)
arm64=$(per_step linux/arm64)
native=$(floor "$work/roots/linux_amd64")
emulated=$(floor "$work/roots/linux_arm64")
python3 - "$amd64" "$arm64" "$native" "$emulated" <<'PY'
import sys
amd64, arm64, native, emulated = map(float, sys.argv[1:])
print(f"per step, amd64 (native)      {amd64:8.1f} ms")
print(f"per step, arm64 (emulated)    {arm64:8.1f} ms")
print(f"floor, native process         {native:8.2f} ms")
print(f"floor, emulated process       {emulated:8.2f} ms")
qemu = emulated - native
print(f"QEMU's own start cost         {qemu:8.2f} ms")
print(f"emulated step - native step   {arm64 - amd64:8.2f} ms")
print(f"overhead beyond QEMU's own    {arm64 - amd64 - qemu:8.2f} ms per step")
PY
