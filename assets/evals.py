"""Evaluation assets (the quality loop): the nightly golden evaluation and the fine-tuning dataset;
their jobs and schedule are in jobs/evals.py. Feedback boosts and the eval-gated index promotion are
in assets/indexing.py."""

from typing import Any

import dagster as dg
from pydantic import Field

from assets.resources import EmbedderResource, ModelResource, PlatformDatabase

QUALITY = "quality"


class FinetuneConfig(dg.Config):
    """Dagster's webserver has no login, so an export needs an approval: a tenant admin asks the platform
    API (`POST /v1/finetune/export-token`) and pastes the returned config. The run exports that tenant's
    data only, once per token."""

    reason: str = Field(description="why (as given when the token was issued; audited)")
    approval_token: str = Field(description="single-use token from POST /v1/finetune/export-token")


@dg.asset(group_name=QUALITY, description="Chat-format JSONL of positively rated answers of one tenant, PII-scrubbed, "
                                          "Class III/IV excluded, de-duplicated, with a data card; needs an "
                                          "approval token from a tenant admin.")
def finetune_dataset(context: dg.AssetExecutionContext, config: FinetuneConfig,
                     db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    from compliance import approvals, audit
    from evals import finetune

    try:
        approval = approvals.consume_export(config.approval_token, reason=config.reason, run_id=context.run_id)
    except approvals.ApprovalRefused as exc:
        raise dg.Failure(f"export refused: {exc.message}") from None
    written = finetune.build(tenant_ids=[approval.tenant_id])
    records = sum(w["records"] for w in written.values())
    with db.system() as s:
        audit.record(s, tenant_id=approval.tenant_id, actor=approval.subject, actor_role=approval.subject_role,
                     action="dataset.export.finetune.written", resource_type="dataset", resource_id="finetune",
                     details={"approval_id": str(approval.id), "run_id": context.run_id, "records": records})
    # Counts and paths only: no question or answer text in the UI.
    return dg.MaterializeResult(metadata={"tenants": len(written), "records": records,
                                          "approved_by": approval.subject, "approval_id": str(approval.id),
                                          "files": dg.MetadataValue.json(written)})


@dg.asset(group_name=QUALITY, description="Nightly golden-dataset evaluation through the real orchestrator: "
                                          "retrieval (recall@k, MRR, nDCG) and answers (facts, citations, routing) "
                                          "per specialist, with history, regression flags and an HTML report.")
def golden_eval(context: dg.AssetExecutionContext, db: PlatformDatabase,
                embedder: EmbedderResource, model: ModelResource) -> dg.MaterializeResult[Any]:
    # Scores, counts and the report's path only. The evaluation asks as an admin without need-to-know
    # groups (evals/evaluation.py), so no Class III/IV text reaches an answer, and answers are not
    # kept: a launch from the (unauthenticated) Dagster UI reveals scores, never document text.
    from sqlalchemy import text

    from evals import evaluation

    meta: dict[str, Any] = {}
    with db.system() as s:
        tenants = s.execute(text("SELECT id, name FROM tenants ORDER BY name")).all()
    without: list[str] = []
    for tenant in tenants:
        if not evaluation.has_golden(tenant.id):
            without.append(tenant.name)
            continue
        name = tenant.name
        run = evaluation.evaluate(tenant.id, model=model.get(), embedder=embedder.get())
        meta[f"{name}/overall"] = dg.MetadataValue.json(run.overall)
        meta[f"{name}/per_specialist"] = dg.MetadataValue.json(run.per_specialist)
        meta[f"{name}/regressions"] = len(run.regressions)
        meta[f"{name}/report"] = dg.MetadataValue.path(run.report_path or "")
    # Tenants that uploaded no golden dataset (POST /v1/evals/golden) are not evaluated: named here.
    meta["tenants without a golden set"] = dg.MetadataValue.json(without)
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=golden_eval, description="The latest evaluation did not regress against the one before.")
def no_eval_regression(db: PlatformDatabase) -> dg.AssetCheckResult:
    from sqlalchemy import text

    with db.system() as s:
        rows = s.execute(text("SELECT DISTINCT ON (tenant_id) tenant_id, regressions FROM eval_runs "
                              "WHERE kind = 'nightly' ORDER BY tenant_id, created_at DESC")).all()
    flagged = {str(t): r for t, r in rows if r}
    return dg.AssetCheckResult(passed=not flagged, metadata={"regressions": dg.MetadataValue.json(flagged)})


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[finetune_dataset, golden_eval], asset_checks=[no_eval_regression])
