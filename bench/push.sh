#!/usr/bin/env bash
# Push speed: `kiln push` of an image with one ~500 MB layer to the registry on 127.0.0.1:5000
# against `skopeo copy` of the same OCI image layout to the same registry. Every run pushes to a
# fresh repository name (and skopeo an empty blob info cache, in a private mount namespace: run
# as root), so neither tool can skip or mount a blob the registry already has. Prints
# seconds, MB/s (blob bytes per second), the ratio to skopeo, and kiln's peak RSS.
#
#   bash bench/push.sh [WORKDIR]            (needs the registry of scripts/test-env.sh)
#   BIG_MB=100 RUNS=2 bash bench/push.sh    (a quicker, smaller run)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/kiln-push-bench.XXXXXX)}
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-3}
big_mb=${BIG_MB:-500}
registry=${REGISTRY:-127.0.0.1:5000}

curl -fsS "http://$registry/v2/" >/dev/null || { echo "no registry at $registry" >&2; exit 1; }
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p kiln -p kiln-exporters --example export
kiln=$target/release/kiln
exporter=$target/release/examples/export

# The image: one layer of random data (gzip -1, so the blob is about as big as the data), as an
# OCI layout directory that both tools read, loaded once into kiln's store.
data=$work/data-$big_mb
layout=$work/layout-$big_mb
store=$work/store
mkdir -p "$data"
[ -f "$data/random.bin" ] || head -c "$((big_mb * 1000000))" /dev/urandom > "$data/random.bin"
if [ ! -f "$layout/index.json" ]; then
  rm -rf "$work/export-store" "$layout"
  "$exporter" "$data" --store "$work/export-store" --compression gzip --level 1 --runs 1 \
    --out "$work/image.tar" >/dev/null
  mkdir -p "$layout"
  tar -C "$layout" -xf "$work/image.tar"
  rm -rf "$work/export-store" "$work/image.tar"
fi
rm -rf "$store"
source_name=$("$kiln" --root "$store" load "$layout" | sed -n 's/^Loaded image: //p' | head -1)
bytes=$(du -cb "$layout"/blobs/sha256/* | tail -1 | cut -f1)

echo "registry: $registry   runs: $runs   blobs: $bytes bytes   data: $work"
kiln_total=0 skopeo_total=0 kiln_rss=0
for run in $(seq "$runs"); do
  id=$(date +%s%N)
  name=$registry/bench/kiln-$id:latest
  "$kiln" --root "$store" tag "$source_name" "$name"
  /usr/bin/time -o "$work/time" -f '%e %M' "$kiln" --root "$store" push "$name" >/dev/null
  read -r seconds rss < "$work/time"
  "$kiln" --root "$store" rmi "$name" >/dev/null
  kiln_total=$(python3 -c "print($kiln_total + $seconds)")
  (( rss > kiln_rss )) && kiln_rss=$rss
  # skopeo remembers where it has seen each blob (its blob info cache) and would mount it from
  # the previous run's repository instead of uploading it: give it an empty cache every run.
  /usr/bin/time -o "$work/time" -f '%e %M' unshare -m sh -c '
    mkdir -p /var/lib/containers/cache && mount -t tmpfs none /var/lib/containers/cache &&
    exec skopeo copy -q --dest-tls-verify=false "$1" "$2"' sh \
    "oci:$layout:latest" "docker://$registry/bench/skopeo-$id:latest"
  read -r seconds _ < "$work/time"
  skopeo_total=$(python3 -c "print($skopeo_total + $seconds)")
done
python3 - "$bytes" "$runs" "$kiln_total" "$skopeo_total" "$kiln_rss" <<'PY'
import sys
size, runs, kiln, skopeo, rss = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
kiln, skopeo = kiln / runs, skopeo / runs
print(f"{'command':<14} {'seconds':>9} {'MB/s':>9} {'ratio':>7}")
print(f"{'skopeo copy':<14} {skopeo:>9.2f} {size / 1e6 / skopeo:>9.1f} {1:>6.2f}x")
print(f"{'kiln push':<14} {kiln:>9.2f} {size / 1e6 / kiln:>9.1f} {skopeo / kiln:>6.2f}x")
print(f"kiln push peak RSS: {rss / 1024:.1f} MiB")
PY
