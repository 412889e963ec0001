"""Migrations are reversible: the newest ones go down and up again on a database with data in it
(a separate database on the session's server, so other tests are untouched)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import text


def test_recent_migrations_downgrade_and_upgrade_again(platform_db):
    from alembic import command

    from core.db import database
    from core.settings import get_settings

    settings = get_settings().model_copy(update={"db_name": "eap_migration_check"})
    urls = database.bootstrap(settings)
    eng = sa.create_engine(urls.admin)
    try:
        with eng.connect() as conn:
            conn.execute(text(f'SET ROLE "{settings.owner_db_role}"'))
            tid = conn.execute(text("INSERT INTO tenants (id, name, display_name) VALUES (gen_random_uuid(), "
                                    "'mig', 'mig') RETURNING id")).scalar()
            conn.commit()
            cfg = database.alembic_config(settings, conn)
            command.downgrade(cfg, "0009")
            conn.commit()
            assert conn.execute(text("SELECT to_regclass('index_versions')")).scalar() is None
            command.upgrade(cfg, "head")
            conn.commit()
            # The upgrade gives every existing tenant its first, active index version.
            assert conn.execute(text("SELECT status, chunk_generation FROM index_versions WHERE tenant_id = :t"),
                                {"t": tid}).one() == ("active", 1)
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == \
                database.head_revision(settings)
    finally:
        eng.dispose()
