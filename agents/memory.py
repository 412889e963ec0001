"""Per-user memory: what the platform remembers about one user of one tenant.

Types: FACT (domain facts the user stated, "our line 3 uses SOP-114"; what went wrong in a rated-down
answer), PREFERENCE (form of the answers: length, format, language, units), SKILL (approaches that
worked), CONTEXT (who the user is, where they work), EPISODIC (short records of past exchanges).

Recall (OBSERVE) — score = s × i × r
    s  cosine similarity of the message and the memory (MiniLM embeddings, pgvector `<=>`)
    i  importance in (0, 1]: a per-type start value, +0.05 each time the memory is recalled or restated,
       decayed while unused
    r  recency = 0.5 + 0.5 · 2^(−Δ/T): Δ days since the memory was last used (or written),
       T = EAP_MEMORY_HALF_LIFE_DAYS; an old memory keeps at least half its weight
Memories below EAP_MEMORY_MIN_SIMILARITY are not recalled; the top EAP_MEMORY_RECALL_K are. PREFERENCE
memories are standing instructions about the form of every answer: up to five are recalled on every
turn, ranked by i × r.

Decay (nightly, `memory_maintenance` asset): i ← i · 2^(−Δ/(T·m)), Δ days unused since the last decay,
m per type (PREFERENCE 4, FACT/SKILL 2, CONTEXT 1, EPISODIC 0.5); below EAP_MEMORY_FORGET_BELOW the
memory is forgotten (deleted). Compaction: memories of one type whose cosine similarity is at least
EAP_MEMORY_MERGE_SIMILARITY are merged; EPISODIC memories older than EAP_MEMORY_EPISODIC_DAYS are
replaced by one extractive summary per access label. Hard limit: EAP_MEMORY_MAX_PER_USER, enforced on
every write by evicting the lowest i × r.

Security: every query carries the user predicate (RLS scopes the tenant), and a memory derived from
documents carries their access label (highest class; for Class III/IV the ACL groups that can read every
such source): recall uses the same ceiling + need-to-know predicate as retrieval, with the caller's role
and groups of *now*, so a user whose access was reduced does not get it back.

Why one module of ~480 lines: it is the one owner of the `user_memories` table. Writing (the per-user lock,
the limit), recall and maintenance (decay, merge, episode summaries) share the row shape, the access label
and the vector helpers; split apart, the invariants above (a label on every write, the ceiling on every read,
the hard limit) would live in several places.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy import CursorResult, Result, delete, func, select, text
from sqlalchemy.orm import Session

from compliance import audit
from compliance.access import ceiling, read_filter
from core.embedding import Embedder
from core.errors import InvalidInput, NotFound
from core.models import AgentLesson, Memory
from core.settings import Settings
from core.text import tokenize
from retrieval.search import Caller

TYPES = ("FACT", "PREFERENCE", "SKILL", "CONTEXT", "EPISODIC")
BASE_IMPORTANCE = {"PREFERENCE": 0.9, "FACT": 0.7, "SKILL": 0.6, "CONTEXT": 0.6, "EPISODIC": 0.35}
DECAY_SCALE = {"PREFERENCE": 4.0, "FACT": 2.0, "SKILL": 2.0, "CONTEXT": 1.0, "EPISODIC": 0.5}
REINFORCE = 0.05
STANDING_PREFERENCES = 5
MAX_CONTENT = 1000
SUMMARY_LINES = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Label:
    """The access label a memory inherits from the documents it was derived from."""

    classification: int = 1
    acl_groups: tuple[str, ...] = ()
    sources: list[dict[str, Any]] = field(default_factory=list)

    def readable_by(self, caller: Caller) -> bool:
        if self.classification > ceiling(caller.role):
            return False
        return self.classification < 3 or bool(set(self.acl_groups) & set(caller.groups))


def combine(labels: Iterable[Label]) -> Label:
    """Highest class; for Class III/IV only the groups that can read *every* restricted source (an empty
    intersection makes the memory unreadable for everyone: fail closed)."""
    labels = list(labels)
    top = max((lb.classification for lb in labels), default=1)
    restricted = [set(lb.acl_groups) for lb in labels if lb.classification >= 3]
    groups = set.intersection(*restricted) if restricted else set()
    sources = [s for lb in labels for s in lb.sources]
    return Label(top, tuple(sorted(groups)), _unique(sources))


def _unique(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for s in sources:
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def label_for_sources(session: Session, cited: Sequence[dict[str, Any]]) -> Label:
    """Label from cited sources ({chunk_id, document_id}): the chunk's current class and ACL, else its
    document's; a source that no longer exists counts as Class IV with no readers (fail closed)."""
    if not cited:
        return Label()
    chunk_ids = [str(c["chunk_id"]) for c in cited if c.get("chunk_id")]
    doc_ids = [str(c["document_id"]) for c in cited if c.get("document_id")]
    chunks = {str(r[0]): (r[1], tuple(r[2] or ())) for r in session.execute(
        text("SELECT id, classification, acl_groups FROM chunks WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": chunk_ids}).all()}
    docs = {str(r[0]): (r[1], tuple(r[2] or ())) for r in session.execute(
        text("SELECT id, classification, acl_groups FROM documents WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": doc_ids}).all()}
    labels = []
    for c in cited:
        cls, acl = chunks.get(str(c.get("chunk_id"))) or docs.get(str(c.get("document_id"))) or (4, ())
        labels.append(Label(int(cls), acl, [{"chunk_id": str(c.get("chunk_id")),
                                             "document_id": str(c.get("document_id"))}]))
    return combine(labels)


