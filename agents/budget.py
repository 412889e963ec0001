"""Token budgets and cost tracking per tenant, user, agent and tier.

Prices come from `EAP_PRICE_TABLE` (JSON: tier -> [price per 1k prompt tokens, per 1k completion
tokens]); budgets from the tenant's settings `{"budgets": {"daily_tokens": N, "monthly_tokens": M}}`
(PUT /v1/budgets). A request whose tenant has used up a budget is refused with 429.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import PlatformError
from core.models import Tenant, UsageRecord
from core.settings import Settings

DEFAULT_PRICES = {"LIGHT": [0.0002, 0.0006], "STANDARD": [0.0008, 0.0024], "HEAVY": [0.002, 0.006]}


class BudgetExceeded(PlatformError):
    code = "budget_exceeded"
    status_code = 429


def prices(settings: Settings) -> dict[str, list[float]]:
    raw = settings.price_table
    return {**DEFAULT_PRICES, **(json.loads(raw) if raw else {})}


def cost(tier: str, prompt_tokens: int, completion_tokens: int, model: str,
         table: dict[str, list[float]] | None = None) -> Decimal:
    """`table`: prices per 1000 tokens by tier (`prices(settings)`); default the built-in DEFAULT_PRICES."""
    if model.startswith("eap-extractive/"):
        return Decimal(0)  # no model server: nothing is spent
    p_in, p_out = (table or DEFAULT_PRICES).get(tier, DEFAULT_PRICES["STANDARD"])
    return (Decimal(str(p_in)) * prompt_tokens + Decimal(str(p_out)) * completion_tokens) / 1000


class _Counted(Protocol):
    """What a model call reports (core.llm's completion): its text and, when the server counted them, tokens."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


def tokens(completion: _Counted, messages: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Prompt and completion tokens of one model call: the server's count, else a word count (the extractive
    responder and scripted replies report none, and their use is still recorded)."""
    p_tok = completion.prompt_tokens or sum(len(str(m.get("content") or "").split()) for m in messages)
    c_tok = completion.completion_tokens or len(completion.text.split())
    return int(p_tok), int(c_tok)


def _used(session: Session, since: dt.datetime) -> int:
    return int(session.execute(
        select(func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0))
        .where(UsageRecord.created_at >= since)).scalar() or 0)


def check(session: Session, tenant_id: uuid.UUID) -> str | None:
    """None when within budget; "extractive" when over budget and the tenant chose to be served by the
    zero-cost extractive responder instead (`on_exceed: "extractive"`); otherwise BudgetExceeded."""
    tenant = session.get(Tenant, tenant_id)
    budgets = (((tenant.settings if tenant else None) or {}).get("budgets") or {})
    now = dt.datetime.now(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    for key, since, label in (("daily_tokens", day, "daily"), ("monthly_tokens", month, "monthly")):
        limit = budgets.get(key)
        if limit is not None:
            used = _used(session, since)
            if used >= int(limit):
                if budgets.get("on_exceed") == "extractive":
                    return "extractive"
                raise BudgetExceeded(f"the tenant's {label} token budget ({limit}) is used up ({used} used)",
                                     details={"budget": label, "limit": int(limit), "used": used,
                                              "retry_after_s": int(((day + dt.timedelta(days=1)) - now)
                                                                   .total_seconds()) if label == "daily" else 3600})
    return None


def record(session: Session, tenant_id: uuid.UUID, subject: str, agent: str, tier: str, model: str,
           prompt_tokens: int, completion_tokens: int, run_id: uuid.UUID | None, settings: Settings) -> UsageRecord:
    rec = UsageRecord(tenant_id=tenant_id, user_subject=subject, agent=agent, tier=tier, model=model,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      cost=cost(tier, prompt_tokens, completion_tokens, model, prices(settings)), run_id=run_id)
    session.add(rec)
    return rec
