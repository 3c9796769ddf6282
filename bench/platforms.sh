#!/usr/bin/env bash
# What an emulated step costs beyond QEMU's own start: a chain of N `RUN` steps built for
# linux/amd64 (native), for linux/arm64 (QEMU registered on the host) and for linux/arm/v7
# (kiln's own emulator in the step's user namespace, where the host has no qemu-arm
# registration), each step running one short process, against the floor measured in the same
# run: the same process started natively and under QEMU (a chroot of each platform's busybox;
# qemu-arm-static started directly for arm). Prints the per-step times, QEMU's own start cost
# (emulated floor - native floor) and what is left beyond it:
#   overhead = (emulated ms/step - amd64 ms/step) - (emulated floor - amd64 floor)
# and the ratio of kiln's own emulator's step to the registered one's (arm/v7 : arm64).
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

mkdir -p "$work/chain" "$work/chain-arm" "$work/base-arm"
{ echo "FROM busybox:multi"; for i in $(seq 1 "$steps"); do echo "RUN echo $i > /f$i"; done; } >"$work/chain/Dockerfile"
sed 's/busybox:multi/busybox:armhf/' "$work/chain/Dockerfile" >"$work/chain-arm/Dockerfile"
printf 'FROM busybox:armhf\n' >"$work/base-arm/Dockerfile"
k build --platform linux/arm/v7 -o "type=local,dest=$work/roots/linux_arm_v7" "$work/base-arm" 2>/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
per_step() { # platform [chain] -> median ms per step over $runs cold builds of the chain
  for _ in $(seq 1 "$runs"); do
    /usr/bin/time -f '%e' -o "$work/time" "$kiln" --root "$work/store" --config "$work/kiln.toml" \
      build --no-cache --platform "$1" "$work/${2:-chain}" >/dev/null 2>&1
    python3 -c "print(float(open('$work/time').read()) * 1000 / $steps)"
  done | median
}
floor() { # command -> median ms of it (one `echo > file` process)
  hyperfine -N --runs 50 --warmup 5 --export-json "$work/h.json" "$1" >/dev/null 2>&1
  python3 -c "import json; print(json.load(open('$work/h.json'))['results'][0]['median'] * 1000)"
}
k build --platform linux/amd64,linux/arm64 "$work/chain" >/dev/null 2>&1  # pull the bases
k build --platform linux/arm/v7 "$work/chain-arm" >/dev/null 2>&1
amd64=$(per_step linux/amd64)
arm64=$(per_step linux/arm64)
arm=$(per_step linux/arm/v7 chain-arm)
native=$(floor "chroot $work/roots/linux_amd64 /bin/sh -c 'echo 1 > /tmp/f'")
emulated=$(floor "chroot $work/roots/linux_arm64 /bin/sh -c 'echo 1 > /tmp/f'")
emulated_arm=$(floor "qemu-arm-static $work/roots/linux_arm_v7/bin/sh -c 'echo 1 > $work/f'")
python3 - "$amd64" "$arm64" "$arm" "$native" "$emulated" "$emulated_arm" <<'PY'
import sys
amd64, arm64, arm, native, emulated, emulated_arm = map(float, sys.argv[1:])
print(f"per step, amd64 (native)                    {amd64:8.1f} ms")
print(f"per step, arm64 (host's registration)       {arm64:8.1f} ms")
print(f"per step, arm/v7 (kiln's own emulator)      {arm:8.1f} ms")
print(f"floor, native process                       {native:8.2f} ms")
print(f"floor, arm64 process under QEMU             {emulated:8.2f} ms")
print(f"floor, arm process under QEMU               {emulated_arm:8.2f} ms")
for name, step, floor in (("arm64", arm64, emulated), ("arm/v7", arm, emulated_arm)):
    qemu = floor - native
    print(f"{name}: QEMU's own start {qemu:6.2f} ms, step - native step {step - amd64:7.2f} ms, "
          f"overhead beyond QEMU's own {step - amd64 - qemu:7.2f} ms per step")
print(f"ratio arm/v7 step : arm64 step              {arm / arm64:8.3f}")
print(f"ratio arm/v7 step : amd64 step              {arm / amd64:8.3f}")
print(f"ratio arm64 step : amd64 step               {arm64 / amd64:8.3f}")
PY
