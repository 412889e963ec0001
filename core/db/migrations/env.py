"""Alembic environment: always runs on a connection handed in by core.db.database.migrate(),
which has already switched to the owner role (so every object is owned by it)."""

from alembic import context

from core.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `eap db upgrade` (it prepares roles and the connection)")

context.configure(connection=connection, target_metadata=Base.metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
