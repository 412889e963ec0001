"""Auto-composition (11D1–2): after intent routing, a complexity classifier picks how the answer is
built, and this module runs it.

class               composition   what runs
SIMPLE              direct        one specialist: generate → VERIFY → escalate (today's path, untouched)
SIMPLE, multi-part  tdd           one specialist's draft, then the TDD loop
DEEP                pipeline      specialists in sequence, each retrieving and prompting with the findings of
                                  the one before (e.g. Quality Inspector → Maintenance Advisor → Procedure
                                  Expert); a "why" question adds FirstPrinciples
MULTI_PERSPECTIVE   fan-out       several specialists independently (a thread pool when the model is remote
                                  and each branch can have its own session), merged into one answer with a
                                  section per specialist; decisions add Council
QUALITY_CRITICAL    gate          RedTeam attacks the draft; it must pass stricter criteria or is refused

Every composed answer then goes through the TDD loop: check it against explicit criteria derived
from the question (every sub-question answered, every statement cited, citations valid, numbers in
the sources; for the gate also a controlling document cited, the question's identifiers found in
the sources, no unresolved safety finding), revise, at most MAX_ROUNDS times. Each check is a trace
step. Merged answers get one combined source list and renumbered [n] markers, so `citations_for`
maps every marker to the right chunk and VERIFY runs on the merged answer.

The classifier is rules + embeddings (the router's), deterministic; only when EAP_LLM_ROUTING is on
with a non-extractive model, and the rules found a complex question they could not place, a model
is asked for the class.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from agents import budget, thinking
from agents.answer import Prepared, prepare, prompt_sources
from agents.router import Route, route
from agents.specialists import SPECIALISTS
from core import llm
from core.embedding import Embedder
from core.enums import TIERS
from core.llm import Model, default_model
from core.llm.extractive import NO_ANSWER, PREFIX
from core.prompt import prompt_of
from retrieval.search import Caller, Hit

SIMPLE, DEEP, MULTI, CRITICAL = "SIMPLE", "DEEP", "MULTI_PERSPECTIVE", "QUALITY_CRITICAL"
LEVELS = ("SIMPLE", "MODERATE", "COMPLEX")
CLASS_FLOOR = {SIMPLE: "SIMPLE", DEEP: "MODERATE", MULTI: "MODERATE", CRITICAL: "MODERATE"}
MAX_ROUNDS = 3  # TDD revisions after the first draft
MAX_BRANCHES = 3
PANEL_MARGIN = 0.08  # specialists within this route score of the best join a perspective panel
ANSWERED = 0.3  # a sub-question counts as answered when a statement scores at least this

_GATE = re.compile(
    r"\b(?:is it safe|safe to|safe for|can (?:we|i) (?:release|ship|approve|skip|bypass|restart)|"
    r"releas\w* (?:the |this )?lots?|approv\w+|sign[- ]off|(?:is|are) (?:this|it|they|the \w+) compliant|"
    r"allowed to (?:release|ship|skip|bypass|restart)|may (?:we|i) (?:release|ship|skip|restart|bypass))\b", re.I)
_DECISION = re.compile(
    r"(?:^|[,;:]\s*|\b(?:or|and)\s+)should (?:we|i)\b|\bwhich (?:option|alternative|approach|one)\b|"
    r"\b(?:is it|would it be) better\b|\bbetter to\b|\bdo you recommend\b|\bis it worth\b|\btrade-?offs?\b", re.I)
_WHY = re.compile(r"\b(?:why|root causes?|what caused|causes? of|reasons? for)\b", re.I)
_PERSPECTIVE = re.compile(
    r"\b(?:perspectives?|points? of view|viewpoints?|from (?:the |a |every |each )?(?:quality|maintenance|safety|"
    r"procedure|data|production) (?:side|view|angle|and)|each say|both (?:documents|the)|all angles)\b", re.I)
_CHAIN = re.compile(r"\b(?:then|after that|afterwards|next|based on|as a result|fix|repair|correct|prevent|remedy)\b",
                    re.I)
_ASKS = re.compile(r"\b(?:what|how|which|who|whom|when|where|why)\b|^\W*(?:and\s+|then\s+)*(?:is|are|can|could|"
                   r"should|do|does|did|may|must|will|would)\b", re.I)
_SPLIT_HARD = re.compile(r"[?;\n]+")
_SPLIT_SOFT = re.compile(r",\s*(?:and\s+)?(?:then\s+)?(?=(?:what|how|which|who|when|where|why)\b)|"
                         r"\s+and\s+(?:then\s+)?(?=(?:what|how|which|who|when|where|why)\b)", re.I)
_PRONOUN = re.compile(r"\b(?:it|its|that|this|them|they|those|these)\b", re.I)
_IDENT = re.compile(r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z-])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b|"
                    r"\b[A-Z]{1,4}\d+[A-Za-z0-9]*\b")
# How each specialist looks at a shared question (its retrieval and its prompt get this focus).
LENS = {
    "quality_inspector": "quality defects, inspection criteria, defect rate, root cause and corrective actions",
    "maintenance_advisor": "machine condition, maintenance checks, parts to replace and service intervals",
    "procedure_expert": "the procedure steps and safety instructions to follow",
    "data_analyst": "the figures: rates, totals, durations and their trend",
    "document_analyst": "what the documents state, their scope and differences",
}
PIPELINE_WORDS = {0: "First", 1: "Then", 2: "Finally"}


# ------------------------------------------------------------------------------------ classifier


def subquestions(question: str) -> list[str]:
    """Split a request into its asked parts: at '?', ';', and before a wh-word joined by a comma or
    'and'. Fragments without a question word or under three words stay with the part before them
    ("… need and how often" is one part)."""
    pieces: list[tuple[str, str]] = []  # (separator before it, text)
    for hard in _SPLIT_HARD.split(question):
        sep, last = "; ", 0
        for m in [*_SPLIT_SOFT.finditer(hard), None]:
            text = hard[last:m.start() if m else len(hard)]
            if text.strip(" ,.:"):
                pieces.append((sep, text.strip(" ,.:")))
            if m:
                sep, last = m.group(0), m.end()
    out: list[str] = []
    carry = ""
    for sep, p in pieces:
        if carry:
            p, carry = carry + sep + p, ""
        if len(p.split()) >= 3 and _ASKS.search(p):
            out.append(p)
        elif out:
            out[-1] = out[-1] + sep + p
        else:
            carry = p
    if carry:
        out.append(carry)
    return out or [question.strip()]


def identifiers(text: str) -> list[str]:
    """Codes a quality-critical answer must find in its sources: lots, parts, SOPs, machines (BR-220, 2026-118)."""
    seen: list[str] = []
    for m in _IDENT.finditer(text):
        if m.group(0) not in seen:
            seen.append(m.group(0))
    return seen


@dataclass
class Plan:
    klass: str
    composition: str  # direct | tdd | pipeline | fan-out | gate
    specialists: list[str]  # execution order; [primary] for single-specialist compositions
    queries: dict[str, str]  # specialist → the part of the request it answers
    subquestions: list[str]
    tool: str | None  # Council | RedTeam | FirstPrinciples
    level: str  # tier floor: SIMPLE / MODERATE / COMPLEX
    reasons: list[str]
    by: str = "rules"

    @property
    def direct(self) -> bool:
        return self.composition == "direct" and self.tool is None

    def as_step(self) -> dict:
        return {"class": self.klass, "composition": self.composition, "specialists": self.specialists,
                "subquestions": self.subquestions, "thinking_tool": self.tool, "complexity": self.level,
                "reasons": self.reasons, "by": self.by}


def _raise(level: str, floor: str) -> str:
    return LEVELS[max(LEVELS.index(level), LEVELS.index(floor))]


def _panel(r: Route) -> list[str]:
    ranked = sorted(r.scores, key=lambda k: -r.scores[k]) if r.scores else [r.specialist]
    top = r.scores.get(ranked[0], 0.0) if r.scores else 0.0
    panel = [r.specialist] + [k for k in ranked if k != r.specialist and r.scores[k] >= top - PANEL_MARGIN]
    if len(panel) < 2:
        panel += [k for k in ranked if k not in panel][: 2 - len(panel)]
    return panel[:MAX_BRANCHES]


def classify(question: str, r: Route, level: str, embedder: Embedder, *, model: Model | None = None,
             name: str | None = None, allow_model: bool = False) -> Plan:
    """The complexity classifier. `level` is the request-shape level (orchestrator.complexity); the
    class raises it to its floor, so tiers and compositions agree. `model` (the seam) and `name` (the
    LIGHT tier's model string) are asked only with `allow_model` and a non-extractive `name`."""
    subs = subquestions(question)
    reasons: list[str] = []
    primary = r.specialist
    assigned: list[tuple[str, str]] = []  # (specialist, sub-question) in question order
    if len(subs) > 1:
        for i, sq in enumerate(subs):
            sr = route(sq if i == 0 or not _PRONOUN.search(sq) else f"{subs[0]} {sq}", embedder)
            key = sr.specialist if not sr.fallback else (assigned[-1][0] if assigned else primary)
            assigned.append((key, sq))
    order: list[str] = []
    for key, _sq in assigned:
        if key not in order:
            order.append(key)
    queries = {k: " and ".join(sq for kk, sq in assigned if kk == k) for k in order}

    def plan(klass: str, comp: str, specs: list[str], tool: str | None, qs: dict[str, str] | None = None) -> Plan:
        return Plan(klass, comp, specs[:MAX_BRANCHES], qs or {s: question for s in specs[:MAX_BRANCHES]}, subs, tool,
                    _raise(level, CLASS_FLOOR[klass]), reasons)

    if m := _GATE.search(question):
        reasons.append(f"quality-critical wording '{m.group(0)}': the answer must pass the gate")
        return plan(CRITICAL, "gate", [primary], thinking.REDTEAM)
    if m := _DECISION.search(question):
        reasons.append(f"decision wording '{m.group(0).strip(' ,;:')}': several perspectives, then a synthesis")
        return plan(MULTI, "fan-out", _panel(r), thinking.COUNCIL)
    if len(order) >= 2:
        at = question.find(subs[0])
        later = question[at + len(subs[0]):] if at >= 0 else " ".join(sq for _k, sq in assigned[1:])
        if (m := _CHAIN.search(later)) or _PRONOUN.search(later):
            cue = m.group(0) if m else "a reference back to an earlier part"
            reasons.append(f"{len(subs)} parts for {len(order)} specialists, chained by '{cue}': each builds on "
                           "the last")
            causal = any(_WHY.search(sq) for _k, sq in assigned)
            if causal:
                reasons.append("a causal part: its specialist decomposes root causes (FirstPrinciples)")
            return plan(DEEP, "pipeline", order, thinking.FIRST_PRINCIPLES if causal else None, queries)
        reasons.append(f"{len(subs)} independent parts for {len(order)} specialists")
        return plan(MULTI, "fan-out", order, None, queries)
    if m := _PERSPECTIVE.search(question):
        reasons.append(f"asks for several viewpoints ('{m.group(0)}')")
        return plan(MULTI, "fan-out", _panel(r), None)
    if m := _WHY.search(question):
        reasons.append(f"causal question ('{m.group(0)}'): decompose root causes")
        return plan(DEEP, "pipeline", [primary], thinking.FIRST_PRINCIPLES)
    if len(subs) > 1:
        reasons.append(f"{len(subs)} asked parts for one specialist: draft, check each part, revise")
        return plan(SIMPLE, "tdd", [primary], None)
    reasons.append("one specialist, one question")
    p = plan(SIMPLE, "direct", [primary], None)
    if allow_model and name and not llm.is_extractive(name) and level == "COMPLEX":
        return _classify_with_model(question, r, level, p, name, model or default_model())
    return p


def _classify_with_model(question: str, r: Route, level: str, rules: Plan, model: str, lm: Model) -> Plan:
    """Optional LLM escalation for complex questions the rules left SIMPLE."""
    msgs = [{"role": "system", "content": "Classify how a manufacturing assistant should answer. Reply with exactly "
                                          "one of: SIMPLE (one specialist), DEEP (specialists in sequence), "
                                          "MULTI_PERSPECTIVE (several specialists, merged), QUALITY_CRITICAL (a "
                                          "safety, compliance or release decision that must pass a check)."},
            {"role": "user", "content": question}]
    reply = lm.complete(msgs, model=model).text.strip().upper().strip(" .`'\"")
    rules.reasons.append(f"rules: SIMPLE for a complex question; model {model} says {reply or 'nothing'}")
    if reply == CRITICAL:
        return dataclasses.replace(rules, klass=CRITICAL, composition="gate", tool=thinking.REDTEAM,
                                   level=_raise(level, CLASS_FLOOR[CRITICAL]), by="model")
    if reply in (DEEP, MULTI):
        panel = _panel(r)
        return dataclasses.replace(rules, klass=reply, composition="pipeline" if reply == DEEP else "fan-out",
                                   specialists=panel, queries={s: question for s in panel},
                                   level=_raise(level, CLASS_FLOOR[reply]), by="model")
    return rules


# ------------------------------------------------------------------------------------ execution


@dataclass
class Draft:
    text: str
    model: str
    tier: str
    escalations: int
    verdict: Any  # orchestrator.Verdict


@dataclass
class Deps:
    """What a composition needs from the orchestrator: the request, its session and the seams.
    `draft` is the orchestrator's generate → VERIFY → escalate loop for one specialist, `skill` its
    rule-based skill step, `verify` its VERIFY."""
    session: Session
    caller: Caller
    message: str
    history: list[dict]
    k: int
    model: Model
    embedder: Embedder
    calls: list[dict]
    trace: list[dict]
    model_for: Callable[[str], str]
    tenant_id: uuid.UUID | None
    draft: Callable[..., Draft]
    skill: Callable[..., tuple[list[str], str | None, str | None]]
    verify: Callable[..., Any]
    verdict: Callable[..., Any]  # orchestrator.Verdict (for the refusal path)


@dataclass
class Branch:
    specialist: str
    question: str  # the part of the request this specialist answers
    prepared: Prepared
    tool_texts: list[str] = field(default_factory=list)
    direct: str | None = None
    skill_name: str | None = None
    draft: Draft | None = None
    steps: list[dict] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)


