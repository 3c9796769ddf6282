#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root, in one command: installs what the
# tests need and starts the test registry (scripts/test-env.sh, idempotent), runs every test of
# the workspace, then the Dockerfile conformance corpus: in-process, through `kiln daemon`
# driven by BuildKit's own buildctl, and through BuildKit's own Dockerfile frontend image run
# by kiln's gateway; and the Kubernetes example's manifests against Kubernetes' schemas.
# Extra arguments go to cargo nextest
# (for example a filter: scripts/test.sh -E 'test(escape)').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-env.sh
cargo nextest run --workspace --locked --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  bash scripts/conformance.sh
  bash scripts/conformance.sh --daemon
  bash scripts/conformance.sh --gateway
  bash scripts/kubernetes-examples.sh
fi
