"""Users, API keys and the SAML replay cache of one tenant (the session's RLS scope decides which)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.enums import Role
from core.models import ApiKey, SamlAssertion, User


def list_users(session: Session, *, include_inactive: bool = True) -> list[User]:
    q = select(User).order_by(User.username)
    if not include_inactive:
        q = q.where(User.is_active.is_(True))
    return list(session.execute(q).scalars())


def get(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> User | None:
    q = select(User).where(User.id == user_id)
    return session.execute(q.with_for_update() if lock else q).scalar()


def by_username(session: Session, username: str, *, lock: bool = False) -> User | None:
    q = select(User).where(User.username == username)
    return session.execute(q.with_for_update() if lock else q).scalar()


def lock_admins(session: Session) -> list[uuid.UUID]:
    """The active admins' ids, their rows locked until the transaction ends: two admins demoting each other
    at the same time cannot both succeed and leave the tenant without one."""
    q = select(User.id).where(User.role == Role.admin.value, User.is_active.is_(True)).order_by(User.id)
    return list(session.execute(q.with_for_update()).scalars())


# --------------------------------------------------------------------------- API keys


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars())


def get_key(session: Session, key_id: uuid.UUID, *, lock: bool = False) -> ApiKey | None:
    q = select(ApiKey).where(ApiKey.id == key_id)
    return session.execute(q.with_for_update() if lock else q).scalar()


def key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash)).scalar()


def key_name_taken(session: Session, name: str) -> bool:
    return session.execute(select(func.count()).select_from(ApiKey).where(ApiKey.name == name)).scalar_one() > 0


def touch_key(session: Session, key_id: uuid.UUID, now: dt.datetime) -> None:
    """Record a use; written at most once a minute per key, so busy integrations do not write every request."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).where(
        (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - dt.timedelta(minutes=1)))
        .values(last_used_at=now))


# --------------------------------------------------------------------------- SAML replay cache


def consume_assertion(session: Session, tenant_id: uuid.UUID, assertion_id: str, issuer: str,
                      expires_at: dt.datetime, now: dt.datetime) -> bool:
    """Remember an assertion id until it expires; False when it was seen before (a replay)."""
    session.execute(delete(SamlAssertion).where(SamlAssertion.expires_at < now))
    row = session.execute(insert(SamlAssertion).values(tenant_id=tenant_id, assertion_id=assertion_id, issuer=issuer,
                                                       expires_at=expires_at)
                          .on_conflict_do_nothing().returning(SamlAssertion.assertion_id)).scalar()
    return row is not None