@dataclass
class Composed:
    text: str
    prepared: Prepared  # hits = the merged source list the [n] markers point into
    model: str
    tier: str
    escalations: int
    verdict: Any
    tool_texts: list[str]
    outcome: str | None = None  # "refused" when the quality gate refuses; else the orchestrator decides
    reasoning: dict | None = None


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
    notes = list(dict.fromkeys(ln.strip() for t in texts for ln in t.splitlines() if _NOTE.match(ln.strip())))
    template = primary.prepared.messages
    merged = dataclasses.replace(primary.prepared, hits=hits,
                                 messages=_with_sources(template, hits, tool_texts))
    if len(branches) > 1:
        text = _render(plan, branches, texts)
        deps.trace.append({"step": "MERGE", "ms": round((time.perf_counter() - t0) * 1000, 1),
                           "composition": plan.composition, "sections": [b.specialist for b in branches],
                           "sources": len(hits), "tool_sources": len(tool_texts),
                           "renumbered": {b.specialist: _numbering(b, hits) for b in branches}})
    else:
        text = texts[0]
    tiers = [TIERS.index(b.draft.tier) for b in branches if b.draft]
    tier_i = max(tiers or [TIERS.index(start_tier)])
    escalations = sum(b.draft.escalations for b in branches if b.draft)
    model = next((b.draft.model for b in branches if b.draft), deps.model_for(start_tier))

    if plan.tool == thinking.COUNCIL and len(branches) > 1:
        text, reasoning = _council(deps, branches, texts, hits, merged, TIERS[tier_i])
    if plan.tool == thinking.FIRST_PRINCIPLES and len(branches) == 1:
        text, hits, tool_texts, reasoning = _first_principles(deps, primary, deps.message, text, hits, tool_texts,
                                                              TIERS[tier_i])
        merged = dataclasses.replace(merged, hits=hits, messages=_with_sources(template, hits, tool_texts))

    gate = plan.composition == "gate"
    text, tier_i, revisions, results, attack = _tdd(plan, deps, text, merged, tool_texts, tier_i, gate)
    escalations += revisions
    if attack is not None:
        reasoning = attack.reasoning()
    verdict = deps.verify(text, merged, deps.caller, tool_texts)
    failed = [r for r in results if not r["passed"]]
    outcome = None
    model = deps.model_for(TIERS[tier_i]) if revisions else model
    if gate:
        text, outcome, verdict = _gate_decision(deps, text, failed, verdict)
    elif failed and verdict.ok and not verdict.abstained:
        unanswered = [r for r in failed if r["criterion"] == "answers every part"]
        if unanswered:
            text += ("\n\nNotice: not every part of the question is answered by your documents "
                     f"({unanswered[0]['detail']}).")
    deps.trace.append({"step": "COMPOSE.done", "ms": round((time.perf_counter() - t0) * 1000, 1),
                       "composition": plan.composition, "class": plan.klass, "thinking_tool": plan.tool,
                       "specialists": [b.specialist for b in branches], "revisions": revisions,
                       "criteria_passed": not failed, "outcome": outcome or "see LEARN"})
    text += "".join(f"\n{n}" for n in notes if n not in text)
    return Composed(text, merged, model, TIERS[tier_i], escalations, verdict, tool_texts, outcome, reasoning)


