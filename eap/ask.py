"""`eap ask "…"`: the chat use case of `POST /v1/chat` (agents/chat.py) from a terminal — the same
routing, VERIFY, sanitising, storage and audit records, as the user `--user` (default `cli`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def run_ask(question: str, tenant: str, role: str, groups: str, k: int, *, user: str = "cli",
            conversation: str | None = None, as_json: bool = False) -> int:
    from agents import chat
    from agents.deps import AgentDeps, build_deps
    from core.db.database import bootstrap, tenant_session
    from core.errors import InvalidInput
    from identity.tenancy import get_tenant

    bootstrap()
    ref = get_tenant(tenant)
    try:
        conv_id = uuid.UUID(conversation) if conversation else None
    except ValueError:
        raise InvalidInput(f"--conversation {conversation!r} is not a conversation id") from None
    group_list = tuple(g.strip() for g in groups.split(",") if g.strip())

    @contextmanager
    def open_deps() -> Iterator[AgentDeps]:  # one AgentDeps per transaction, as the route builds them
        with tenant_session(ref.id) as s:
            yield build_deps(s, subject=user, role=role, groups=group_list, tenant_id=ref.id, tenant=ref.name)

    res = chat.ask(open_deps, question, conv_id, k=k, channel="cli")
    if as_json:
        print(json.dumps(res.as_dict(), default=str))
        return 0
    print(res.answer)
    if res.citations:
        print("\nSources:")
        for c in res.citations:
            where = ", ".join(p for p in (f"p. {c.page}" if c.page else None, c.section) if p)
            loc = f" ({where})" if where else ""
            print(f"  [{c.n}] {c.title}{loc}  document={c.document_id} chunk={c.chunk_id}")
    print(f"\n{chat.AI_DISCLOSURE}\nmodel: {res.model}\nconversation: {res.conversation_id}")
    return 0
