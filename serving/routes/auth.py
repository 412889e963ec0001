from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from core.errors import InvalidInput, NotFound
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from identity.accounts import login, login_unknown_tenant
from identity.tenancy import get_tenant
from serving.ratelimit import limit_login

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class LoginIn(BaseModel):
    tenant: Annotated[str, Field(min_length=1, max_length=63)]
    username: Annotated[str, Field(min_length=1, max_length=200)]
    password: Annotated[str, Field(min_length=1, max_length=1000)]
    totp: Annotated[str | None, Field(pattern=r"^\d{6}$")] = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


def _login(body: LoginIn) -> TokenOut:
    try:
        tenant = get_tenant(body.tenant)
    except (NotFound, InvalidInput):  # unknown and malformed tenants look like bad credentials, at the same cost
        login_unknown_tenant(body.tenant, body.username, body.password)
        raise  # not reached: login_unknown_tenant always raises
    user = login(tenant, body.username, body.password, body.totp)
    s = get_settings()
    token = mint_token(s, tenant_id=tenant.id, tenant=tenant.name, role=Role(user.role), subject=user.username,
                       groups=list(user.groups), extra={"amr": ["pwd", "otp"] if user.role == "admin" else ["pwd"]})
    return TokenOut(access_token=token, expires_in=s.jwt_ttl_seconds)


@router.post("/login", response_model=TokenOut)
async def post_login(body: LoginIn, request: Request) -> TokenOut:
    """Local break-glass login (argon2 password; TOTP required for admins — send it with the password;
    lock-out after 6 failures; rate-limited per client IP and per username). Every failure answers
    the same 401, whichever part was wrong."""
    limit_login(request.client.host if request.client else "unknown", body.tenant, body.username)
    return await run_in_threadpool(_login, body)
