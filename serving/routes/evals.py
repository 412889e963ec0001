from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from sqlalchemy import select

from core.database import tenant_session
from core.errors import NotFound
from core.models import EvalRun, Role
from serving.deps import PrincipalDep, require_role

router = APIRouter(prefix="/v1/evals", tags=["evaluation"])


class EvalOut(BaseModel):
    id: uuid.UUID
    dataset_version: str
    created_at: dt.datetime
    overall: dict
    per_specialist: dict
    regressions: list
    report_url: str


def _latest(principal) -> EvalRun:  # noqa: ANN001
    with tenant_session(principal.tenant_id) as s:
        run = s.execute(select(EvalRun).where(EvalRun.kind == "nightly").order_by(EvalRun.created_at.desc())
                       .limit(1)).scalar()
        if run is None:
            raise NotFound("no evaluation has run yet (Dagster job nightly_golden_eval)", code="no_evaluation")
        s.expunge(run)
        return run


@router.get("/latest", response_model=EvalOut, dependencies=[require_role(Role.operator)])
def latest(principal: PrincipalDep) -> EvalOut:
    """Scores of the latest golden-dataset evaluation of this tenant."""
    run = _latest(principal)
    return EvalOut(id=run.id, dataset_version=run.dataset_version, created_at=run.created_at, overall=run.overall,
                   per_specialist=run.per_specialist, regressions=run.regressions,
                   report_url="/v1/evals/latest/report")


@router.get("/latest/report", dependencies=[require_role(Role.operator)], response_model=None,
            responses={200: {"content": {"text/html": {}}, "description": "the HTML report"}})
def latest_report(principal: PrincipalDep) -> HTMLResponse:
    """The readable report (tables and trend plot) of the latest evaluation."""
    run = _latest(principal)
    path = Path(run.report_path or "")
    if not path.is_file():
        raise NotFound("the report file of the latest evaluation is missing", code="report_missing")
    return HTMLResponse(path.read_text())
