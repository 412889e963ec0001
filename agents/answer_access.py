"""Access labels of stored answers and reasoning traces: history is not a side channel.

An answer and its trace are made of what the run saw: the chunks retrieved in every branch, cited or
not, tool results built from them, and the memories recalled into the prompt. Citations alone are not
enough: an answer can quote a passage without a usable [n] (a composed answer's marker pointing past
its source list was seen quoting a Class IV passage with no citation). At write time
`label_for_outcome` records, per source document, its class and ACL at that moment (and whether it
was cited, for the record), and each recalled memory's label. At read time
`readable` checks the caller's *current* role ceiling and need-to-know groups against every source —
against the recorded label *and* the document's current one, whichever is stricter; a document deleted
since keeps its recorded label. Rows written before labels existed are derived from their citations
and the chunk ids in their trace; a source that can no longer be resolved makes the row unreadable
(fail closed). Same rule as retrieval (compliance/access.py), minus the steward's approval: that was
checked when the answer was made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.access import can_read
from retrieval.search import Caller

LABEL_VERSION = 1
REDACTED_ANSWER = ("[Withheld: this answer was built from documents you are not allowed to read now "
                   "(their class is above your role or you are not in their need-to-know group).]")
WITHHELD = "[withheld]"

# Trace fields that never carry document, question or answer text (names, numbers, flags). Every other
# field of an unreadable trace is withheld: an allow-list, so a new step type fails closed.
_SAFE_TRACE_FIELDS = {
    "step", "ms", "tier", "model", "ok", "abstained", "hits", "index_version", "specialist", "confidence",
    "fallback", "outcome", "escalations", "prompt_tokens", "completion_tokens", "complexity", "composition",
    "round", "stage", "execution", "timings_ms", "specialist_default", "to", "tool", "role", "ceiling", "budget",
    "history_turns", "denied", "requested_by",
    "decision", "cleared", "removed",  # the export-control guard's step
}


def _chunk_ids_in(obj: Any, out: set[str]) -> None:
    """Every chunk id a trace mentions (`chunk_ids` lists and `chunk_id` values, at any depth)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "chunk_ids" and isinstance(v, list):
                out.update(str(x) for x in v)
            elif k == "chunk_id" and v:
                out.add(str(v))
            else:
                _chunk_ids_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _chunk_ids_in(v, out)


def _memory_ids_in(trace: Sequence[dict[str, Any]]) -> set[str]:
    return {str(m["id"]) for st in trace if st.get("step") == "OBSERVE"
            for m in st.get("memories") or [] if isinstance(m, dict) and m.get("id")}


def _valid_uuids(ids: Iterable[str]) -> list[str]:
    out = []
    for i in ids:
        try:
            out.append(str(uuid.UUID(str(i))))
        except ValueError:
            continue
    return out


def build_label(session: Session, *, chunk_docs: dict[str, str | None], cited: Iterable[str] = (),
                memory_ids: Iterable[str] = ()) -> dict[str, Any]:
    """The label of content made from these chunks ({chunk id: document id, or None if unknown}), of which
    `cited` (chunk ids) were cited, and these recalled memories. A chunk whose document cannot be found
    counts as `unresolved` (unreadable for everyone)."""
    cited = set(cited)
    unknown = _valid_uuids(c for c, d in chunk_docs.items() if not d)
    found: dict[str, str] = dict(session.execute(text("SELECT id::text, document_id::text FROM chunks WHERE id = ANY("
                                      "CAST(:ids AS uuid[]))"), {"ids": unknown}).all()) if unknown else {}
    doc_of = {c: d or found.get(c) for c, d in chunk_docs.items()}
    rows = {d: (int(c), sorted(a or [])) for d, c, a in session.execute(
        text("SELECT id::text, classification, acl_groups FROM documents WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": _valid_uuids({d for d in doc_of.values() if d})}).all()}
    cited_docs = {doc_of[c] for c in cited if doc_of.get(c)}
    sources = [{"document_id": d, "classification": c, "acl_groups": a, "cited": d in cited_docs}
               for d, (c, a) in sorted(rows.items())]
    lost = [c for c, d in doc_of.items() if not d or d not in rows]
    mids = _valid_uuids(memory_ids)
    memories = [{"id": i, "classification": int(c), "acl_groups": sorted(a or [])} for i, c, a in session.execute(
        text("SELECT id::text, classification, acl_groups FROM memories WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": mids}).all()] if mids else []
    top = max([s["classification"] for s in sources] + [m["classification"] for m in memories]
              + ([4] if lost else []), default=1)
    return {"v": LABEL_VERSION, "classification": top, "sources": sources, "memories": memories,
            "unresolved": len(lost)}


