#!/usr/bin/env bash
# Prepare a machine for kiln's tests: install the tools they use and start a local registry on
# 127.0.0.1:5000 holding the canonical busybox test image as library/busybox:latest,
# BuildKit's stock Dockerfile frontend image as docker/dockerfile:1 (what `# syntax=` names)
# and a Debian bookworm image made once with debootstrap as library/debian:bookworm.
# Idempotent; needs root (apt-get). Used by .ci/run and documented in README.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${KILN_TEST_REGISTRY_DIR:-/var/lib/kiln-test-registry}

packages=(binutils systemd skopeo umoci debootstrap runc crun docker-registry hyperfine iproute2 nftables git python3 pigz zstd busybox-static curl apache2-utils openssh-client openssh-server libseccomp-dev pkg-config openssl)
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

# Multi-platform builds: QEMU user emulation for arm64 steps (registered with the F flag by
# binfmt-support, so it runs inside containers), and library/busybox:multi, one index of the
# canonical amd64 busybox and an arm64 busybox made from Debian's busybox-static:arm64.
packages=(qemu-user-static binfmt-support)
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
[ -e "$binfmt/qemu-aarch64" ] || update-binfmts --enable qemu-aarch64
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" ||
  { echo "qemu-aarch64 is not registered with the F flag" >&2; exit 1; }

make_busybox=${KILN_SHARED_DIR:-$root/../shared}/images/make-busybox.py
# foreign_busybox DEBIAN_ARCH OCI_ARCH: a busybox image layout of Debian's busybox-static for
# another architecture, made once in $state/busybox-DEBIAN_ARCH.
foreign_busybox() {
  local deb_arch=$1 oci_arch=$2 out="$state/busybox-$1"
  [ -e "$out/index.json" ] && return
  dpkg --print-foreign-architectures | grep -qx "$deb_arch" || {
    dpkg --add-architecture "$deb_arch"
    apt-get update -qq
  }
  local work
  work=$(mktemp -d)
  chmod 755 "$work"
  (cd "$work" && apt-get download -qq "busybox-static:$deb_arch" 2>/dev/null)
  dpkg-deb -x "$work"/busybox-static_*_"$deb_arch".deb "$work/root"
  rm -rf "$out.tmp"
  python3 "$make_busybox" "$work/root/bin/busybox" "$out.tmp" "$oci_arch" /bin/busybox >/dev/null
  mv "$out.tmp" "$out"
  rm -rf "$work"
}
foreign_busybox arm64 arm64
arm64="$state/busybox-arm64"
# library/busybox:armhf, a 32-bit arm busybox, for steps that run under an emulator of kiln's
# own: the host has no qemu-arm registration (qemu-user-static's binary is enough).
foreign_busybox armhf arm
skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$state/busybox-armhf" "docker://127.0.0.1:5000/library/busybox:armhf"
multi="$state/busybox-multi"
rm -rf "$multi"
python3 - "$root/testdata/images/busybox" "$arm64" "$multi" <<'PY'
# Joins single-image OCI layouts into one layout whose index.json names one image index.
import hashlib, json, os, shutil, sys
*layouts, out = sys.argv[1:]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
manifests = []
for layout in layouts:
    for name in os.listdir(os.path.join(layout, "blobs", "sha256")):
        shutil.copyfile(os.path.join(layout, "blobs", "sha256", name), os.path.join(blobs, name))
    entry = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]
    entry.pop("annotations", None)
    manifests.append(entry)
index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": manifests}, sort_keys=True, separators=(",", ":")).encode()
digest = hashlib.sha256(index).hexdigest()
open(os.path.join(blobs, digest), "wb").write(index)
top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
       "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                      "digest": "sha256:" + digest, "size": len(index),
                      "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}
open(os.path.join(out, "index.json"), "w").write(json.dumps(top))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false \
  "oci:$multi:multi" "docker://127.0.0.1:5000/library/busybox:multi"
# library/debian:bookworm, a Debian image made once from Debian's packages (debootstrap
# --variant=minbase, kept in $debian) for the SBOM tests: its dpkg database lists
# base-files, dpkg, bash...
debian=${KILN_TEST_DEBIAN_DIR:-/var/lib/kiln-test-debian}
if [ ! -e "$debian/layout/index.json" ]; then
  rm -rf "$debian/rootfs" "$debian/layout" "$debian/bundle"
  mkdir -p "$debian"
  debootstrap --variant=minbase bookworm "$debian/rootfs" http://deb.debian.org/debian >"$debian/debootstrap.log" 2>&1 ||
    { echo "debootstrap failed; see $debian/debootstrap.log" >&2; exit 1; }
  rm -rf "$debian/rootfs/var/cache/apt/archives/"*.deb "$debian/rootfs/var/lib/apt/lists/"*_Packages
  umoci init --layout "$debian/layout.tmp"
  umoci new --image "$debian/layout.tmp:bookworm"
  umoci config --image "$debian/layout.tmp:bookworm" --os linux --architecture amd64 \
    --config.cmd bash --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci unpack --image "$debian/layout.tmp:bookworm" "$debian/bundle"
  cp -a "$debian/rootfs/." "$debian/bundle/rootfs/"
  umoci repack --image "$debian/layout.tmp:bookworm" "$debian/bundle"
  umoci gc --layout "$debian/layout.tmp"
  rm -rf "$debian/bundle" "$debian/rootfs"
  mv "$debian/layout.tmp" "$debian/layout"
fi
skopeo copy --quiet --dest-tls-verify=false \
  "oci:$debian/layout:bookworm" "docker://127.0.0.1:5000/library/debian:bookworm"
echo "test registry ready at 127.0.0.1:5000 (library/busybox:latest and :multi, library/debian:bookworm, docker/dockerfile:1)"
