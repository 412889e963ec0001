"""The platform's closed vocabularies, each defined once (re-exported from core.models).

The database keeps its own copy of some of them as CHECK constraints written in the migrations;
tests/unit/test_enums.py fails when the two drift apart.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The role ladder: viewer < operator < admin. `rank` orders the roles for permission checks,
    `ceiling` is the highest document class (II, III, IV) the role may read."""

    admin = "admin"
    operator = "operator"
    viewer = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self.value]

    @property
    def ceiling(self) -> int:
        return _RANK[self.value] + 2

    def at_least(self, minimum: Role | str) -> bool:
        return self.rank >= Role(minimum).rank

    @classmethod
    def rank_of(cls, role: str) -> int:
        """The rank of a role name; -1 (below every role) for a name that is not a role."""
        return _RANK.get(str(role), -1)

    @classmethod
    def ceiling_of(cls, role: str) -> int:
        """The class ceiling of a role name; Class I only for a name that is not a role."""
        return _RANK[str(role)] + 2 if str(role) in _RANK else 1


_RANK = {Role.viewer.value: 0, Role.operator.value: 1, Role.admin.value: 2}


class Permission(enum.StrEnum):
    """Permissions next to the role ladder (not rungs of it). A token's roles claim (or, once granted by a
    tenant admin, the user's record) lists them; admins hold `steward` implicitly, the others only when
    granted: `compliance_officer` reads and verifies the audit trail, `approver` approves write operations."""

    steward = "steward"
    compliance_officer = "compliance_officer"
    approver = "approver"

    @classmethod
    def from_claim(cls, role: str, claim: object) -> frozenset[Permission]:
        """The permissions a roles claim (a list, or one string) grants to a principal of `role`."""
        names = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
        granted = {cls(n) for n in names if isinstance(n, str) and n in cls.__members__}
        if role == Role.admin.value:
            granted.add(cls.steward)
        return frozenset(granted)


class DocumentStatus(enum.StrEnum):
    queued = "queued"
    parsing = "parsing"
    awaiting_approval = "awaiting_approval"
    indexed = "indexed"
    rejected = "rejected"
    failed = "failed"


# Where the pipeline leaves a document until something new happens (a new version, a steward's decision).
# Plain strings: they are compared with values read from the database.
SETTLED_STATUSES: frozenset[str] = frozenset(s.value for s in (
    DocumentStatus.indexed, DocumentStatus.awaiting_approval, DocumentStatus.rejected, DocumentStatus.failed))


class ReviewStatus(enum.StrEnum):
    """A data steward's decision on a Class III/IV document (NULL: no review needed)."""

    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class Tier(enum.StrEnum):
    """Model tiers, cheapest first (an escalation moves one step right)."""

    LIGHT = "LIGHT"
    STANDARD = "STANDARD"
    HEAVY = "HEAVY"


# Plain strings in ladder order: tier names travel through traces, JSON and database rows.
TIERS: tuple[str, ...] = tuple(t.value for t in Tier)


def sql_in(column: str, values: type[enum.StrEnum]) -> str:
    """`column IN ('a','b',...)` for a CHECK constraint on the enum's values."""
    return f"{column} IN (" + ",".join(f"'{v.value}'" for v in values) + ")"