def label_for_outcome(session: Session, out: Any) -> dict[str, Any]:
    """Write time: the label of one answer and its trace."""
    chunk_docs: dict[str, str | None] = {}
    for h in out.prepared.hits:
        chunk_docs[str(h.chunk_id)] = str(h.document_id)
    for c in out.citations:
        chunk_docs[str(c.chunk_id)] = str(c.document_id)
    seen: set[str] = set()
    _chunk_ids_in(out.trace, seen)
    for c in seen:
        chunk_docs.setdefault(c, None)
    return build_label(session, chunk_docs=chunk_docs, cited=[str(c.chunk_id) for c in out.citations],
                       memory_ids=_memory_ids_in(out.trace))


def derive_label(session: Session, citations: Sequence[dict[str, Any]],
                 trace: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    """Read time, for rows stored before labels existed: from citations and the trace's chunk ids."""
    chunk_docs: dict[str, str | None] = {}
    for cit in citations or []:
        chunk_docs[str(cit.get("chunk_id") or cit.get("document_id"))] = str(cit["document_id"]) if cit.get(
            "document_id") else None
    seen: set[str] = set()
    _chunk_ids_in(list(trace or []), seen)
    for c in seen:
        chunk_docs.setdefault(c, None)
    return build_label(session, chunk_docs=chunk_docs,
                       cited=[str(c.get("chunk_id") or c.get("document_id")) for c in citations or []],
                       memory_ids=_memory_ids_in(trace or []))


def _may(caller: Caller, classification: int, acl: Sequence[str]) -> bool:
    return can_read(caller.role, caller.groups, int(classification), list(acl or ()), "approved")


def readable(session: Session, caller: Caller, labels: Sequence[dict[str, Any]]) -> list[bool]:
    """For each label: may the caller read content carrying it *now*? One query for all of them."""
    ids = _valid_uuids({s["document_id"] for lb in labels for s in lb.get("sources", [])})
    now = {d: (c, a or []) for d, c, a in session.execute(
        text("SELECT id::text, classification, acl_groups FROM documents WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": ids}).all()} if ids else {}
    out = []
    for lb in labels:
        ok = not lb.get("unresolved", 0) and all(_may(caller, m["classification"], m["acl_groups"])
                                                 for m in lb.get("memories", []))
        for s in lb.get("sources", []) if ok else []:
            current = now.get(s["document_id"])
            if not _may(caller, s["classification"], s["acl_groups"]) or (
                    current is not None and not _may(caller, *current)):
                ok = False
                break
        out.append(ok)
    return out


def redact_trace(trace: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """A trace the caller may not read: its shape (steps, timings, tiers, outcomes) without any text —
    queries, results, tool arguments and outputs, reasoning, reasons. Returns it with the count of
    withheld fields."""
    withheld = 0
    out = []
    for st in trace:
        kept = {}
        for k, v in st.items():
            if k in _SAFE_TRACE_FIELDS and (v is None or isinstance(v, bool | int | float)
                                            or (isinstance(v, str) and len(v) <= 64)
                                            or (k == "timings_ms" and isinstance(v, dict))):
                kept[k] = v
            else:
                kept[k] = WITHHELD
                withheld += 1
        out.append(kept)
    return out, withheld