# ---------------------------------------------------------------- branches


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
    msgs = _with_sources(primary.prepared.messages, res.hits, [], role=role)
    msgs[-1] = {"role": "user", "content": user_text or question}
    prepared = dataclasses.replace(res, messages=msgs)
    b = Branch(key, question, prepared)
    b.steps.append({"step": "THINK.retrieve", "ms": round((time.perf_counter() - t) * 1000, 1),
                    "tool": "hybrid_search", "query": query or question, "hits": len(res.hits),
                    "chunk_ids": [str(h.chunk_id) for h in res.hits]})
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
            st.setdefault("specialist", b.specialist)


def _pipeline(plan: Plan, deps: Deps, primary: Branch, start_tier: str) -> tuple[list[Branch], dict | None]:
    """Specialists in sequence; each retrieves with its part of the request plus the previous
    findings, and its prompt carries them. A causal part is answered with FirstPrinciples, so the
    next specialist builds on the causes found, not on a restatement of the problem."""
    out: list[Branch] = []
    findings: list[str] = []
    reasoning = None
    for i, key in enumerate(plan.specialists):
        question = plan.queries.get(key, deps.message)
        deps.trace.append({"step": "PIPELINE.stage", "ms": 0.0, "stage": i + 1, "specialist": key,
                           "question": question, "builds_on": [b.specialist for b in out]})
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
        if plan.tool == thinking.FIRST_PRINCIPLES and reasoning is None and _WHY.search(question) and b.draft:
            text, hits, tools, reasoning = _first_principles(deps, b, question, b.draft.text, b.prepared.hits,
                                                             b.tool_texts, b.draft.tier)
            b.prepared = dataclasses.replace(b.prepared, hits=hits,
                                             messages=_with_sources(b.prepared.messages, hits, tools))
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
    deps.trace.append({"step": "FANOUT", "ms": 0.0, "branches": [j[0] for j in jobs], "execution": why})

    def one(job: tuple[str, str, bool], session: Session) -> Branch:
        key, question, shared = job
        if shared:  # one question, several views: each specialist retrieves and answers with its own focus
            b = _new_branch(deps, session, primary, key, question, query=f"{question} {LENS[key]}",
                            user_text=_lens_question(key, question), perspective=True)
        elif key == primary.specialist and question == deps.message:
            b = primary
        else:
            q = question if not _PRONOUN.search(question) else f"{plan.subquestions[0]} {question}"
            b = _new_branch(deps, session, primary, key, question, query=q)
        _draft_branch(deps, b, start_tier, escalate=True, session=session)
        return b

    if parallel:
        from core.database import tenant_session

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


