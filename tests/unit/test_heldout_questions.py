"""The held-out question set over the Python 3.11 docs (benchmarks/data/heldout_python_docs.json) is well formed:
enough questions, unique ids, non-empty facts, and every expected page exists in the installed documentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "heldout_python_docs.json"
DOCS = Path("/usr/share/doc/python3.11/html")


def _load() -> dict:
    return json.loads(DATA.read_text())


def test_schema() -> None:
    data = _load()
    assert "never used for tuning" in data["_provenance"]
    qs = data["questions"]
    assert len(qs) >= 50
    assert len({q["id"] for q in qs}) == len(qs)
    for q in qs:
        assert set(q) == {"id", "question", "expected_pages", "expected_facts"}, q
        assert q["question"].strip().endswith("?"), q["id"]
        assert q["expected_pages"] and all(p.endswith(".html") and not p.startswith("/") for p in q["expected_pages"])
        assert q["expected_facts"], q["id"]
        for group in q["expected_facts"]:
            assert group and all(isinstance(a, str) and a.strip() for a in group), q["id"]


@pytest.mark.skipif(not DOCS.is_dir(), reason="python3.11-doc is not installed (/usr/share/doc/python3.11/html)")
def test_pages_exist() -> None:
    missing = [(q["id"], p) for q in _load()["questions"] for p in q["expected_pages"] if not (DOCS / p).is_file()]
    assert not missing
