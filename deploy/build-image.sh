#!/usr/bin/env bash
# Build the platform image with podman and no image registry:
#   1. a Debian bookworm rootfs by debootstrap (needs the Debian mirror: build time only), imported as
#      localhost/eap-base:bookworm — no apt sources left in it;
#   2. deploy/Containerfile on top, installing the offline wheelhouse (dist/wheelhouse) with --network none;
#   3. the "models" profile's images the same way: the LiteLLM proxy (deploy/Containerfile.litellm, from
#      dist/wheelhouse-proxy) and the CPU model server (deploy/Containerfile.model: llama.cpp + SmolLM2-135M).
#   deploy/build-image.sh [--base-only]
# Environment: EAP_ROOTFS (default /var/tmp/eap-rootfs), DEBIAN_MIRROR, EAP_IMAGE (default localhost/eap:latest),
#              EAP_LITELLM_IMAGE (default localhost/eap-litellm:latest), EAP_MODEL_IMAGE (localhost/eap-model:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
P=(podman --runtime runc --cgroup-manager cgroupfs)
ROOTFS="${EAP_ROOTFS:-/var/tmp/eap-rootfs}"
BASE=localhost/eap-base:bookworm
if ! "${P[@]}" image exists "$BASE"; then
  if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase \
      --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,ca-certificates,tesseract-ocr,tesseract-ocr-eng,libmagic1,tini \
      bookworm "$ROOTFS" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  fi
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
  : > "$ROOTFS/etc/apt/sources.list"
  tar -C "$ROOTFS" -c . | "${P[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE"
fi
[ "${1:-}" = "--base-only" ] && exit 0
[ -f dist/wheelhouse/requirements.lock ] && [ -f dist/wheelhouse/model-server.lock ] \
  && [ -f dist/wheelhouse-proxy/requirements.lock ] || scripts/build-wheelhouse.sh dist/wheelhouse
# Every image built here carries this label, the build stages and the images a rebuild untags too, so that
# the dangling ones can be removed without touching anything else on the machine. Without it each rebuild
# left ~10 GB behind (a CI run once died with "no space left on device" on the fifth rebuild).
LABEL=io.eap.build=1
prune() { "${P[@]}" image prune -f --filter "label=$LABEL" >/dev/null; }
trap prune EXIT
prune
build() {  # build <Containerfile> <tag>; the image the tag named before is removed when nothing uses it
  local old
  old=$("${P[@]}" image inspect -f '{{.Id}}' "$2" 2>/dev/null || true)
  "${P[@]}" build --network none --label "$LABEL" -f "$1" -t "$2" .
  if [ -n "$old" ] && [ "$old" != "$("${P[@]}" image inspect -f '{{.Id}}' "$2")" ]; then
    "${P[@]}" rmi "$old" >/dev/null 2>&1 || true
  fi
}
build deploy/Containerfile "${EAP_IMAGE:-localhost/eap:latest}"
build deploy/Containerfile.litellm "${EAP_LITELLM_IMAGE:-localhost/eap-litellm:latest}"
build deploy/Containerfile.model "${EAP_MODEL_IMAGE:-localhost/eap-model:latest}"
