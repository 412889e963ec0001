"""Building blocks shared by the migrations: the standard columns of a tenant-scoped table, and the
one call that puts a new table under FORCE'd row-level security with its grants to the app role.
Every migration that adds a tenant table ends with `secure_tenant_tables(...)`; the RLS test
(tests/integration/test_rls.py) checks that none was forgotten."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from core.db.rls import tenant_rls_sql

CRUD = "SELECT, INSERT, UPDATE, DELETE"


def roles() -> tuple[str, str]:
    """(application role, owner role), handed in by core.db.database.migrate()."""
    attrs = context.config.attributes
    return attrs["app_role"], attrs["owner_role"]


def uuid_pk() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()"))


def tenant_fk() -> sa.Column[Any]:
    return sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


def timestamp(name: str = "created_at") -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def secure_tenant_tables(grants: dict[str, str]) -> None:
    """Row-level security (FORCE'd, per-role policies) on each table, then the app role's privileges,
    e.g. {"feedback": "SELECT, INSERT, UPDATE", "source_boosts": "SELECT"}."""
    app, owner = roles()
    for table, privileges in grants.items():
        for stmt in tenant_rls_sql(table, app_role=app, owner_role=owner):
            op.execute(stmt)
        op.execute(f'GRANT {privileges} ON {table} TO "{app}"')
