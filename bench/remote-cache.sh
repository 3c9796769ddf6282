#!/usr/bin/env bash
# The CI scenario of a remote cache: a 20-step, two-stage build whose first stage makes a
# 200 MB intermediate layer, built and pushed from an empty store
#   1. cold, without a cache export (the baseline),
#   2. cold, exporting the cache to the registry with mode=max (the export's cost is 2 - 1),
#   3. from another empty store with --cache-from that cache, pushing the same image again,
# each ROUNDS times, with peak RSS and the blob bytes the third build's store ends with (what
# it downloaded: manifests and configs, and the layers of any step that had to run; a result
# pushed back to the same registry is mounted there, not downloaded). Prints seconds per
# case, ratios to the cold build, and whether step 3 made the same image.
#
#   bash bench/remote-cache.sh          (as root, with the test registry of scripts/test-env.sh)
#   ROUNDS=1 PROFILE=debug bash bench/remote-cache.sh
#   KILN=/path/to/kiln bash bench/remote-cache.sh   (that binary, not one built from here:
#                                                  a baseline measured the same way)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-release}
rounds=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
if [ -n "${KILN:-}" ]; then
  kiln=$KILN
else
  flag=(); [ "$profile" = release ] && flag=(--release)
  (cd "$here" && cargo build -q "${flag[@]}" -p kiln)
  kiln=$CARGO_TARGET_DIR/$profile/kiln
fi
work=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-remote-cache.XXXXXX")
trap 'rm -rf "$work"' EXIT
reg=127.0.0.1:5000/kiln-bench/remote-cache-$$

mkdir -p "$work/ctx"
{
  echo "FROM 127.0.0.1:5000/library/busybox:latest AS build"
  echo "RUN head -c 200000000 /dev/urandom > /big"
  echo "RUN sha256sum /big > /big.sum"
  echo "FROM 127.0.0.1:5000/library/busybox:latest"
  echo "COPY --from=build /big.sum /big.sum"
  echo "COPY app.txt /app.txt"
  for i in $(seq 1 15); do echo "RUN echo step $i > /step$i"; done
} >"$work/ctx/Dockerfile"
echo "the app" >"$work/ctx/app.txt"

# run NAME ROOT ARGS...: one timed build from an empty store; prints "seconds max_rss_kb".
run() {
  local name=$1 root=$2; shift 2
  rm -rf "$root"
  /usr/bin/time -f '%e %M' -o "$work/time" \
    "$kiln" --root "$root" build --progress=plain "$@" "$work/ctx" >"$work/$name.log" 2>&1 \
    || { cat "$work/$name.log"; exit 1; }
  cat "$work/time"
}

printf '%-28s %8s %8s %10s\n' case seconds ratio "rss MB"
for round in $(seq 1 "$rounds"); do
  # Without the provenance a push adds by default (it records the build's times), so the
  # tags name the images themselves and the last line compares them.
  read -r cold cold_rss < <(run cold "$work/a" -t "$reg:cold" --push --provenance=false)
  read -r exp exp_rss < <(run export "$work/b" -t "$reg:exported" --push --provenance=false \
    --cache-to "type=registry,ref=$reg:cache,mode=max")
  read -r warm warm_rss < <(run warm "$work/c" -t "$reg:warm" --push --provenance=false \
    --cache-from "$reg:cache")
  downloaded=$(du -sb "$work/c/blobs" | cut -f1)
  ratio() { python3 -c "print('%.3f' % (float('$1') / float('$cold')))"; }
  printf '%-28s %8s %8s %10s\n' "round $round cold" "$cold" 1.000 $((cold_rss / 1024))
  printf '%-28s %8s %8s %10s\n' "round $round cold + export" "$exp" "$(ratio "$exp")" $((exp_rss / 1024))
  printf '%-28s %8s %8s %10s\n' "round $round empty + cache-from" "$warm" "$(ratio "$warm")" $((warm_rss / 1024))
  printf '  blob bytes in the store after the build from the cache: %s\n' "$downloaded"
  grep -c CACHED "$work/warm.log" | xargs printf '  steps reported CACHED: %s\n'
done
same=$(skopeo inspect --raw --tls-verify=false "docker://$reg:exported" | sha256sum | cut -c1-16)
again=$(skopeo inspect --raw --tls-verify=false "docker://$reg:warm" | sha256sum | cut -c1-16)
echo "manifest of the exporting build: $same, of the build from the cache: $again"