# ---------------------------------------------------------------- merge


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
        texts.append(thinking.MARK.sub(lambda m, mp=mapping: f"[{mp.get(int(m.group(1)), 0)}]",
                                       b.draft.text if b.draft else ""))
    return hits, tool_texts, texts


def _map(b: Branch, bi: int, index: dict, tool_index: dict) -> dict[int, int]:
    mapping = {i: index[h.chunk_id] for i, h in enumerate(b.prepared.hits, start=1)}
    for ti in range(len(b.tool_texts)):
        mapping[len(b.prepared.hits) + 1 + ti] = tool_index[(bi, ti)]
    return mapping


def _numbering(b: Branch, hits: list[Hit]) -> dict[str, int]:
    index = {h.chunk_id: i for i, h in enumerate(hits, start=1)}
    return {str(i): index[h.chunk_id] for i, h in enumerate(b.prepared.hits, start=1)}


def _with_sources(messages: list[dict], hits: list[Hit], tool_texts: list[str], *,
                  role: str | None = None) -> list[dict]:
    """The same conversation with the typed prompt's sources (and, if given, its role) replaced and the
    system message rendered again; the rendered text is never searched or spliced."""
    msgs = [dict(m) for m in messages]
    prompt = prompt_of(msgs)
    if prompt is None:
        raise ValueError("a composed branch needs the typed prompt its sources are replaced in")
    prompt = prompt.replace(sources=prompt_sources(hits, tool_texts), **({"role": role} if role is not None else {}))
    msgs[0] = prompt.system_message()
    return msgs


