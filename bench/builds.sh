#!/usr/bin/env bash
# Build times of the five shapes of issue 17 (bench/cases/*/Dockerfile), cold (a fresh store
# that already holds busybox), warm (the same build again, nothing changed) and touched (one
# context file changed), medians of RUNS (3) with hyperfine; then the floors measured on the
# same machine in the same run (sha256sum of the 500 MiB layer, `tar c | sha256sum` of the
# 20,000-file context, the runner's cost per container) and the ratios to them.
#
# With BASELINE=REV (default: main), the 500 MiB and 20,000-file cases are also built by kiln at
# REV (built from `git archive REV`), so before and after come from one run; BASELINE_KILN=PATH
# takes an already built binary as that baseline instead. Then `kiln push` right after
# `-t` against `skopeo copy` of the same image (an OCI layout of it) to a fresh repository.
#
#   bash bench/builds.sh          (as root, with the test registry of scripts/test-env.sh)
#   RUNS=1 CASES="chain30 big500" BASELINE= bash bench/builds.sh
#   WORK=800 bash bench/builds.sh    (MiB per parallel6 stage, for ~1.6 s of CPU each)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
cases=${CASES:-chain30 multistage parallel6 big500 context20k}
baseline=${BASELINE-main}
registry=${REGISTRY:-127.0.0.1:5000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-builds.XXXXXX")
trap 'rm -rf "$work"' EXIT
curl -fsS "http://$registry/v2/" >/dev/null || { echo "no registry at $registry" >&2; exit 1; }

echo "building kiln (release)..." >&2
(cd "$here" && cargo build -q --release -p kiln && cargo build -q --release -p kiln-runner --example runner-bench)
kiln=$CARGO_TARGET_DIR/release/kiln
runner_bench=$CARGO_TARGET_DIR/release/examples/runner-bench
old=""
if [ -n "${BASELINE_KILN:-}" ]; then
  old=$BASELINE_KILN
  baseline="baseline ($old)"
elif [ -n "$baseline" ]; then
  echo "building kiln at $baseline (release)..." >&2
  # The sources stay beside the target dir, at one path, so the next run builds nothing again.
  baseline_target=${BASELINE_TARGET_DIR:-$CARGO_TARGET_DIR-baseline}
  src=$baseline_target/src
  rev=$(git -C "$here" rev-parse "$baseline")
  if [ "$(cat "$src/.rev" 2>/dev/null)" != "$rev" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$here" archive "$rev" | tar -x -C "$src"
    echo "$rev" >"$src/.rev"
  fi
  (cd "$src" && CARGO_TARGET_DIR=$baseline_target cargo build -q --release -p kiln)
  old=$baseline_target/release/kiln
fi

cat >"$work/kiln.toml" <<TOML
[registry."docker.io"]
mirrors = ["$registry"]
TOML
# The template store: busybox pulled. Each cold run starts from a copy of it.
"$kiln" --root "$work/template" --config "$work/kiln.toml" pull -q busybox >/dev/null
if [ -n "$old" ]; then
  "$old" --root "$work/template-old" --config "$work/kiln.toml" pull -q busybox >/dev/null
fi

# The contexts: the case's Dockerfile; context20k also gets 20,000 small files in 200 dirs.
for c in $cases; do
  mkdir -p "$work/ctx/$c"
  cp "$here/bench/cases/$c/Dockerfile" "$work/ctx/$c/"
done
if [[ " $cases " == *" context20k "* ]]; then
  python3 - "$work/ctx/context20k" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(200):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}.txt", "w") as out:
            out.write(f"file {d}/{f}\n" * 8)
PY
fi

median() { # hyperfine JSON -> median seconds
  python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"
}
hf() { # name, prepare, command
  hyperfine -N --style none --runs "$runs" --prepare "$2" --export-json "$work/$1.json" "$3" \
    >/dev/null 2>"$work/$1.err" || { cat "$work/$1.err" >&2; return 1; }
  median "$work/$1.json"
}

# A prepare command that gives a cold run a fresh store, a copy of TEMPLATE at STORE. The
# store of the run before is moved aside, not deleted: the whole work directory goes at the
# end. On ext4 without a journal, every inode created within a minute of many deletes in the
# same block group scans past each recently deleted inode (the kernel's `recently_deleted`),
# which made half of a cold 20,000-file build's CPU a cost of the bench's own `rm -rf`.
fresh() { # store, template
  echo "sh -c 'mkdir -p $work/old && { [ ! -e $1 ] || mv $1 $work/old/\$(date +%s%N); } && cp -a $2 $1'"
}

declare -A result
build_args() { # case -> the build's arguments
  case $1 in
    big500|context20k) echo "-t bench-$1:latest" ;;
    parallel6) [ -n "${WORK:-}" ] && echo "--build-arg WORK=$WORK" || echo "" ;;
    *) echo "" ;;
  esac
}
for c in $cases; do
  ctx=$work/ctx/$c
  cmd="$kiln --root $work/store --config $work/kiln.toml build --progress=plain $(build_args "$c") $ctx"
  echo "$c: cold..." >&2
  result[$c.cold]=$(hf "$c-cold" "$(fresh "$work/store" "$work/template")" "$cmd")
  echo "$c: warm..." >&2
  result[$c.warm]=$(hf "$c-warm" "true" "$cmd")
  if [ "$c" = context20k ]; then
    echo "$c: touched..." >&2
    result[$c.touched]=$(hf "$c-touched" "sh -c 'date +%s%N > $ctx/d100/f050.txt'" "$cmd")
  else
    result[$c.touched]=-
  fi
  if [ "$c" = context20k ] && [ -n "$old" ]; then
    echo "$c: cold and touched, kiln at $baseline..." >&2
    oldcmd="$old --root $work/store-old --config $work/kiln.toml build --progress=plain $(build_args "$c") $ctx"
    result[$c.cold_old]=$(hf "$c-cold-old" \
      "$(fresh "$work/store-old" "$work/template-old")" "$oldcmd")
    result[$c.touched_old]=$(hf "$c-touched-old" "sh -c 'date +%s%N > $ctx/d100/f050.txt'" "$oldcmd")
  fi
  if [ "$c" = big500 ] && [ -n "$old" ]; then
    echo "$c: cold, kiln at $baseline..." >&2
    result[$c.cold_old]=$(hf "$c-cold-old" \
      "$(fresh "$work/store-old" "$work/template-old")" \
      "$old --root $work/store-old --config $work/kiln.toml build --progress=plain -t bench-big500:latest $ctx")
  fi
