#!/usr/bin/env bash
# Runs the Dockerfile conformance corpus (testdata/conformance, the cases checked against
# BuildKit) with kiln, through the corpus runner beside the project (../shared/conformance).
# Needs the test registry (scripts/test-env.sh). Usage: scripts/conformance.sh [KILN_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
runner=${CONFORMANCE_RUNNER:-$here/../shared/conformance/run.sh}
kiln=${1:-$here/target/debug/kiln}
[ -x "$kiln" ] || cargo build --quiet -p kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[registry."docker.io"]\nmirrors = ["127.0.0.1:5000"]\n' > "$work/kiln.toml"
base="$kiln --root $work/store --config $work/kiln.toml build -f {dockerfile} {opts}"
# Our copy of the corpus keeps case 090's context symlink, which the shared copy stores as a
# regular file.
CASES_DIR=$here/testdata/conformance \
LOCAL_TEMPLATE="$base --output type=local,dest={out} {context}" \
OCI_TEMPLATE="$base --output type=oci,dest={out} {context}" \
  bash "$runner"
