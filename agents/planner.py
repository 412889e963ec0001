"""The goal planner: a request → a DAG of steps → topological execution → one merged, cited answer.

Decomposition is rule-based and deterministic: numbered parts ("1. … 2) …"), sentences and semicolons
split a request into independent parts; sequencing words ("then", "after that", "next", "finally") and
conjunctions followed by a new action ("… and list …") split those further. Dependencies come from the
words: "then / after that / next / afterwards / based on / using the results", or a short step that
says "it"/"them" → the previous step;
"finally / lastly / overall / in summary" → every earlier step; "step N" → step N; a part joined by "and"
shares the dependencies of the part before it. Edges only point backwards, so the graph is acyclic by
construction; execution still uses Kahn's algorithm and refuses a cycle.

Each step is answered by the orchestrator (route → retrieve → answer → verify) with its dependencies'
questions and answers as conversation history; earlier plans of the same goal are reused: a step similar
to an earlier step (cosine ≥ REUSE) gets that step's result as context, and the response says so.
Every step run is recorded (trace, usage); the plan and its results are stored on the goal.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from agents import goals as goals_mod
from agents import memory, orchestrator
from agents.deps import AgentDeps
from agents.specialists import SPECIALISTS
from compliance import audit
from compliance.access import read_filter
from core.errors import Conflict, InvalidInput
from core.llm.extractive import PREFIX
from core.models import GoalPlan
from retrieval.search import Caller

MAX_STEPS = 8
MIN_STEP_WORDS = 2
REUSE = 0.6
EARLIER_PLANS = 5

_NUMBERED = re.compile(r"(?:^|\s)(?:\(?\d{1,2}[.)]|step \d{1,2}[:.)])\s+", re.I)
_PARTS = re.compile(r"(?<=[.?!;])\s+|\n+")
_ACTIONS = (r"find|check|list|compare|summari[sz]e|explain|identify|determine|calculate|compute|propose|recommend|"
            r"suggest|review|write|draft|look up|get|show|give|describe|estimate|assess|evaluate|analy[sz]e|plan|"
            r"prepare|tell|what|how|which|why|who|when|where")
_SPLIT = re.compile(r",?\s+\b(and then|then|after that|afterwards|next(?=,)|finally|lastly)\b[,:]?\s+|"
                    rf",?\s+\b(and)\s+(?=(?:{_ACTIONS})\b)", re.I)
_LEAD = re.compile(r"^(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|to start|to begin|then|and then|and|also|next|"
                   r"after that|afterwards|finally|lastly)\b[,:]?\s*", re.I)
_AFTER = re.compile(r"^(?:then|and then|after that|afterwards|next)\b|\b(?:based on|using|from|with) (?:this|that|"
                    r"these|those|the (?:above|results?|findings|answers?))\b", re.I)
_ALL = re.compile(r"^(?:finally|lastly|overall|in summary|to conclude)\b|\b(?:all|everything) (?:above|of this)\b",
                  re.I)
_STEP_REF = re.compile(r"\bstep (\d{1,2})\b", re.I)
_ANAPHORA = re.compile(r"\b(?:it|its|they|them|their)\b", re.I)
SHORT_STEP = 8  # words: a short step that says "it"/"them" continues the step before


@dataclass
class Step:
    id: int
    text: str
    depends_on: list[int] = field(default_factory=list)


def decompose(request: str) -> list[Step]:
    request = " ".join(request.split())
    if not request:
        raise InvalidInput("the plan request is empty", code="empty_plan_request")
    if len(_NUMBERED.findall(request)) >= 2:
        parts = _NUMBERED.split(request)
        if parts and parts[0].rstrip().endswith(":"):
            parts = parts[1:]  # "Do the following: 1. … 2. …": the preamble is not a step
    else:
        parts = _PARTS.split(request)
    pieces: list[tuple[str, str]] = []  # (connector, text)
    for part in parts:
        part = part.strip(" ;")
        if not part:
            continue
        connector, rest = "", part
        tokens = _SPLIT.split(rest)
        # tokens: text, (then-word | None), (and | None), text, ...
        pieces.append(("", tokens[0]))
        for i in range(1, len(tokens) - 2, 3):
            connector = (tokens[i] or tokens[i + 1] or "").lower()
            pieces.append((connector, tokens[i + 2]))
    steps: list[Step] = []
    for connector, raw in pieces:
        raw = raw.strip(" ,;")
        lead = _LEAD.match(raw)
        lead_word = lead.group(0).strip(" ,:").lower() if lead else ""
        body = _LEAD.sub("", raw).strip(" ,;") or raw
        if len(body.split()) < MIN_STEP_WORDS and steps:
            steps[-1].text += f" {raw}"
            continue
        n = len(steps) + 1
        word = connector or lead_word
        deps: list[int] = []
        if refs := [int(x) for x in _STEP_REF.findall(body) if 0 < int(x) < n]:
            deps = refs
        elif _ALL.search(word) or _ALL.search(body):
            deps = list(range(1, n))
        elif word in ("then", "and then", "after that", "afterwards", "next") or _AFTER.search(body) or (
                len(body.split()) < SHORT_STEP and _ANAPHORA.search(body)):
            deps = [n - 1] if n > 1 else []
        elif word == "and" and steps:
            deps = list(steps[-1].depends_on)
        steps.append(Step(n, body[0].upper() + body[1:], sorted(set(deps))))
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"the request splits into {len(steps)} steps; at most {MAX_STEPS} are planned at once",
                           code="plan_too_large", details={"steps": len(steps)})
    return steps


def topological_order(steps: list[Step]) -> list[int]:
    """Kahn's algorithm, lowest id first among ready steps (deterministic)."""
    indeg = {s.id: len(s.depends_on) for s in steps}
    children: dict[int, list[int]] = {s.id: [] for s in steps}
    for s in steps:
        for d in s.depends_on:
            if d not in children:
                raise InvalidInput(f"step {s.id} depends on unknown step {d}", code="invalid_plan")
            children[d].append(s.id)
    ready = sorted(i for i, n in indeg.items() if n == 0)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for c in children[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready = sorted([*ready, c])
    if len(order) != len(steps):
        raise InvalidInput("the plan has a dependency cycle", code="invalid_plan")
    return order


def _strip(answer: str) -> str:
    return "\n".join(ln for ln in answer.splitlines() if not ln.startswith(PREFIX)).strip()


def _renumber(answer: str, local: dict[int, int]) -> str:
    """A step's [n] markers → the merged answer's numbering; markers to nothing retrieved are dropped."""
    return re.sub(r"\[(\d{1,2})\]", lambda m: f"[{local[int(m.group(1))]}]" if int(m.group(1)) in local else "",
                  answer)


def _earlier_steps(session: Session, goal_id: uuid.UUID, subject: str, caller: Caller) -> list[dict[str, Any]]:
    """Step results of the goal's earlier plans that the caller may still read (their access label)."""
    access = read_filter(caller.role, caller.groups, GoalPlan.classification, GoalPlan.acl_groups)
    plans = session.execute(select(GoalPlan).where(GoalPlan.goal_id == goal_id, GoalPlan.user_subject == subject,
                                                   access)
                            .order_by(GoalPlan.created_at.desc()).limit(EARLIER_PLANS)).scalars().all()
    return [{"plan_id": str(p.id), **st} for p in plans for st in p.steps if st.get("outcome") == "verified"]


def run_plan(deps: AgentDeps, goal_id: uuid.UUID, request: str | None = None) -> dict[str, Any]:
    session, tenant_id, subject, caller = deps.session, deps.tenant_id, deps.caller.subject, deps.access
    if tenant_id is None:
        raise ValueError("a goal plan runs for a tenant's user")
    goal = goals_mod.get(session, subject, goal_id)
    if goal.status != "active":
        raise Conflict(f"the goal is {goal.status}: reopen it to plan", code="goal_not_active")
    request = (request or goal.text).strip()
    steps = decompose(request)
    order = topological_order(steps)
    by_id = {s.id: s for s in steps}
    earlier = _earlier_steps(session, goal.id, subject, caller)
    vecs = deps.embedder.embed([s.text for s in steps] + [e["text"] for e in earlier])
    step_vecs, earlier_vecs = vecs[: len(steps)], vecs[len(steps):]
    results: dict[int, dict[str, Any]] = {}
    cited: dict[str, int] = {}  # chunk id -> merged citation number
    citations: list[dict[str, Any]] = []
    for sid in order:
        st = by_id[sid]
        history: list[dict[str, Any]] = []
        reused = None
        if earlier:
            sims = earlier_vecs @ step_vecs[sid - 1]
            j = int(np.argmax(sims))
            if sims[j] >= REUSE:
                e = earlier[j]
                reused = {"plan_id": e["plan_id"], "step": e["id"], "similarity": round(float(sims[j]), 4)}
                history += [{"role": "user", "content": e["text"]}, {"role": "assistant", "content": e["answer"]}]
        for d in st.depends_on:
            history += [{"role": "user", "content": by_id[d].text},
                        {"role": "assistant", "content": results[d]["answer"]}]
        out = orchestrator.run(deps, st.text, history)
        run_id = orchestrator.record(session, tenant_id, subject, out, None, None, settings=deps.settings)
        local: dict[int, int] = {}
        for c in out.citations:
            key = str(c.chunk_id)
            if key not in cited:
                cited[key] = len(citations) + 1
                citations.append({**c.as_dict(), "n": cited[key], "classification": c.classification})
            local[c.n] = cited[key]
        answer = _renumber(_strip(out.text), local)
        results[sid] = {"id": sid, "text": st.text, "depends_on": st.depends_on, "specialist": out.specialist,
                        "outcome": out.outcome, "answer": answer, "citations": [local[c.n] for c in out.citations],
                        "trace_id": str(run_id), "reused_context": reused}
    lines = [f"Plan for your goal “{memory.clean(goal.text)}” ({len(steps)} steps, run in the order "
             f"{' → '.join(str(i) for i in order)})."]
    for sid in order:
        r = results[sid]
        after = f" (after step {', '.join(str(d) for d in r['depends_on'])})" if r["depends_on"] else ""
        who = SPECIALISTS[r["specialist"]].name if r["specialist"] in SPECIALISTS else r["specialist"]
        lines.append(f"\nStep {sid}: {r['text']}{after} — {who}\n{r['answer']}")
    label = memory.label_for_sources(session, citations)
    plan = GoalPlan(id=uuid.uuid4(), tenant_id=tenant_id, goal_id=goal.id, user_subject=subject, request=request,
                    steps=[results[s.id] for s in steps], answer="\n".join(lines),
                    citations=[{k: v for k, v in c.items() if k != "classification"} for c in citations],
                    classification=label.classification, acl_groups=list(label.acl_groups))
    session.add(plan)
    answered = sum(1 for r in results.values() if r["outcome"] == "verified")
    goals_mod.note_progress(session, goal, f"Plan run: {len(steps)} steps, {answered} answered from the documents",
                            plan_id=plan.id)
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=caller.role, action="goal.plan",
                 resource_type="goal", resource_id=str(goal.id),
                 details={"plan_id": str(plan.id), "steps": len(steps), "order": order,
                          "cited_chunk_ids": list(cited), "trace_ids": [r["trace_id"] for r in results.values()]})
    return {"plan_id": plan.id, "goal_id": goal.id, "request": request, "order": order,
            "steps": plan.steps, "answer": plan.answer, "citations": plan.citations,
            "context_from_plans": sorted({r["reused_context"]["plan_id"] for r in results.values()
                                          if r["reused_context"]})}
