#!/usr/bin/env bash
# Install everything the platform needs into ./.venv. Idempotent; safe to re-run.
#   scripts/install.sh          runtime
#   scripts/install.sh --dev    runtime + test/lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: tesseract for OCR of scans and images, libmagic for file-type detection.
need=()
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng)
[ -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libmagic.so.1 ] || need+=(libmagic1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: missing Debian packages ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do command -v "$cand" >/dev/null 2>&1 && { PY="$cand"; break; }; done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
# torch first and pinned: the CPU wheel; letting the resolver choose pulls GBs of CUDA wheels.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extra}"
echo "installed into $(pwd)/.venv"
