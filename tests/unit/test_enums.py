"""The vocabularies in core.enums agree with the CHECK constraints the migrations put in the database.

Migrations are history and are never edited, so a new value needs a new migration; these tests fail
until one exists (the newest migration naming a constraint wins).
"""

import re
from pathlib import Path

import core
from core.enums import SETTLED_STATUSES, TIERS, DocumentStatus, ReviewStatus, Role, Tier, sql_in
from core.models import Document, User

VERSIONS = sorted(p for p in Path(core.__file__).parent.rglob("versions/*.py") if p.name[:4].isdigit())


def _check_values(constraint: str) -> set[str]:
    """The values of `col IN ('a','b')` in the newest migration naming the constraint."""
    name = re.escape(constraint)
    forms = (rf'CheckConstraint\(\s*"([^"]*)",\s*name="{name}"',  # in op.create_table(...)
             rf'create_check_constraint\(\s*"{name}",\s*"[^"]*",\s*"([^"]*)"')
    found = None
    for path in VERSIONS:
        text = path.read_text()
        for form in forms:
            for m in re.finditer(form, text):
                found = set(re.findall(r"'([^']*)'", re.search(r"IN \(([^)]*)\)", m.group(1)).group(1)))
    assert VERSIONS and found is not None, f"no migration defines {constraint}"
    return found


def test_document_status_matches_the_migrations():
    assert {s.value for s in DocumentStatus} == _check_values("ck_documents_status")


def test_review_status_matches_the_migrations():
    assert {s.value for s in ReviewStatus} == _check_values("ck_documents_review_status")


def test_role_matches_the_migrations():
    assert {r.value for r in Role} == _check_values("ck_users_role")


def test_orm_constraints_are_rendered_from_the_enums():
    checks = {c.name: str(c.sqltext) for t in (Document.__table__, User.__table__) for c in t.constraints
              if c.name and c.name.startswith("ck_")}
    assert checks["ck_documents_status"] == sql_in("status", DocumentStatus)
    assert checks["ck_users_role"] == sql_in("role", Role)
    assert sql_in("status", DocumentStatus) == (
        "status IN ('queued','parsing','awaiting_approval','indexed','rejected','failed')")


def test_role_ladder():
    assert [r.rank for r in (Role.viewer, Role.operator, Role.admin)] == [0, 1, 2]
    assert [r.ceiling for r in (Role.viewer, Role.operator, Role.admin)] == [2, 3, 4]
    assert Role.admin.at_least(Role.operator) and not Role.viewer.at_least("operator")
    assert Role.rank_of("nobody") == -1 and Role.ceiling_of("nobody") == 1
    assert Role.ceiling_of("operator") == 3


def test_tiers_in_ladder_order():
    assert TIERS == ("LIGHT", "STANDARD", "HEAVY") == tuple(Tier)
    assert all(type(t) is str for t in TIERS)


def test_settled_statuses_are_plain_document_statuses():
    assert SETTLED_STATUSES == {"indexed", "awaiting_approval", "rejected", "failed"}
    assert SETTLED_STATUSES <= {s.value for s in DocumentStatus}
