"""Feedback on answers, and the feedback-weighted boosts retrieval applies to their sources.

Each vote is normalised to [-1, 1] (up = 1, down = -1, a 1–5 rating = (r - 3) / 2) and split
across the chunks the answer cited in proportion to their retrieval scores. A source's boost is
1 + STRENGTH * S / (W + PRIOR): S the weighted votes, W their total weight, PRIOR pseudo-votes at
zero, so one vote cannot dominate; the result is clamped to [0.5, 2].
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core import audit
from core.database import system_session, tenant_session
from core.errors import InvalidInput, NotFound
from core.models import Conversation, Feedback, Message, SourceBoost

PRIOR = 3.0
STRENGTH = 1.0
LOW, HIGH = 0.5, 2.0


def normalise(rating: str | int) -> float:
    if isinstance(rating, str) and rating.lower() in ("up", "down"):
        return 1.0 if rating.lower() == "up" else -1.0
    try:
        r = int(rating)
    except (TypeError, ValueError):
        raise InvalidInput("rating must be 'up', 'down' or 1..5", code="invalid_rating") from None
    if not 1 <= r <= 5:
        raise InvalidInput("rating must be 'up', 'down' or 1..5", code="invalid_rating")
    return (r - 3) / 2


def submit(tenant_id: uuid.UUID, subject: str, role: str, message_id: uuid.UUID, rating: str | int,
           comment: str | None) -> Feedback:
    value = normalise(rating)
    with tenant_session(tenant_id) as s:
        msg = s.execute(
            select(Message).join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.id == message_id, Message.role == "assistant", Conversation.user_subject == subject)
        ).scalar()
        if msg is None:  # not an answer given to this user: indistinguishable from absent
            raise NotFound("answer not found", code="message_not_found")
        cited = [{"chunk_id": c["chunk_id"], "document_id": c["document_id"], "score": c.get("score", 0.0)}
                 for c in msg.citations]
        now = dt.datetime.now(dt.UTC)
        row = s.execute(
            pg_insert(Feedback).values(id=uuid.uuid4(), tenant_id=tenant_id, message_id=message_id,
                                       user_subject=subject, rating=str(rating), value=value, comment=comment,
                                       cited=cited, created_at=now, updated_at=now)
            .on_conflict_do_update(constraint="uq_feedback_message_user",
                                   set_={"rating": str(rating), "value": value, "comment": comment, "updated_at": now})
            .returning(Feedback)
        ).scalar_one()
        audit.record(s, tenant_id=tenant_id, actor=subject, actor_role=role, action="feedback",
                     resource_type="message", resource_id=str(message_id),
                     details={"rating": str(rating), "value": value, "has_comment": bool(comment)})
        s.expunge(row)
        return row


def _boost(weighted: float, weight: float) -> float:
    return max(LOW, min(HIGH, 1.0 + STRENGTH * weighted / (weight + PRIOR)))


def compute_boosts() -> dict:
    """Recompute every tenant's boosts from all feedback; each tenant's set is replaced atomically."""
    with system_session() as s:
        rows = s.execute(select(Feedback.tenant_id, Feedback.value, Feedback.cited)).all()
    per_tenant: dict = defaultdict(lambda: {"chunk": defaultdict(lambda: [0.0, 0.0]),
                                            "document": defaultdict(lambda: [0.0, 0.0])})
    for tenant_id, value, cited in rows:
        total = sum(max(c.get("score") or 0.0, 1e-9) for c in cited)
        for c in cited:
            share = max(c.get("score") or 0.0, 1e-9) / total if total else 0.0
            for kind, key in (("chunk", c["chunk_id"]), ("document", c["document_id"])):
                acc = per_tenant[tenant_id][kind][key]
                acc[0] += value * share
                acc[1] += share
    summary = {"tenants": 0, "chunks": 0, "documents": 0}
    for tenant_id, kinds in per_tenant.items():
        # Boosts are written by the pipeline (owner role); the application role may only read them.
        with system_session() as s:
            s.execute(delete(SourceBoost).where(SourceBoost.tenant_id == tenant_id))
            for kind, items in kinds.items():
                for key, (weighted, weight) in items.items():
                    s.add(SourceBoost(tenant_id=tenant_id, kind=kind, source_id=uuid.UUID(key),
                                      boost=_boost(weighted, weight), votes=weight))
                summary[f"{kind}s"] += len(items)
        summary["tenants"] += 1
    return summary


def feedback_count() -> tuple[int, str | None]:
    from sqlalchemy import func

    with system_session() as s:
        n, last = s.execute(select(func.count(), func.max(Feedback.updated_at))).one()
    return int(n), last.isoformat() if last else None
