"""Who may read what, inside a tenant (the tenant boundary itself is row-level security).

- role ceiling: viewer → Class II, operator → Class III, admin → Class IV;
- Class III and IV also need a shared need-to-know group (ACL), whatever the role;
- Class IV additionally needs the document's steward approval.
The same rule is rendered as a SQL predicate so lists and searches filter *inside* the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from core.enums import ReviewStatus, Role


def ceiling(role: str) -> int:
    return Role.ceiling_of(role)


def can_read(role: str, groups: Sequence[str], classification: int, acl_groups: Sequence[str],
             review_status: str | None = None) -> bool:
    if classification > ceiling(role):
        return False
    if classification >= 3 and not set(groups) & set(acl_groups):
        return False
    if classification >= 4 and review_status != ReviewStatus.approved:
        return False
    return True


def read_filter(role: str, groups: Sequence[str], classification_col: Any, acl_col: Any,
                review_col: Any = None) -> sa.ColumnElement[bool]:
    """SQL predicate equivalent to `can_read` for the given columns."""
    groups = list(groups)
    cond = classification_col <= ceiling(role)
    need_acl = sa.or_(classification_col < 3, acl_col.op("&&")(sa.cast(sa.literal(groups), acl_col.type)))
    cond = sa.and_(cond, need_acl)
    if review_col is not None:
        cond = sa.and_(cond, sa.or_(classification_col < 4, review_col == ReviewStatus.approved.value))
    return cond
