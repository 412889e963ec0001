"""The thinking tools as a composition runs them: Council over several branches, FirstPrinciples on
one, and the model calls they (and TDD revisions) make through the seam."""

from __future__ import annotations

import time
from typing import Any

from agents import budget, thinking
from agents.answer import Prepared, prepare
from agents.compose.deps import Branch, Deps
from agents.compose.merge import strip_prefix
from agents.specialists import SPECIALISTS
from agents.trace import CouncilStep, FirstPrinciplesStep, GenerateStep, Trace, ms_since
from core.llm.extractive import NO_ANSWER, PREFIX
from retrieval.search import Hit


def call_model(deps: Deps, messages: list[dict[str, Any]], tier: str, purpose: str, trace: Trace | None = None,
               calls: list[dict[str, Any]] | None = None) -> str:
    """One model call through the seam, with usage and a trace step."""
    model = deps.model_for(tier)
    t = time.perf_counter()
    c = deps.model.complete(messages, model=model)
    p_tok, c_tok = budget.tokens(c, messages)
    (deps.calls if calls is None else calls).append(
        {"tier": tier, "model": model, "prompt_tokens": int(p_tok), "completion_tokens": int(c_tok)})
    (deps.trace if trace is None else trace).append(
        GenerateStep(ms=ms_since(t), tier=tier, model=model, purpose=purpose, prompt_tokens=int(p_tok),
                     completion_tokens=int(c_tok)))
    return c.text


def council(deps: Deps, branches: list[Branch], texts: list[str], hits: list[Hit], merged: Prepared,
             tier: str) -> tuple[str, dict[str, Any]]:
    t = time.perf_counter()
    persp = []
    for b, txt in zip(branches, texts, strict=True):
        cited = sorted({int(n) for n in thinking.MARK.findall(txt)})
        persp.append(thinking.Perspective(b.specialist, SPECIALISTS[b.specialist].name, b.question, txt,
                                          sorted({hits[n - 1].title for n in cited if 1 <= n <= len(hits)})))
    extractive = any(strip_prefix(txt)[1] for txt in texts)
    text, reasoning = thinking.council(deps.message, persp, deps.embedder.embed, PREFIX if extractive else None)
    if deps.model.generative(deps.model_for(tier)):
        listing = "\n\n".join(f"{p.name}:\n{p.text}" for p in persp)
        msgs = merged.messages[:-1] + [{"role": "user", "content": (
            f"{deps.message}\n\nPerspectives of the specialists (cite the numbered sources, as they do):\n{listing}\n\n"
            "Synthesise one answer: where they agree, where they differ, what the documents leave open. Cite every "
            "statement with its source number.")}]
        text = call_model(deps, msgs, tier, "council synthesis")
        reasoning["method"] = f"synthesis by {deps.model_for(tier)} over the perspectives"
    deps.trace.append(CouncilStep(ms=ms_since(t), perspectives=[p.specialist for p in persp],
                                  common_ground=len(reasoning.get("common_ground", [])),
                                  considerations=len(reasoning.get("considerations", []))))
    return text, reasoning


def first_principles(deps: Deps, primary: Branch, question: str, text: str, hits: list[Hit], tool_texts: list[str],
                      tier: str) -> tuple[str, list[Hit], list[str], dict[str, Any]]:
    """One retrieval probe per cause category (the question plus the category's vocabulary); every
    sentence of a probe's chunks is a candidate piece of evidence, quoted verbatim with its citation.
    No model call: the evidence is the documents' own words, whatever model is configured."""
    t = time.perf_counter()
    spec = SPECIALISTS[primary.specialist]
    hits = list(hits)
    before = len(hits)
    index = {h.chunk_id: i for i, h in enumerate(hits, start=1)}
    candidates: list[tuple[str, thinking.Statement]] = []
    for key, _label, _hyp, terms in thinking.hypotheses():
        res = prepare(deps.session, deps.caller, f"{question} {terms}", deps.history, 3,
                      prefer_titles=spec.prefer_titles)
        for h in res.hits:
            if h.chunk_id not in index:
                hits.append(h)
                index[h.chunk_id] = len(hits)
            n = index[h.chunk_id]
            candidates += [(key, thinking.Statement(0, f"{sent} [{n}]", [n]))
                           for sent in thinking.passage_sentences(h.text)]
    if tool_texts:  # tool results are numbered after the hits: move their markers behind the new hits
        text = thinking.MARK.sub(lambda m: f"[{_retool(int(m.group(1)), before, len(hits))}]", text)
    relied_on = {hits[n - 1].document_id for n in map(int, thinking.MARK.findall(text)) if 1 <= n <= len(hits)}

    def on_topic(st: thinking.Statement) -> bool:
        return any(1 <= n <= len(hits) and hits[n - 1].document_id in relied_on for n in st.markers)

    reasoning = thinking.first_principles(question, candidates, deps.embedder.embed, on_topic)
    lines = thinking.render_hypotheses(reasoning)
    if lines:
        head = "Cause hypotheses backed by your documents (first principles):\n" + "\n".join(lines)
        text = head if text.strip().startswith(NO_ANSWER[:40]) else f"{text}\n\n{head}"
    deps.trace.append(FirstPrinciplesStep(ms=ms_since(t), probes=len(thinking.hypotheses()),
                                          candidates=len(candidates),
                                          hypotheses=[{"category": r["category"], "status": r["status"]}
                                                      for r in reasoning["hypotheses"]]))
    return text, hits, tool_texts, reasoning


def _retool(n: int, old_hits: int, new_hits: int) -> int:
    return n + (new_hits - old_hits) if n > old_hits else n