def recency(last_used: dt.datetime | None, now: dt.datetime, half_life_days: float) -> float:
    if last_used is None:
        return 1.0
    days = max(0.0, (now - last_used).total_seconds() / 86400)
    return 0.5 + 0.5 * 2 ** (-days / half_life_days)


def _vec_param(v: np.ndarray) -> str:
    return json.dumps([float(x) for x in v])


def _lock(session: Session, tenant_id: uuid.UUID, subject: str) -> None:
    # One writer per user at a time: the per-user limit and key replacement stay exact under concurrency.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": f"memory:{tenant_id}:{subject}"})


def clean(content: str) -> str:
    """Memory text goes into prompts: one line, no fence markers, no [n] that could pose as a citation."""
    content = re.sub(r"\s+", " ", content or "").strip()
    content = content.replace("<<<", "").replace(">>>", "").replace("[", "(").replace("]", ")")
    return content[:MAX_CONTENT]


@dataclass
class Written:
    memory: Memory
    action: str  # created | replaced | reinforced


def remember(session: Session, tenant_id: uuid.UUID, subject: str, memory_type: str, content: str, *,
             key: str | None = None, importance: float | None = None, label: Label | None = None,
             origin: str = "conversation", message_id: uuid.UUID | None = None, metadata: dict[str, Any] | None = None,
             vector: np.ndarray | None = None, embed_text: str | None = None,
             now: dt.datetime | None = None, settings: Settings, embedder: Embedder) -> Written:
    """Write one memory. A keyed memory replaces the user's earlier value for the key; an unkeyed one that
    nearly duplicates an existing memory of the same type and label reinforces it (newer wording wins).
    The per-user limit is then enforced by evicting the lowest-value memories."""
    if memory_type not in TYPES:
        raise InvalidInput(f"memory type must be one of {', '.join(TYPES)}", code="invalid_memory_type")
    content = clean(content)
    if not content:
        raise InvalidInput("memory content is empty", code="empty_memory")
    now = now or _now()
    label = label or Label()
    label = Label(label.classification, tuple(sorted(set(label.acl_groups))), label.sources)
    s = settings
    _lock(session, tenant_id, subject)
    vec = vector if vector is not None else embedder.embed([embed_text or content])[0]
    start = BASE_IMPORTANCE[memory_type] if importance is None else max(0.01, min(1.0, importance))
    existing: Memory | None = None
    if key is not None:
        existing = session.execute(select(Memory).where(
            Memory.user_subject == subject, Memory.memory_type == memory_type, Memory.key == key)).scalar()
    else:
        dim = int(vec.shape[0])
        row = session.execute(text(
            f"SELECT id, 1 - (embedding::vector({dim}) <=> CAST(:q AS vector({dim}))) AS sim FROM memories "
            "WHERE user_subject = :u AND memory_type = :t AND key IS NULL AND embedding_dim = :dim "
            "AND classification = :cls AND acl_groups = CAST(:acl AS text[]) "
            f"ORDER BY embedding::vector({dim}) <=> CAST(:q AS vector({dim})) LIMIT 1"),
            {"q": _vec_param(vec), "u": subject, "t": memory_type, "dim": dim, "cls": label.classification,
             "acl": list(label.acl_groups)}).first()
        if row is not None and row.sim >= s.memory_merge_similarity:
            existing = session.get(Memory, row.id)
    if existing is not None:
        action = "reinforced" if existing.content == content else "replaced"
        existing.content = content
        existing.embedding = [float(x) for x in vec]
        existing.embedding_dim = int(vec.shape[0])
        existing.importance = min(1.0, max(existing.importance, start) + REINFORCE)
        existing.classification, existing.acl_groups = label.classification, list(label.acl_groups)
        existing.sources = _unique(label.sources)
        existing.message_id = message_id or existing.message_id
        existing.metadata_ = {**existing.metadata_, **(metadata or {})}
        existing.merged_count += action == "reinforced"
        existing.updated_at = existing.decayed_at = now
        session.flush()
        enforce_limit(session, subject, keep=existing.id, now=now, settings=s)
        return Written(existing, action)
    mem = Memory(id=uuid.uuid4(), tenant_id=tenant_id, user_subject=subject, memory_type=memory_type, key=key,
                 content=content, embedding=[float(x) for x in vec], embedding_dim=int(vec.shape[0]),
                 importance=start, classification=label.classification, acl_groups=list(label.acl_groups),
                 sources=_unique(label.sources), origin=origin, message_id=message_id, metadata_=metadata or {},
                 created_at=now, updated_at=now, decayed_at=now)
    session.add(mem)
    session.flush()
    enforce_limit(session, subject, keep=mem.id, now=now, settings=s)
    return Written(mem, "created")