_NOTE = re.compile(r"^\((?!.*\[\d{1,2}\]).+\)$")


def _strip_prefix(text: str) -> tuple[str, bool]:
    lines = text.strip().splitlines()
    if lines and lines[0].strip() == PREFIX:
        return "\n".join(lines[1:]).strip(), True
    return text.strip(), False


def _render(plan: Plan, branches: list[Branch], texts: list[str]) -> str:
    """One answer, a section per specialist; a statement already given in an earlier section is not
    repeated."""
    seen: set[str] = set()
    sections, extractive = [], False
    for i, (b, txt) in enumerate(zip(branches, texts, strict=True)):
        body, ex = _strip_prefix(txt)
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


# ---------------------------------------------------------------- thinking tools


def _call(deps: Deps, messages: list[dict], tier: str, purpose: str, trace: list[dict] | None = None,
          calls: list[dict] | None = None) -> str:
    """One model call through the seam, with usage and a trace step."""
    model = deps.model_for(tier)
    t = time.perf_counter()
    c = deps.model.complete(messages, model=model)
    p_tok, c_tok = budget.tokens(c, messages)
    (deps.calls if calls is None else calls).append(
        {"tier": tier, "model": model, "prompt_tokens": int(p_tok), "completion_tokens": int(c_tok)})
    (deps.trace if trace is None else trace).append(
        {"step": "THINK.generate", "ms": round((time.perf_counter() - t) * 1000, 1), "tier": tier, "model": model,
         "purpose": purpose, "prompt_tokens": int(p_tok), "completion_tokens": int(c_tok)})
    return c.text


