"""Eval-gated index promotion as Dagster assets:

    index_candidate ──(check: candidate_passes_golden_eval, blocking)──▶ active_index

`index_candidate` writes a new index version next to the serving one for every tenant: a full
rebuild (new embedding model or chunking configuration: EAP_EMBEDDING_MODEL, EAP_CHUNK_MAX_TOKENS,
EAP_CHUNK_OVERLAP_TOKENS) or a boosts refresh (feedback-weighted boosts, sharing the serving chunks).
The blocking check runs the golden evaluation against the active version and the candidate; a
regression rejects the candidate, fails the check (ERROR) and stops the run before `active_index`,
so the old version keeps serving. `active_index` flips the pointer atomically.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from assets.resources import PlatformDatabase
from retrieval.versions import BuildConfig

GROUP = "indexing"


class IndexBuildConfig(dg.Config):
    kind: str = Field(default="rebuild", description="rebuild (re-process every document) | boosts (new boost set)")
    reason: str = Field(default="manual rebuild", description="why (recorded on the version and in the audit log)")
    tenants: list[str] = Field(default_factory=list, description="tenant names; empty = every tenant")
    embedding_model: str | None = Field(default=None, description="rebuild with this embedding model (LiteLLM "
                                        "name, served at EAP_EMBEDDING_API_BASE); default EAP_EMBEDDING_MODEL")
    embedding_dim: int | None = Field(default=None, description="its dimension (required for a LiteLLM model)")
    chunk_max_tokens: int | None = Field(default=None, ge=16, le=250, description="default EAP_CHUNK_MAX_TOKENS")
    chunk_overlap_tokens: int | None = Field(default=None, ge=0, le=120,
                                             description="default EAP_CHUNK_OVERLAP_TOKENS")

    def build(self) -> BuildConfig:
        """The configuration a rebuild builds: the settings, with this run's overrides."""
        from core.embedding import LOCAL_ALIASES, LOCAL_DIM, canonical_local_name

        base = BuildConfig.desired()
        model = self.embedding_model or base.embedding_model
        dim = self.embedding_dim or (base.embedding_dim if model == base.embedding_model else None)
        if model in LOCAL_ALIASES:
            model, dim = canonical_local_name(model), LOCAL_DIM
        if not dim:
            raise dg.Failure(f"embedding model {model!r} needs embedding_dim")
        overlap = base.chunk_overlap_tokens if self.chunk_overlap_tokens is None else self.chunk_overlap_tokens
        return BuildConfig(model, dim, self.chunk_max_tokens or base.chunk_max_tokens, overlap)


@dg.asset(group_name=GROUP, description="A new search-index version per tenant, built next to the active one "
                                        "(rebuild or boosts refresh); never serves before the gate passes.")
def index_candidate(context: dg.AssetExecutionContext, config: IndexBuildConfig,
                    db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    from evals import feedback
    from retrieval import builds
    from retrieval.versions import active

    if config.kind not in ("rebuild", "boosts"):
        raise dg.Failure(f"kind must be 'rebuild' or 'boosts', not {config.kind!r}")
    built, skipped, failed = {}, {}, {}
    for tenant_id, name in builds.tenants():
        if config.tenants and name not in config.tenants:
            continue
        boosts = feedback.compute_boosts(tenant_id)
        if config.kind == "boosts":
            with db.tenant(tenant_id) as s:
                serving = active(s).version
            if feedback.same_boosts(boosts, feedback.stored_boosts(tenant_id, serving)):
                skipped[name] = "boosts unchanged"
                continue
            rejected = builds.last_rejected(tenant_id, "boosts")
            if rejected and feedback.same_boosts(boosts, feedback.stored_boosts(tenant_id, rejected)):
                skipped[name] = f"this boost set was rejected by the gate as version {rejected}"
                continue
        cand = builds.start(tenant_id, config.kind, config.reason,
                                  config.build() if config.kind == "rebuild" else None)
        if cand is None:
            skipped[name] = "a rebuild candidate is pending (it carries fresh boosts)"
            continue
        try:
            stats = builds.build_generation(cand) if config.kind == "rebuild" else {}
            stats["boosts"] = feedback.write_boosts(tenant_id, cand.version, boosts)
            builds.finish(cand, stats)
            built[name] = {"version": cand.version, "generation": cand.generation,
                           **{k: v for k, v in stats.items() if k != "manifest"}}
        except Exception as exc:  # noqa: BLE001 - recorded on the version, reported below
            builds.fail(cand, str(exc))
            # The message stays on the version (GET /v1/index/versions, admins); a database error's can
            # quote chunk text, so the UI gets the error class only.
            failed[name] = type(exc).__name__
            context.log.error(f"index build for tenant {name} failed: {failed[name]} (details on version "
                              f"{cand.version})")
    meta: dict[str, Any] = {"kind": config.kind, "candidates": dg.MetadataValue.json(built),
                            "skipped": dg.MetadataValue.json(skipped), "failed": dg.MetadataValue.json(failed)}
    if failed:
        raise dg.Failure(f"index build failed for {sorted(failed)}: the active versions keep serving", metadata=meta)
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=index_candidate, blocking=True,
                description="Golden evaluation of each candidate against the active version; a regression beyond "
                            "EAP_PROMOTION_MAX_DROP rejects it and blocks promotion.")