def enforce_limit(session: Session, subject: str, keep: uuid.UUID | None = None,
                  now: dt.datetime | None = None, *, settings: Settings) -> int:
    """Evict the user's lowest-value memories (importance × recency, oldest first on ties) above the limit."""
    limit = settings.memory_max_per_user
    n = session.execute(select(func.count()).select_from(Memory).where(Memory.user_subject == subject)).scalar() or 0
    if n <= limit:
        return 0
    now = now or _now()
    rows = session.execute(select(Memory.id, Memory.importance, Memory.last_accessed_at, Memory.created_at)
                           .where(Memory.user_subject == subject)).all()
    ranked = sorted((r for r in rows if r.id != keep),
                    key=lambda r: (r.importance * recency(r.last_accessed_at or r.created_at, now,
                                                          settings.memory_half_life_days), r.created_at))
    victims = [r.id for r in ranked[: n - limit]]
    session.execute(delete(Memory).where(Memory.id.in_(victims)))
    return len(victims)


@dataclass
class Recalled:
    id: uuid.UUID
    type: str
    key: str | None
    content: str
    score: float
    similarity: float
    importance: float
    classification: int
    metadata: dict[str, Any]

    def as_trace(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "score": round(self.score, 4),
                "similarity": round(self.similarity, 4), "classification": self.classification}