def _council(deps: Deps, branches: list[Branch], texts: list[str], hits: list[Hit], merged: Prepared,
             tier: str) -> tuple[str, dict]:
    t = time.perf_counter()
    persp = []
    for b, txt in zip(branches, texts, strict=True):
        cited = sorted({int(n) for n in thinking.MARK.findall(txt)})
        persp.append(thinking.Perspective(b.specialist, SPECIALISTS[b.specialist].name, b.question, txt,
                                          sorted({hits[n - 1].title for n in cited if 1 <= n <= len(hits)})))
    extractive = any(_strip_prefix(txt)[1] for txt in texts)
    text, reasoning = thinking.council(deps.message, persp, deps.embedder.embed, PREFIX if extractive else None)
    if deps.model.generative(deps.model_for(tier)):
        listing = "\n\n".join(f"{p.name}:\n{p.text}" for p in persp)
        msgs = merged.messages[:-1] + [{"role": "user", "content": (
            f"{deps.message}\n\nPerspectives of the specialists (cite the numbered sources, as they do):\n{listing}\n\n"
            "Synthesise one answer: where they agree, where they differ, what the documents leave open. Cite every "
            "statement with its source number.")}]
        text = _call(deps, msgs, tier, "council synthesis")
        reasoning["method"] = f"synthesis by {deps.model_for(tier)} over the perspectives"
    deps.trace.append({"step": "THINK.council", "ms": round((time.perf_counter() - t) * 1000, 1),
                       "perspectives": [p.specialist for p in persp],
                       "common_ground": len(reasoning.get("common_ground", [])),
                       "considerations": len(reasoning.get("considerations", []))})
    return text, reasoning


