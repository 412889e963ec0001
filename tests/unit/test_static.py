"""Static contracts: ruff is clean, mypy passes (strict for core), the import-linter layering holds, and test
modules share helpers only through tests/builders.py, helper modules and conftest fixtures."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_ruff_clean():
    r = _run([str(BIN / "ruff"), "check", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean():
    """mypy over every package import-linter knows (one list, kept in pyproject) and the composition root;
    strictness per package is configured in pyproject's [tool.mypy]."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    # benchmarks/ is a folder of scripts (a namespace package), each run on its own: checked as files.
    targets = [p for p in packages if p != "benchmarks"] + ["definitions.py"]
    r = _run([str(BIN / "mypy"), *targets])
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts():
    r = _run([str(BIN / "lint-imports")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 5 kept, 0 broken" in r.stdout, r.stdout


def _imported_modules(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`, relative imports resolved against `module`."""
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from tests.integration import test_x` imports a test module too.
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def test_test_modules_do_not_import_other_test_modules():
    """Shared helpers live in tests/builders.py (or a helper module such as tests/integration/ingest_harness.py),
    shared fixtures in a conftest.py: importing one test module from another runs its module-level code twice,
    re-registers its fixtures and ties the two modules' fates together."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, name in _imported_modules(ast.parse(path.read_text(), str(path)), module):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "import shared helpers from tests.builders instead:\n" + "\n".join(offenders)
