"""Dagster resources shared by assets, jobs and sensors.

Three resource keys: `db` (the platform's PostgreSQL, handing out tenant and system sessions), `embedder`
and `model` (the Model seam). The embedder's and model's configuration is built from the same environment
variables as the API's settings (`EnvVar` where the variable is set, so the Dagster UI shows where a value
comes from; the settings' defaults otherwise).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import dagster as dg
from sqlalchemy.orm import Session

from core.db.database import check_ready, system_session, tenant_session
from core.embedding import Embedder, build_embedder
from core.errors import PlatformError
from core.llm import Model
from core.settings import get_settings


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model: the shipped MiniLM ("local") unless EAP_EMBEDDING_MODEL names a LiteLLM
    embedding model served at EAP_EMBEDDING_API_BASE (then EAP_EMBEDDING_DIM is required)."""

    model: str = "local"
    api_base: str | None = None
    dim: int | None = None

    def get(self) -> Embedder:
        return build_embedder(self.model, self.api_base, self.dim)


class ModelResource(dg.ConfigurableResource):
    """The Model seam for assets (golden evaluation): LiteLLM for every call, the configured tiers, the
    grounded extractive responder when EAP_LLM_MODEL is unset."""

    llm_model: str | None = None

    def get(self) -> Model:
        from core.llm import default_model

        if self.llm_model and self.llm_model != get_settings().llm_model:
            raise dg.Failure(f"the model resource is configured for {self.llm_model!r} but the platform's "
                             f"settings name {get_settings().llm_model!r}: set EAP_LLM_MODEL for both")
        return default_model()


class PlatformDatabase(dg.ConfigurableResource):
    """The platform's PostgreSQL. Connection details come from the same settings as the API
    (DATABASE_URL or the embedded server under EAP_HOME). A run never changes the schema or the roles:
    bootstrap happens once (`eap up`, `eap db upgrade`); with `check_schema` a run that finds the
    database behind the code fails at once and says so, instead of failing later on a missing column."""

    check_schema: bool = True

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.check_schema:
            try:
                check_ready()
            except PlatformError as exc:
                raise dg.Failure(str(exc)) from None

    @contextlib.contextmanager
    def tenant(self, tenant_id: uuid.UUID | str) -> Iterator[Session]:
        with tenant_session(tenant_id) as s:
            yield s

    @contextlib.contextmanager
    def system(self) -> Iterator[Session]:
        with system_session() as s:
            yield s


def _env(name: str, default: str | None) -> str | None:
    # dg.EnvVar is a str: Dagster resolves it when the resource is initialised and shows its source in the UI.
    return dg.EnvVar(name) if os.environ.get(name) else default


def platform_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location, the embedder and model built from EnvVars."""
    s = get_settings()
    embedder = EmbedderResource(
        model=_env("EAP_EMBEDDING_MODEL", s.embedding_model) or "local",
        api_base=_env("EAP_EMBEDDING_API_BASE", s.embedding_api_base),
        dim=dg.EnvVar.int("EAP_EMBEDDING_DIM") if os.environ.get("EAP_EMBEDDING_DIM") else s.embedding_dim)
    model = ModelResource(llm_model=_env("EAP_LLM_MODEL", s.llm_model))
    return {"db": PlatformDatabase(), "embedder": embedder, "model": model}
