"""Fine-tuning dataset export: positively rated answers as chat JSONL (system/user/assistant), one file
per tenant (tenants' data never mix), PII-scrubbed, anything that cited Class III/IV (or a source that
can no longer be checked) excluded, de-duplicated, with a data card. Usable as-is by common trainers
(OpenAI/HF "messages" format)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from collections import defaultdict
from pathlib import Path

from sqlalchemy import text

from compliance.pii import sanitise
from core.db.database import system_session
from core.settings import get_settings

SYSTEM = ("You are an assistant for a manufacturing company. Answer from the company's documents and cite them.")
POSITIVE = 0.5  # up = 1.0, rating 4 = 0.5, rating 5 = 1.0


def build(out_root: Path | None = None, tenant_ids: list[uuid.UUID] | None = None) -> dict:
    """Write the dataset of each tenant in `tenant_ids` (None: every tenant — only for callers that hold
    an approval for all of them; the Dagster asset passes the one tenant its approval token names)."""
    out_root = out_root or get_settings().home / "datasets" / "finetune"
    with system_session() as s:
        rows = s.execute(text("""
            SELECT t.name, f.value, m.content AS answer, m.citations, m.created_at,
                   (SELECT u.content FROM messages u WHERE u.conversation_id = m.conversation_id AND u.role = 'user'
                      AND u.created_at <= m.created_at ORDER BY u.created_at DESC, u.id DESC LIMIT 1) AS question
            FROM feedback f JOIN messages m ON m.id = f.message_id JOIN tenants t ON t.id = f.tenant_id
            WHERE f.value >= :pos AND m.role = 'assistant'
              AND (CAST(:all AS boolean) OR f.tenant_id = ANY(CAST(:tenants AS uuid[])))
            ORDER BY m.created_at"""), {"pos": POSITIVE, "all": tenant_ids is None,
                                        "tenants": [str(t) for t in tenant_ids or []]}).mappings().all()
        chunk_ids = {c["chunk_id"] for r in rows for c in r["citations"]}
        classes: dict[str, int] = dict(
            s.execute(text("SELECT id::text, classification FROM chunks WHERE id::text = ANY(:ids)"),
                      {"ids": list(chunk_ids)}).all()) if chunk_ids else {}
    per_tenant: dict[str, list[dict]] = defaultdict(list)
    stats: dict[str, dict] = defaultdict(lambda: {"candidates": 0, "excluded_restricted": 0,
                                                  "excluded_unverifiable": 0, "duplicates": 0, "pii_replaced": 0,
                                                  "first": None, "last": None})
    seen: set[str] = set()
    for r in rows:
        st = stats[r["name"]]
        st["candidates"] += 1
        cited = [c["chunk_id"] for c in r["citations"]]
        if any(c not in classes for c in cited):
            st["excluded_unverifiable"] += 1
            continue
        if any(classes[c] >= 3 for c in cited):
            st["excluded_restricted"] += 1
            continue
        if not r["question"]:
            st["excluded_unverifiable"] += 1
            continue
        q, a = sanitise(r["question"]), sanitise(r["answer"])
        key = hashlib.sha256(f"{r['name']}|{q.text}|{a.text}".encode()).hexdigest()
        if key in seen:
            st["duplicates"] += 1
            continue
        seen.add(key)
        st["pii_replaced"] += q.total + a.total
        ts = r["created_at"].isoformat()
        st["first"] = st["first"] or ts
        st["last"] = ts
        per_tenant[r["name"]].append({"messages": [{"role": "system", "content": SYSTEM},
                                                   {"role": "user", "content": q.text},
                                                   {"role": "assistant", "content": a.text}]})
    written = {}
    for tenant, st in stats.items():
        folder = out_root / tenant
        folder.mkdir(parents=True, exist_ok=True)
        records = per_tenant.get(tenant, [])
        tmp = folder / ".train.jsonl.tmp"
        with tmp.open("w") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, folder / "train.jsonl")
        card = {"tenant": tenant, "generated_at": dt.datetime.now(dt.UTC).isoformat(), "format": "chat messages JSONL",
                "records": len(records), "date_range": [st["first"], st["last"]],
                "filters": {"feedback": f"value >= {POSITIVE} (thumbs up, or rating 4-5)",
                            "classification": "answers citing Class III/IV sources excluded",
                            "unverifiable": "answers whose cited chunks no longer exist excluded",
                            "pii": "typed placeholders replace e-mails, phones, IBANs, IDs, names",
                            "dedup": "exact (question, answer) pairs after scrubbing"},
                **{k: v for k, v in st.items() if k not in ("first", "last")}}
        (folder / "data_card.json").write_text(json.dumps(card, indent=2))
        written[tenant] = {"path": str(folder / "train.jsonl"), "records": len(records)}
    return written
