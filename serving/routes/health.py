from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from core.db.database import check_ready
from core.errors import PlatformError
from serving.errors import error_body

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    """The database answers as the application role and the schema is at the head revision."""
    try:
        detail = await run_in_threadpool(check_ready)
    except PlatformError as exc:
        return JSONResponse(error_body("not_ready", exc.message), status_code=503)
    return JSONResponse({"status": "ready", **detail})
