"""`eap seed`: the explicit first-data step of a production install (roadmap 11A4).

Creates the tenant and its admin account record and, only when asked, submits the sample documents.
`eap up` does the same implicitly in dev; with EAP_ENV=prod it seeds no samples and prints no token,
so this command (or the identity provider) is how a site gets its first tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SeedResult:
    tenant: str
    tenant_id: str
    tenant_created: bool
    admin: str
    samples_submitted: int


def sample_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigurationError(f"sample folder {folder} does not exist")
    return sorted(p for p in folder.glob("*.*") if p.is_file())


def seed(tenant_name: str, admin: str = "admin", samples: Path | None = None, actor: str = "eap-seed") -> SeedResult:
    """Idempotent: an existing tenant/admin is kept; samples already stored unchanged are not re-queued."""
    from core.models import Role
    from identity.tenancy import create_tenant, ensure_user

    tenant, created = create_tenant(tenant_name)
    ensure_user(tenant, admin, Role.admin)
    submitted = 0
    if samples is not None:
        from eap.ingest import submit_paths

        files = sample_files(samples)
        queued, _ = submit_paths(tenant.id, list(files), classification="II", acl=None, actor=actor, root=samples)
        submitted = len(queued)
    return SeedResult(tenant.name, str(tenant.id), created, admin, submitted)


def run_seed(tenant_name: str | None, admin: str, with_samples: bool, samples_dir: str | None) -> int:
    from core.db.database import bootstrap
    from core.settings import get_settings

    settings = get_settings()
    bootstrap(settings)
    folder = Path(samples_dir) if samples_dir else REPO_ROOT / "samples"
    res = seed(tenant_name or settings.default_tenant, admin, folder if (with_samples or samples_dir) else None)
    print(f"tenant {res.tenant} {'created' if res.tenant_created else 'exists'} id={res.tenant_id}")
    print(f"admin account {res.admin} present (log in through the identity provider, or set a break-glass "
          f"password with `eap user set-password`)")
    if with_samples or samples_dir:
        print(f"sample documents: {res.samples_submitted} submitted (the Dagster daemon ingests them)")
    return 0