def recall(session: Session, subject: str, caller: Caller, vector: np.ndarray, *, k: int | None = None,
           now: dt.datetime | None = None, touch: bool = True, settings: Settings) -> list[Recalled]:
    """The user's memories for a message: standing preferences plus the top-k others by s × i × r, only
    those the caller may read now. Recalled memories are reinforced (use counts against decay)."""
    s = settings
    k = s.memory_recall_k if k is None else k
    now = now or _now()
    dim = int(vector.shape[0])
    access = read_filter(caller.role, caller.groups, Memory.classification, Memory.acl_groups)
    # Exact cosine over this user's memories (the embedding column is untyped: cast to the query's dimension).
    sim = (1 - sa.cast(Memory.embedding, Vector(dim)).cosine_distance([float(x) for x in vector])).label("sim")
    base = select(Memory, sim).where(Memory.user_subject == subject, Memory.embedding_dim == dim, access)
    prefs = session.execute(base.where(Memory.memory_type == "PREFERENCE")
                            .order_by(Memory.importance.desc(), Memory.updated_at.desc())
                            .limit(STANDING_PREFERENCES)).all()
    others = session.execute(base.where(Memory.memory_type != "PREFERENCE").order_by(sim.desc())
                             .limit(max(50, 10 * k))).all() if k else []
    out: list[Recalled] = []
    for m, similarity in prefs:
        r = recency(m.last_accessed_at or m.created_at, now, s.memory_half_life_days)
        out.append(Recalled(m.id, m.memory_type, m.key, m.content, m.importance * r, float(similarity),
                            m.importance, m.classification, m.metadata_))
    scored = []
    for m, similarity in others:
        if similarity < s.memory_min_similarity:
            continue
        r = recency(m.last_accessed_at or m.created_at, now, s.memory_half_life_days)
        scored.append(Recalled(m.id, m.memory_type, m.key, m.content, float(similarity) * m.importance * r,
                               float(similarity), m.importance, m.classification, m.metadata_))
    scored.sort(key=lambda x: -x.score)
    out += scored[:k]
    if touch and out:
        ids = [x.id for x in out]
        # Best effort, never waits: a row another transaction is writing keeps its old use statistics
        # (waiting here could deadlock with that writer's per-user lock).
        session.execute(text("UPDATE memories SET access_count = access_count + 1, last_accessed_at = :now, "
                             "importance = least(1.0, importance + :r) WHERE id IN (SELECT id FROM memories "
                             "WHERE id = ANY(CAST(:ids AS uuid[])) FOR UPDATE SKIP LOCKED)"),
                        {"now": now, "r": REINFORCE, "ids": [str(i) for i in ids]})
    return out


# --------------------------------------------------------------------------- user control


def _visible(subject: str, caller: Caller,
             memory_type: str | None) -> tuple[list[sa.ColumnElement[bool]], sa.ColumnElement[bool]]:
    conds = [Memory.user_subject == subject]
    if memory_type:
        conds.append(Memory.memory_type == memory_type)
    return conds, read_filter(caller.role, caller.groups, Memory.classification, Memory.acl_groups)


def list_memories(session: Session, subject: str, caller: Caller, memory_type: str | None, limit: int,
                  offset: int) -> tuple[list[Memory], int, int]:
    """(page, total readable, withheld): memories derived from documents the caller can no longer read are
    withheld (counted, not shown); `DELETE /v1/memories` still removes them."""
    if memory_type and memory_type not in TYPES:
        raise InvalidInput(f"type must be one of {', '.join(TYPES)}", code="invalid_memory_type")
    conds, access = _visible(subject, caller, memory_type)
    total = session.execute(select(func.count()).select_from(Memory).where(*conds, access)).scalar() or 0
    everything = session.execute(select(func.count()).select_from(Memory).where(*conds)).scalar() or 0
    rows = session.execute(select(Memory).where(*conds, access)
                           .order_by(Memory.updated_at.desc(), Memory.id).limit(limit).offset(offset)).scalars().all()
    return list(rows), int(total), int(everything - total)


def delete_memory(session: Session, tenant_id: uuid.UUID, subject: str, role: str, memory_id: uuid.UUID) -> None:
    mem = session.execute(select(Memory).where(Memory.id == memory_id, Memory.user_subject == subject)).scalar()
    if mem is None:  # someone else's memory looks exactly like a missing one
        raise NotFound("memory not found", code="memory_not_found")
    session.delete(mem)
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=role, action="memory.delete",
                 resource_type="memory", resource_id=str(memory_id), details={"type": mem.memory_type})