def _first_principles(deps: Deps, primary: Branch, question: str, text: str, hits: list[Hit], tool_texts: list[str],
                      tier: str) -> tuple[str, list[Hit], list[str], dict]:
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
    deps.trace.append({"step": "THINK.first_principles", "ms": round((time.perf_counter() - t) * 1000, 1),
                       "probes": len(thinking.hypotheses()), "candidates": len(candidates),
                       "hypotheses": [{"category": r["category"], "status": r["status"]}
                                      for r in reasoning["hypotheses"]]})
    return text, hits, tool_texts, reasoning


def _retool(n: int, old_hits: int, new_hits: int) -> int:
    return n + (new_hits - old_hits) if n > old_hits else n


# ---------------------------------------------------------------- TDD loop and gate


def criteria(text: str, subs: list[str], prepared: Prepared, verdict: Any, *, strict: bool, question: str,
             attack: thinking.Attack | None, embed: Callable[[list[str]], Any]) -> list[dict]:
    """Explicit, checkable criteria derived from the question."""
    sts = thinking.statements(text)
    out = []
    if verdict.abstained:
        return [{"criterion": "grounded", "passed": True, "detail": "the documents do not answer it: abstained"}]
    unanswered = [sq for sq in subs if not _answered(sq, sts, embed)]
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


def _answered(sq: str, sts: list[thinking.Statement], embed: Callable[[list[str]], Any]) -> bool:
    if not sts:
        return False
    vecs = embed([sq] + [st.plain for st in sts])
    terms = thinking.content_terms(sq)
    causal = bool(_WHY.search(sq))
    for i, st in enumerate(sts, start=1):
        overlap = len(terms & thinking.content_terms(st.plain)) / max(1, len(terms))
        score = max(float(vecs[i] @ vecs[0]), 0.8 * overlap)
        if causal and thinking._CAUSAL.search(st.plain):  # noqa: SLF001 - same module family, one definition
            score += 0.15
        if score >= ANSWERED:
            return True
    return False


def _tdd(plan: Plan, deps: Deps, text: str, merged: Prepared, tool_texts: list[str], tier_i: int,
         gate: bool) -> tuple[str, int, int, list[dict], thinking.Attack | None]:
    """Draft → check → revise, at most MAX_ROUNDS revisions; each check is a trace step."""
    revisions, results, attack = 0, [], None
    found: list[dict] = []
    titles = [h.title for h in merged.hits]
    for rnd in range(MAX_ROUNDS + 1):
        t = time.perf_counter()
        if gate:
            attack = thinking.red_team(text, [h.text for h in merged.hits], titles, tool_texts)
            deps.trace.append({"step": "THINK.redteam", "ms": round((time.perf_counter() - t) * 1000, 1),
                               "round": rnd, "findings": attack.findings, "blocking": attack.blocking})
            text = attack.text  # may be empty: then nothing survived the attack and the checks fail
            found += [{**f, "round": rnd} for f in attack.findings]
            attack = dataclasses.replace(attack, findings=list(found))  # the reasoning shows every round's
        verdict = deps.verify(text, merged, deps.caller, tool_texts)
        results = criteria(text, plan.subquestions, merged, verdict, strict=gate, question=deps.message, attack=attack,
                           embed=deps.embedder.embed)
        ok = all(r["passed"] for r in results)
        deps.trace.append({"step": "TDD.check", "ms": round((time.perf_counter() - t) * 1000, 1), "round": rnd,
                           "passed": ok, "criteria": results})
        if ok or rnd == MAX_ROUNDS:
            break
        new_tier = min(tier_i + 1, len(TIERS) - 1)
        new = _revise(deps, plan, text, merged, tool_texts, results, TIERS[new_tier])
        if new.strip() == text.strip():
            deps.trace.append({"step": "TDD.revise", "ms": 0.0, "round": rnd + 1,
                               "note": "no revision possible from these sources: stopped"})
            break
        text, tier_i, revisions = new, new_tier, revisions + 1
        deps.trace.append({"step": "TDD.revise", "ms": round((time.perf_counter() - t) * 1000, 1), "round": rnd + 1,
                           "tier": TIERS[tier_i], "because": [r["criterion"] for r in results if not r["passed"]]})
    return text, tier_i, revisions, results, attack


