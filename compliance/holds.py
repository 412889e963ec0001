"""Destruction holds: while a hold is active on a tenant, a user, a document or a conversation, nothing it covers
is purged by retention, deleted, or erased by a GDPR request. Holds are placed and released (never deleted) by a
compliance officer, with a reason; both are audit records.

A hold on a user covers what that person owns (conversations, memories, goals, feedback, usage, traces) and the
documents they uploaded; a tenant hold covers everything of the tenant, its audit trail included."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance import audit
from core.errors import Conflict, InvalidInput, NotFound


class HoldScope(enum.StrEnum):
    tenant = "tenant"
    user = "user"
    document = "document"
    conversation = "conversation"


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    scope: str
    target: str
    reason: str
    placed_by: str
    placed_at: dt.datetime
    released_by: str | None = None
    released_at: dt.datetime | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def describe(self) -> str:
        return f"{self.scope} hold {self.id} ({self.reason})"


class HeldError(Conflict):
    """A purge, delete or erasure refused because a destruction hold covers it (409 `held`)."""

    code = "held"

    def __init__(self, holds: list[Hold], what: str) -> None:
        super().__init__(f"{what} is under a destruction hold: " + "; ".join(h.describe() for h in holds),
                         details={"holds": [{"id": str(h.id), "scope": h.scope, "target": h.target, "reason": h.reason}
                                            for h in holds]})
        self.holds = holds
        self.what = what


def record_refusal(exc: HeldError, *, tenant_id: uuid.UUID, actor: str, actor_role: str | None,
                   resource_id: str) -> None:
    """Audit a delete or erasure a hold refused (`hold.blocked`, outcome `denied`) in a transaction of its own:
    the refused operation's transaction is rolled back. Called by the API's error handler (serving/errors.py)."""
    audit.record_detached(tenant_id, actor=actor, actor_role=actor_role, action="hold.blocked",
                          resource_type="destruction_hold", resource_id=resource_id, outcome="denied",
                          details={"what": exc.what, "holds": [{"id": str(h.id), "scope": h.scope}
                                                               for h in exc.holds]})


_COLUMNS = "id, scope, target, reason, placed_by, placed_at, released_by, released_at, release_reason"


def _hold(row: Any) -> Hold:
    return Hold(**dict(row._mapping))


def place(session: Session, tenant_id: uuid.UUID, *, scope: HoldScope | str, target: str | None, reason: str,
          placed_by: str, placed_by_role: str | None = None) -> Hold:
    scope = HoldScope(scope)
    target = str(tenant_id) if scope is HoldScope.tenant else (target or "").strip()
    if not target:
        raise InvalidInput(f"a {scope.value} hold needs a target", code="hold_target_required")
    if scope in (HoldScope.document, HoldScope.conversation):
        try:
            target = str(uuid.UUID(target))
        except ValueError:
            raise InvalidInput(f"a {scope.value} hold's target is the {scope.value}'s id",
                               code="invalid_hold_target") from None
    if not reason.strip():
        raise InvalidInput("a hold needs a reason", code="reason_required")
    row = session.execute(text(f"INSERT INTO destruction_holds (tenant_id, scope, target, reason, placed_by) "
                               f"VALUES (:t, :scope, :target, :reason, :by) RETURNING {_COLUMNS}"),
                          {"t": tenant_id, "scope": scope.value, "target": target, "reason": reason.strip(),
                           "by": placed_by}).one()
    hold = _hold(row)
    audit.record(session, tenant_id=tenant_id, actor=placed_by, actor_role=placed_by_role, action="hold.placed",
                 resource_type="destruction_hold", resource_id=str(hold.id),
                 details={"scope": scope.value, "target": target, "reason": hold.reason})
    return hold


def release(session: Session, tenant_id: uuid.UUID, hold_id: uuid.UUID, *, released_by: str, reason: str,
            released_by_role: str | None = None) -> Hold:
    if not reason.strip():
        raise InvalidInput("releasing a hold needs a reason", code="reason_required")
    row = session.execute(text(f"UPDATE destruction_holds SET released_by = :by, released_at = now(), "
                               f"release_reason = :reason WHERE id = :id AND tenant_id = :t AND released_at IS NULL "
                               f"RETURNING {_COLUMNS}"),
                          {"by": released_by, "reason": reason.strip(), "id": hold_id, "t": tenant_id}).one_or_none()
    if row is None:
        raise NotFound("no active hold with this id", code="hold_not_found")
    hold = _hold(row)
    audit.record(session, tenant_id=tenant_id, actor=released_by, actor_role=released_by_role, action="hold.released",
                 resource_type="destruction_hold", resource_id=str(hold.id),
                 details={"scope": hold.scope, "target": hold.target, "reason": hold.release_reason})
    return hold


def list_holds(session: Session, tenant_id: uuid.UUID, *, active_only: bool = True) -> list[Hold]:
    where = "tenant_id = :t" + (" AND released_at IS NULL" if active_only else "")
    return [_hold(r) for r in session.execute(text(f"SELECT {_COLUMNS} FROM destruction_holds WHERE {where} "
                                                   "ORDER BY placed_at"), {"t": tenant_id})]


@dataclass(frozen=True)
class ActiveHolds:
    """The active holds of one tenant, as sets for the retention job's and erasure's filters."""

    tenant: list[Hold]
    users: dict[str, list[Hold]]
    documents: dict[str, list[Hold]]
    conversations: dict[str, list[Hold]]

    @property
    def any(self) -> bool:
        return bool(self.tenant or self.users or self.documents or self.conversations)

    def all(self) -> list[Hold]:
        out = list(self.tenant)
        for group in (self.users, self.documents, self.conversations):
            for hs in group.values():
                out.extend(hs)
        return out


def active(session: Session, tenant_id: uuid.UUID) -> ActiveHolds:
    found: dict[str, dict[str, list[Hold]]] = {s.value: {} for s in HoldScope}
    for h in list_holds(session, tenant_id):
        found[h.scope].setdefault(h.target, []).append(h)
    return ActiveHolds(tenant=[h for hs in found["tenant"].values() for h in hs], users=found["user"],
                       documents=found["document"], conversations=found["conversation"])


def ensure_not_held(session: Session, tenant_id: uuid.UUID, *, what: str, user: str | None = None,
                    document_id: uuid.UUID | str | None = None, conversation_id: uuid.UUID | str | None = None) -> None:
    """Raise HeldError (409) when an active hold covers the tenant, the user, the document or the conversation."""
    h = active(session, tenant_id)
    hit = list(h.tenant)
    if user is not None:
        hit += h.users.get(user, [])
    if document_id is not None:
        hit += h.documents.get(str(document_id), [])
    if conversation_id is not None:
        hit += h.conversations.get(str(conversation_id), [])
    if hit:
        raise HeldError(hit, what)

