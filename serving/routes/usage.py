from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from core.errors import InvalidInput
from core.models import Role
from core.repos import usage
from identity.tenancy import set_tenant_setting
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1", tags=["usage"])


class UsageRow(BaseModel):
    key: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


class UsageDay(BaseModel):
    day: dt.date
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


class UsageOut(BaseModel):
    since: dt.datetime
    until: dt.datetime | None = None
    group_by: str
    rows: list[UsageRow]
    total_tokens: int
    total_cost: float
    # With series=daily: one entry per UTC day with use, oldest first (the same filters).
    series: list[UsageDay] | None = None


class BudgetsIn(BaseModel):
    daily_tokens: Annotated[int | None, Field(ge=1)] = None
    monthly_tokens: Annotated[int | None, Field(ge=1)] = None
    on_exceed: Literal["reject", "extractive"] = "reject"  # 429, or serve with the zero-cost extractive responder


@router.get("/usage", response_model=UsageOut)
def get_usage(principal: PrincipalDep, db: TenantSessionDep,
              group_by: Annotated[Literal["user", "agent", "tier", "model"], Query()] = "agent",
              days: Annotated[int, Query(ge=1, le=366)] = 30,
              user: Annotated[str | None, Query(max_length=500)] = None,
              specialist: Annotated[str | None, Query(max_length=100)] = None,
              from_: Annotated[dt.datetime | None, Query(alias="from")] = None,
              to: Annotated[dt.datetime | None, Query()] = None,
              series: Annotated[Literal["daily"] | None, Query()] = None) -> UsageOut:
    """Token use and cost. Admins see the whole tenant (optionally one `user`); everyone else sees their own
    use only. Filters: `specialist`, the period [`from`, `to`) (default: the last `days` days), and
    `series=daily` adds the use per day."""
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a timezone (e.g. 2026-12-01T00:00:00Z)", code="invalid_period")
    since = from_ or dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    if to is not None and to <= since:
        raise InvalidInput("to must be after from", code="invalid_period")
    subject = user if principal.role == Role.admin else principal.subject
    rows = [UsageRow(key=k, calls=n, prompt_tokens=p, completion_tokens=c, cost=cost)
            for k, n, p, c, cost in usage.summary(db, group_by, since, subject, until=to, agent=specialist)]
    daily = None
    if series == "daily":
        daily = [UsageDay(day=d, calls=n, prompt_tokens=p, completion_tokens=c, cost=round(cost, 6))
                 for d, n, p, c, cost in usage.daily(db, since, subject, until=to, agent=specialist)]
    return UsageOut(since=since, until=to, group_by=group_by, rows=rows,
                    total_tokens=sum(r.prompt_tokens + r.completion_tokens for r in rows),
                    total_cost=round(sum(r.cost for r in rows), 6), series=daily)


@router.put("/budgets", dependencies=[require_role(Role.admin)])
def put_budgets(body: BudgetsIn, principal: PrincipalDep) -> dict:
    """The tenant's token budgets (unset = unlimited)."""
    cfg = set_tenant_setting(principal.tenant_id, "budgets", body.model_dump(exclude_none=True),
                             actor=principal.subject, actor_role=principal.role.value)
    return {"budgets": cfg}
