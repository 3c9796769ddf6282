#!/usr/bin/env bash
# The README demo: build kiln, load busybox from testdata (no registry, no network), build the
# two-stage image in testdata/demo with -t, and run it.
# Usage: scripts/demo.sh [KILN_BINARY]   (as root; KILN_ROOT picks the store, default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${1:-}
if [ -z "$kiln" ]; then
  echo "+ cargo build --release -p kiln"
  cargo build --quiet --release -p kiln
  kiln=target/release/kiln
fi
root=${KILN_ROOT:-$(mktemp -d)}
export KILN_ROOT=$root
echo "+ kiln load testdata/images/busybox"
"$kiln" load testdata/images/busybox
echo "+ kiln build -t demo testdata/demo"
"$kiln" build -t demo testdata/demo
echo "+ kiln run --rm demo"
"$kiln" run --rm demo
