"""`eap ask "…"`: the same retrieval, prompt and model seam as `POST /v1/chat`, from a terminal."""

from __future__ import annotations


def run_ask(question: str, tenant: str, role: str, groups: str, k: int) -> int:
    from agents.answer import AI_DISCLOSURE, answer
    from core import audit
    from core.database import bootstrap, tenant_session
    from core.tenancy import get_tenant
    from retrieval.search import Caller

    bootstrap()
    ref = get_tenant(tenant)
    caller = Caller(role, tuple(g.strip() for g in groups.split(",") if g.strip()))
    with tenant_session(ref.id) as s:
        res = answer(s, caller, question, [], k=k)
        audit.record(s, tenant_id=ref.id, actor="cli", actor_role=role, action="chat.cli",
                     details={"model": res.model, "cited_chunk_ids": [str(c.chunk_id) for c in res.citations]})
    print(res.text)
    if res.citations:
        print("\nSources:")
        for c in res.citations:
            where = ", ".join(p for p in (f"p. {c.page}" if c.page else None, c.section) if p)
            loc = f" ({where})" if where else ""
            print(f"  [{c.n}] {c.title}{loc}  document={c.document_id} chunk={c.chunk_id}")
    print(f"\n{AI_DISCLOSURE}\nmodel: {res.model}")
    return 0
