"""Dagster resources shared by assets, jobs and sensors."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import dagster as dg
from sqlalchemy.orm import Session

from core.db.database import bootstrap, system_session, tenant_session


class PlatformDatabase(dg.ConfigurableResource):
    """The platform's PostgreSQL. Connection details come from the same settings as the API
    (DATABASE_URL or the embedded server under EAP_HOME), so there is nothing to configure here;
    `ensure_schema` lets a run worker started on a fresh instance bring the schema to head."""

    ensure_schema: bool = True

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.ensure_schema:
            bootstrap()

    @contextlib.contextmanager
    def tenant(self, tenant_id: uuid.UUID | str) -> Iterator[Session]:
        with tenant_session(tenant_id) as s:
            yield s

    @contextlib.contextmanager
    def system(self) -> Iterator[Session]:
        with system_session() as s:
            yield s
