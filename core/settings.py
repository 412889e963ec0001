"""One settings class for every process (CLI, API, Dagster code location, run workers).

Read through the cached `get_settings()`; nothing here touches the environment at import time.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigurationError

_DEV_SECRET_MIN_LEN = 32


def normalise_sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    """Rewrite `postgres://` / `postgresql://` / `postgresql+x://` to `postgresql+<driver>://`.

    SQLAlchemy would pick psycopg2 for a bare scheme in some versions and psycopg 3 in others;
    the application always uses psycopg 3, Dagster always psycopg2 (its NOTIFY statement is
    not valid under psycopg 3's server-side parameter binding).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not (scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+")):
        raise ConfigurationError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:5432/db), got scheme {scheme!r}"
        )
    return urlunsplit((f"postgresql+{driver}", parts.netloc, parts.path, parts.query, parts.fragment))


def redact_url(url: str) -> str:
    """A URL fit for messages and logs: the password is replaced by ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


# Values shipped in examples (deploy/compose.yaml's .env.example, the Helm values) or typed by habit:
# refused as secrets when EAP_ENV=prod.
_PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "secret", "password", "postgres", "eap",
                 "example", "default", "dev")


def _is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return not v or v in _PLACEHOLDERS or "changeme" in v.replace("-", "").replace("_", "") or "example" in v


def _placeholder_secrets(s: Settings) -> list[str]:
    found = []
    if s.jwt_secret is not None and _is_placeholder(s.jwt_secret.get_secret_value()):
        found.append("EAP_JWT_SECRET")
    if s.app_db_password is not None and _is_placeholder(s.app_db_password.get_secret_value()):
        found.append("EAP_APP_DB_PASSWORD")
    for name, url in (("DATABASE_URL", s.database_url), ("EAP_APP_DATABASE_URL", s.app_database_url),
                      ("EAP_SYSTEM_DATABASE_URL", s.system_database_url)):
        password = urlsplit(url).password if url else None
        if password and _is_placeholder(password):  # no password at all: peer/cert authentication
            found.append(f"the password in {name}")
    return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EAP_", extra="ignore", populate_by_name=True)

    env: Literal["dev", "test", "prod"] = "dev"
    # Only EAP_HOME: an alias "home" would be read from the environment as HOME (names are
    # case-insensitive), putting a fresh clone's state in the user's home directory instead of ./.eap.
    # Settings(home=...) still works through populate_by_name.
    home: Path = Field(default=Path(".eap"), validation_alias="EAP_HOME")

    # Database. Unset DATABASE_URL means: start the embedded PostgreSQL under EAP_HOME.
    # When set, it is a privileged URL (owner of the database, CREATEROLE) used for migrations
    # and system tasks; the application itself connects as `app_db_role`.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "EAP_DATABASE_URL", "database_url")
    )
    app_database_url: str | None = None
    # A process that serves requests but never administers the server (the API under `eap up`) gets
    # this URL of the `system_db_role` (LOGIN, member of the owner role, not a superuser, no CREATEROLE)
    # for its cross-tenant platform tasks, together with EAP_APP_DATABASE_URL, and no DATABASE_URL.
    system_database_url: str | None = None
    dagster_database_url: str | None = None
    db_name: str = "eap"
    app_db_role: str = "eap_app"
    owner_db_role: str = "eap_owner"
    system_db_role: str = "eap_system"
    app_db_password: SecretStr | None = None

    # Auth (dev HS256; OIDC settings arrive with the auth issue).
    jwt_secret: SecretStr | None = None
    # The signing key in a file (0600) instead of the environment: `eap up` hands the API process
    # this path, so the key is not readable from /proc/<pid>/environ.
    jwt_secret_file: Path | None = None
    jwt_issuer: str = "eap"
    jwt_audience: str = "eap-api"
    jwt_ttl_seconds: int = Field(default=12 * 3600, gt=0)
    # Tokens whose exp - iat exceeds this are refused (platform and OIDC alike); minting refuses it too.
    jwt_max_lifetime_seconds: int = Field(default=24 * 3600, gt=0)

    # Request bodies (checked before the body is read; uploads have max_upload_bytes).
    max_json_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # POST /v1/auth/login attempts per minute, per client IP and per (tenant, username).
    login_rate_limit_ip_per_minute: int = Field(default=30, ge=1)
    login_rate_limit_user_per_minute: int = Field(default=10, ge=1)

    # Ingestion
    file_store: Path | None = None  # default EAP_HOME/files
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    embedding_model: str = "local"
    embedding_api_base: str | None = None
    embedding_dim: int | None = None
    embedding_api_key: SecretStr | None = None
    # The local model's runtime: sentence-transformers, or ONNX Runtime fp32 / int8 (core/onnx_embedding.py).
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    # `eap up` computes the local model in one long-lived process (eap/embedding_service.py) and gives the
    # Dagster processes its URL and key file: ingest runs embed there instead of loading the model each.
    # EAP_EMBEDDING_SERVICE=false: no such process, every run loads the model itself.
    embedding_service: bool = True
    embedding_service_url: str | None = None
    embedding_service_key_file: Path | None = None
    # Forward passes the embedding service runs at once, each on one core; 0: one per core.
    embedding_service_workers: int = Field(default=0, ge=0, le=64)
    # LLM (through LiteLLM). Unset model: the grounded extractive responder.
    llm_model: str | None = None
    llm_api_base: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=60.0, gt=0)
    # Model per tier (LiteLLM names, e.g. openai/eap-light); unset tiers use EAP_LLM_MODEL.
    llm_model_light: str | None = None
    llm_model_standard: str | None = None
    llm_model_heavy: str | None = None
    # The tiers the platform offers tenants (comma-separated, e.g. "LIGHT,STANDARD"); unset: every tier.
    # A tenant admin chooses within them (core/llm/tiers.py).
    llm_tiers: str | None = None
    price_table: str | None = None  # JSON {"LIGHT": [in_per_1k, out_per_1k], ...}
    feedback_trigger: int = Field(default=20, ge=1)  # new feedback rows that trigger a boost refresh
    eval_tenants: str = "default"  # comma-separated tenants the nightly golden evaluation runs for
    # Ask the LIGHT model to classify intent; embedding routing stays the fallback.
    llm_routing: bool = False
    reranker_model_path: str | None = None  # a local FlagEmbedding cross-encoder folder (bge-reranker-v2-m3)
    # Desired index build configuration: a change takes effect through an index rebuild (Dagster job
    # rebuild_search_index), promoted only when the golden evaluation does not regress.
    chunk_max_tokens: int = Field(default=250, ge=16, le=250)
    chunk_overlap_tokens: int = Field(default=40, ge=0, le=120)
    promotion_max_drop: float = Field(default=0.02, ge=0.0, le=1.0)  # tolerated drop of any overall eval score
    ingest_batch_size: int = Field(default=50, ge=1, le=1000)
    # A large backlog gets larger runs, up to this many documents each (sensors/ingestion.py `_batch_size`):
    # every run pays a process start and the imports, so 1,000 documents in 50-document runs spent a fifth of
    # their time on that (benchmarks/ingest.py). A run's documents are searchable slice by slice as it goes, so
    # a large run does not hold its first results back.
    ingest_batch_max: int = Field(default=500, ge=1, le=5000)
    # Small documents of one run hold at most this many bytes together (a run over more is cut in two, as a pair).
    ingest_batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # Ingestion budgets and recovery (ingestion/stages.py, sensors/ingestion.py). A document at or
    # above ingest_large_bytes gets a run of its own, so it cannot hold small ones back.
    ingest_large_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    ocr_max_pages: int = Field(default=200, ge=1)  # scanned pages OCR'd per document
    ocr_timeout_s: float = Field(default=900.0, gt=0)  # OCR time per document
    embed_max_chunks: int = Field(default=20_000, ge=1)  # chunks embedded per document
    ingest_max_attempts: int = Field(default=3, ge=1, le=20)  # runs that may die on one version
    ingest_heartbeat_s: float = Field(default=15.0, gt=0)  # a run touches its documents this often
    # `eap serve api` started before its database or migrations waits this long for them (0: fail at once).
    db_wait_seconds: float = Field(default=300.0, ge=0)
    ingest_stale_s: float = Field(default=300.0, gt=0)  # no heartbeat for this long: the run is dead
    pii_sanitise_all: bool = True  # Class III/IV are always sanitised; this extends it to I/II
    # Export control (compliance/export_control.py): answers drop export-controlled statements unless the caller
    # is in one of these groups (people the customer's export-compliance programme has cleared).
    export_cleared_groups: list[str] = Field(default_factory=lambda: ["export-cleared"])
    # Data steward (assets/steward.py): Class III/IV documents pending longer than this escalate (webhook,
    # e-mail; per tenant in tenants.settings["steward"]); the review queue shows this much sanitised text.
    steward_escalation_hours: float = Field(default=48.0, gt=0)
    steward_preview_chars: int = Field(default=240, ge=0, le=2000)
    # Records management (compliance/audit/, retention.py, gdpr.py): the audit chain's HMAC keys live
    # outside the database in this 0600 file (default EAP_HOME/secrets/audit_keys.json; back it up);
    # signed checkpoints of the chain heads go to an append-only folder, GDPR exports to another.
    audit_key_file: Path | None = None
    audit_checkpoint_dir: Path | None = None  # default EAP_HOME/audit-checkpoints
    gdpr_export_dir: Path | None = None  # default EAP_HOME/gdpr-exports
    # Memory, learning and goals (agents/memory.py, agents/learning/, agents/goals.py)
    memory_max_per_user: int = Field(default=200, ge=5, le=100_000)  # hard limit, enforced on every write
    memory_recall_k: int = Field(default=5, ge=0, le=50)
    memory_min_similarity: float = Field(default=0.35, ge=0.0, le=1.0)
    memory_half_life_days: float = Field(default=30.0, gt=0)
    memory_forget_below: float = Field(default=0.05, ge=0.0, lt=1.0)
    memory_merge_similarity: float = Field(default=0.92, gt=0.5, le=1.0)
    memory_episodic_days: float = Field(default=7.0, ge=0)  # older EPISODIC memories are summarised
    llm_memory_extraction: bool = False  # extract memories with the LIGHT model (rules stay the fallback)
    # Live streaming (agents/chat.py live_policy): hold a streamed answer until VERIFY has passed it for
    # callers whose role may read Class III/IV, instead of showing the model's draft token by token.
    stream_hold_classified: bool = False
    # `eap up --local-model` (eap/local_model.py): loopback ports of the llama.cpp model server and the LiteLLM proxy.
    local_model_port: int = Field(default=8081, ge=1, le=65535)
    local_proxy_port: int = Field(default=4000, ge=1, le=65535)
    goals_max_active: int = Field(default=20, ge=1, le=1000)

    # Monitoring and alerts
    mes_status_interval_s: int = Field(default=60, ge=5)
    mes_quality_interval_s: int = Field(default=300, ge=5)
    # SAP extracts (assets/sap.py): schedule and how old the newest extract may be before its freshness
    # check fails. The connection itself is per tenant (tenant settings "sap", monitoring/sap_extracts.py).
    sap_extract_cron: str = "*/30 * * * *"
    sap_freshness_minutes: int = Field(default=90, ge=1)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "eap-alerts@localhost"
    alert_webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Write operations (operations/): a proposal nobody decided escalates to the next approver of the tenant's
    # chain after this long (again after each further period), and expires after the expiry; tenants may
    # override both in their "operations" settings (PUT /v1/operations-settings).
    operations_escalate_after_minutes: float = Field(default=30.0, gt=0)
    operations_expiry_hours: float = Field(default=24.0, gt=0)
    # An execution claimed this long ago without a result (its run died) is resumed with the same key.
    operations_stale_execution_s: float = Field(default=600.0, gt=0)
    operations_max_attempts: int = Field(default=5, ge=1, le=20)

    rate_limit_user_per_minute: int = Field(default=120, ge=1)
    rate_limit_tenant_per_minute: int = Field(default=1200, ge=1)

    # OIDC (production identity): JWKS from a URL, or from a file on air-gapped sites.
    jwks_url: str | None = None
    jwks_local_path: str | None = Field(default=None, validation_alias=AliasChoices("JWKS_LOCAL_PATH",
                                                                                    "EAP_JWKS_LOCAL_PATH"))
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_role_claim: str = "roles"
    oidc_groups_claim: str = "groups"
    # The web app's single sign-on: authorization-code flow with PKCE as a public client (no secret), shown to
    # the browser by GET /v1/auth/config; its access token must pass the JWKS/issuer/audience checks above.
    oidc_client_id: str | None = None
    oidc_authorization_endpoint: str | None = None
    oidc_token_endpoint: str | None = None
    oidc_scope: str = "openid profile email"
    # The built web app (scripts/install.sh builds frontend/ into frontend/dist); unset: the checkout's frontend/dist.
    web_dist: Path | None = None
    # HS256 platform tokens (dev tokens and break-glass logins); on by default.
    accept_platform_tokens: bool = True
    login_max_failures: int = Field(default=6, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)

    # The API's address as browsers and identity providers reach it (SAML entity id and ACS URL); unset:
    # http://<api_host>:<api_port>.
    public_base_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    dagster_port: int = Field(default=3000, ge=1, le=65535)
    default_tenant: str = "default"
    log_json: bool = True

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        v = v.expanduser().resolve()
        existing = next((p for p in (v, *v.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            what = "exists and is not a directory" if existing == v else f"is inside {existing}, which is a file"
            raise ValueError(f"EAP_HOME {v} {what}")
        return v

    @field_validator("database_url", "app_database_url", "system_database_url", "dagster_database_url",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("database_url", "app_database_url", "system_database_url", mode="after")
    @classmethod
    def _normalise(cls, v: str | None) -> str | None:
        return normalise_sqlalchemy_url(v) if v else None

    @field_validator("llm_tiers", mode="after")
    @classmethod
    def _known_tiers(cls, v: str | None) -> str | None:
        from core.enums import TIERS

        names = [t.strip().upper() for t in (v or "").split(",") if t.strip()]
        unknown = [t for t in names if t not in TIERS]
        if unknown:
            raise ValueError(f"EAP_LLM_TIERS names unknown tier(s) {', '.join(unknown)}; "
                             f"the tiers are {', '.join(TIERS)}")
        return ",".join(names) or None

    @field_validator("app_db_role", "owner_db_role", "system_db_role", "db_name", mode="after")
    @classmethod
    def _identifier(cls, v: str) -> str:
        # These names are interpolated into DDL (roles cannot be bound parameters).
        if not v.replace("_", "").isalnum() or not v[0].isalpha() or len(v) > 63:
            raise ValueError(f"{v!r} is not a plain SQL identifier")
        return v.lower()

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_prod(self) -> Settings:
        if self.env == "prod":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret) < _DEV_SECRET_MIN_LEN and self.jwt_secret_file is None:
                raise ValueError("EAP_JWT_SECRET (or EAP_JWT_SECRET_FILE) must be set to at least 32 characters "
                                 "when EAP_ENV=prod")
            refused = _placeholder_secrets(self)
            if refused:
                raise ValueError(f"default/example value in {', '.join(refused)}: set real secrets "
                                 "when EAP_ENV=prod")
            if self.database_url is None and not self.attached_db:
                raise ValueError("DATABASE_URL must be set when EAP_ENV=prod (the embedded database is for dev)")
            if self.app_database_url is None and self.app_db_password is None:
                raise ValueError("set EAP_APP_DATABASE_URL or EAP_APP_DB_PASSWORD when EAP_ENV=prod")
        return self

    @property
    def attached_db(self) -> bool:
        """Serving only: app and system URLs given, no privileged URL (see system_database_url)."""
        return self.database_url is None and bool(self.app_database_url and self.system_database_url)

    @property
    def embedded_db(self) -> bool:
        return self.database_url is None and not self.attached_db

    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def file_store_dir(self) -> Path:
        return (self.file_store or self.home / "files").expanduser().resolve()

    @property
    def pipeline_dir(self) -> Path:
        return self.home / "pipeline"

    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    def _dev_secret(self, name: str) -> str:
        """A random secret kept under EAP_HOME so every process of one instance agrees on it."""
        path = self.secrets_dir / name
        if path.exists():
            return path.read_text().strip()
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        try:
            os.link(tmp, path)  # atomic create-if-absent: a concurrent writer keeps its value
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()

    def jwt_signing_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.jwt_secret_file is not None:
            try:
                return self.jwt_secret_file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"cannot read EAP_JWT_SECRET_FILE {self.jwt_secret_file}: "
                                         f"{exc.strerror}") from None
        if self.env == "prod":
            raise ConfigurationError("EAP_JWT_SECRET is required when EAP_ENV=prod")
        return self._dev_secret("jwt_secret")

    def system_password(self) -> str:
        return self._dev_secret("system_db_password")

    def app_password(self) -> str:
        if self.app_db_password is not None:
            return self.app_db_password.get_secret_value()
        return self._dev_secret("app_db_password")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
