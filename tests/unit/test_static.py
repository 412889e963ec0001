"""Static contracts: ruff is clean and the import-linter layering holds."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_ruff_clean():
    r = _run([str(BIN / "ruff"), "check", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts():
    r = _run([str(BIN / "lint-imports")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 5 kept, 0 broken" in r.stdout, r.stdout
