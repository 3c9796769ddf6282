#!/usr/bin/env bash
# Export speed: kiln's image exporter (one build step's layer: tar + compression + both sha256
# digests, then the OCI layout tar) against `tar -c | pigz | sha256sum` on the same data, in the
# same script: a 500 MB random file and a directory of 20,000 small text files, with gzip
# (level 1, the pigz -1 match, and kiln's default 6) and zstd (level 3). Prints MB/s
# (uncompressed tar bytes per second) and the ratio to `tar | pigz -1 | sha256sum`.
#
#   bash bench/export.sh [WORKDIR]
#   BIG_MB=100 FILES=5000 RUNS=2 bash bench/export.sh    (a quicker, smaller run)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/kiln-export-bench.XXXXXX)}
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-3}
big_mb=${BIG_MB:-500}
files=${FILES:-20000}

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p kiln-exporters --example export
exporter=$target/release/examples/export

big=$work/big-$big_mb
many=$work/many-$files
mkdir -p "$big" "$many"
[ -f "$big/random.bin" ] || head -c "$((big_mb * 1000000))" /dev/urandom > "$big/random.bin"
if [ ! -f "$many/.done" ]; then
  python3 - "$many" "$files" <<'PY'
import os, random, sys
base, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
for i in range(count):
    d = os.path.join(base, f"d{i % 200:03}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(200, 12000)
    text = b" ".join(rng.choice(words) for _ in range(n // 5))[:n]
    with open(os.path.join(d, f"f{i:05}.txt"), "wb") as f:
        f.write(text)
open(os.path.join(base, ".done"), "w").close()
PY
fi

# Mean seconds of `$@` over $runs runs (after one warm-up run).
mean_of() {
  python3 - "$runs" "$@" <<'PY'
import subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2]
subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
total = 0.0
for _ in range(runs):
    start = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    total += time.perf_counter() - start
print(f"{total / runs:.3f}")
PY
}

# Mean seconds of the exporter's own timing of each export (store set-up excluded).
kiln_mean() {
  local dir=$1 store=$2
  shift 2
  "$exporter" "$dir" --store "$store" --runs "$((runs + 1))" --out "$work/out.tar" "$@" |
    awk 'NR > 1 { s += $3; n++ } END { printf "%.3f\n", s / n }'
}

echo "cores: $(nproc)   runs: $runs   data: $work"
printf '%-10s %-34s %9s %9s %7s\n' data command seconds "MB/s" ratio
for data in "$big" "$many"; do
  label=$(basename "$data")
  bytes=$(tar -C "$data" -c . | wc -c)
  store=$work/store-$label
  rm -rf "$store"
  base=$(mean_of "tar -C '$data' -c . | pigz -1 | sha256sum")
  rows=("tar|pigz -1|sha256sum=$base")
  rows+=("tar|pigz -6|sha256sum=$(mean_of "tar -C '$data' -c . | pigz -6 | sha256sum")")
  rows+=("tar|zstd -3 -T0|sha256sum=$(mean_of "tar -C '$data' -c . | zstd -q -3 -T0 | sha256sum")")
  rows+=("kiln export gzip -1=$(kiln_mean "$data" "$store" --compression gzip --level 1)")
  rows+=("kiln export gzip (default 6)=$(kiln_mean "$data" "$store" --compression gzip)")
  rows+=("kiln export zstd -3=$(kiln_mean "$data" "$store" --compression zstd --level 3)")
  rows+=("kiln export uncompressed=$(kiln_mean "$data" "$store" --compression uncompressed)")
  for row in "${rows[@]}"; do
    name=${row%=*}
    seconds=${row##*=}
    python3 -c "import sys; b, s, base = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'{sys.argv[4]:<10} {sys.argv[5]:<34} {s:>9.3f} {b / 1e6 / s:>9.1f} {base / s:>6.2f}x')" \
      "$bytes" "$seconds" "$base" "$label" "$name"
  done
  rm -rf "$store"
done
rm -f "$work/out.tar"
