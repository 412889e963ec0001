"""Queries the ingestion sensors need (cross-tenant, owner role)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from core.db.database import system_session
from core.enums import DocumentStatus
from core.models import Document, Tenant


def queued_documents(limit: int = 2000) -> list[tuple[str, str]]:
    """(document id, content hash) of queued documents, oldest first."""
    with system_session() as s:
        rows = s.execute(
            select(Document.id, Document.content_hash)
            .where(Document.status == DocumentStatus.queued)
            .order_by(Document.queued_at, Document.id)
            .limit(limit)
        ).all()
    return [(str(i), h) for i, h in rows]


def tenants_by_name() -> dict[str, uuid.UUID]:
    with system_session() as s:
        return dict(s.execute(select(Tenant.name, Tenant.id)).all())
