"""PostgreSQL: the embedded server, role/database bootstrap, RLS sessions (database), the
row-level-security SQL (rls) and the Alembic migrations."""
