from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from core.errors import NotFound
from core.models import EvalRun, Role
from core.repos import evals
from serving.deps import TenantSessionDep, require_role

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
