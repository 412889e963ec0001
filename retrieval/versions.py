"""Which version of a tenant's search index serves, and with which build configuration.

An index version is a chunk generation (chunks, BM25 postings and statistics) plus a boost set.
Exactly one version per tenant is `active`: that row is the pointer, and promotion flips it inside
one transaction (see retrieval/builds.py). Readers resolve the active version once per
search, so a query never mixes generations. Index writers (document ingestion) take a shared
advisory lock per tenant and promotion an exclusive one: a document is never written into a
generation that is being retired.

An evaluation can pin a version (a candidate) for the current thread with `pinned(...)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.embedding import LOCAL_ALIASES, LOCAL_DIM, Embedder, canonical_local_name, named_embedder
from core.settings import get_settings
from ingestion.chunking import ChunkingConfig


@dataclass(frozen=True)
class IndexRef:
    version: int
    generation: int
    status: str = "active"
    config: dict = field(default_factory=dict)

    @property
    def build(self) -> BuildConfig:
        return BuildConfig.from_dict(self.config) if self.config else BuildConfig.desired()


@dataclass(frozen=True)
class BuildConfig:
    """What an index version is built with: the embedding model and the chunk sizes."""

    embedding_model: str
    embedding_dim: int | None
    chunk_max_tokens: int
    chunk_overlap_tokens: int

    @classmethod
    def desired(cls) -> BuildConfig:
        """The configuration the settings ask for (a rebuild builds this)."""
        s = get_settings()
        if s.embedding_model in LOCAL_ALIASES:
            return cls(canonical_local_name(s.embedding_model), LOCAL_DIM, s.chunk_max_tokens,
                       s.chunk_overlap_tokens)
        return cls(s.embedding_model, s.embedding_dim, s.chunk_max_tokens, s.chunk_overlap_tokens)

    @classmethod
    def from_dict(cls, d: dict) -> BuildConfig:
        return cls(d["embedding_model"], d.get("embedding_dim"), int(d["chunk_max_tokens"]),
                   int(d["chunk_overlap_tokens"]))

    def as_dict(self) -> dict:
        return {"embedding_model": self.embedding_model, "embedding_dim": self.embedding_dim,
                "chunk_max_tokens": self.chunk_max_tokens, "chunk_overlap_tokens": self.chunk_overlap_tokens}

    @property
    def chunking(self) -> ChunkingConfig:
        return ChunkingConfig(self.chunk_max_tokens, self.chunk_overlap_tokens)

    def embedder(self) -> Embedder:
        return named_embedder(self.embedding_model, self.embedding_dim)


_PINNED: contextvars.ContextVar[tuple[uuid.UUID | None, IndexRef] | None] = contextvars.ContextVar(
    "eap_pinned_index", default=None)

DEFAULT = IndexRef(1, 1)


@contextlib.contextmanager
def pinned(ref: IndexRef, tenant_id: uuid.UUID | None = None) -> Iterator[IndexRef]:
    """Serve `ref` instead of the active version (the promotion gate evaluates a candidate this way)."""
    token = _PINNED.set((tenant_id, ref))
    try:
        yield ref
    finally:
        _PINNED.reset(token)


def _row_to_ref(row: Any) -> IndexRef:
    return IndexRef(int(row[0]), int(row[1]), row[2], row[3] or {})


def active(session: Session) -> IndexRef:
    """The tenant's active version (row-level security scopes the query to the session's tenant)."""
    row = session.execute(text("SELECT version, chunk_generation, status, config FROM index_versions "
                               "WHERE status = 'active'")).first()
    return _row_to_ref(row) if row else DEFAULT


def serving(session: Session, tenant_id: uuid.UUID | None = None) -> IndexRef:
    """What a search in this session reads: a pinned version (same tenant) or the active one."""
    pin = _PINNED.get()
    if pin is not None and (pin[0] is None or tenant_id is None or pin[0] == tenant_id):
        return pin[1]
    return active(session)


def get(session: Session, version: int) -> IndexRef | None:
    row = session.execute(text("SELECT version, chunk_generation, status, config FROM index_versions "
                               "WHERE version = :v"), {"v": version}).first()
    return _row_to_ref(row) if row else None


def _lock_key(tenant_id: uuid.UUID) -> str:
    return f"eap-index:{tenant_id}"


def lock_writes(session: Session, tenant_id: uuid.UUID) -> None:
    """Index writers of a tenant hold this (shared) until their transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock_shared(hashtextextended(:k, 0))"), {"k": _lock_key(tenant_id)})


def lock_promotion(session: Session, tenant_id: uuid.UUID) -> None:
    """Promotion holds this (exclusive): no document write is in flight while the pointer flips."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": _lock_key(tenant_id)})
