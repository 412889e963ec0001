"""Per-tenant and per-user request budgets, and login attempt budgets: token buckets kept in PostgreSQL
(table `rate_limit_buckets`, migration 0020), so every API process — N uvicorn workers, N pods — draws
from the same bucket. Exceeding one answers 429 with Retry-After.

One statement per bucket: INSERT … ON CONFLICT DO UPDATE refills the bucket by the time since its last
use, takes a token if there is one and records whether it did; the row lock serialises concurrent
takes across processes. A bucket holds at most one minute's budget (the burst). A tenant's override of
its budget is the tenant setting `rate_limit_per_minute` (tenants.settings), read in the request's
tenant transaction.
"""

from __future__ import annotations

import math
import random
import uuid

import sqlalchemy as sa
from fastapi import Depends

from core.db.database import app_engine, tenant_session
from core.errors import PlatformError
from core.settings import get_settings
from serving.deps import PrincipalDep

# Idle buckets are full again after a minute; an hour-old row is deleted now and then (1 take in 500).
_CLEANUP_EVERY = 500

# The bucket refilled by the time since its last use, capped at one minute's budget. (ON CONFLICT DO
# UPDATE has no FROM clause: the expression is spelled out where it is used; every SET expression sees
# the row as it was before this update.)
_REFILLED = ("LEAST(CAST(:cap AS double precision), b.tokens + GREATEST(0, extract(epoch FROM clock_timestamp() "
             "- b.updated_at)) * CAST(:rate AS double precision))")
_TAKE = sa.text(f"""
    INSERT INTO rate_limit_buckets AS b (key, tokens, allowed, updated_at)
    VALUES (:key, CAST(:cap AS double precision) - 1, true, clock_timestamp())
    ON CONFLICT (key) DO UPDATE SET
        tokens = CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END,
        allowed = {_REFILLED} >= 1,
        updated_at = GREATEST(b.updated_at, clock_timestamp())
    RETURNING b.allowed, b.tokens
""")

_TENANT_OVERRIDE = sa.text("""
    SELECT CASE WHEN jsonb_typeof(settings->'rate_limit_per_minute') = 'number'
                THEN (settings->>'rate_limit_per_minute')::numeric END
    FROM tenants WHERE id = CAST(:t AS uuid)
""")


class RateLimited(PlatformError):
    code = "rate_limited"
    status_code = 429


def take(conn: sa.Connection, key: str, per_minute: int) -> float:
    """0 when a token was taken, else seconds until one is available (in the caller's transaction)."""
    rate = per_minute / 60.0
    allowed, tokens = conn.execute(_TAKE, {"key": key, "cap": float(per_minute), "rate": rate}).one()
    if random.randrange(_CLEANUP_EVERY) == 0:  # noqa: S311 - housekeeping, not security
        conn.execute(sa.text("DELETE FROM rate_limit_buckets WHERE updated_at < now() - interval '1 hour'"))
    return 0.0 if allowed else max(0.001, (1.0 - float(tokens)) / rate)


def tenant_limit(conn: sa.Connection, tenant_id: uuid.UUID, default: int) -> int:
    override = conn.execute(_TENANT_OVERRIDE, {"t": str(tenant_id)}).scalar()
    if override is None or override < 1:
        return default
    return int(override)


def _limit(principal: PrincipalDep) -> None:
    s = get_settings()
    with tenant_session(principal.tenant_id) as session:
        conn = session.connection()
        tenant_budget = tenant_limit(conn, principal.tenant_id, s.rate_limit_tenant_per_minute)
        for scope, key, limit in (
            ("user", f"user:{principal.tenant_id}:{principal.subject}", s.rate_limit_user_per_minute),
            ("tenant", f"tenant:{principal.tenant_id}", tenant_budget),
        ):
            wait = take(conn, key, limit)
            if wait > 0:
                raise RateLimited(f"{scope} rate limit of {limit} requests/minute exceeded",
                                  details={"scope": scope, "retry_after_s": math.ceil(wait)})


RateLimit = Depends(_limit)


def limit_login(client_ip: str, tenant: str, username: str) -> None:
    """Login attempts per client IP and per (tenant, username): the same budget whether or not the
    account exists, so the limit reveals nothing either."""
    s = get_settings()
    with app_engine().begin() as conn:
        for scope, key, limit in (("ip", f"login-ip:{client_ip}", s.login_rate_limit_ip_per_minute),
                                  ("username", f"login-user:{tenant.strip().lower()}:{username}",
                                   s.login_rate_limit_user_per_minute)):
            wait = take(conn, key, limit)
            if wait > 0:
                raise RateLimited(f"too many login attempts; {limit} per minute per {scope}",
                                  code="login_rate_limited",
                                  details={"scope": scope, "retry_after_s": math.ceil(wait)})
