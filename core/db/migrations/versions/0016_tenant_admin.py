"""tenant administration (issue 20): users carry admin-granted permissions, where they come from
(local, OIDC or SAML sign-in), a deactivation time and a token version (bumped to kill every token
issued before); API keys for integrations (only a SHA-256 of the secret is stored), and the SAML
assertion replay cache. Both new tables are tenant tables under FORCE'd row-level security.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PERMISSIONS = "ARRAY['steward','compliance_officer','approver']::text[]"


def upgrade() -> None:
    op.add_column("users", sa.Column("permissions", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")))
    op.add_column("users", sa.Column("source", sa.Text, nullable=False, server_default="local"))
    op.add_column("users", sa.Column("token_version", sa.Integer, nullable=False, server_default="0"))
    op.add_column("users", sa.Column("deactivated_at", sa.DateTime(timezone=True)))
    op.add_column("users", sa.Column("deactivated_by", sa.Text))
    op.add_column("users", sa.Column("last_login_at", sa.DateTime(timezone=True)))
    op.create_check_constraint("ck_users_permissions", "users", f"permissions <@ {PERMISSIONS}")
    op.create_check_constraint("ck_users_source", "users", "source IN ('local','oidc','saml')")

    op.create_table(
        "api_keys", uuid_pk(), tenant_fk(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),  # the first characters of the secret, to recognise a key
        sa.Column("key_hash", sa.Text, nullable=False),  # SHA-256 of the secret (256 random bits: no KDF needed)
        sa.Column("role", sa.Text, nullable=False),  # the ceiling: the key never acts above it
        sa.Column("groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("allowed_prefixes", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.Text),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.Text, nullable=False),
        timestamp(),
        sa.CheckConstraint("role IN ('admin','operator','viewer')", name="ck_api_keys_role"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_hash"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_api_keys_tenant_name"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "saml_assertions", tenant_fk(),
        sa.Column("assertion_id", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        timestamp(),
        sa.PrimaryKeyConstraint("tenant_id", "assertion_id", name="pk_saml_assertions"),
    )
    secure_tenant_tables({"api_keys": CRUD, "saml_assertions": "SELECT, INSERT, DELETE"})


def downgrade() -> None:
    op.drop_table("saml_assertions")
    op.drop_table("api_keys")
    op.drop_constraint("ck_users_source", "users")
    op.drop_constraint("ck_users_permissions", "users")
    for col in ("last_login_at", "deactivated_by", "deactivated_at", "token_version", "source", "permissions"):
        op.drop_column("users", col)
