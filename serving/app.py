"""FastAPI app factory: `uvicorn --factory serving.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.database import dispose_engines
from core.logging import configure_logging
from serving import errors
from serving.routes import (
    alerts,
    auth,
    chat,
    documents,
    evals,
    feedback,
    goals,
    health,
    index,
    me,
    memories,
    search,
    usage,
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    dispose_engines()


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="Enterprise Agent Platform",
        version="0.1.0",
        lifespan=lifespan,
        description="Grounded, cited answers over manufacturing documents and systems.",
    )
    errors.install(app)
    app.include_router(health.router)
    for router in (auth.router, me.router, documents.router, search.router, chat.router, alerts.router,
                   usage.router, feedback.router, evals.router, memories.router, goals.router, index.router):
        app.include_router(router, responses=errors.ERROR_RESPONSES)
    return app
