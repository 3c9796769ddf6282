#!/usr/bin/env bash
# Layer writing speed: kiln's layer writer (tar + compression + both sha256 digests in one pass)
# against `tar -c | gzip -1 | sha256sum` on the same data: a 500 MB random file and a directory
# of 20,000 small files. Prints MB/s (uncompressed tar bytes per second) and the ratio.
#
#   bash bench/layers.sh [WORKDIR]      (needs hyperfine, python3; builds the example in release)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/kiln-bench.XXXXXX)}
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-3}

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p kiln-cache --example layer-writer
writer=$target/release/examples/layer-writer

mkdir -p "$work/big" "$work/many"
[ -f "$work/big/random.bin" ] || head -c 500000000 /dev/urandom > "$work/big/random.bin"
if [ ! -f "$work/many/.done" ]; then
  python3 - "$work/many" <<'PY'
import os, random, sys
base = sys.argv[1]
rng = random.Random(1)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
for i in range(20000):
    d = os.path.join(base, f"d{i % 200:03}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(200, 12000)
    text = b" ".join(rng.choice(words) for _ in range(n // 5))[:n]
    with open(os.path.join(d, f"f{i:05}.txt"), "wb") as f:
        f.write(text)
open(os.path.join(base, ".done"), "w").close()
PY
fi

nproc_=$(nproc)
echo "cores: $nproc_   data: $work"
printf '%-8s %-36s %10s %10s %8s\n' data command seconds "MB/s" ratio
for data in big many; do
  dir=$work/$data
  bytes=$(tar -C "$dir" -c . | wc -c)
  json=$work/$data.json
  hyperfine --style none --warmup 1 --runs "$runs" --export-json "$json" \
    -n "tar|gzip -1|sha256sum" "tar -C '$dir' -c . | gzip -1 | sha256sum" \
    -n "kiln gzip -1 ($nproc_ threads)" "'$writer' '$dir' --compression gzip --level 1" \
    -n "kiln zstd -3 ($nproc_ threads)" "'$writer' '$dir' --compression zstd --level 3" \
    -n "kiln uncompressed" "'$writer' '$dir' --compression none" >/dev/null
  python3 - "$json" "$bytes" "$data" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
size = int(sys.argv[2])
base = results[0]["mean"]
for r in results:
    mbs = size / 1e6 / r["mean"]
    print(f'{sys.argv[3]:<8} {r["command"]:<36} {r["mean"]:>10.3f} {mbs:>10.1f} {base / r["mean"]:>7.2f}x')
PY
done
