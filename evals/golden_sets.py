"""Per-tenant golden datasets: a tenant admin uploads one (API `POST /v1/evals/golden`, or a JSON file in
the tenant's inbox folder under `golden/`), it is validated and stored as a new version, and the tenant's
nightly evaluation and index promotion gate run on its newest version.

A tenant listed in EAP_EVAL_TENANTS that has uploaded none is evaluated on the set shipped with the
platform (evals/golden/manufacturing.json, written for the sample documents). Any other tenant has no
golden set: the API says so (`state: "none"`), and its index promotions are recorded as ungated with that
reason, visible in the Dagster UI — never presented as evaluated.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.specialists import SPECIALISTS
from compliance import audit
from core.errors import InvalidInput
from core.models import GoldenDataset
from core.settings import get_settings

MAX_BYTES = 2_000_000
MAX_QUESTIONS = 2_000


class GoldenQuestion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100)
    question: str = Field(min_length=3, max_length=2_000)
    expected_facts: list[str] = Field(default_factory=list, max_length=50)
    expected_sources: list[str] = Field(min_length=1, max_length=50)
    specialist: str
    tags: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("specialist")
    @classmethod
    def _known_specialist(cls, v: str) -> str:
        if v not in SPECIALISTS:
            raise ValueError(f"unknown specialist {v!r}; one of {', '.join(sorted(SPECIALISTS))}")
        return v

    @field_validator("expected_facts", "expected_sources")
    @classmethod
    def _non_empty_strings(cls, v: list[str]) -> list[str]:
        if any(not isinstance(x, str) or not x.strip() or len(x) > 500 for x in v):
            raise ValueError("entries must be non-empty strings of at most 500 characters")
        return [x.strip() for x in v]


class GoldenSetIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str | None = Field(default=None, max_length=100, description="the dataset's own label")
    description: str | None = Field(default=None, max_length=2_000)
    questions: list[GoldenQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)

    @model_validator(mode="after")
    def _unique_ids(self) -> GoldenSetIn:
        ids = [q.id for q in self.questions]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"question ids must be unique; repeated: {', '.join(dup[:5])}")
        return self


@dataclass(frozen=True)
class Stored:
    version: int
    label: str
    questions: int
    unchanged: bool


def parse(raw: bytes | str | dict[str, Any]) -> GoldenSetIn:
    """Validate an uploaded dataset; every problem is a 422 with the field paths."""
    if isinstance(raw, bytes | str):
        if len(raw) > MAX_BYTES:
            raise InvalidInput(f"golden dataset larger than {MAX_BYTES} bytes", code="golden_set_too_large")
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"golden dataset is not JSON: {exc}", code="invalid_golden_set") from None
    if not isinstance(raw, dict):
        raise InvalidInput("golden dataset must be a JSON object with a `questions` list", code="invalid_golden_set")
    try:
        return GoldenSetIn.model_validate(raw)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()[:20]]
        raise InvalidInput("golden dataset is invalid", code="invalid_golden_set",
                           details={"problems": problems}) from None


def store(session: Session, tenant_id: uuid.UUID, data: GoldenSetIn, *, actor: str, source: str) -> Stored:
    """A new version unless the content equals the newest one; audited."""
    content = data.model_dump(exclude_none=True)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    newest = latest(session)
    if newest is not None and newest.sha256 == digest:
        return Stored(newest.version, newest.label, newest.questions, unchanged=True)
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"golden:{tenant_id}", 0))))
    version = (session.execute(select(func.max(GoldenDataset.version))).scalar() or 0) + 1
    label = data.version or f"v{version}"
    session.add(GoldenDataset(tenant_id=tenant_id, version=version, label=label, content=content,
                              questions=len(data.questions), sha256=digest, uploaded_by=actor, source=source))
    session.flush()
    audit.record(session, tenant_id=tenant_id, actor=actor, action="golden_set.upload", resource_type="golden_set",
                 resource_id=str(version), details={"label": label, "questions": len(data.questions),
                                                    "sha256": digest, "source": source})
    return Stored(version, label, len(data.questions), unchanged=False)


def latest(session: Session) -> GoldenDataset | None:
    """The newest version of the session's tenant (RLS scopes the tenant)."""
    return session.execute(select(GoldenDataset).order_by(GoldenDataset.version.desc()).limit(1)).scalar_one_or_none()


def versions(session: Session) -> list[GoldenDataset]:
    return list(session.execute(select(GoldenDataset).order_by(GoldenDataset.version.desc())).scalars())


def shipped_for(tenant_name: str) -> bool:
    """Tenants evaluated on the shipped set until they upload their own (EAP_EVAL_TENANTS)."""
    return tenant_name in {n.strip() for n in get_settings().eval_tenants.split(",") if n.strip()}


def dataset_for(session: Session, tenant_name: str) -> dict[str, Any] | None:
    """The set a tenant's evaluation runs on: its newest upload, else the shipped set when the tenant is in
    EAP_EVAL_TENANTS, else None (no golden set)."""
    from evals.evaluation import load_golden

    row = latest(session)
    if row is not None:
        return {**row.content, "version": f"{row.label} (tenant v{row.version})"}
    return load_golden() if shipped_for(tenant_name) else None
