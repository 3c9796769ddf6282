#!/usr/bin/env bash
# Builds kiln's own frontend image (the Dockerfile and kiln.yaml frontend served over BuildKit's
# gateway API, `kiln gateway-frontend`) with kiln itself, and pushes it:
#   scripts/frontend-image.sh KILN_BINARY REGISTRY/NAME:TAG [KILN_ARGS...]
# The image holds the binary and the shared libraries it loads (from ldd), nothing else; a
# builder runs it for `# syntax=REGISTRY/NAME:TAG` (kiln, or BuildKit itself). KILN_ARGS go
# before `build` (for example --root and --config).
set -euo pipefail
kiln=${1:?usage: frontend-image.sh KILN_BINARY REF [KILN_ARGS...]}
ref=${2:?usage: frontend-image.sh KILN_BINARY REF [KILN_ARGS...]}
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/usr/bin"
# Without symbols: a debug build's are most of its size.
strip -o "$work/rootfs/usr/bin/kiln" "$kiln"
# Each library at the path the loader looks for it: `name => /path (addr)` and the loader.
ldd "$kiln" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
  mkdir -p "$work/rootfs$(dirname "$lib")"
  cp -L "$lib" "$work/rootfs$lib"
done
cat > "$work/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
LABEL moby.buildkit.frontend.network.none="true"
ENTRYPOINT ["/usr/bin/kiln", "gateway-frontend"]
DOCKERFILE
"$kiln" "$@" build --progress=quiet -t "$ref" --push "$work"
