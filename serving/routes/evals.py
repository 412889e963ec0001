from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from core.errors import NotFound
from core.models import EvalRun, GoldenDataset, Role
from core.repos import evals
from evals import golden_sets
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1/evals", tags=["evaluation"])


class EvalOut(BaseModel):
    id: uuid.UUID
    dataset_version: str
    created_at: dt.datetime
    overall: dict
    per_specialist: dict
    regressions: list
    report_url: str


def _latest(db: TenantSessionDep) -> EvalRun:
    run = evals.latest(db, "nightly")
    if run is None:
        raise NotFound("no evaluation has run yet (Dagster job nightly_golden_eval)", code="no_evaluation")
    return run


@router.get("/latest", response_model=EvalOut, dependencies=[require_role(Role.operator)])
def latest(db: TenantSessionDep) -> EvalOut:
    """Scores of the latest golden-dataset evaluation of this tenant."""
    run = _latest(db)
    return EvalOut(id=run.id, dataset_version=run.dataset_version, created_at=run.created_at, overall=run.overall,
                   per_specialist=run.per_specialist, regressions=run.regressions,
                   report_url="/v1/evals/latest/report")


@router.get("/latest/report", dependencies=[require_role(Role.operator)], response_model=None,
            responses={200: {"content": {"text/html": {}}, "description": "the HTML report"}})
def latest_report(db: TenantSessionDep) -> HTMLResponse:
    """The readable report (tables and trend plot) of the latest evaluation."""
    run = _latest(db)
    path = Path(run.report_path or "")
    if not path.is_file():
        raise NotFound("the report file of the latest evaluation is missing", code="report_missing")
    return HTMLResponse(path.read_text())


class GoldenVersionOut(BaseModel):
    version: int
    label: str
    questions: int
    uploaded_by: str
    source: str
    uploaded_at: dt.datetime


class GoldenStateOut(BaseModel):
    state: str  # "tenant" (its own upload), "shipped" (the platform's set, EAP_EVAL_TENANTS) or "none"
    current: GoldenVersionOut | None
    versions: list[GoldenVersionOut]
    note: str


class GoldenUploadOut(BaseModel):
    version: int
    label: str
    questions: int
    unchanged: bool


def _version_out(row: GoldenDataset) -> GoldenVersionOut:
    return GoldenVersionOut(version=row.version, label=row.label, questions=row.questions,
                            uploaded_by=row.uploaded_by, source=row.source, uploaded_at=row.created_at)


@router.get("/golden", response_model=GoldenStateOut, dependencies=[require_role(Role.operator)])
def golden_state(db: TenantSessionDep, principal: PrincipalDep) -> GoldenStateOut:
    """This tenant's golden dataset: its versions, and whether the nightly evaluation and the promotion gate
    have one to run on."""
    rows = golden_sets.versions(db)
    if rows:
        return GoldenStateOut(state="tenant", current=_version_out(rows[0]), versions=[_version_out(r) for r in rows],
                              note="the nightly evaluation and the index promotion gate use the current version")
    if golden_sets.shipped_for(principal.tenant):
        return GoldenStateOut(state="shipped", current=None, versions=[],
                              note="no upload yet: evaluated on the platform's shipped set (EAP_EVAL_TENANTS)")
    return GoldenStateOut(state="none", current=None, versions=[],
                          note="no golden set: this tenant is not evaluated and its index promotions are not gated; "
                               "upload one with POST /v1/evals/golden")


@router.post("/golden", response_model=GoldenUploadOut, status_code=201, dependencies=[require_role(Role.admin)])
def upload_golden(body: dict[str, Any], db: TenantSessionDep, principal: PrincipalDep) -> GoldenUploadOut:
    """Upload a golden dataset (JSON: `{"version": "...", "questions": [{"id", "question", "expected_facts",
    "expected_sources", "specialist", "tags"}]}`); validated, stored as a new version (an identical upload is
    `unchanged`), audited."""
    data = golden_sets.parse(body)
    stored = golden_sets.store(db, principal.tenant_id, data, actor=principal.subject, source="api")
    return GoldenUploadOut(version=stored.version, label=stored.label, questions=stored.questions,
                           unchanged=stored.unchanged)
