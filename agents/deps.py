"""AgentDeps: everything an agent run reads from the outside world, built once at each edge (the chat
route, `eap ask`, the goal planner route, the golden evaluation) and passed down.

Nothing inside `agents/` reaches for `get_settings()`, `get_embedder()` or a model client of its own:
it reads `deps.settings`, `deps.embedder` and `deps.model`. Tests build the same object with the
scripted double of `core.llm.testing` as its model (pydantic-ai's `TestModel` pattern), so no
production function takes a test-only parameter.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.embedding import Embedder, get_embedder
from core.llm.model import Model
from core.settings import Settings, get_settings
from retrieval.search import Caller


@dataclass(frozen=True)
class Actor:
    """Who asks: the tenant (None for tenant-less runs such as the golden evaluation: no budget, no
    memory), the principal's subject, its role and groups."""

    subject: str
    role: str
    groups: tuple[str, ...] = ()
    tenant_id: uuid.UUID | None = None
    tenant: str | None = None

    @property
    def access(self) -> Caller:
        """The retrieval filter of this caller (role ceiling and groups)."""
        return Caller(self.role, self.groups)


@dataclass(frozen=True)
class AgentDeps:
    session: Session
    caller: Actor
    settings: Settings
    embedder: Embedder
    model: Model

    @property
    def tenant_id(self) -> uuid.UUID | None:
        return self.caller.tenant_id

    @property
    def access(self) -> Caller:
        return self.caller.access

    def with_session(self, session: Session) -> AgentDeps:
        """The same request on another session (a fan-out branch in its own thread)."""
        return dataclasses.replace(self, session=session)


def build_deps(session: Session, *, subject: str, role: str, groups: tuple[str, ...] | list[str] = (),
               tenant_id: uuid.UUID | None = None, tenant: str | None = None, settings: Settings | None = None,
               embedder: Embedder | None = None, model: Model | None = None) -> AgentDeps:
    """One AgentDeps at an edge; settings, embedder and model default to the configured ones."""
    from core.llm import default_model

    settings = settings or get_settings()
    return AgentDeps(session=session,
                     caller=Actor(subject=subject, role=role, groups=tuple(groups), tenant_id=tenant_id, tenant=tenant),
                     settings=settings, embedder=embedder or get_embedder(), model=model or default_model())
