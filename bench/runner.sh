#!/usr/bin/env bash
# Per-run cost of starting a container: /bin/true in a fresh container, N times (default 200),
# with kiln's runner (in-process, as a build uses it, and one container per process), runc,
# crun and the bare `unshare ... chroot` floor. Needs root, hyperfine, runc, python3.
# Usage: bash bench/runner.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-200}
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/kiln-bench.XXXXXX)
# The runner's per-run state belongs on a tmpfs (as /run usually is): deleting files on a
# disk filesystem mounted with `discard` waits for the device. runc and crun keep theirs there too.
state=$(mktemp -d /dev/shm/kiln-bench-state.XXXXXX)
trap 'rm -rf "$work" "$state"' EXIT

echo "building runner-bench (release)..." >&2
(cd "$root" && CARGO_TARGET_DIR=$target cargo build -q --release -p kiln-runner --example runner-bench)
bench_bin=$target/release/examples/runner-bench

# A busybox root filesystem.
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"

median_ms() { # hyperfine JSON -> median in ms
  python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$1"
}
hf() { # name, command...
  local name=$1; shift
  hyperfine -N --style none --warmup 5 --runs "$n" --export-json "$work/$name.json" "$@" >/dev/null 2>"$work/$name.err" || return 1
  median_ms "$work/$name.json"
}

declare -A result
echo "kiln in-process ($n runs)..." >&2
result[kiln_inproc]=$(KILN_RUNNER_STATE=$state "$bench_bin" "$rootfs" "$n" | awk '/^median_us/ {printf "%.3f", $2/1000}')
echo "kiln one process per container..." >&2
result[kiln_proc]=$(KILN_RUNNER_STATE=$state hf kiln "$bench_bin $rootfs 1")

(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" "$rootfs" <<'PY'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": False}
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(path, "w"), indent=2)
PY
echo "runc..." >&2
result[runc]=$(hf runc "runc --root $state/runc run --bundle $work/bundle kiln-bench") || result[runc]=unavailable
echo "crun..." >&2
if crun --root "$state/crun" run --bundle "$work/bundle" kiln-bench-probe >"$work/crun-probe.out" 2>&1; then
  result[crun]=$(hf crun "crun --root $state/crun run --bundle $work/bundle kiln-bench") || result[crun]=unavailable
else
  result[crun]=unavailable
  crun_why=$(tr '\n' ' ' < "$work/crun-probe.out")
fi
echo "floor..." >&2
result[floor]=$(hf floor "unshare -pfmuin --mount-proc chroot $rootfs /bin/true")

printf '\nmedian per run of /bin/true in a fresh container (%s runs)\n' "$n"
printf '  %-34s %10s ms\n' "kiln runner, in-process" "${result[kiln_inproc]}"
printf '  %-34s %10s ms\n' "kiln runner, one process per run" "${result[kiln_proc]}"
printf '  %-34s %10s ms\n' "runc run" "${result[runc]}"
if [ "${result[crun]}" = unavailable ]; then
  printf '  %-34s unavailable: %s\n' "crun run" "${crun_why:-see $work/crun.err}"
else
  printf '  %-34s %10s ms\n' "crun run" "${result[crun]}"
fi
printf '  %-34s %10s ms\n' "unshare -pfmuin chroot (floor)" "${result[floor]}"
ratio() { python3 -c 'import sys; a,b=sys.argv[1:]; print("%.2f" % (float(a)/float(b)) if b.replace(".","",1).isdigit() else "n/a")' "$1" "$2"; }
printf '\nratios (in-process / one-process-per-run)\n'
printf '  kiln/runc : %s / %s\n' "$(ratio "${result[kiln_inproc]}" "${result[runc]}")" "$(ratio "${result[kiln_proc]}" "${result[runc]}")"
printf '  kiln/floor: %s / %s\n' "$(ratio "${result[kiln_inproc]}" "${result[floor]}")" "$(ratio "${result[kiln_proc]}" "${result[floor]}")"
