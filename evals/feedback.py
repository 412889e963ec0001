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

from agents import learning
from compliance import audit
from core.db.database import system_session, tenant_session
from core.embedding import get_embedder
from core.errors import InvalidInput, NotFound
from core.models import Chunk, Conversation, Feedback, Message, SourceBoost
from core.settings import get_settings

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
        hashes = dict(s.execute(select(Chunk.id, Chunk.content_hash).where(
            Chunk.id.in_([uuid.UUID(c["chunk_id"]) for c in msg.citations]))).all()) if msg.citations else {}
        cited = [{"chunk_id": c["chunk_id"], "document_id": c["document_id"], "score": c.get("score", 0.0),
                  "content_hash": hashes.get(uuid.UUID(c["chunk_id"]))} for c in msg.citations]
        now = dt.datetime.now(dt.UTC)
        row = s.execute(
            pg_insert(Feedback).values(id=uuid.uuid4(), tenant_id=tenant_id, message_id=message_id,
                                       user_subject=subject, rating=str(rating), value=value, comment=comment,
                                       cited=cited, created_at=now, updated_at=now)
            .on_conflict_do_update(constraint="uq_feedback_message_user",
                                   set_={"rating": str(rating), "value": value, "comment": comment, "updated_at": now})
            .returning(Feedback)
        ).scalar_one()
        # The answer's lesson learns whether it worked; a complaint with a comment becomes a FACT memory.
        learned = learning.on_feedback(s, tenant_id, subject, msg, value, comment, settings=get_settings(),
                                       embedder=get_embedder())
        audit.record(s, tenant_id=tenant_id, actor=subject, actor_role=role, action="feedback",
                     resource_type="message", resource_id=str(message_id),
                     details={"rating": str(rating), "value": value, "has_comment": bool(comment),
                              "memory_id": learned["memory"]})
        s.expunge(row)
        return row


def _boost(weighted: float, weight: float) -> float:
    return max(LOW, min(HIGH, 1.0 + STRENGTH * weighted / (weight + PRIOR)))


BoostKey = tuple[str, str, str]  # (kind, document id, chunk content hash or "")


def compute_boosts(tenant_id: uuid.UUID) -> dict[BoostKey, tuple[float, float]]:
    """The tenant's boosts from all its feedback: {(kind, document, content hash): (boost, votes)}.
    Chunk boosts are keyed by the chunk's content within its document, so they carry over to any
    index generation that contains the same passage."""
    with system_session() as s:
        rows = s.execute(select(Feedback.value, Feedback.cited).where(Feedback.tenant_id == tenant_id)).all()
        ids = list({c["chunk_id"] for _, cited in rows for c in cited if not c.get("content_hash")})
        hashes = dict(s.execute(select(Chunk.id, Chunk.content_hash).where(
            Chunk.id.in_([uuid.UUID(i) for i in ids]))).all()) if ids else {}
    acc: dict[BoostKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for value, cited in rows:
        total = sum(max(c.get("score") or 0.0, 1e-9) for c in cited)
        for c in cited:
            share = max(c.get("score") or 0.0, 1e-9) / total if total else 0.0
            h = c.get("content_hash") or hashes.get(uuid.UUID(c["chunk_id"]))
            keys = [("document", c["document_id"], "")] + ([("chunk", c["document_id"], h)] if h else [])
            for key in keys:
                acc[key][0] += value * share
                acc[key][1] += share
    return {k: (_boost(w, n), n) for k, (w, n) in acc.items()}


def stored_boosts(tenant_id: uuid.UUID, index_version: int) -> dict[BoostKey, tuple[float, float]]:
    with system_session() as s:
        rows = s.execute(select(SourceBoost.kind, SourceBoost.document_id, SourceBoost.content_hash,
                                SourceBoost.boost, SourceBoost.votes)
                         .where(SourceBoost.tenant_id == tenant_id, SourceBoost.index_version == index_version)).all()
    return {(r[0], str(r[1]), r[2]): (r[3], r[4]) for r in rows}


def write_boosts(tenant_id: uuid.UUID, index_version: int, boosts: dict[BoostKey, tuple[float, float]]) -> dict:
    """Store a boost set for one index version (the pipeline writes, the application only reads)."""
    with system_session() as s:
        s.execute(delete(SourceBoost).where(SourceBoost.tenant_id == tenant_id,
                                            SourceBoost.index_version == index_version))
        for (kind, doc, h), (boost, votes) in boosts.items():
            s.add(SourceBoost(tenant_id=tenant_id, index_version=index_version, kind=kind,
                              document_id=uuid.UUID(doc), content_hash=h, boost=boost, votes=votes))
    return {"chunks": sum(1 for k in boosts if k[0] == "chunk"),
            "documents": sum(1 for k in boosts if k[0] == "document")}


def same_boosts(a: dict, b: dict, tol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(abs(a[k][0] - b[k][0]) <= tol for k in a)


def feedback_count() -> tuple[int, str | None]:
    from sqlalchemy import func

    with system_session() as s:
        n, last = s.execute(select(func.count(), func.max(Feedback.updated_at))).one()
    return int(n), last.isoformat() if last else None
