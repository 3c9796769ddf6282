#!/usr/bin/env bash
# Prepare a machine for kiln's tests: install the tools they use and start a local registry on
# 127.0.0.1:5000 holding the canonical busybox test image as library/busybox:latest and
# BuildKit's stock Dockerfile frontend image as docker/dockerfile:1 (what `# syntax=` names).
# Idempotent; needs root (apt-get). Used by .ci/run and documented in README.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${KILN_TEST_REGISTRY_DIR:-/var/lib/kiln-test-registry}

packages=(binutils systemd skopeo umoci runc crun docker-registry hyperfine iproute2 git python3 pigz zstd busybox-static curl apache2-utils openssh-client openssh-server libseccomp-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

registry_up() { curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; }
if ! registry_up; then
  mkdir -p "$state/data"
  cat > "$state/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
  nohup docker-registry serve "$state/config.yml" >"$state/registry.log" 2>&1 &
  for _ in $(seq 1 50); do registry_up && break; sleep 0.1; done
  registry_up || { echo "registry did not start; see $state/registry.log" >&2; exit 1; }
fi

skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$root/testdata/images/busybox:latest" "docker://127.0.0.1:5000/library/busybox:latest"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$root/testdata/images/dockerfile-frontend" "docker://127.0.0.1:5000/docker/dockerfile:1"
echo "test registry ready at 127.0.0.1:5000 (library/busybox:latest, docker/dockerfile:1)"
