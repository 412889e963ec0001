"""Local break-glass accounts: argon2id password hashes, TOTP (RFC 6238) required for admins,
lock-out after `login_max_failures` consecutive failures. Every attempt is audited."""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import uuid
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from compliance import audit
from core.db.database import tenant_session
from core.enums import Role
from core.errors import Forbidden, InvalidInput, Unauthorized
from core.models import User
from core.settings import get_settings
from identity.tenancy import TenantRef

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


# Every failed login answers the same, whether the tenant, the account or the password was wrong,
# a TOTP code was missing, wrong or replayed: nothing tells an attacker which part was right.
_INVALID = "invalid username, password or code (admin accounts also need their TOTP code)"
_dummy_hash: str | None = None
_phantom_lock = threading.Lock()
# Failure counts of logins for accounts that do not exist (unknown user or tenant), kept like a real
# account's so they lock out after the same number of failures: a locked real account and an unknown
# one answer identically.
_phantoms: dict[tuple[str, str], tuple[int, dt.datetime | None]] = {}
_MAX_PHANTOMS = 100_000


def _invalid() -> Unauthorized:
    return Unauthorized(_INVALID, code="invalid_credentials")


def _locked(until: dt.datetime) -> AccountLocked:
    return AccountLocked(f"account locked until {until.isoformat()} after repeated failures",
                         details={"locked_until": until.isoformat()})


def _burn(password: str) -> None:
    """An argon2 verify against a dummy hash: the same cost as checking a real password, so unknown
    tenants and accounts take as long as known ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(24))
    try:
        _hasher.verify(_dummy_hash, password)
    except (VerificationError, InvalidHashError):
        pass


def _phantom_failure(tenant_name: str, username: str, now: dt.datetime) -> Exception:
    cfg = get_settings()
    key = (tenant_name.strip().lower(), username)
    with _phantom_lock:
        failures, until = _phantoms.get(key, (0, None))
        if until is not None and until > now:
            return _locked(until)
        failures += 1
        if failures >= cfg.login_max_failures:
            until = now + dt.timedelta(minutes=cfg.login_lockout_minutes)
        if len(_phantoms) >= _MAX_PHANTOMS:
            _phantoms.clear()
        _phantoms[key] = (failures, until)
    return _invalid()


def _totp_step(secret: str, code: str | None, now: dt.datetime) -> int | None:
    """The time step (RFC 6238) the code belongs to, within one step of now; None if it matches none."""
    if not code:
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def login_unknown_tenant(tenant_name: str, username: str, password: str) -> None:
    """A login naming a tenant that does not exist: same cost and same answers as a real one."""
    _burn(password)
    raise _phantom_failure(f"?{tenant_name}", username, dt.datetime.now(dt.UTC))


def login(tenant: TenantRef, username: str, password: str, totp: str | None) -> User:
    """Check credentials. Failures are counted and audited in a transaction that *commits*
    before the error is raised (a rollback would erase the lock-out counter and the record).
    A TOTP code is accepted once: the time step of the last accepted code is stored and a code of
    that step or an earlier one is refused."""
    s_cfg = get_settings()
    now = dt.datetime.now(dt.UTC)
    error: Exception | None = None
    with tenant_session(tenant.id) as s:
        user = s.execute(select(User).where(User.username == username).with_for_update()).scalar()
        if user is None or not user.password_hash or not user.is_active:
            _burn(password)  # same cost as a real check: no user enumeration by timing
            audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                         details={"reason": "unknown_user"})
            error = _phantom_failure(tenant.name, username, now)
        elif user.locked_until and user.locked_until > now:
            _burn(password)
            audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                         resource_type="user", resource_id=str(user.id), details={"reason": "locked"})
            error = _locked(user.locked_until)
        else:
            reason = None
            step = None
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                reason = "bad_password"
            if reason is None and user.role == Role.admin.value:
                step = _totp_step(user.totp_secret, totp, now) if user.totp_secret else None
                if not user.totp_secret:
                    reason = "mfa_not_enrolled"
                elif not totp:
                    reason = "totp_required"
                elif step is None:
                    reason = "bad_totp"
                elif user.totp_last_step is not None and step <= user.totp_last_step:
                    reason = "totp_replayed"
            if reason is not None:
                user.failed_logins += 1
                locked = user.failed_logins >= s_cfg.login_max_failures
                if locked:
                    user.locked_until = now + dt.timedelta(minutes=s_cfg.login_lockout_minutes)
                audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", outcome="failure",
                             resource_type="user", resource_id=str(user.id),
                             details={"reason": reason, "failures": user.failed_logins, "locked": locked})
                error = _invalid()
            else:
                user.failed_logins, user.locked_until = 0, None
                if step is not None:
                    user.totp_last_step = step
                audit.record(s, tenant_id=tenant.id, actor=username, action="auth.login", resource_type="user",
                             resource_id=str(user.id), details={"mfa": user.role == Role.admin.value})
                s.flush()
                s.expunge(user)
    if error is not None:
        raise error
    assert user is not None  # no error means the login succeeded
    return user
