"""The vocabularies in core.enums agree with the CHECK constraints of the migrated database."""

import re

import pytest
from sqlalchemy import text

from core.db.database import system_session
from core.enums import DocumentStatus, ReviewStatus, Role


@pytest.mark.parametrize(("constraint", "enum"), [
    ("ck_documents_status", DocumentStatus), ("ck_documents_review_status", ReviewStatus), ("ck_users_role", Role)])
def test_enum_matches_the_database_check(platform_db, constraint, enum):
    with system_session() as s:
        definition = s.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :n"),
                               {"n": constraint}).scalar_one()
    # PostgreSQL renders `x IN ('a','b')` as `x = ANY (ARRAY['a'::text, 'b'::text])`.
    assert set(re.findall(r"'([^']*)'", definition)) == {e.value for e in enum}, definition
