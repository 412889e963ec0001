"""The export-control guard on every answer (policy and vocabulary: compliance/export_control.py).

`agents.chat.answer` applies it to the orchestrator's outcome before anything is streamed, stored or
returned, so POST /v1/chat (JSON and SSE), `eap ask` and every other edge built on the chat use case get
the same decision; it is a step of the trace, `COMPLIANCE.export_control`, just before LEARN.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agents import thinking
from agents.answer import citations_for
from agents.deps import AgentDeps
from agents.trace import ExportControlStep, ReasoningStep, SkillStep, ms_since
from compliance import export_control as ec

if TYPE_CHECKING:
    from agents.orchestrator import Outcome


def apply(deps: AgentDeps, out: Outcome) -> ExportControlStep:
    """Decide on `out` in place (text, citations, reasoning and tool results for a caller who is not cleared)
    and record the decision in its trace."""
    t = time.perf_counter()
    hits = out.prepared.hits
    cleared = ec.is_cleared(deps.caller.groups, deps.settings.export_cleared_groups)
    controlled = ec.controlled_documents(deps.session, {h.document_id for h in hits}) if hits else set()
    controlled_markers = {n for n, h in enumerate(hits, start=1) if str(h.document_id) in controlled}
    terms = ec.terms_in(out.text)
    cited_controlled = sorted({str(c.document_id) for c in out.citations if str(c.document_id) in controlled})
    removed = 0
    left = True
    if (terms or cited_controlled) and not cleared:
        def keep(st: thinking.Statement) -> str | None:
            nonlocal removed
            if ec.terms_in(st.text) or set(st.markers) & controlled_markers:
                removed += 1
                return None
            return st.text

        revised = thinking.rewrite(out.text, keep)
        # Structure lines (headings, a procedure's title) are not statements: drop those that name a term.
        lines = [ln for ln in revised.splitlines() if not ec.terms_in(ln)]
        left = bool(thinking.statements("\n".join(lines)))
        out.text = ("\n".join(lines).strip() + "\n\n" + ec.REDACTED_NOTICE) if left else ec.WITHHELD_NOTICE
        out.citations = citations_for(out.text, hits)
        for step in out.steps:
            if isinstance(step, ReasoningStep):
                step.reasoning = ec.scrub(step.reasoning)
            elif isinstance(step, SkillStep) and step.result:
                step.result = ec.scrub(step.result)
    decision = ec.decide(cleared=cleared, terms=terms, controlled=cited_controlled, removed=removed, left=left)
    step = ExportControlStep(ms=ms_since(t), decision=decision.decision, cleared=decision.cleared,
                             terms=decision.terms, controlled_documents=decision.controlled_documents,
                             removed=decision.removed)
    # Before LEARN: the guard decides on the answer that LEARN (memories, lesson) and the stores then see.
    learn = out.steps.learn
    out.steps.steps.insert(out.steps.steps.index(learn) if learn is not None else len(out.steps), step)
    return step
