#!/usr/bin/env bash
# One conformance case with BuildKit's buildctl against `kiln daemon` (scripts/conformance.sh
# --daemon): the corpus runner's CASE_* environment as buildctl's flags. Usage: local|oci.
set -euo pipefail
output=$1
args=(--addr "unix://$KILN_SOCKET" build --progress=plain --frontend dockerfile.v0
  --local "context=$CASE_CONTEXT" --local "dockerfile=$(dirname "$CASE_DOCKERFILE")"
  --opt "filename=$(basename "$CASE_DOCKERFILE")")
[ -n "${CASE_TARGET:-}" ] && args+=(--opt "target=$CASE_TARGET")
while IFS= read -r pair; do
  [ -n "$pair" ] && args+=(--opt "build-arg:$pair")
done <<< "${CASE_BUILD_ARGS:-}"
while IFS= read -r pair; do
  [ -n "$pair" ] && args+=(--secret "id=${pair%%=*},src=${pair#*=}")
done <<< "${CASE_SECRETS:-}"
exec "$BUILDCTL" "${args[@]}" --output "type=$output,dest=$CASE_OUT"
