#!/usr/bin/env bash
# Install everything the platform needs into ./.venv. Idempotent; safe to re-run.
#   scripts/install.sh          runtime
#   scripts/install.sh --dev    runtime + test/lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

# Air-gapped site: install from a wheelhouse built by scripts/build-wheelhouse.sh — no package index,
# every wheel checked against the lock's sha256. tesseract-ocr must come from the site's Debian mirror/ISO.
#   scripts/install.sh --offline WHEELHOUSE_DIR [VENV_DIR (default .venv)]
if [ "${1:-}" = "--offline" ]; then
  dir="${2:?usage: scripts/install.sh --offline WHEELHOUSE_DIR [VENV_DIR]}"
  venv="${3:-.venv}"
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3.11}" -m venv "$venv"
  PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q --no-index \
    --find-links "$dir" --require-hashes -r "$dir/requirements.lock"
  command -v tesseract >/dev/null 2>&1 || echo "warning: tesseract-ocr is not installed (OCR of scans)" >&2
  echo "installed offline from $dir into $venv"
  exit 0
fi

# Debian packages: tesseract for OCR of scans and images, libmagic for file-type detection.
need=()
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng)
[ -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libmagic.so.1 ] || need+=(libmagic1)
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)  # SAML signature checks (identity/saml.py, pysaml2)
# Browser tests (tests/browser, Playwright) drive Debian's Chromium: `playwright install` downloads, so never.
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromium ]; then need+=(chromium); fi
# Deploy tier: the Helm chart rendered offline (deploy/helm/render: Go text/template + sprig from Debian).
if [ "${1:-}" = "--dev" ] && [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ]; then
  need+=(golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev golang-gopkg-yaml.v3-dev)
fi
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
# With --dev this also builds llama-cpp-python (the real-model test tier's model server) from its source
# distribution: several minutes on 2 cores, once — pip keeps the built wheel in its cache for later installs.
.venv/bin/python -m pip install -q -e ".${extra}"
# EAP_EMBEDDING_BACKEND=onnx|onnx-int8: export the shipped model to ONNX (fp32 + int8) into EAP_HOME now, offline;
# without this step the first use exports it (once, ~1 min).
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m core.onnx_embedding --export >/dev/null 2>&1 \
  || echo "warning: ONNX export of the embedding model failed; it is retried on first use" >&2
if [ "${1:-}" = "--dev" ]; then
  # The LiteLLM proxy (real-model tier, `eap up --local-model`) in a venv of its own: it pins web-stack versions
  # of its own and is a separate process in production too (deploy/litellm_proxy_requirements.txt says why).
  [ -x .venv-proxy/bin/python ] || "$PY" -m venv .venv-proxy
  .venv-proxy/bin/python -m pip install -q -r deploy/litellm_proxy_requirements.txt
fi
# The web app (frontend/: React + TypeScript + Vite): built here into frontend/dist, served by the API at /.
# Node is needed for this step only, never at run time; without Node 20+ the API runs and / says how to build.
if command -v npm >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] < 20 ? 1 : 0)'; then
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
else
  echo "warning: Node.js 20+ not found: the web app is not built (install nodejs and npm, then re-run)" >&2
fi
echo "installed into $(pwd)/.venv"
