"""Row-level security DDL used by the migrations.

Policies are written per role: the application role sees only the tenant set by
`SET LOCAL eap.tenant_id`; the owner role (migrations, cross-tenant system tasks) has an explicit
policy of its own. FORCE makes the policies apply to the table owner too.
"""

from __future__ import annotations

CURRENT_TENANT_FN = """
CREATE OR REPLACE FUNCTION eap_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT NULLIF(current_setting('eap.tenant_id', true), '')::uuid $$
"""


def tenant_rls_sql(table: str, *, app_role: str, owner_role: str, column: str = "tenant_id") -> list[str]:
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {table}_tenant_isolation ON {table} TO \"{app_role}\" "
        f"USING ({column} = eap_current_tenant()) WITH CHECK ({column} = eap_current_tenant())",
        f"CREATE POLICY {table}_system ON {table} TO \"{owner_role}\" USING (true) WITH CHECK (true)",
    ]
