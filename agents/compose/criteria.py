"""The TDD loop's criteria: explicit, checkable conditions derived from the question."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents import thinking
from agents.answer import Prepared
from agents.compose.classifier import WHY, identifiers
from agents.verify import Verdict

ANSWERED = 0.3  # a sub-question counts as answered when a statement scores at least this


def criteria(text: str, subs: list[str], prepared: Prepared, verdict: Verdict, *, strict: bool, question: str,
             attack: thinking.Attack | None, embed: Callable[[list[str]], Any]) -> list[dict[str, Any]]:
    """Explicit, checkable criteria derived from the question."""
    sts = thinking.statements(text)
    out = []
    if verdict.abstained:
        return [{"criterion": "grounded", "passed": True, "detail": "the documents do not answer it: abstained"}]
    unanswered = [sq for sq in subs if not answered(sq, sts, embed)]
    out.append({"criterion": "answers every part", "passed": not unanswered,
                "detail": f"unanswered: {unanswered}" if unanswered else f"{len(subs)} part(s) answered"})
    uncited = [st.plain[:80] for st in sts if not st.markers]
    out.append({"criterion": "every statement cited", "passed": bool(sts) and not uncited,
                "detail": f"uncited: {uncited[:3]}" if uncited else f"{len(sts)} statement(s) cited"})
    bad = [p for p in verdict.problems if "not retrieved" in p or "ceiling" in p or p == "no citation"]
    out.append({"criterion": "citations valid", "passed": not bad, "detail": "; ".join(bad) or "ok"})
    nums = [p for p in verdict.problems if p.startswith("numbers")]
    out.append({"criterion": "numbers supported", "passed": not nums, "detail": "; ".join(nums) or "ok"})
    if strict:
        hits = prepared.hits
        cited = sorted({n for st in sts for n in st.markers if 1 <= n <= len(hits)})
        controlling = [hits[n - 1].title for n in cited if thinking.CONTROLLING.search(hits[n - 1].title or "")]
        out.append({"criterion": "a controlling document is cited", "passed": bool(controlling),
                    "detail": f"cited: {sorted(set(controlling))}" if controlling else
                    "no SOP, inspection criteria or quality report among the cited sources"})
        # Per cited document: an SOP names its machines in its scope, its steps in another chunk.
        docs = {hits[n - 1].document_id for n in cited}
        cited_text = " ".join(h.text for h in hits if h.document_id in docs).lower()
        missing = [i for i in identifiers(question) if i.lower() not in cited_text]
        out.append({"criterion": "identifiers in the question confirmed by the cited sources", "passed": not missing,
                    "detail": f"not found in the cited documents' retrieved text: {missing}" if missing else "ok"})
        blocking = attack.blocking if attack else []
        out.append({"criterion": "no unresolved red-team finding", "passed": not blocking,
                    "detail": "; ".join(blocking) or "ok"})
    return out


def answered(sq: str, sts: list[thinking.Statement], embed: Callable[[list[str]], Any]) -> bool:
    if not sts:
        return False
    vecs = embed([sq] + [st.plain for st in sts])
    terms = thinking.content_terms(sq)
    causal = bool(WHY.search(sq))
    for i, st in enumerate(sts, start=1):
        overlap = len(terms & thinking.content_terms(st.plain)) / max(1, len(terms))
        score = max(float(vecs[i] @ vecs[0]), 0.8 * overlap)
        if causal and thinking.CAUSAL.search(st.plain):
            score += 0.15
        if score >= ANSWERED:
            return True
    return False