done

# Push right after -t (the blobs are made by the push) against skopeo copy of the same image.
if [[ " $cases " == *" big500 "* ]]; then
  echo "big500: kiln push after -t..." >&2
  # Before each push: a fresh store, the -t build, a new repository name (nothing to mount).
  cat >"$work/push-prepare.sh" <<SH
set -e
$(fresh "$work/store" "$work/template")
$kiln --root $work/store --config $work/kiln.toml build -q -t bench-big500:latest $work/ctx/big500 >/dev/null
name=$registry/bench/kiln-push:\$(date +%s%N)
$kiln --root $work/store tag bench-big500:latest \$name
echo \$name > $work/push-name
SH
  printf '%s\n' "exec $kiln --root $work/store push \$(cat $work/push-name)" >"$work/push-kiln.sh"
  result[push.kiln]=$(hf push-kiln "sh $work/push-prepare.sh" "sh $work/push-kiln.sh")
  "$kiln" --root "$work/store" save --format oci -o "$work/big500-oci.tar" bench-big500:latest
  mkdir -p "$work/big500-oci" && tar -xf "$work/big500-oci.tar" -C "$work/big500-oci"
  rm -f "$work/big500-oci.tar"
  echo "big500: skopeo copy..." >&2
  # skopeo's blob info cache would mount the blob from the previous run's repository.
  cat >"$work/push-skopeo.sh" <<SH
mkdir -p /var/lib/containers/cache && mount -t tmpfs none /var/lib/containers/cache
exec skopeo copy -q --dest-tls-verify=false oci:$work/big500-oci docker://$registry/bench/skopeo-push:\$(date +%s%N)
SH
  result[push.skopeo]=$(hf push-skopeo "true" "unshare -m sh $work/push-skopeo.sh")
fi

