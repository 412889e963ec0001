"""Running a plan: direct/TDD/gate on one specialist, a pipeline of specialists in sequence, a
fan-out of independent branches; then merge, thinking tool, TDD loop and (for the gate) the decision."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session

from agents import thinking
from agents.answer import prepare
from agents.compose.classifier import PRONOUN, WHY, Plan
from agents.compose.deps import Branch, Composed, Deps
from agents.compose.merge import NOTE, merge, numbering, render, with_sources
from agents.compose.tdd import gate_decision, tdd_loop
from agents.compose.thinking_tools import council, first_principles
from agents.specialists import SPECIALISTS
from agents.trace import ComposeDone, FanOutStep, MergeStep, PipelineStage, RetrieveStep, ms_since
from agents.verify import verify
from core import llm
from core.enums import TIERS

# How each specialist looks at a shared question (its retrieval and its prompt get this focus).
LENS = {
    "quality_inspector": "quality defects, inspection criteria, defect rate, root cause and corrective actions",
    "maintenance_advisor": "machine condition, maintenance checks, parts to replace and service intervals",
    "procedure_expert": "the procedure steps and safety instructions to follow",
    "data_analyst": "the figures: rates, totals, durations and their trend",
    "document_analyst": "what the documents state, their scope and differences",
}


def execute(plan: Plan, deps: Deps, primary: Branch, start_tier: str) -> Composed:
    t0 = time.perf_counter()
    reasoning = None
    if plan.composition == "pipeline" and len(plan.specialists) > 1:
        branches, reasoning = _pipeline(plan, deps, primary, start_tier)
    elif plan.composition == "fan-out":
        branches = _fan_out(plan, deps, primary, start_tier)
    else:  # one specialist; tdd and gate revise through the TDD loop instead of escalating
        _draft_branch(deps, primary, start_tier, escalate=plan.composition == "pipeline",
                      session=deps.session, tag=False)
        deps.trace.extend(primary.steps)
        deps.calls.extend(primary.calls)
        branches = [primary]
    hits, tool_texts, texts = merge(branches)
    # The responder's notes to the user (e.g. "Short answer, as you prefer"): kept aside, given once
    # at the end, whatever merging and revision do to the statements.
    notes = list(dict.fromkeys(ln.strip() for t in texts for ln in t.splitlines() if NOTE.match(ln.strip())))
    template = primary.prepared.messages
    merged = dataclasses.replace(primary.prepared, hits=hits,
                                 messages=with_sources(template, hits, tool_texts))
    if len(branches) > 1:
        text = render(plan, branches, texts)
        deps.trace.append(MergeStep(ms=ms_since(t0), composition=plan.composition,
                                    sections=[b.specialist for b in branches], sources=len(hits),
                                    tool_sources=len(tool_texts),
                                    renumbered={b.specialist: numbering(b, hits) for b in branches}))
    else:
        text = texts[0]
    tiers = [TIERS.index(b.draft.tier) for b in branches if b.draft]
    tier_i = max(tiers or [TIERS.index(start_tier)])
    escalations = sum(b.draft.escalations for b in branches if b.draft)
    model = next((b.draft.model for b in branches if b.draft), deps.model_for(start_tier))

    if plan.tool == thinking.COUNCIL and len(branches) > 1:
        text, reasoning = council(deps, branches, texts, hits, merged, TIERS[tier_i])
    if plan.tool == thinking.FIRST_PRINCIPLES and len(branches) == 1:
        text, hits, tool_texts, reasoning = first_principles(deps, primary, deps.message, text, hits, tool_texts,
                                                              TIERS[tier_i])
        merged = dataclasses.replace(merged, hits=hits, messages=with_sources(template, hits, tool_texts))

    gate = plan.composition == "gate"
    text, tier_i, revisions, results, attack = tdd_loop(plan, deps, text, merged, tool_texts, tier_i, gate)
    escalations += revisions
    if attack is not None:
        reasoning = attack.reasoning()
    verdict = verify(text, merged, deps.caller, tool_texts)
    failed = [r for r in results if not r["passed"]]
    outcome = None
    model = deps.model_for(TIERS[tier_i]) if revisions else model
    if gate:
        text, outcome, verdict = gate_decision(text, failed, verdict)
    elif failed and verdict.ok and not verdict.abstained:
        unanswered = [r for r in failed if r["criterion"] == "answers every part"]
        if unanswered:
            text += ("\n\nNotice: not every part of the question is answered by your documents "
                     f"({unanswered[0]['detail']}).")
    deps.trace.append(ComposeDone(ms=ms_since(t0), composition=plan.composition, klass=plan.klass,
                                  thinking_tool=plan.tool, specialists=[b.specialist for b in branches],
                                  revisions=revisions, criteria_passed=not failed, outcome=outcome or "see LEARN"))
    text += "".join(f"\n{n}" for n in notes if n not in text)
    return Composed(text, merged, model, TIERS[tier_i], escalations, verdict, tool_texts, outcome, reasoning)



def _lens_question(key: str, question: str) -> str:
    return f"{question}\nAnswer from the {SPECIALISTS[key].name}'s view: {LENS[key]}."


def _new_branch(deps: Deps, session: Session, primary: Branch, key: str, question: str, *, query: str | None = None,
                user_text: str | None = None, findings: str = "", perspective: bool = False) -> Branch:
    """Retrieve with this specialist's preference and prompt; the system prompt is the primary's
    (whatever context the orchestrator put there) with this specialist's role and sources.
    A perspective (one shared question, several specialists) reads only its specialist's own kind
    of document when there are any — that is what makes it a different view — and runs no skill."""
    spec = SPECIALISTS[key]
    t = time.perf_counter()
    res = prepare(session, deps.caller, query or question, deps.history, deps.k, role_prompt=spec.prompt,
                  prefer_titles=spec.prefer_titles)
    if perspective and spec.prefer_titles:
        own = [h for h in res.hits if any(p in h.title.lower() for p in spec.prefer_titles)]
        res = dataclasses.replace(res, hits=own)
    role = spec.prompt + (f"\nFindings of the specialists before you (build on them; cite only the numbered "
                          f"sources below):\n{findings}" if findings else "")
    msgs = with_sources(primary.prepared.messages, res.hits, [], role=role)
    msgs[-1] = {"role": "user", "content": user_text or question}
    prepared = dataclasses.replace(res, messages=msgs)
    b = Branch(key, question, prepared)
    b.steps.append(RetrieveStep(ms=ms_since(t), tool="hybrid_search", query=query or question, hits=len(res.hits),
                                chunk_ids=[str(h.chunk_id) for h in res.hits]))
    if not perspective:
        b.tool_texts, b.direct, b.skill_name = deps.skill(session, deps.caller, spec, question, prepared,
                                                          deps.model_for, b.steps)
    return b


def _draft_branch(deps: Deps, b: Branch, start_tier: str, *, escalate: bool, session: Session,
                  tag: bool = True) -> None:
    b.draft = deps.draft(session, deps.caller, b.question, b.prepared, b.tool_texts, b.direct, b.skill_name,
                         start_tier, deps.model, b.calls, b.steps, deps.model_for, escalate=escalate)
    if tag:  # several specialists: each step says whose it is
        for st in b.steps:
            if st.owner is None:
                st.owner = b.specialist


def _pipeline(plan: Plan, deps: Deps, primary: Branch, start_tier: str) -> tuple[list[Branch], dict[str, Any] | None]:
    """Specialists in sequence; each retrieves with its part of the request plus the previous
    findings, and its prompt carries them. A causal part is answered with FirstPrinciples, so the
    next specialist builds on the causes found, not on a restatement of the problem."""
    out: list[Branch] = []
    findings: list[str] = []
    reasoning = None
    for i, key in enumerate(plan.specialists):
        question = plan.queries.get(key, deps.message)
        deps.trace.append(PipelineStage(ms=0.0, stage=i + 1, specialist=key, question=question,
                                        builds_on=[b.specialist for b in out]))
        if i == 0 and key == primary.specialist and question == deps.message:
            b = primary
        else:
            last = _top_findings(out[-1]) if out else ""
            b = _new_branch(deps, deps.session, primary, key, question, query=f"{question} {last}".strip(),
                            user_text=f"{question}\nFindings so far: {last}" if last else question,
                            findings="\n".join(findings))
        _draft_branch(deps, b, start_tier, escalate=True, session=deps.session)
        deps.trace.extend(b.steps)
        deps.calls.extend(b.calls)
        if plan.tool == thinking.FIRST_PRINCIPLES and reasoning is None and WHY.search(question) and b.draft:
            text, hits, tools, reasoning = first_principles(deps, b, question, b.draft.text, b.prepared.hits,
                                                             b.tool_texts, b.draft.tier)
            b.prepared = dataclasses.replace(b.prepared, hits=hits,
                                             messages=with_sources(b.prepared.messages, hits, tools))
            b.draft.text = text
        findings.append(f"{SPECIALISTS[key].name}: {_top_findings(b, 3)}")
        out.append(b)
    return out, reasoning


def _top_findings(b: Branch, n: int = 2) -> str:
    """What the next stage builds on: causes found by FirstPrinciples first, then the top statements."""
    if not b.draft:
        return ""
    sts = [st for st in thinking.statements(b.draft.text) if st.markers and not thinking.is_title(st)]
    lines = b.draft.text.splitlines()
    causes = [st for st in sts if "first principles" in " ".join(lines[:st.line]).lower()]
    return " ".join(st.plain.split(": ", 1)[-1] for st in (causes + [st for st in sts if st not in causes])[:n])


def _execution(deps: Deps, start_tier: str) -> tuple[bool, str]:
    """Whether the branches run in threads: the model decides (`Model.concurrent_ok`)."""
    model = deps.model_for(start_tier)
    if deps.tenant_id is None:
        return False, "sequential: no tenant to open one session per branch"
    if not deps.model.concurrent_ok(model):
        if llm.is_extractive(model):
            return False, ("sequential: the extractive responder is CPU-bound; threads would only contend for the "
                           "cores")
        return False, f"sequential: calls to {model} must keep their order"
    return True, "concurrent: one thread and one tenant session per branch"


def _fan_out(plan: Plan, deps: Deps, primary: Branch, start_tier: str) -> list[Branch]:
    """Independent branches; merged afterwards. A branch never sees another branch's answer."""
    parallel, why = _execution(deps, start_tier)
    jobs = []
    for key in plan.specialists:
        question = plan.queries.get(key, deps.message)
        shared = question == deps.message and len(plan.specialists) > 1
        jobs.append((key, question, shared))
    deps.trace.append(FanOutStep(ms=0.0, branches=[j[0] for j in jobs], execution=why))

    def one(job: tuple[str, str, bool], session: Session) -> Branch:
        key, question, shared = job
        if shared:  # one question, several views: each specialist retrieves and answers with its own focus
            b = _new_branch(deps, session, primary, key, question, query=f"{question} {LENS[key]}",
                            user_text=_lens_question(key, question), perspective=True)
        elif key == primary.specialist and question == deps.message:
            b = primary
        else:
            q = question if not PRONOUN.search(question) else f"{plan.subquestions[0]} {question}"
            b = _new_branch(deps, session, primary, key, question, query=q)
        _draft_branch(deps, b, start_tier, escalate=True, session=session)
        return b

    if parallel and deps.tenant_id is not None:  # _execution runs in threads only with a tenant
        from core.db.database import tenant_session

        tenant = deps.tenant_id

        def threaded(job: tuple[str, str, bool]) -> Branch:
            with tenant_session(tenant) as s:
                return one(job, s)

        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="fanout") as pool:
            branches = list(pool.map(threaded, jobs))
    else:
        branches = [one(j, deps.session) for j in jobs]
    for b in branches:  # trace and usage in branch order, whatever order the threads finished in
        deps.trace.extend(b.steps)
        deps.calls.extend(b.calls)
    return branches