def candidate_passes_golden_eval(context: dg.AssetCheckExecutionContext, db: PlatformDatabase) -> dg.AssetCheckResult:
    from sqlalchemy import text

    from evals import evaluation
    from retrieval import builds

    with db.system() as s:
        rows = s.execute(text("SELECT v.tenant_id, t.name, v.version FROM index_versions v JOIN tenants t "
                              "ON t.id = v.tenant_id WHERE v.status = 'candidate' AND v.evaluation = '{}'::jsonb "
                              "ORDER BY t.name")).all()
    verdicts: dict[str, dict[str, Any]] = {}
    for tenant_id, name, version in rows:
        if evaluation.has_golden(tenant_id):
            ev = evaluation.gate(tenant_id, version)
        else:
            ev = {"gated": False, "passed": True, "candidate_version": version, "state": "no_golden_set",
                  "note": "NO GOLDEN SET: this tenant has uploaded no golden dataset (POST /v1/evals/golden), so "
                          "this promotion is not evaluated"}
        builds.record_evaluation(tenant_id, version, ev)
        verdicts[name] = {k: ev.get(k) for k in ("passed", "gated", "state", "candidate_version", "active_version",
                                                 "active", "candidate", "regressions", "note", "report")
                          if ev.get(k) is not None}
        context.log.info(f"tenant {name}: candidate {version} {'passes' if ev['passed'] else 'REGRESSES'}")
    rejected = sorted(n for n, v in verdicts.items() if not v["passed"])
    meta: dict[str, Any] = {"evaluated": len(verdicts), "rejected": dg.MetadataValue.json(rejected),
                            "verdicts": dg.MetadataValue.json(verdicts)}
    reports = [v["report"] for v in verdicts.values() if v.get("report")]
    if reports:
        meta["report"] = dg.MetadataValue.path(reports[-1])
    return dg.AssetCheckResult(passed=not rejected, severity=dg.AssetCheckSeverity.ERROR, metadata=meta,
                               description=("rejected: " + ", ".join(rejected) + " — the active index keeps serving")
                               if rejected else "no candidate regressed")


class ActiveIndexConfig(dg.Config):
    rollback: list[str] = Field(default_factory=list, description="tenant names to roll back to the version the "
                                "active one replaced (job rollback_search_index); empty = promote candidates")


@dg.asset(group_name=GROUP, deps=[index_candidate],
          description="The serving pointer: candidates that passed the gate are promoted with an atomic flip "
                      "(or, with config rollback, the previous version is restored).")
def active_index(context: dg.AssetExecutionContext, config: ActiveIndexConfig,
                 db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    from retrieval import builds
    from retrieval.versions import active

    known = dict((name, tid) for tid, name in builds.tenants())
    unknown = sorted(set(config.rollback) - set(known))
    if unknown:
        raise dg.Failure(f"unknown tenant(s) {unknown}: nothing rolled back")
    promoted, rolled_back, serving = {}, {}, {}
    for name, tenant_id in sorted(known.items()):
        if name in config.rollback:
            try:
                res = builds.rollback(tenant_id)
            except builds.BuildFailed as exc:
                raise dg.Failure(f"rollback of tenant {name} failed: {exc}") from exc
            rolled_back[name] = res
            context.log.info(f"tenant {name}: rolled back from index version {res['from_version']} to "
                             f"{res['version']}")
        elif not config.rollback:
            flipped = builds.promote(tenant_id)
            if flipped:
                promoted[name] = flipped
                context.log.info(f"tenant {name}: index version {flipped['from_version']} → {flipped['version']}")
        with db.tenant(tenant_id) as s:
            serving[name] = active(s).version
    return dg.MaterializeResult(metadata={"promoted": dg.MetadataValue.json(promoted),
                                          "rolled_back": dg.MetadataValue.json(rolled_back),
                                          "serving": dg.MetadataValue.json(serving)})


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[index_candidate, active_index], asset_checks=[candidate_passes_golden_eval])
