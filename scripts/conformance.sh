#!/usr/bin/env bash
# Runs the Dockerfile conformance corpus (testdata/conformance, the cases checked against
# BuildKit) with kiln, through the corpus runner beside the project (../shared/conformance).
# Needs the test registry (scripts/test-env.sh).
#   scripts/conformance.sh [KILN_BINARY]            kiln build, in-process
#   scripts/conformance.sh --daemon [KILN_BINARY]   BuildKit's buildctl against `kiln daemon`
#   scripts/conformance.sh --gateway [KILN_BINARY]  kiln build through BuildKit's own Dockerfile
#                                                   frontend image (docker/dockerfile:1 in the
#                                                   test registry), run by kiln's gateway
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
daemon=false
syntax=""
case "${1:-}" in
  --daemon) daemon=true; shift ;;
  --gateway) syntax="--build-arg BUILDKIT_SYNTAX=docker/dockerfile:1"; shift ;;
esac
runner=${CONFORMANCE_RUNNER:-$here/../shared/conformance/run.sh}
kiln=${1:-$here/target/debug/kiln}
[ -x "$kiln" ] || cargo build --quiet -p kiln
work=$(mktemp -d)
printf '[registry."docker.io"]\nmirrors = ["127.0.0.1:5000"]\n' > "$work/kiln.toml"
if ! $daemon; then
  trap 'rm -rf "$work"' EXIT
  base="$kiln --root $work/store --config $work/kiln.toml build -f {dockerfile} {opts} $syntax"
  # Our copy of the corpus keeps case 090's context symlink, which the shared copy stores as a
  # regular file.
  CASES_DIR=$here/testdata/conformance \
  LOCAL_TEMPLATE="$base --output type=local,dest={out} {context}" \
  OCI_TEMPLATE="$base --output type=oci,dest={out} {context}" \
    bash "$runner"
  exit
fi
export BUILDCTL=${KILN_BUILDCTL:-$here/../shared/tools/buildctl}
export KILN_SOCKET=$work/kiln.sock
"$kiln" --root "$work/store" --config "$work/kiln.toml" daemon --addr "unix://$KILN_SOCKET" \
  2> "$work/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$KILN_SOCKET" ] && break; sleep 0.1; done
case_script=$here/scripts/conformance-buildctl.sh
CASES_DIR=$here/testdata/conformance \
LOCAL_TEMPLATE="bash $case_script local" \
OCI_TEMPLATE="bash $case_script oci" \
  bash "$runner" || { tail -50 "$work/daemon.log" >&2; exit 1; }
