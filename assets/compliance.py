"""Records-management assets: signed checkpoints of the audit chains and the check that verifies them, the nightly
retention pass, and GDPR request fulfilment. Their jobs and schedules are in jobs/compliance.py, the GDPR sensor in
sensors/compliance.py. Metadata carries counts, chain ids and request ids only: no person's identifier reaches the
Dagster UI (which has no login)."""

import dagster as dg

from assets.resources import PlatformDatabase

COMPLIANCE = "compliance"


def _verify_all(db: PlatformDatabase) -> list:
    from compliance import audit

    with db.system() as s:
        return audit.verify_all(s)


def _broken_table(results: list) -> str:
    rows = ["| chain | events | first break | seq | detail |", "|---|---|---|---|---|"]
    for r in results:
        if not r.ok:
            b = r.breaks[0]
            rows.append(f"| {r.chain} | {r.events} | {b.reason} | {b.seq if b.seq is not None else ''} | {b.detail} |")
    return "\n".join(rows)


@dg.asset(group_name=COMPLIANCE, description="Signed checkpoints of every audit chain's head, written to the "
                                             "append-only checkpoint store outside the database and recorded in the "
                                             "chain: rows removed from the end of a chain are detected. A chain that "
                                             "does not verify is not checkpointed.")
def audit_checkpoint(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from compliance import audit

    written: list[dict] = []
    results = _verify_all(db)
    for res in results:
        if not res.ok or res.events == 0:
            continue
        tenant = None if res.chain == "platform" else res.chain
        with db.system() as s:
            cp = audit.write_checkpoint(s, tenant)
        if cp is None:
            continue
        with db.system() as s:
            audit.record(s, tenant_id=tenant, actor="system", action="audit.checkpoint", resource_type="audit_chain",
                         resource_id=cp.chain, details={"seq": cp.seq, "hash": cp.hash, "events": cp.events,
                                                        "key_id": cp.key_id, "file": cp.path})
        written.append({"chain": cp.chain, "seq": cp.seq, "events": cp.events})
    broken = [r for r in results if not r.ok]
    if broken:
        context.log.error(f"{len(broken)} audit chain(s) do not verify and were not checkpointed")
    return dg.MaterializeResult(metadata={
        "chains": len(results), "checkpointed": len(written), "broken": len(broken),
        "checkpoints": dg.MetadataValue.json(written),
        "store": dg.MetadataValue.path(str(audit.checkpoint_dir())),
        "broken_chains": dg.MetadataValue.md(_broken_table(results)) if broken else "none",
    })


@dg.asset_check(asset=audit_checkpoint, description="Every audit chain verifies: unkeyed links, keyed MACs, retention "
                                                    "anchors, and every signed checkpoint still present (truncation).")
def audit_chain_verified(db: PlatformDatabase) -> dg.AssetCheckResult:
    results = _verify_all(db)
    broken = [r for r in results if not r.ok]
    return dg.AssetCheckResult(
        passed=not broken, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(broken)} of {len(results)} audit chains do not verify" if broken
                     else f"all {len(results)} audit chains verify"),
        metadata={
            "chains": len(results), "broken": len(broken), "events": sum(r.events for r in results),
            "broken_chains": dg.MetadataValue.json({r.chain: [{"reason": b.reason, "seq": b.seq, "detail": b.detail}
                                                              for b in r.breaks[:5]] for r in broken}),
            "summary": dg.MetadataValue.md(_broken_table(results)) if broken else "all chains verify",
        })


@dg.asset(group_name=COMPLIANCE, description="The nightly retention pass: per tenant and record type, what is past "
                                             "its retention period is purged or anonymised, except what a destruction "
                                             "hold covers; the report lists both.")
def retention_report(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from sqlalchemy import text

    from compliance import retention

    with db.system() as s:
        tenant_ids = [r[0] for r in s.execute(text("SELECT id FROM tenants ORDER BY name"))]
    reports = []
    for tid in tenant_ids:
        with db.system() as s:
            reports.append(retention.apply(s, tid).as_dict())
    lines = ["| tenant | record type | action | days | affected | held |", "|---|---|---|---|---|---|"]
    for rep in reports:
        for t in rep["types"]:
            if t["affected"] or t["held"]:
                lines.append(f"| {rep['tenant_id']} | {t['record_type']} | {t['action']} | {t['days']} | "
                             f"{t['affected']} | {t['held']} |")
    affected, held = sum(r["affected"] for r in reports), sum(r["held"] for r in reports)
    context.log.info(f"retention: {affected} records purged or anonymised, {held} kept by holds")
    return dg.MaterializeResult(metadata={
        "tenants": len(reports), "affected": affected, "held": held,
        "summary": dg.MetadataValue.md("\n".join(lines)),
        "report": dg.MetadataValue.json(reports),
    })


@dg.asset(group_name=COMPLIANCE, description="GDPR requests fulfilled: access (HTML + JSON export), portability "
                                             "(JSON), erasure (anonymisation everywhere, refused under a destruction "
                                             "hold). Launched by the gdpr_requests sensor.")
def gdpr_fulfilment(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from compliance import gdpr

    with db.system() as s:
        claimed = gdpr.claim_pending(s)
    done: list[dict] = []
    failed = 0
    for tenant_id, rid in claimed:
        try:
            with db.system() as s:
                req = gdpr.process(s, rid)
            done.append({"request": str(rid), "tenant": str(tenant_id), "kind": req.kind, "status": req.status})
        except Exception as exc:  # noqa: BLE001 - one failed request is recorded and does not stop the others
            failed += 1
            context.log.error(f"GDPR request {rid} failed: {type(exc).__name__}")
            with db.system() as s:
                gdpr.fail(s, rid, type(exc).__name__)
            done.append({"request": str(rid), "tenant": str(tenant_id), "status": "failed"})
    if failed:
        raise dg.Failure(f"{failed} of {len(claimed)} GDPR requests failed (see the requests' results)",
                         metadata={"requests": dg.MetadataValue.json(done)})
    by_status: dict[str, int] = {}
    for d in done:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return dg.MaterializeResult(metadata={"processed": len(done), **by_status,
                                          "requests": dg.MetadataValue.json(done)})


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[audit_checkpoint, retention_report, gdpr_fulfilment],
                          asset_checks=[audit_chain_verified])