def forget_all(session: Session, tenant_id: uuid.UUID, subject: str, role: str,
               memory_type: str | None = None) -> dict[str, Any]:
    """Delete the user's memories (of one type, or all of them together with the agent's lessons about
    this user). Rows are deleted, not flagged."""
    if memory_type and memory_type not in TYPES:
        raise InvalidInput(f"type must be one of {', '.join(TYPES)}", code="invalid_memory_type")
    _lock(session, tenant_id, subject)
    conds = [Memory.user_subject == subject] + ([Memory.memory_type == memory_type] if memory_type else [])
    memories = _rowcount(session.execute(delete(Memory).where(*conds)))
    lessons = 0
    if memory_type is None:
        lessons = _rowcount(session.execute(delete(AgentLesson).where(AgentLesson.user_subject == subject)))
    out = {"memories": int(memories), "lessons": int(lessons), "type": memory_type}
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=role, action="memory.delete_all",
                 resource_type="memory", resource_id=subject, details=out)
    return out


# --------------------------------------------------------------------------- maintenance


def _rowcount(result: Result[Any]) -> int:
    """Rows touched by a DML statement (a CursorResult at run time; typed as Result by Session.execute)."""
    return int(cast(CursorResult[Any], result).rowcount)


def decay(session: Session, now: dt.datetime | None = None, *, settings: Settings) -> dict[str, Any]:
    """Decay every memory of the tenant in the session by the time it went unused; forget those below
    the floor."""
    s = settings
    now = now or _now()
    scale = " ".join(f"WHEN '{t}' THEN {m}" for t, m in DECAY_SCALE.items())
    decayed = _rowcount(session.execute(text(
        "UPDATE memories SET importance = importance * power(0.5, greatest(0, extract(epoch FROM "
        "(:now - greatest(decayed_at, coalesce(last_accessed_at, created_at)))) / 86400.0) "
        f"/ (:t * CASE memory_type {scale} ELSE 1 END)), decayed_at = :now"),
        {"now": now, "t": s.memory_half_life_days}))
    forgotten = _rowcount(session.execute(text("DELETE FROM memories WHERE importance < :floor"),
                                          {"floor": s.memory_forget_below}))
    return {"decayed": int(decayed), "forgotten": int(forgotten)}


def _load(session: Session, subject: str, memory_type: str) -> tuple[list[Memory], np.ndarray]:
    rows = session.execute(select(Memory).where(Memory.user_subject == subject, Memory.memory_type == memory_type)
                           .order_by(Memory.importance.desc(), Memory.updated_at.desc())).scalars().all()
    rows = [m for m in rows if m.embedding is not None]
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    dims = Counter(m.embedding_dim for m in rows)
    dim = dims.most_common(1)[0][0]
    rows = [m for m in rows if m.embedding_dim == dim]
    return rows, np.asarray([np.asarray(m.embedding, dtype=np.float32) for m in rows])


def merge_duplicates(session: Session, subject: str, now: dt.datetime | None = None, *, settings: Settings) -> int:
    """Merge memories of one type whose cosine similarity reaches the threshold into the most important
    one: counts add up, the access label becomes the stricter combination, the sources are united."""
    threshold = settings.memory_merge_similarity
    now = now or _now()
    merged = 0
    for memory_type in TYPES:
        rows, vecs = _load(session, subject, memory_type)
        if len(rows) < 2:
            continue
        sims = vecs @ vecs.T
        gone: set[int] = set()
        for i, keep in enumerate(rows):
            if i in gone:
                continue
            for j in range(i + 1, len(rows)):
                other = rows[j]
                if j in gone or sims[i, j] < threshold or keep.key != other.key:
                    continue
                lb = combine([Label(keep.classification, tuple(keep.acl_groups), keep.sources),
                              Label(other.classification, tuple(other.acl_groups), other.sources)])
                keep.classification, keep.acl_groups, keep.sources = lb.classification, list(lb.acl_groups), lb.sources
                keep.importance = min(1.0, max(keep.importance, other.importance) + REINFORCE)
                keep.access_count += other.access_count
                keep.merged_count += other.merged_count
                keep.last_accessed_at = max((t for t in (keep.last_accessed_at, other.last_accessed_at) if t),
                                            default=None)
                keep.updated_at = now
                session.delete(other)
                gone.add(j)
                merged += 1
    session.flush()
    return merged


