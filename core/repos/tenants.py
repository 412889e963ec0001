"""The tenant row as the tenant itself sees it (RLS shows a tenant its own row only)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Tenant


def name(session: Session, tenant_id: uuid.UUID) -> str | None:
    """The tenant's name; None when the tenant does not exist."""
    return session.execute(select(Tenant.name).where(Tenant.id == tenant_id)).scalar()


def settings(session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
    tenant = session.get(Tenant, tenant_id)
    return (tenant.settings if tenant is not None else None) or {}
