"""The orchestrator: OBSERVE → THINK → VERIFY → LEARN for every message.

OBSERVE  conversation history and the caller's access (role ceiling, groups); with a tenant, the user's
         memories and active goals (agents/learning), injected into the system prompt as user context
THINK    route to a specialist (embeddings + rules), pick its model tier, retrieve with its preference
         ; classify complexity and run the chosen composition and thinking tool (agents/compose)
VERIFY   every [n] cites a retrieved chunk the caller may read; every number in the answer appears in
         the sources; no Class IV chunk unless approved; failing answers escalate to the next tier, and
         if the last tier fails too the answer is downgraded with a notice; PII sanitised for III/IV
LEARN    the run (specialist, tier, outcome, trace) is stored and retrievable by id
All I/O comes in through the session and the model seam; nothing here knows about HTTP or Dagster.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from agents import answer_access, budget, compose, learning, operational, skills, sql_questions, write_requests
from agents.answer import Citation, Prepared, citations_for, prepare
from agents.deps import AgentDeps
from agents.router import Route, route, route_with_model
from agents.specialists import SPECIALISTS, Specialist
from agents.trace import (
    UNSET,
    EscalateStep,
    GenerateStep,
    LearnStep,
    ObserveStep,
    ReasoningStep,
    RetrieveStep,
    RouteStep,
    SkillStep,
    TierStep,
    Trace,
    VerifyStep,
    ms_since,
)
from agents.verify import Verdict, verify
from compliance.access import ceiling
from compliance.pii import sanitise
from core import llm
from core.enums import TIERS
from core.errors import Forbidden, InvalidInput
from core.llm import Model, tiers
from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.models import AgentRun
from core.prompt import prompt_of
from core.repos import tenants
from core.settings import Settings
from retrieval.search import Caller

_COMPLEX = re.compile(r"\b(why|root cause|compare|trade-?off|should we|plan|impact|analy[sz]e)\b", re.I)


def complexity(question: str) -> str:
    """SIMPLE / MODERATE / COMPLEX from the request's shape (the composition work of the intelligence
    loop refines this): long, multi-part or causal questions need a stronger tier."""
    words = len(question.split())
    parts = question.count("?") + len(re.findall(r"\band\b.*\?", question))
    signals = (words > 30) + (parts > 1) + bool(_COMPLEX.search(question))
    return "COMPLEX" if signals >= 2 else "MODERATE" if signals == 1 else "SIMPLE"


def pick_tier(specialist_tier: str, level: str) -> str:
    floor = {"SIMPLE": "LIGHT", "MODERATE": "STANDARD", "COMPLEX": "HEAVY"}[level]
    return TIERS[max(TIERS.index(specialist_tier), TIERS.index(floor))]


def tier_model(tier: str, s: Settings) -> str:
    return {"LIGHT": s.llm_model_light, "STANDARD": s.llm_model_standard, "HEAVY": s.llm_model_heavy}.get(
        tier) or llm.model_name()


@dataclass(frozen=True)
class TierModels:
    """`model_for` of one run: the model a tier's call runs on. A tier the tenant's policy does not allow runs
    on the allowed tier below it (core/llm/tiers.py), never above the tier the client pinned; over budget,
    everything runs on the extractive responder."""

    policy: tiers.TierPolicy
    settings: Settings
    pinned: str | None = None
    over_budget: bool = False

    def effective(self, tier: str) -> str:
        return self.policy.clamp(tier, self.pinned)

    def next_up(self, tier: str) -> str | None:
        return self.policy.next_up(tier, self.pinned)

    def __call__(self, tier: str) -> str:
        return EXTRACTIVE_MODEL if self.over_budget else tier_model(self.effective(tier), self.settings)




@dataclass
class Outcome:
    text: str
    citations: list[Citation]
    model: str
    tier: str
    specialist: str
    route_confidence: float
    outcome: str
    escalations: int
    steps: Trace  # typed; `trace` is its stored JSON
    prepared: Prepared
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per model call: tier, model, tokens
    run_id: uuid.UUID | None = None
    memory: learning.UserContext | None = None  # what OBSERVE recalled (None without a tenant, e.g. evaluations)
    # Citations of SAP/MES records (kind "record": system, entity, key, as-of) next to the document citations.
    records: list[operational.RecordCitation] = field(default_factory=list)

    @property
    def trace(self) -> list[dict[str, Any]]:
        """The trace as stored on the run and returned by GET /v1/traces/{id}."""
        return self.steps.to_json()

    @property
    def composition(self) -> str:
        step = self.steps.compose
        return step.composition if step is not None else "direct"

    @property
    def reasoning(self) -> dict[str, Any] | None:
        """A thinking tool's output (Council, RedTeam, FirstPrinciples), shown as a collapsible section;
        kept in the trace, so it is stored with the run."""
        step = self.steps.reasoning
        return step.reasoning if step is not None else None


def run(deps: AgentDeps, message: str, history: list[dict[str, Any]], *, k: int = 6,
        specialist: str | None = None, tier: str | None = None) -> Outcome:
    """One message, answered with the session, caller, settings, embedder and model of `deps`. With a
    tenant in `deps.caller`, the tenant's token budget is checked first (BudgetExceeded → 429) and the
    user's memories are recalled. `specialist` (a key of SPECIALISTS) skips routing: the client chose it
    (the OpenAI-compatible API's model names). `tier` pins the answer's model tier (the client asked for it):
    a tier the tenant's policy does not allow is refused (Forbidden) or downgraded, as the policy says."""
    session, caller, tenant_id = deps.session, deps.access, deps.tenant_id
    settings, lm = deps.settings, deps.model
    trace = Trace()
    over_budget = budget.check(session, tenant_id) if tenant_id is not None else None
    policy = tiers.stored(tenants.settings(session, tenant_id), settings) if tenant_id is not None \
        else tiers.everything(settings)
    pinned, tier_note = policy.resolve(tier) if tier is not None else (None, None)
    model_for = TierModels(policy, settings, pinned, bool(over_budget))

    t = time.perf_counter()
    ctx = learning.observe(deps, message) if tenant_id is not None else None
    trace.append(ObserveStep(ms=ms_since(t), history_turns=len(history) // 2, role=caller.role,
                             ceiling=ceiling(caller.role), groups=list(caller.groups),
                             budget="exceeded: served by the extractive responder" if over_budget else "ok",
                             **(ctx.trace() if ctx is not None else {})))

    t = time.perf_counter()
    r = route(message, deps.embedder)
    light = model_for("LIGHT")
    if specialist is not None:
        r = Route(specialist, 1.0, r.scores, False, f"chosen by the client (embedding router: {r.specialist})")
    elif settings.llm_routing and not llm.is_extractive(light):
        by_model = route_with_model(message, light, lm)
        if by_model is not None:
            by_model.scores, by_model.reason = r.scores, f"{by_model.reason} (embedding router: {r.specialist})"
            r = by_model
    if ctx is not None and specialist is None:
        r = ctx.prefer_specialist(session, r)  # ambiguous requests: the user's rated history decides
    spec = SPECIALISTS[r.specialist]
    trace.append(RouteStep(ms=ms_since(t), specialist=spec.key, confidence=round(r.confidence, 4),
                           fallback=r.fallback, reason=r.reason,
                           scores={k2: round(v, 4) for k2, v in r.scores.items()}))

    # A request to change MES/SAP becomes a proposal for a human approver; the answer shows it and never
    # claims an execution (agents/write_requests.py). No retrieval, no model call.
    proposed = write_requests.handle(deps, message, trace)
    if proposed is not None:
        return Outcome(proposed.text, [], f"skill:{write_requests.SKILL}", TIERS[0], spec.key, r.confidence,
                       "proposed" if proposed.proposal is not None else "refused", 0, trace, Prepared([], []),
                       memory=ctx)

    t = time.perf_counter()
    prepared = prepare(session, caller, message, history, k, role_prompt=spec.prompt, prefer_titles=spec.prefer_titles)
    if ctx is not None:
        ctx.inject(prepared.messages)  # "User context (from memory)" ahead of the numbered sources
    trace.append(RetrieveStep(ms=ms_since(t), tool="hybrid_search", hits=len(prepared.hits),
                              index_version=prepared.index_version, chunk_ids=[str(h.chunk_id) for h in prepared.hits],
                              timings_ms=prepared.timings_ms))

    tool_texts, direct, skill_name = _skill(session, caller, spec, message, prepared, model_for, trace)
    if skill_name is None:  # a structured question: the reporting views through the SQL Guard
        tool_texts, direct, skill_name = sql_questions.step(deps, message, prepared, model_for(spec.tier), trace)

    # THINK.compose: the complexity classifier picks the composition (agents/compose); its
    # level also sets the starting tier. SIMPLE requests take the direct path below, unchanged.
    t = time.perf_counter()
    plan = compose.classify(message, r, complexity(message), deps.embedder, model=lm, name=light,
                            allow_model=settings.llm_routing)
    trace.append(plan.as_step(ms_since(t)))
    start_tier = pinned or model_for.effective(pick_tier(policy.base(spec.key, spec.tier), plan.level))
    trace.append(TierStep(ms=0.0, complexity=plan.level, tier=start_tier, specialist_default=spec.tier,
                          allowed=list(policy.allowed) if policy.configured else UNSET,
                          requested=tiers.tier_name(tier) if tier is not None else UNSET,
                          downgraded_from=tiers.tier_name(tier) if tier_note else UNSET))
    calls: list[dict[str, Any]] = []
    forced: str | None = None
    d: compose.Draft | compose.Composed
    if plan.direct:
        d = _draft(session, caller, message, prepared, tool_texts, direct, skill_name, start_tier, lm, calls,
                   trace, model_for)
    else:
        cdeps = compose.Deps(session, caller, message, history, k, lm, deps.embedder, calls, trace, model_for,
                             tenant_id, draft=_draft, skill=_skill)
        composed = compose.execute(plan, cdeps, compose.Branch(spec.key, message, prepared, tool_texts, direct,
                                                               skill_name), start_tier)
        prepared, forced = composed.prepared, composed.outcome  # the merged sources the [n] markers point into
        if composed.reasoning:
            trace.append(ReasoningStep(ms=0.0, reasoning=composed.reasoning))
        d = composed
    # A composition's own revisions count tiers on the ladder; they ran on the policy's models (model_for).
    text, model, escalations, verdict = d.text, d.model, d.escalations, d.verdict
    tier_index = TIERS.index(model_for.effective(d.tier))
    for c in calls:
        c["tier"] = model_for.effective(c["tier"])  # the tier whose model the call ran on (usage records)
    if tier_note:
        prepared.retrieval_notes.append(tier_note)
    outcome = forced or ("abstained" if verdict.abstained else "verified" if verdict.ok else "downgraded")
    if outcome == "downgraded":
        text = (f"{text}\n\nNotice: this answer failed automatic verification ({'; '.join(verdict.problems)}). "
                "Check the cited documents before relying on it.")
    cites = citations_for(text, prepared.hits)
    records = operational.record_citations(text, prepared.messages, trace)
    if ctx is not None:
        text = ctx.annotate(text)  # related goals and earlier complaints, after verification (like the notice)
    if any(c.classification >= 3 for c in cites):
        text = sanitise(text).text
    t = time.perf_counter()
    trace.append(LearnStep(ms=ms_since(t), specialist=spec.key, tier=TIERS[tier_index], outcome=outcome,
                           escalations=escalations))
    return Outcome(text, cites, model, TIERS[tier_index], spec.key, r.confidence, outcome, escalations, trace,
                   prepared, calls, memory=ctx, records=records)


def _skill(session: Session, caller: Caller, spec: Specialist, message: str, prepared: Prepared,
           model_for: Callable[[str], str], trace: Trace) -> tuple[list[str], str | None, str | None]:
    """The rule-based skill step of one specialist: its result becomes the next numbered source, and
    with the extractive responder it may be the answer itself. Returns (tool texts, direct answer, skill)."""
    tool_texts: list[str] = []
    direct: str | None = None
    skill_name = skills.select_skill(spec.key, message)
    if skill_name:
        t = time.perf_counter()
        try:
            res = skills.invoke(skill_name, session, caller, message, hits=prepared.hits)
            tool_texts.append(res.text)
            n = len(prepared.hits) + 1
            # The tool result becomes source n of the typed prompt (re-rendered; never spliced into its text).
            prompt = prompt_of(prepared.messages)
            if prompt is None or len(prompt.sources) != len(prepared.hits):
                raise RuntimeError("the prepared prompt has no typed source list to add the tool result to")
            prepared.messages[0] = prompt.with_source(f"Tool {res.skill}: {res.title}", res.text,
                                                      tool=True).system_message()
            trace.append(SkillStep(ms=ms_since(t), tool=res.skill, args={"question": message}, result=res.data))
            if llm.is_extractive(model_for(spec.tier)):
                direct = _direct_answer(res, prepared, n)
        except (Forbidden, InvalidInput) as exc:
            trace.append(SkillStep(ms=ms_since(t), tool=skill_name, denied=exc.code, reason=exc.message))
    return tool_texts, direct, skill_name


def _draft(session: Session, caller: Caller, message: str, prepared: Prepared, tool_texts: list[str],
           direct: str | None, skill_name: str | None, start_tier: str, lm: Model, calls: list[dict[str, Any]],
           trace: Trace, model_for: Callable[[str], str], *, escalate: bool = True) -> compose.Draft:
    """Generate → VERIFY → escalate for one specialist: the whole answer of a SIMPLE request, one
    branch of a composed one. A failing answer is retried on the next tier (unless the composition
    revises it itself: `escalate=False`)."""
    tier_index = TIERS.index(start_tier)
    escalations, text, model, verdict = 0, "", "", Verdict(False, False, ["not run"])
    while True:
        tier = TIERS[tier_index]
        model = model_for(tier)
        t = time.perf_counter()
        if direct is not None and not lm.generative(EXTRACTIVE_MODEL):
            # The skill's structured output is the answer (the extractive responder would only quote
            # it back): no model call, no tokens spent. `direct` exists only when the specialist's model is
            # the extractive responder; a Model that writes its own text even there is asked instead.
            text, model = direct, f"skill:{skill_name}"
            trace.append(GenerateStep(ms=ms_since(t), tier=tier, model=model,
                                      note="answered by the skill, no model call"))
        else:
            text = _generate(session, caller, message, prepared, model, tier, lm, tool_texts, calls, trace)
        t = time.perf_counter()
        verdict = verify(text, prepared, caller, tool_texts)
        trace.append(VerifyStep(ms=ms_since(t), ok=verdict.ok, abstained=verdict.abstained, problems=verdict.problems))
        up = model_for.next_up(tier) if isinstance(model_for, TierModels) else \
            TIERS[tier_index + 1] if tier_index < len(TIERS) - 1 else None
        if verdict.ok or not escalate or up is None:
            break
        direct = None  # escalation goes to a model
        escalations += 1
        tier_index = TIERS.index(up)
        trace.append(EscalateStep(ms=0.0, to=TIERS[tier_index], because=verdict.problems))
    return compose.Draft(text, model, TIERS[tier_index], escalations, verdict)


MAX_TOOL_ROUNDS = 3


def _generate(session: Session, caller: Caller, message: str, prepared: Prepared, model: str, tier: str,
              lm: Model, tool_texts: list[str], calls: list[dict[str, Any]], trace: Trace) -> str:
    """Model call(s) for one tier. A (non-extractive) model may ask for skills as tool calls; each is
    role-checked by skills.invoke and its result (or refusal) goes back to the model."""
    msgs = list(prepared.messages)
    tools = skills.as_tools(caller.role)
    for _round in range(MAX_TOOL_ROUNDS + 1):
        t = time.perf_counter()
        c = lm.complete(msgs, model=model, tools=tools)
        p_tok, c_tok = budget.tokens(c, msgs)
        calls.append({"tier": tier, "model": model, "prompt_tokens": int(p_tok), "completion_tokens": int(c_tok)})
        trace.append(GenerateStep(ms=ms_since(t), tier=tier, model=model, prompt_tokens=int(p_tok),
                                  completion_tokens=int(c_tok), tool_calls=[tc["name"] for tc in c.tool_calls or []]))
        if not c.tool_calls or _round == MAX_TOOL_ROUNDS:
            return c.text
        msgs.append({"role": "assistant", "content": c.text or None, "tool_calls": [
            {"id": tc["id"], "type": "function", "function": {"name": tc["name"], "arguments": tc["arguments"]}}
            for tc in c.tool_calls]})
        for tc in c.tool_calls:
            t = time.perf_counter()
            try:
                args = json.loads(tc["arguments"] or "{}")
                res = skills.invoke(tc["name"], session, caller, str(args.get("request") or message),
                                    hits=prepared.hits)
                tool_texts.append(res.text)
                content = res.text
                trace.append(SkillStep(ms=ms_since(t), tool=tc["name"], args=args, result=res.data,
                                       requested_by="model"))
            except (Forbidden, InvalidInput, ValueError) as exc:
                code = getattr(exc, "code", "invalid_arguments")
                content = f"refused: {getattr(exc, 'message', str(exc))}"
                trace.append(SkillStep(ms=ms_since(t), tool=tc["name"], denied=code, requested_by="model"))
            msgs.append({"role": "tool", "tool_call_id": tc["id"], "content": content})
    return ""


_STEP_PREFIX = re.compile(rf"^(\d+\.|{re.escape(skills.SAFETY_FIRST)})\s*")


def _direct_answer(res: skills.SkillResult, prepared: Prepared, tool_n: int) -> str | None:
    """With the extractive responder, a skill's structured output (ordered steps, a report, a
    calculation) is the answer itself; the seam still carries it, so usage and traces are uniform."""
    if res.skill == "procedure_lookup" and res.data.get("steps"):
        same = [(i, h) for i, h in enumerate(prepared.hits, start=1) if str(h.document_id) == res.data["document_id"]]
        lines = []
        for line in res.text.splitlines():
            # Cite the retrieved chunk that holds this step; else the SOP's first retrieved chunk; else the tool.
            step = " ".join(_STEP_PREFIX.sub("", line).split())
            idx = next((i for i, h in same if step in " ".join(h.text.split())), same[0][0] if same else tool_n)
            lines.append(f"{line} [{idx}]")
        return f"Steps from {res.title}:\n" + "\n".join(lines)
    if res.skill == "report_generation":
        return res.text
    if res.skill == "calculations":
        return f"{res.text} [{tool_n}] (calculated by the calculations skill)"
    if res.skill in skills.OPERATIONAL:
        return f"{res.text} [{tool_n}]"  # the SAP/MES records behind it become record citations
    return None


def record(session: Session, tenant_id: uuid.UUID, subject: str, out: Outcome, conversation_id: uuid.UUID | None,
           message_id: uuid.UUID | None, *, settings: Settings) -> uuid.UUID:
    run_id = uuid.uuid4()
    session.add(AgentRun(id=run_id, tenant_id=tenant_id, user_subject=subject, conversation_id=conversation_id,
                         message_id=message_id, specialist=out.specialist, model_tier=out.tier, model=out.model,
                         route_confidence=out.route_confidence, outcome=out.outcome, escalations=out.escalations,
                         trace=out.trace, index_version=out.prepared.index_version,
                         access=answer_access.label_for_outcome(session, out)))
    out.run_id = run_id
    session.flush()
    for c in out.calls:
        budget.record(session, tenant_id, subject, out.specialist, c["tier"], c["model"], c["prompt_tokens"],
                      c["completion_tokens"], run_id, settings)
    return run_id
