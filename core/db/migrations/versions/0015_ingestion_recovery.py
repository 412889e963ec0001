"""ingestion recovery (security issue 12): which run holds a document, its heartbeat, and a
bounded attempt counter per document version, so documents of a dead run are requeued (and after
EAP_INGEST_MAX_ATTEMPTS marked failed with the reason) instead of staying `parsing` forever

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("ingest_run_id", sa.Text))  # the Dagster run processing it
    op.add_column("documents", sa.Column("ingest_heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("documents", sa.Column("ingest_attempts", sa.Integer, nullable=False, server_default="0"))
    # The version the attempts were counted for: a new version starts again from zero.
    op.add_column("documents", sa.Column("ingest_attempts_hash", sa.Text))
    op.create_index("ix_documents_in_progress", "documents", ["status"],
                    postgresql_where=sa.text("status IN ('queued', 'parsing')"))


def downgrade() -> None:
    op.drop_index("ix_documents_in_progress", table_name="documents")
    for col in ("ingest_attempts_hash", "ingest_attempts", "ingest_heartbeat_at", "ingest_run_id"):
        op.drop_column("documents", col)
