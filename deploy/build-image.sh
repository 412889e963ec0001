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
"${P[@]}" build --network none -f deploy/Containerfile -t "${EAP_IMAGE:-localhost/eap:latest}" .
"${P[@]}" build --network none -f deploy/Containerfile.litellm -t "${EAP_LITELLM_IMAGE:-localhost/eap-litellm:latest}" .
"${P[@]}" build --network none -f deploy/Containerfile.model -t "${EAP_MODEL_IMAGE:-localhost/eap-model:latest}" .
