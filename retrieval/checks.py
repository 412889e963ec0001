"""Index-wide invariants, evaluated across tenants (owner role) by the Dagster asset checks."""

from __future__ import annotations

from sqlalchemy import text

from compliance.pii import contains_pii
from core.db.database import system_session


def count_empty_chunks() -> int:
    with system_session() as s:
        return s.execute(text("SELECT count(*) FROM chunks WHERE btrim(text) = ''")).scalar_one()


def embedding_dimension_problems() -> tuple[int, dict]:
    with system_session() as s:
        bad = s.execute(
            text("SELECT count(*) FROM chunks WHERE embedding IS NULL OR embedding_dim IS NULL "
                 "OR vector_dims(embedding) <> embedding_dim")
        ).scalar_one()
        dims = {m: d for m, d in s.execute(
            text("SELECT embedding_model, min(embedding_dim) FROM chunks GROUP BY embedding_model "
                 "HAVING min(embedding_dim) = max(embedding_dim)")).all()}
        mixed = s.execute(
            text("SELECT count(*) FROM (SELECT embedding_model FROM chunks GROUP BY embedding_model "
                 "HAVING min(embedding_dim) <> max(embedding_dim)) x")
        ).scalar_one()
    return int(bad) + int(mixed), dims


def restricted_chunks_with_pii(batch: int = 2000) -> tuple[int, list[str]]:
    """Class III/IV chunks in which the PII recognizers still find anything. `contains_pii` reads the text
    normalised (NFKC, confusables, invisible characters removed), so a full-width `＠` or full-width
    digits left in a chunk count as a leak here exactly as they would in ASCII."""
    leaks: list[str] = []
    scanned = 0
    with system_session() as s:
        result = s.execute(text("SELECT id, text FROM chunks WHERE classification >= 3")).yield_per(batch)
        for cid, body in result:
            scanned += 1
            if contains_pii(body):
                leaks.append(str(cid))
    return scanned, leaks


def orphan_chunks() -> int:
    with system_session() as s:
        return s.execute(
            text("SELECT count(*) FROM chunks c LEFT JOIN documents d ON d.id = c.document_id "
                 "WHERE d.id IS NULL OR d.status = 'rejected'")
        ).scalar_one()