def summarise_episodes(session: Session, tenant_id: uuid.UUID, subject: str, now: dt.datetime | None = None, *,
                       settings: Settings, embedder: Embedder) -> int:
    """Replace the user's EPISODIC memories older than EAP_MEMORY_EPISODIC_DAYS by one extractive summary per
    access label (so a summary never mixes what different readers may see): the most frequent topic terms
    and the most representative exchanges (closest to the group's centroid), quoted."""
    now = now or _now()
    cutoff = now - dt.timedelta(days=settings.memory_episodic_days)
    rows, vecs = _load(session, subject, "EPISODIC")
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(rows):
        if m.created_at < cutoff and not m.metadata_.get("summary"):
            groups.setdefault((m.classification, tuple(sorted(m.acl_groups))), []).append(i)
    replaced = 0
    for (cls, acl), idx in groups.items():
        if len(idx) < 2:
            continue
        members = [rows[i] for i in idx]
        v = vecs[idx]
        centroid = v.mean(axis=0)
        order = np.argsort(-(v @ centroid), kind="stable")[:SUMMARY_LINES]
        terms = Counter(t for m in members for t in set(tokenize(m.content)) if len(t) > 2 and not t.isdigit())
        topics = ", ".join(t for t, _ in terms.most_common(5))
        first = min(m.created_at for m in members).date().isoformat()
        last = max(m.created_at for m in members).date().isoformat()
        lines = [f"Summary of {len(members)} earlier exchanges ({first} to {last}); topics: {topics}."]
        lines += [members[int(i)].content[:160] for i in order]
        content = " | ".join(lines)
        remember(session, tenant_id, subject, "EPISODIC", content,
                 importance=max(m.importance for m in members),
                 label=Label(cls, acl, _unique([s for m in members for s in m.sources])), origin="compaction",
                 metadata={"summary": True, "episodes": len(members), "from": first, "to": last}, now=now,
                 settings=settings, embedder=embedder)
        for m in members:
            session.delete(m)
        session.flush()
        replaced += len(members)
    return replaced


def maintain(session: Session, tenant_id: uuid.UUID, now: dt.datetime | None = None, *, settings: Settings,
             embedder: Embedder) -> dict[str, Any]:
    """Nightly upkeep of one tenant: decay and forget, merge near-duplicates, summarise old episodes,
    enforce the per-user limit."""
    now = now or _now()
    out = decay(session, now, settings=settings)
    out.update(merged=0, summarised=0, evicted=0)
    users = session.execute(select(Memory.user_subject).distinct()).scalars().all()
    for subject in users:
        _lock(session, tenant_id, subject)
        out["merged"] += merge_duplicates(session, subject, now, settings=settings)
        out["summarised"] += summarise_episodes(session, tenant_id, subject, now, settings=settings, embedder=embedder)
        out["evicted"] += enforce_limit(session, subject, now=now, settings=settings)
    out["users"] = len(users)
    out["remaining"] = int(session.execute(select(func.count()).select_from(Memory)).scalar() or 0)
    return out


def maintain_all(now: dt.datetime | None = None, *, settings: Settings, embedder: Embedder) -> dict[str, Any]:
    """Every tenant, each in its own transaction (as the application role, scoped by RLS); audited.
    `settings` and `embedder` come from the caller (the Dagster asset builds them)."""
    from core.db.database import system_session, tenant_session

    with system_session() as s:
        tenants = s.execute(text("SELECT DISTINCT tenant_id FROM memories")).scalars().all()
    per_tenant: dict[str, Any] = {}
    totals: Counter[str] = Counter()
    for tid in tenants:
        with tenant_session(tid) as s:
            res = maintain(s, tid, now, settings=settings, embedder=embedder)
            if any(res[k] for k in ("forgotten", "merged", "summarised", "evicted")):
                audit.record(s, tenant_id=tid, actor="system:memory_maintenance", action="memory.maintenance",
                             resource_type="memory", details=res)
        per_tenant[str(tid)] = res
        totals.update({k: v for k, v in res.items() if isinstance(v, int)})
    return {"tenants": len(tenants), **dict(totals), "per_tenant": per_tenant}