# Floors.
echo "floors..." >&2
if [[ " $cases " == *" big500 "* ]]; then
  head -c $((500 * 1048576)) /dev/urandom >"$work/big"
  result[floor.sha]=$(hf floor-sha "true" "sha256sum $work/big")
  rm -f "$work/big"
fi
if [[ " $cases " == *" context20k "* ]]; then
  result[floor.tar]=$(hf floor-tar "true" "sh -c 'tar -C $work/ctx/context20k -c . | sha256sum'")
fi
mkdir -p "$work/rootfs-ctx"
printf 'FROM busybox\n' >"$work/rootfs-ctx/Dockerfile"
"$kiln" --root "$work/template" --config "$work/kiln.toml" build \
  --output "type=local,dest=$work/rootfs" "$work/rootfs-ctx" >/dev/null 2>&1
state=$(mktemp -d /dev/shm/kiln-builds-state.XXXXXX)
result[floor.runner]=$(KILN_RUNNER_STATE=$state "$runner_bench" "$work/rootfs" 50 |
  awk '/^median_us/ {printf "%.4f", $2/1000000}')
rm -rf "$state"

ratio() { python3 -c "import sys; a,b=sys.argv[1:]; print('-' if '-' in (a,b) or float(b)==0 else '%.2f' % (float(a)/float(b)))" "$1" "$2"; }
printf '\nmedians of %s runs, seconds\n' "$runs"
printf '  %-12s %8s %8s %8s\n' case cold warm touched
for c in $cases; do
  printf '  %-12s %8s %8s %8s\n' "$c" "${result[$c.cold]}" "${result[$c.warm]}" "${result[$c.touched]}"
done
printf '\nfloors, seconds\n'
[ -n "${result[floor.sha]:-}" ] && printf '  %-40s %8s\n' "sha256sum of 500 MiB" "${result[floor.sha]}"
[ -n "${result[floor.tar]:-}" ] && printf '  %-40s %8s\n' "tar c | sha256sum of the context" "${result[floor.tar]}"
printf '  %-40s %8s\n' "runner, one container" "${result[floor.runner]}"
printf '\nratios\n'
if [[ " $cases " == *" chain30 "* ]]; then
  printf '  %-52s %8s\n' "chain30 cold, per step / runner per container" \
    "$(python3 -c "print('%.2f' % (${result[chain30.cold]} / 30 / ${result[floor.runner]}))")"
fi
if [ -n "${result[floor.sha]:-}" ]; then
  printf '  %-52s %8s\n' "big500 cold / sha256sum of 500 MiB" "$(ratio "${result[big500.cold]}" "${result[floor.sha]}")"
  if [ -n "${result[big500.cold_old]:-}" ]; then
    printf '  %-52s %8s\n' "big500 cold at $baseline / sha256sum of 500 MiB" "$(ratio "${result[big500.cold_old]}" "${result[floor.sha]}")"
    printf '  %-52s %8s\n' "big500 cold, this / $baseline" "$(ratio "${result[big500.cold]}" "${result[big500.cold_old]}")"
    printf '  %-52s %8s s\n' "big500 cold at $baseline" "${result[big500.cold_old]}"
  fi
fi
if [ -n "${result[push.kiln]:-}" ]; then
  printf '  %-52s %8s  (%s s / %s s)\n' "kiln push after -t / skopeo copy" \
    "$(ratio "${result[push.kiln]}" "${result[push.skopeo]}")" "${result[push.kiln]}" "${result[push.skopeo]}"
fi
if [ -n "${result[floor.tar]:-}" ]; then
  printf '  %-52s %8s\n' "context20k cold / tar c | sha256sum" "$(ratio "${result[context20k.cold]}" "${result[floor.tar]}")"
  printf '  %-52s %8s\n' "context20k touched / tar c | sha256sum" "$(ratio "${result[context20k.touched]}" "${result[floor.tar]}")"
  if [ -n "${result[context20k.cold_old]:-}" ]; then
    for k in cold touched; do
      printf '  %-52s %8s  (%s s / %s s)\n' "context20k $k, this / $baseline" \
        "$(ratio "${result[context20k.$k]}" "${result[context20k.${k}_old]}")" \
        "${result[context20k.$k]}" "${result[context20k.${k}_old]}"
    done
  fi
fi
