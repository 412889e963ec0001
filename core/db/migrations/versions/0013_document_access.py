"""document access (security issue 12): answers and traces carry the access label of what the model
saw; the content-addressed file store can ask, across tenants, whether an original is still referenced

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import roles

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app, _owner = roles()
    # Written with the answer (agents/answer_access.py): per source document its class and ACL at that
    # moment, plus recalled memories. NULL for rows written before: their label is derived when read.
    op.add_column("messages", sa.Column("access", JSONB))
    op.add_column("agent_runs", sa.Column("access", JSONB))
    # The file store is shared by every tenant (content-addressed), so deleting an original needs to know
    # whether any document of any tenant still references it. The application role cannot read other
    # tenants' rows (RLS); this function, running as the owner, answers only yes or no.
    op.execute("""
        CREATE FUNCTION eap_blob_in_use(sha text) RETURNS boolean
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS
        $$ SELECT EXISTS (SELECT 1 FROM public.documents WHERE content_hash = sha) $$
    """)
    op.create_index("ix_documents_content_hash", "documents", ["content_hash"])
    op.execute("REVOKE ALL ON FUNCTION eap_blob_in_use(text) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION eap_blob_in_use(text) TO "{app}"')


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS eap_blob_in_use(text)")
    op.drop_index("ix_documents_content_hash", table_name="documents")
    op.drop_column("agent_runs", "access")
    op.drop_column("messages", "access")
