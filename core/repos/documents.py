"""Documents: the ingestion pipeline's unit, read by the API."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.enums import DocumentStatus
from core.models import Document


def get(session: Session, document_id: uuid.UUID) -> Document | None:
    return session.get(Document, document_id)


def page(session: Session, *, visible: ColumnElement[bool] | None = None, status: DocumentStatus | str | None = None,
         limit: int = 100, offset: int = 0) -> tuple[list[Document], int]:
    """One page of documents, newest first, and how many there are in all; `visible` narrows both to
    what the caller may see."""
    q = select(Document)
    if visible is not None:
        q = q.where(visible)
    if status:
        q = q.where(Document.status == DocumentStatus(status).value)
    total = session.execute(select(func.count()).select_from(q.subquery())).scalar_one()
    rows = session.execute(q.order_by(Document.created_at.desc(), Document.id).offset(offset).limit(limit)).scalars()
    return list(rows), total
