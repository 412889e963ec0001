"""Merging branch answers: one source list (chunks de-duplicated in branch order, tool results after
them), every [n] renumbered into it, and one answer with a section per specialist."""

from __future__ import annotations

import re
import uuid
from typing import Any

from agents import thinking
from agents.answer import prompt_sources
from agents.compose.classifier import Plan
from agents.compose.deps import Branch
from agents.specialists import SPECIALISTS
from core.llm.extractive import NO_ANSWER, PREFIX
from core.prompt import prompt_of
from retrieval.search import Hit

PIPELINE_WORDS = {0: "First", 1: "Then", 2: "Finally"}


def merge(branches: list[Branch]) -> tuple[list[Hit], list[str], list[str]]:
    """One source list for all branches (hits de-duplicated by chunk, in branch order; tool results
    after all hits) and each branch's answer with its [n] markers renumbered into it. A marker that
    pointed nowhere becomes [0], which VERIFY rejects."""
    hits: list[Hit] = []
    index: dict[uuid.UUID, int] = {}
    for b in branches:
        for h in b.prepared.hits:
            if h.chunk_id not in index:
                index[h.chunk_id] = len(hits) + 1
                hits.append(h)
    tool_texts: list[str] = []
    tool_index: dict[tuple[int, int], int] = {}
    for bi, b in enumerate(branches):
        for ti, txt in enumerate(b.tool_texts):
            tool_texts.append(txt)
            tool_index[(bi, ti)] = len(hits) + len(tool_texts)
    texts = []
    for bi, b in enumerate(branches):
        mapping = _map(b, bi, index, tool_index)

        def renumber(m: re.Match[str], mp: dict[int, int] = mapping) -> str:
            return f"[{mp.get(int(m.group(1)), 0)}]"

        texts.append(thinking.MARK.sub(renumber, b.draft.text if b.draft else ""))
    return hits, tool_texts, texts


def _map(b: Branch, bi: int, index: dict[uuid.UUID, int], tool_index: dict[tuple[int, int], int]) -> dict[int, int]:
    mapping = {i: index[h.chunk_id] for i, h in enumerate(b.prepared.hits, start=1)}
    for ti in range(len(b.tool_texts)):
        mapping[len(b.prepared.hits) + 1 + ti] = tool_index[(bi, ti)]
    return mapping


def numbering(b: Branch, hits: list[Hit]) -> dict[str, int]:
    index = {h.chunk_id: i for i, h in enumerate(hits, start=1)}
    return {str(i): index[h.chunk_id] for i, h in enumerate(b.prepared.hits, start=1)}


def with_sources(messages: list[dict[str, Any]], hits: list[Hit], tool_texts: list[str], *,
                  role: str | None = None) -> list[dict[str, Any]]:
    """The same conversation with the typed prompt's sources (and, if given, its role) replaced and the
    system message rendered again; the rendered text is never searched or spliced."""
    msgs = [dict(m) for m in messages]
    prompt = prompt_of(msgs)
    if prompt is None:
        raise ValueError("a composed branch needs the typed prompt its sources are replaced in")
    prompt = prompt.replace(sources=prompt_sources(hits, tool_texts), **({"role": role} if role is not None else {}))
    msgs[0] = prompt.system_message()
    return msgs


NOTE = re.compile(r"^\((?!.*\[\d{1,2}\]).+\)$")


def strip_prefix(text: str) -> tuple[str, bool]:
    lines = text.strip().splitlines()
    if lines and lines[0].strip() == PREFIX:
        return "\n".join(lines[1:]).strip(), True
    return text.strip(), False


def render(plan: Plan, branches: list[Branch], texts: list[str]) -> str:
    """One answer, a section per specialist; a statement already given in an earlier section is not
    repeated."""
    seen: set[str] = set()
    sections, extractive = [], False
    for i, (b, txt) in enumerate(zip(branches, texts, strict=True)):
        body, ex = strip_prefix(txt)
        extractive = extractive or ex
        if body.startswith(NO_ANSWER[:40]) or not body:
            body = "_No answer in the documents you may read._"
        else:
            lines = body.splitlines()

            def fresh(st: thinking.Statement, lines: list[str] = lines) -> str | None:
                keys = {st.plain, st.plain.split(": ", 1)[-1]}
                if re.match(r"\s*\d{1,2}[.)]\s", lines[st.line]):
                    seen.update(keys)
                    return st.text  # a procedure step stays in its list, even if quoted before
                if keys & seen:
                    return None
                seen.update(keys)
                return st.text
            body = thinking.rewrite(body, fresh) or "_Nothing beyond the sections above._"
        name = SPECIALISTS[b.specialist].name
        title = (f"**{PIPELINE_WORDS.get(i, 'Then')}, the {name}**" if plan.composition == "pipeline"
                 else f"**{name}**")
        sections.append(f"{title}\n{body}")
    head = ("_Answer built by a pipeline of specialists, each building on the one before._"
            if plan.composition == "pipeline" else "_Answer from several specialists, each from its own sources._")
    return "\n\n".join(([PREFIX] if extractive else []) + [head] + sections)

