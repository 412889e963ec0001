"""Your persistent goals, and the goal planner (a DAG of steps answered from the documents)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agents import answer_access, goals, planner
from agents.answer import AI_DISCLOSURE
from compliance.access import read_filter
from core.llm import Model
from core.models import GoalPlan, UserGoal
from core.repos import goals as goals_repo
from core.security import Principal
from retrieval.search import Caller
from serving.deps import EmbedderDep, ModelDep, PrincipalDep, SettingsDep, TenantSessionDep, agent_deps
from serving.ratelimit import RateLimit
from serving.routes.chat import CitationOut

router = APIRouter(prefix="/v1/goals", tags=["goals"])

Status = Literal["active", "done", "abandoned"]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
GoalText = Annotated[str, Field(min_length=goals.MIN_TEXT, max_length=goals.MAX_TEXT, pattern=NO_NUL)]


class GoalIn(BaseModel):
    text: GoalText


class GoalPatch(BaseModel):
    text: GoalText | None = None
    status: Status | None = None
    progress_note: Annotated[str | None, Field(min_length=1, max_length=goals.MAX_NOTE, pattern=NO_NUL)] = None


class PlanSummary(BaseModel):
    id: uuid.UUID
    request: str
    steps: int
    created_at: dt.datetime


class GoalOut(BaseModel):
    id: uuid.UUID
    text: str
    status: Status
    progress: list[dict]
    origin: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    plans: list[PlanSummary] | None = None


class GoalPage(BaseModel):
    items: list[GoalOut]
    total: int
    limit: int
    offset: int


class PlanIn(BaseModel):
    request: Annotated[str | None, Field(min_length=3, max_length=2000, pattern=NO_NUL)] = None


class PlanStepOut(BaseModel):
    id: int
    text: str
    depends_on: list[int]
    specialist: str
    outcome: str
    answer: str
    citations: list[int]
    trace_id: uuid.UUID
    reused_context: dict | None


class PlanOut(BaseModel):
    plan_id: uuid.UUID
    goal_id: uuid.UUID
    request: str
    order: list[int]
    steps: list[PlanStepOut]
    answer: str
    citations: list[CitationOut]
    context_from_plans: list[uuid.UUID]
    ai_disclosure: str = AI_DISCLOSURE


def _out(g: UserGoal, plans: list[GoalPlan] | None = None) -> GoalOut:
    return GoalOut(**goals.as_dict(g), plans=None if plans is None else [
        PlanSummary(id=p.id, request=p.request, steps=len(p.steps), created_at=p.created_at) for p in plans])


def _caller(principal: Principal) -> Caller:
    return Caller(principal.role.value, principal.groups)


@router.get("", response_model=GoalPage)
def list_goals(principal: PrincipalDep, db: TenantSessionDep, status: Status | None = None,
               limit: Annotated[int, Query(ge=1, le=200)] = 50,
               offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> GoalPage:
    """Your goals, most recently updated first."""
    rows, total = goals.list_goals(db, principal.subject, status, limit, offset)
    return GoalPage(items=[_out(g) for g in rows], total=total, limit=limit, offset=offset)


@router.post("", response_model=GoalOut, status_code=status.HTTP_201_CREATED)
def create_goal(body: GoalIn, principal: PrincipalDep, db: TenantSessionDep, settings: SettingsDep,
                embedder: EmbedderDep) -> GoalOut:
    """A new active goal; recalled at the start of your conversations and noted when a turn works on it."""
    return _out(goals.create(db, principal.tenant_id, principal.subject, principal.role.value, body.text,
                             settings=settings, embedder=embedder).goal)


def _plans(s: TenantSessionDep, principal: Principal, goal_id: uuid.UUID) -> list[GoalPlan]:
    """Plans whose answers the caller may read now: the label stored with the plan (SQL), the cited documents'
    current labels, and the label of every step's run (what each step's model saw, cited or not)."""
    access = read_filter(principal.role.value, principal.groups, GoalPlan.classification, GoalPlan.acl_groups)
    plans = goals_repo.plans(s, goal_id, visible=access, limit=50)
    run_ids = [uuid.UUID(str(st["trace_id"])) for p in plans for st in p.steps if st.get("trace_id")]
    runs = {str(i): a if a is not None else answer_access.derive_label(s, [], t)
            for i, a, t in goals_repo.run_labels(s, run_ids)}
    labels, owner = [], []
    for n, p in enumerate(plans):
        labels.append({"sources": [{"document_id": str(c["document_id"]), "classification": p.classification,
                                    "acl_groups": list(p.acl_groups)} for c in p.citations if c.get("document_id")]})
        owner.append(n)
        for st in p.steps:
            if str(st.get("trace_id")) in runs:
                labels.append(runs[str(st["trace_id"])])
                owner.append(n)
    ok = [True] * len(plans)
    for n, readable in zip(owner, answer_access.readable(s, _caller(principal), labels), strict=True):
        ok[n] = ok[n] and readable
    return [p for p, keep in zip(plans, ok, strict=True) if keep]


@router.get("/{goal_id}", response_model=GoalOut)
def get_goal(goal_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> GoalOut:
    """One of your goals with its progress notes and plans (plans citing documents you can no longer read are
    left out)."""
    g = goals.get(db, principal.subject, goal_id)
    return _out(g, _plans(db, principal, g.id))


@router.patch("/{goal_id}", response_model=GoalOut)
def update_goal(goal_id: uuid.UUID, body: GoalPatch, principal: PrincipalDep, db: TenantSessionDep,
                settings: SettingsDep, embedder: EmbedderDep) -> GoalOut:
    """Change the text or status (active | done | abandoned), or add a progress note."""
    g = goals.update(db, principal.tenant_id, principal.subject, principal.role.value, goal_id,
                     text=body.text, status=body.status, note=body.progress_note, settings=settings, embedder=embedder)
    return _out(g)


def _plan(db: TenantSessionDep, principal: Principal, model: Model, goal_id: uuid.UUID,
          request: str | None) -> PlanOut:
    return PlanOut(**planner.run_plan(agent_deps(db, principal, model), goal_id, request))


@router.post("/{goal_id}/plan", response_model=PlanOut, dependencies=[RateLimit])
async def plan_goal(goal_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep, model: ModelDep,
                    body: PlanIn | None = None) -> PlanOut:
    """Decompose the request (default: the goal's text) into a DAG of steps, answer them in topological order
    from the documents you may read, reuse earlier plans of this goal as context, and merge the cited answers."""
    return await run_in_threadpool(_plan, db, principal, model, goal_id, body.request if body else None)


@router.get("/{goal_id}/plans", response_model=list[PlanOut])
def list_plans(goal_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> list[PlanOut]:
    """The goal's stored plans with their step results, newest first."""
    g = goals.get(db, principal.subject, goal_id)
    out = []
    for p in _plans(db, principal, g.id):
        reused = sorted({st["reused_context"]["plan_id"] for st in p.steps if st.get("reused_context")})
        order = planner.topological_order([planner.Step(st["id"], st["text"], st["depends_on"]) for st in p.steps])
        out.append(PlanOut(plan_id=p.id, goal_id=g.id, request=p.request, order=order,
                           steps=p.steps, answer=p.answer, citations=p.citations, context_from_plans=reused))
    return out