def _revise(deps: Deps, plan: Plan, text: str, merged: Prepared, tool_texts: list[str], results: list[dict],
            tier: str) -> str:
    failed = [r for r in results if not r["passed"]]
    if deps.model.generative(deps.model_for(tier)):
        feedback = "\n".join(f"- {r['criterion']}: {r['detail']}" for r in failed)
        msgs = merged.messages + [{"role": "assistant", "content": text}, {"role": "user", "content": (
            f"Revise your answer to: {deps.message}\nThese checks failed:\n{feedback}\nAnswer every part, cite every "
            "statement with its source number, use only numbers that appear in the sources.")}]
        return _call(deps, msgs, tier, "TDD revision")
    # Extractive revision: drop what fails, then answer each unanswered part on its own.
    n_src = len(merged.hits) + len(tool_texts)
    src = " ".join([h.text for h in merged.hits] + tool_texts)

    def keep(st: thinking.Statement) -> str | None:
        if not st.markers or any(not 1 <= n <= n_src for n in st.markers):
            return None
        if any(n not in src for n in thinking.NUMBER.findall(st.plain)):
            return None
        return st.text

    revised = thinking.rewrite(text, keep)
    sts = thinking.statements(revised)
    have = {st.plain for st in sts}
    added: list[str] = []
    for sq in plan.subquestions:
        if _answered(sq, sts, deps.embedder.embed):
            continue
        msgs = merged.messages[:-1] + [{"role": "user", "content": sq}]
        reply = _call(deps, msgs, tier, f"TDD revision: {sq[:60]}")
        for st in thinking.statements(reply):
            if st.markers and st.plain not in have:
                have.add(st.plain)
                added.append(f"- {st.text}")
    if added:
        revised = f"{revised}\n\nFurther from your documents:\n" + "\n".join(added[:4])
    if not thinking.statements(revised):
        return NO_ANSWER
    return revised


def _gate_decision(deps: Deps, text: str, failed: list[dict], verdict: Any) -> tuple[str, str | None, Any]:
    """Release with a passed-gate line, or refuse: a clear notice, the reasons, the evidence found."""
    if verdict.abstained:
        return text, None, verdict
    if not failed and verdict.ok:
        return (f"{text}\n\nQuality gate: passed (every statement cited from a controlling document, identifiers "
                "confirmed, red-team findings resolved)."), None, verdict
    reasons = "; ".join(f"{r['criterion']} — {r['detail']}" for r in failed) or "; ".join(verdict.problems)
    evidence = [st for st in thinking.statements(text) if st.markers]
    body = "\n".join(f"- {st.text}" for st in evidence[:4])
    refusal = ("Quality gate: NOT PASSED. This is a safety, compliance or release question and the answer could not "
               f"be confirmed from your documents ({reasons}). Do not act on it; the responsible person must decide.")
    if body:
        refusal += "\n\nEvidence found (for the responsible person to review):\n" + body
    return refusal, "refused", deps.verdict(verdict.ok, False, list(verdict.problems))
