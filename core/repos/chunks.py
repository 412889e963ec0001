"""Chunks of the search index, read one at a time (a cited passage opened by the web app)."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Chunk, Document


class Passage(NamedTuple):
    chunk: Chunk
    title: str
    review_status: str | None


def passage(session: Session, chunk_id: uuid.UUID) -> Passage | None:
    """The chunk with its document's title and review status (row-level security keeps it in the tenant)."""
    row = session.execute(select(Chunk, Document.title, Document.review_status)
                          .join(Document, Document.id == Chunk.document_id)
                          .where(Chunk.id == chunk_id)).first()
    return None if row is None else Passage(row[0], row[1], row[2])
