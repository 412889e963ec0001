"""Per-tenant and per-user request budgets (token buckets, per API process). Exceeding one
answers 429 with Retry-After."""

from __future__ import annotations

import math
import threading
import time

from fastapi import Depends

from core.errors import PlatformError
from core.settings import get_settings
from serving.deps import PrincipalDep


class RateLimited(PlatformError):
    code = "rate_limited"
    status_code = 429


class _Buckets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, per_minute: int) -> float:
        """0 when allowed, else seconds until a token is available."""
        rate = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / rate


BUCKETS = _Buckets()


def _limit(principal: PrincipalDep) -> None:
    s = get_settings()
    for key, limit in ((f"user:{principal.tenant_id}:{principal.subject}", s.rate_limit_user_per_minute),
                       (f"tenant:{principal.tenant_id}", s.rate_limit_tenant_per_minute)):
        wait = BUCKETS.take(key, limit)
        if wait > 0:
            scope = "user" if key.startswith("user") else "tenant"
            raise RateLimited(f"{scope} rate limit of {limit} requests/minute exceeded",
                              details={"scope": scope, "retry_after_s": math.ceil(wait)})


RateLimit = Depends(_limit)


def limit_login(client_ip: str, tenant: str, username: str) -> None:
    """Login attempts per client IP and per (tenant, username): the same budget whether or not the
    account exists, so the limit reveals nothing either."""
    s = get_settings()
    for scope, key, limit in (("ip", f"login-ip:{client_ip}", s.login_rate_limit_ip_per_minute),
                              ("username", f"login-user:{tenant.strip().lower()}:{username}",
                               s.login_rate_limit_user_per_minute)):
        wait = BUCKETS.take(key, limit)
        if wait > 0:
            raise RateLimited(f"too many login attempts; {limit} per minute per {scope}",
                              code="login_rate_limited", details={"scope": scope, "retry_after_s": math.ceil(wait)})
