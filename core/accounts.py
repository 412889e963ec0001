"""Local break-glass accounts: argon2id password hashes, TOTP (RFC 6238) required for admins,
lock-out after `login_max_failures` consecutive failures. Every attempt is audited."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from core import audit
from core.database import tenant_session
from core.errors import Forbidden, InvalidInput, Unauthorized
from core.models import Role, User
from core.settings import get_settings
from core.tenancy import TenantRef

_hasher = PasswordHasher()
MIN_PASSWORD = 12


class AccountLocked(Forbidden):
    code = "account_locked"
    status_code = 423


@dataclass
class Enrolment:
    user_id: uuid.UUID
    totp_uri: str | None


def set_local_password(tenant: TenantRef, username: str, role: Role, password: str,
                       groups: list[str] | None = None) -> Enrolment:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD} characters", code="weak_password")
    secret = pyotp.random_base32() if role == Role.admin else None
    with tenant_session(tenant.id) as s:
        user = s.execute(select(User).where(User.username == username).with_for_update()).scalar()
        if user is None:
            user = User(id=uuid.uuid4(), tenant_id=tenant.id, username=username)
            s.add(user)
        user.role, user.groups = role.value, groups or list(user.groups or [])
        user.password_hash = _hasher.hash(password)
        user.totp_secret = secret
        user.failed_logins, user.locked_until = 0, None
        s.flush()
        audit.record(s, tenant_id=tenant.id, actor="system", action="user.local_credentials_set",
                     resource_type="user", resource_id=str(user.id), details={"username": username, "role": role.value,
                                                                              "mfa": secret is not None})
        uid = user.id
    uri = pyotp.TOTP(secret).provisioning_uri(name=f"{username}@{tenant.name}", issuer_name="EAP") if secret else None
    return Enrolment(uid, uri)


def login(tenant: TenantRef, username: str, password: str, totp: str | None) -> User:
    """Check credentials. Failures are counted and audited in a transaction that *commits*
    before the error is raised (a rollback would erase the lock-out counter and the record)."""
    s_cfg = get_settings()
    now = dt.datetime.now(dt.UTC)
    error: Exception | None = None
    with tenant_session(tenant.id) as s:
        user = s.execute(select(User).where(User.username == username).with_for_update()).scalar()
        if user is None or not user.password_hash or not user.is_active:
            _hasher.hash(password)  # same cost as a real check: no user enumeration by timing
            audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                         details={"reason": "unknown_user"})
            error = Unauthorized("invalid username or password", code="invalid_credentials")
        elif user.locked_until and user.locked_until > now:
            audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                         resource_type="user", resource_id=str(user.id), details={"reason": "locked"})
            error = AccountLocked(f"account locked until {user.locked_until.isoformat()} after repeated failures",
                                  details={"locked_until": user.locked_until.isoformat()})
        else:
            reason = None
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                reason = "bad_password"
            if reason is None and user.role == Role.admin.value:
                if not user.totp_secret:
                    reason = "mfa_not_enrolled"
                elif not totp or not pyotp.TOTP(user.totp_secret).verify(totp, valid_window=1):
                    reason = "bad_totp" if totp else "totp_required"
            if reason is not None:
                user.failed_logins += 1
                locked = user.failed_logins >= s_cfg.login_max_failures
                if locked:
                    user.locked_until = now + dt.timedelta(minutes=s_cfg.login_lockout_minutes)
                audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                             resource_type="user", resource_id=str(user.id),
                             details={"reason": reason, "failures": user.failed_logins, "locked": locked})
                error = (Unauthorized("admin accounts require a TOTP code", code="mfa_required")
                         if reason == "totp_required"
                         else Unauthorized("invalid username, password or code", code="invalid_credentials"))
            else:
                user.failed_logins, user.locked_until = 0, None
                audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", resource_type="user",
                             resource_id=str(user.id), details={"mfa": user.role == Role.admin.value})
                s.flush()
                s.expunge(user)
    if error is not None:
        raise error
    return user
