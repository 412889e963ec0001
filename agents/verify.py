"""VERIFY: every [n] cites a retrieved source (or a tool result), every number appears in the
sources, nothing above the caller's ceiling. Used by the orchestrator's direct path and by every
composition (agents/compose)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.answer import Prepared
from compliance.access import ceiling
from core.llm.extractive import NO_ANSWER
from retrieval.search import Caller

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.])")
_CITE = re.compile(r"\[\d{1,2}\]")


@dataclass
class Verdict:
    ok: bool
    abstained: bool
    problems: list[str] = field(default_factory=list)


def verify(text: str, prepared: Prepared, caller: Caller, tool_texts: list[str] | None = None) -> Verdict:
    if text.strip().startswith(NO_ANSWER[:40]) or ("could not find" in text.lower() and not _CITE.search(text)):
        return Verdict(True, True)
    problems: list[str] = []
    markers = [int(m[1:-1]) for m in _CITE.findall(text)]
    if not markers:
        problems.append("no citation")
    tool_texts = tool_texts or []
    bad = [n for n in markers if not 1 <= n <= len(prepared.hits) + len(tool_texts)]
    if bad:
        problems.append(f"citations to sources that were not retrieved: {sorted(set(bad))}")
    top = ceiling(caller.role)
    for h in prepared.hits:
        if h.classification > top:
            problems.append(f"source above the caller's ceiling: {h.chunk_id}")
    sources = " ".join([h.text for h in prepared.hits] + tool_texts)
    unsupported = [n for n in _NUMBER.findall(_CITE.sub("", text)) if n not in sources]
    if unsupported:
        problems.append(f"numbers not found in the sources: {sorted(set(unsupported))[:5]}")
    return Verdict(not problems, False, problems)
